"""Bluesky repository exports: real CAR files, the MST walk, threads, errors."""

from __future__ import annotations

import libipld
import pytest

from indexer.errors import ParseError
from indexer.sources import bluesky, parse_text, read_takes
from tests.bluesky_car import OTHER, OWNER, Repository, cid_of, key_layer, sample_repository, varint

BASE = "bsky-policyfan7xq2ldkjw3"


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "repo.car"
    path.write_bytes(sample_repository().car())
    return path


def test_export_threads_self_replies_and_skips_reposts_and_likes(export):
    takes = read_takes(export)
    by_id = {take.id: take for take in takes}
    thread = [take for take in takes if take.thread_id == f"{BASE}-3kthread0001a"]
    assert [take.id.removeprefix(BASE + "-") for take in thread] == [
        "3kthread0001a", "3kthread0002a", "3kthread0003a", "3kthread0005a",
    ]
    assert [take.position for take in thread] == [1, 2, 3, 4] and {take.thread_size for take in thread} == {4}
    first = thread[0]
    assert first.text == "Compute thresholds are a blunt tool for AI governance."
    assert first.author == "Policy Fan" and first.handle is None and first.date == "2024-05-01"
    assert first.url == f"https://bsky.app/profile/{OWNER}/post/3kthread0001a"
    assert first.source == "repo.car"
    # Emoji survive, and a shortened link is shown whole (facet offsets are UTF-8 bytes).
    assert thread[2].text == "Still, better than nothing 🧵🇪🇺 see https://example.com/eu-ai-act/article-51"
    # A reply to someone else is a thread of its own.
    reply = by_id[f"{BASE}-3kreplyother1a"]
    assert (reply.thread_id, reply.position, reply.thread_size) == (reply.id, 1, 1)
    # Replies to a deleted first post share a thread; the image-only post is no take.
    orphans = [take for take in takes if take.thread_id == f"{BASE}-3korphan0001a"]
    assert [take.text for take in orphans] == ["Part two of a thread whose start I deleted.", "Part three."]
    assert len(takes) == 7
    assert not any("repost" in take.id or "like" in take.id for take in takes)


def test_detected_from_content_whatever_the_name(export, tmp_path):
    renamed = tmp_path / "download"
    renamed.write_bytes(export.read_bytes())
    assert [take.id for take in read_takes(renamed)] == [take.id for take in read_takes(export)]
    assert [take.id for take in read_takes(renamed, "bluesky")] == [take.id for take in read_takes(export)]


def test_reading_again_gives_the_same_ids(export):
    assert [take.to_dict() for take in read_takes(export)] == [take.to_dict() for take in read_takes(export)]


def test_a_deep_tree_is_walked_in_key_order():
    repo = Repository()
    for number in range(300):
        repo.post(f"3k{number:09d}aa", f"post number {number}", f"2024-06-01T00:{number // 60:02d}:{number % 60:02d}.000Z")
    # The tree of 300 keys has several layers, so subtrees on both sides are walked.
    assert max(key_layer(key) for key in repo.records) >= 2
    takes = bluesky.parse(repo.car(), "big.car")
    assert [take.text for take in takes] == [f"post number {number}" for number in range(300)]


def test_posts_are_ordered_by_time_not_by_key():
    repo = Repository()
    first = repo.post("3kzzzzzzzzz2a", "written first", "2024-01-01T00:00:00Z")
    repo.post("3kaaaaaaaaa2a", "written second", "2024-01-01T00:05:00+00:00", parent=first, root=first)
    takes = bluesky.parse(repo.car(), "x.car")
    assert [(take.text, take.position) for take in takes] == [("written first", 1), ("written second", 2)]


def test_a_reply_loop_does_not_hang():
    repo = Repository()
    repo.post("3ka", "one", "2024-01-01T00:00:00Z", parent=repo.uri("3kb"))
    repo.post("3kb", "two", "2024-01-01T00:01:00Z", parent=repo.uri("3ka"))
    assert sorted(take.text for take in bluesky.parse(repo.car(), "x.car")) == ["one", "two"]


def test_replies_to_other_accounts_posts_with_self_replies_under_them():
    repo = Repository()
    theirs = repo.uri("3ktheirs", did=OTHER)
    mine = repo.post("3kmine1", "my answer", "2024-01-01T00:00:00Z", parent=theirs, root=theirs)
    repo.post("3kmine2", "and more", "2024-01-01T00:01:00Z", parent=mine, root=theirs)
    takes = bluesky.parse(repo.car(), "x.car")
    assert {take.thread_id for take in takes} == {f"{BASE}-3kmine1"}


def car_bytes(header: dict, blocks: list[bytes]) -> bytes:
    encoded = libipld.encode_dag_cbor(header)
    parts = [varint(len(encoded)), encoded]
    for block in blocks:
        parts += [varint(len(cid_of(block)) + len(block)), cid_of(block), block]
    return b"".join(parts)


