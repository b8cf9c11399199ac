"""The compressed index type (ivfNsq8): SQ8 candidates re-scored exactly from the mapped segment vectors."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from indexer import ann
from indexer.index import EmbeddedStore
from indexer.index.check import check_index
from indexer.index.segments import SegmentVectors
from indexer.index.snapshot import load_snapshot
from indexer.index.writer import IndexWriter

# Varied wording around the seed takes, so that the vectors spread like real
# ones (near-duplicates, shared topics) over a few thousand rows.
_OPENINGS = ["", "Hot take: ", "Reply: ", "Honestly, ", "Quick thought. ", "Counterpoint: ", "PSA: ", "lol "]
_CLOSINGS = ["", " Thoughts?", " #AI", " More soon.", " (via a friend)", " I half agree.", " Source: a paper.", " 🧵"]


def _varied_takes(seed_takes, count: int, seed: int, seen: set | None = None) -> list:
    rng = np.random.default_rng(seed)
    takes, seen = [], set() if seen is None else seen
    while len(takes) < count:
        number = len(takes)
        base = seed_takes[int(rng.integers(len(seed_takes)))]
        text = f"{_OPENINGS[rng.integers(len(_OPENINGS))]}{base.text}{_CLOSINGS[rng.integers(len(_CLOSINGS))]}"
        if rng.random() < 0.5:
            other = seed_takes[int(rng.integers(len(seed_takes)))].text.split(".")[0]
            text = f"{text} {other}."
        if text in seen:
            continue
        seen.add(text)
        takes.append(replace(base, id=f"varied-{seed}-{number}", text=text, thread_id=f"varied-thread-{number // 10}", position=number % 10 + 1))
    return takes


@pytest.fixture(scope="module")
def compressed_index(tmp_path_factory, embedder, seed_takes):
    from embeddings import DEFAULT_MODEL

    index_dir = tmp_path_factory.mktemp("compressed") / "index"
    with IndexWriter(index_dir, ann_threshold=1000, compressed_threshold=1000) as writer:
        writer.replace_all(_varied_takes(seed_takes, 2000, seed=0), embedder, model=DEFAULT_MODEL)
    return index_dir


def test_index_type_turns_compressed_at_its_threshold():
    assert ann.index_type_for(ann.COMPRESSED_THRESHOLD - 1) == "ivf2048"
    assert ann.index_type_for(ann.COMPRESSED_THRESHOLD) == "ivf2048sq8"
    assert ann.index_type_for(10_000_000) == "ivf8192sq8"
    assert ann.is_compressed("ivf64sq8") and not ann.is_compressed("ivf64") and not ann.is_compressed("flat")


def test_compressed_top_ten_equals_exact_search_on_real_vectors(compressed_index, embedder, seed_takes):
    snapshot = load_snapshot(compressed_index)
    assert snapshot.manifest.index_type.endswith("sq8") and snapshot.full_vectors is not None
    ids = np.sort(ann.stored_ids(snapshot.faiss_index))
    vectors = snapshot.full_vectors.gather(ids)
    # Queries the index has not seen: other wordings of the same takes, and the seed takes themselves.
    known = {take.text for take in _varied_takes(seed_takes, 2000, seed=0)}
    queries = embedder.encode([take.text for take in _varied_takes(seed_takes, 100, seed=1, seen=known)] + [t.text for t in seed_takes[:50]])
    differing = []
    for number, query in enumerate(queries):
        scores = vectors @ query
        order = np.lexsort((ids, -scores))[:10]
        found = snapshot_nearest(snapshot, query, 10)
        # Whatever is returned carries its exact inner product, best first.
        exact_of = dict(zip(ids.tolist(), scores.tolist()))
        np.testing.assert_allclose([score for _, score in found], [exact_of[row] for row, _ in found], rtol=0, atol=1e-5)
        if [row for row, _ in found] != ids[order].tolist():
            differing.append(len(set(ids[order].tolist()) - {row for row, _ in found}))
    # The same ten takes in the same order for (nearly) every query. The
    # tolerance is the IVF probe's, not the codes': at nprobe 24 of this set's
    # 51 lists, two queries of 150 have a neighbour in a list not probed (3 of
    # the 1,500 neighbours; re-scoring cannot add them), recall@10 0.998.
    assert ann.COMPRESSED_NPROBE == 24
    assert len(differing) <= 2 and sum(differing) <= 3, differing


def snapshot_nearest(snapshot, query, depth):
    from indexer.index.snapshot import nearest

    return nearest(snapshot, query, depth)


def test_filtered_and_by_id_reads_use_the_segment_vectors(compressed_index, embedder):
    from indexer.index.snapshot import inner_products, nearest

    snapshot = load_snapshot(compressed_index)
    ids = np.sort(ann.stored_ids(snapshot.faiss_index))
    vectors = snapshot.full_vectors.gather(ids)
    query = embedder.encode(["should frontier models be licensed?"])[0]
    allowed = ids[::3]
    scores = vectors[::3] @ query
    found = nearest(snapshot, query, 10, allowed)
    assert [row for row, _ in found] == allowed[np.lexsort((allowed, -scores))[:10]].tolist()
    some = ids[[0, 7, 100]].tolist()
    products = inner_products(snapshot, query, some)
    np.testing.assert_allclose([products[row] for row in some], vectors[[0, 7, 100]] @ query, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(ann.mean_direction(snapshot.faiss_index, 384)), 1, atol=1e-5)
    exact_mean = vectors.mean(axis=0) / np.linalg.norm(vectors.mean(axis=0))
    # Weighted centroids stand in for the codes' mean.
    assert float(exact_mean @ ann.mean_direction(snapshot.faiss_index, 384)) > 0.999


def test_compressed_index_round_trips_through_save_load_and_check(compressed_index, embedder, seed_takes, tmp_path):
    import shutil

    from embeddings import DEFAULT_MODEL

    copy = tmp_path / "index"
    shutil.copytree(compressed_index, copy)
    first = load_snapshot(copy)  # trains, saves the trained index
    assert (copy / "ann-cache.faiss").exists()
    query = embedder.encode(["compute governance and export controls"])[0]
    again = load_snapshot(copy)  # reads the saved one
    assert snapshot_nearest(again, query, 10) == snapshot_nearest(first, query, 10)
    problems, _ = check_index(copy)
    assert problems == []
    # Adding takes extends the saved index; the new segment is mapped too.
    store = EmbeddedStore(copy, ann_threshold=1000, compressed_threshold=1000)
    with store.writer() as writer:
        known = {take.text for take in _varied_takes(seed_takes, 2000, seed=0)}
        report = writer.add(_varied_takes(seed_takes, 30, seed=2, seen=known), embedder, model=DEFAULT_MODEL)
    served = store.load(store.load())
    assert served.snapshot.manifest.index_type.endswith("sq8")
    assert report.added > 0
    assert served.snapshot.faiss_index.ntotal == served.snapshot.manifest.count == first.manifest.count + report.added
    newest = served.snapshot.manifest.segments[-1]
    new_ids = SegmentVectors.open(copy, (newest,), ann.stored_ids(served.snapshot.faiss_index), 384)
    assert new_ids is not None
    # One flipped byte in a segment's vector block: `takes check` names the file.
    segment = copy / served.snapshot.manifest.segments[0].file
    data = bytearray(segment.read_bytes())
    data[200] ^= 0x40
    segment.write_bytes(bytes(data))
    problems, _ = check_index(copy)
    assert [problem.path for problem in problems] == [str(segment)]


def test_a_segment_that_is_not_a_flat_index_cannot_be_read_in_place(compressed_index, tmp_path):
    import shutil

    from indexer.errors import IndexCorrupt
    from indexer.index.manifest import open_index_database

    copy = tmp_path / "index"
    shutil.copytree(compressed_index, copy)
    connection, manifest = open_index_database(copy)
    connection.close()
    segment = copy / manifest.segments[0].file
    segment.write_bytes(segment.read_bytes()[:-8])
    with pytest.raises(IndexCorrupt, match="cannot be read in place"):
        SegmentVectors.open(copy, manifest.segments, np.zeros(0, np.int64), 384)


def test_takes_copy_reads_every_vector_of_a_compressed_index(tmp_path, embedder, seed_takes):
    # A compressed index keeps no direct map: copying it out (to PostgreSQL or
    # another folder) must read the vectors from the segments, not FAISS.
    from embeddings import DEFAULT_MODEL
    from indexer.postgres.copy import read_embedded

    takes = _varied_takes(seed_takes, 300, seed=2)
    with IndexWriter(tmp_path / "index", ann_threshold=100, compressed_threshold=100) as writer:
        writer.replace_all(takes, embedder, model=DEFAULT_MODEL)
    assert load_snapshot(tmp_path / "index").manifest.index_type.endswith("sq8")
    copied, vectors, _, _, _ = read_embedded(tmp_path / "index")
    # Every stored take (the writer folds near-identical texts), each with its own vector.
    assert len(copied) == len(vectors) == len(ann.stored_ids(load_snapshot(tmp_path / "index").faiss_index)) > 250
    np.testing.assert_allclose(vectors, embedder.encode([take.text for take in copied]), atol=1e-6)
