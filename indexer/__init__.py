"""Sources, the on-disk index, and search over it."""

from pathlib import Path

# The bundled default corpus: Jack Clark's Aug 6, 2022 AI-policy thread and
# the openings of six more of his threads, as a Thread Reader App unroll.
SEED_CORPUS = Path(__file__).resolve().parent / "corpus" / "jackclark_ai_policy.txt"


def __getattr__(name: str):
    # `from indexer import Takes` without paying for numpy/FAISS at package import.
    if name == "Takes":
        from indexer.api import Takes

        return Takes
    raise AttributeError(f"module 'indexer' has no attribute {name!r}")