def test_truncated_car_is_one_clear_error(export, tmp_path):
    data = export.read_bytes()
    for cut in (len(data) // 3, len(data) - 5, 20):
        broken = tmp_path / f"cut{cut}.car"
        broken.write_bytes(data[:cut])
        with pytest.raises(ParseError) as caught:
            read_takes(broken)
        message = str(caught.value)
        assert message.startswith(str(broken)) and "\n" not in message
        assert "CAR" in message


def test_missing_record_block_names_the_record():
    repo = Repository()
    repo.post("3kpost1", "hello", "2024-01-01T00:00:00Z")
    record = libipld.encode_dag_cbor(repo.records["app.bsky.feed.post/3kpost1"])
    node = libipld.encode_dag_cbor({"l": None, "e": [{"p": 0, "k": b"app.bsky.feed.post/3kpost1", "v": cid_of(record), "t": None}]})
    commit = libipld.encode_dag_cbor({"did": OWNER, "version": 3, "data": cid_of(node), "rev": "x", "prev": None, "sig": b"0"})
    data = car_bytes({"roots": [cid_of(commit)], "version": 1}, [commit, node])
    with pytest.raises(ParseError, match=r"x\.car: record app\.bsky\.feed\.post/3kpost1: its block is missing"):
        bluesky.parse(data, "x.car")


@pytest.mark.parametrize(
    ("blocks", "problem"),
    [
        ([{"not": "a commit"}], "not a repository commit"),
        ([{"did": OWNER, "version": 3, "data": cid_of(b"absent"), "rev": "x", "prev": None, "sig": b"0"}], "block of the repository tree is missing"),
    ],
)
def test_not_a_repository(blocks, problem):
    encoded = [libipld.encode_dag_cbor(block) for block in blocks]
    data = car_bytes({"roots": [cid_of(encoded[0])], "version": 1}, encoded)
    with pytest.raises(ParseError, match=problem):
        bluesky.parse(data, "x.car")


def test_malformed_post_record_names_it():
    repo = Repository()
    repo.records["app.bsky.feed.post/3kbad"] = {"$type": "app.bsky.feed.post", "text": 42, "createdAt": "2024-01-01T00:00:00Z"}
    with pytest.raises(ParseError, match=r"record app\.bsky\.feed\.post/3kbad: 'text' must be a string"):
        bluesky.parse(repo.car(), "x.car")


def test_text_of_a_car_is_refused_with_a_reason():
    with pytest.raises(ParseError, match="binary"):
        parse_text("anything", "x.car", "bluesky")


def test_link_text():
    assert bluesky.link_text("example.com/a/very/lo...", "https://example.com/a/very/long") == "https://example.com/a/very/long"
    assert bluesky.link_text("the report", "https://example.com/r.pdf") == "the report (https://example.com/r.pdf)"


# Vectors from bluesky-social/atproto-interop-tests (CC0): mst/key_heights.json
# and firehose/commit-proof-fixtures.json. They hold the test repositories to
# the spec: the same keys must give the same tree, to the root CID.
KEY_HEIGHTS = [("", 0), ("asdf", 0), ("blue", 1), ("2653ae71", 0), ("88bfafc7", 2), ("2a92d355", 4),
               ("884976f5", 6), ("app.bsky.feed.post/454397e440ec", 4), ("app.bsky.feed.post/9adeb165882c", 8)]
LEAF = "bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454"
TREES = [
    (["A0/374913", "B1/986427", "C0/451630", "E0/670489", "F1/085263", "G0/765327"],
     "bafyreicraprx2xwnico4tuqir3ozsxpz46qkcpox3obf5bagicqwurghpy"),
    (["A0/374913", "B0/601692", "C2/014073", "D0/952776", "E0/670489"],
     "bafyreibxh4iztp5l2yshz3ectg2qjpeyprpw2gogao3pvceowpq3k3thya"),
    (["A0/374913", "B2/827649", "C0/451630", "D2/269196"], "bafyreign6kxoll35r5f2ske6hjx7vg56aw3jn6r5hcopgrepzafpvohr2a"),
]


def test_test_repositories_follow_the_spec_vectors():
    import base64

    from tests.bluesky_car import build_tree

    assert [(key, key_layer(key)) for key, _ in KEY_HEIGHTS] == KEY_HEIGHTS
    leaf = base64.b32decode(LEAF[1:].upper() + "=" * (-len(LEAF[1:]) % 8))
    for keys, root in TREES:
        blocks = {}

        def put(value):
            block = libipld.encode_dag_cbor(value)
            blocks[cid_of(block)] = libipld.decode_dag_cbor(block)
            return cid_of(block)

        tree_root = build_tree([(key, leaf) for key in keys], put)
        assert libipld.encode_cid(tree_root) == root
        # And the reader walks that spec tree back to every key, in order.
        assert list(bluesky.walk_tree(blocks, tree_root, ValueError)) == keys
