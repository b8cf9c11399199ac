"""Small made-up inputs shared by the tests that add takes."""

# A three-tweet Thread Reader App unroll by an author not in the seed.
UNROLL = """\
Dana Okafor Profile picture
Mar 3, 2024 3 tweets 1 min read Read on X
1/ Lighthouse keepers are the right model for frontier AI auditors: boring, independent, paid by nobody they inspect.
2/ An auditor funded by the labs it audits will drift toward whatever keeps the contract renewed.
3/ So fund AI auditors from a levy on compute, collected by a public body, and rotate them every two years.
• • •
"""
UNROLL_IDS = [f"dana-okafor-2024-03-03-{position}" for position in (1, 2, 3)]


def nearest_takes(generation, vector, k: int) -> list:
    """(take, inner product) of the ``k`` takes nearest a ready-made vector, through the store's public interface."""
    from indexer.storage import Filters

    ranked = generation.nearest(vector, k, Filters())
    takes = generation.takes([row_id for row_id, _ in ranked])
    return [(takes[row_id], score) for row_id, score in ranked if row_id in takes]
