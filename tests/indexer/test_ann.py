"""Approximate search above the size threshold: same top results as exact, filters and hybrid intact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexer import ann
from indexer.errors import IndexCorrupt
from indexer.serving import Searcher
from indexer.storage import Filters
from indexer.index.writer import IndexWriter


def _clustered_unit_vectors(count: int, dim: int = 384, topics: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, topics, count)] + 0.7 * rng.standard_normal((count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_index_type_follows_the_threshold():
    assert ann.index_type_for(999, 1000) == "flat"
    approximate = ann.index_type_for(1000, 1000)
    assert approximate != "flat"
    assert ann.index_type_for(2_000_000) != "flat"
    assert ann.index_type_for(ann.DEFAULT_THRESHOLD - 1) == "flat"


def test_unknown_index_type_is_a_named_error():
    with pytest.raises(IndexCorrupt, match="unknown index type 'annoy'"):
        ann.build_index("annoy", 4, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))


def test_approximate_top_ten_matches_exact_on_5k_vectors():
    vectors = _clustered_unit_vectors(5000)
    ids = np.arange(10_000, 15_000, dtype=np.int64)
    rng = np.random.default_rng(1)
    queries = vectors[rng.integers(0, 5000, 200)] + 0.05 * rng.standard_normal((200, 384)).astype(np.float32)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    exact = ann.build_index("flat", 384, vectors, ids)
    index_type = ann.index_type_for(len(vectors), 1000)
    assert index_type != "flat"
    approximate = ann.build_index(index_type, 384, vectors, ids)
    _, truth = exact.search(queries, 10)
    _, found = approximate.search(queries, 10, params=ann.search_parameters(index_type))
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found)])
    assert recall >= 0.95
    # Row ids, not positions, and reconstruct works (hybrid mode needs it).
    assert set(found.ravel()) <= set(ids.tolist())
    np.testing.assert_allclose(approximate.reconstruct(10_042), vectors[42], atol=1e-6)
    # A selector restricts the approximate search too.
    allowed = ids[::7]
    selector = ann.search_parameters(index_type, __import__("faiss").IDSelectorBatch(allowed))
    _, restricted = approximate.search(queries[:20], 10, params=selector)
    assert set(restricted.ravel()[restricted.ravel() >= 0]) <= set(allowed.tolist())


@pytest.fixture
def approximate_index(tmp_path, monkeypatch, embedder, seed_takes):
    from embeddings import DEFAULT_MODEL

    with IndexWriter(tmp_path / "index", ann_threshold=10) as writer:
        writer.replace_all(seed_takes, embedder, model=DEFAULT_MODEL)
    return tmp_path / "index"


def test_manifest_records_the_approximate_type_and_search_agrees_with_exact(approximate_index, embedder, searcher):
    manifest = json.loads((approximate_index / "manifest.json").read_text())
    assert manifest["index_type"] == ann.index_type_for(manifest["count"], 10) != "flat"
    assert searcher.manifest.index_type == "flat"
    approximate = Searcher(approximate_index, embedder=embedder)
    assert approximate.stats()["index_type"] == manifest["index_type"]
    for mode in ("dense", "hybrid"):
        for query in ("what about compute governance", "guillotines", "measuring AI systems"):
            got = [r.take.id for r in approximate.search(query, 5, mode=mode)]
            expected = [r.take.id for r in searcher.search(query, 5, mode=mode)]
            assert got == expected, (mode, query)
    thread = searcher.search("compute", 1)[0].take.thread_id
    filtered = approximate.search("compute", 5, mode="dense", filters=Filters(thread_id=thread))
    assert filtered and all(r.take.thread_id == thread for r in filtered)
    approximate.close()


def _ranking(index_dir, embedder, queries=("what about compute governance", "guillotines", "open source models")):
    searcher = Searcher(index_dir, embedder=embedder)
    try:
        return {(mode, query): [r.take.id for r in searcher.search(query, 8, mode=mode)] for mode in ("dense", "hybrid") for query in queries}
    finally:
        searcher.close()


def test_a_trained_index_is_saved_and_reused_by_the_next_load(approximate_index, embedder, caplog):
    from indexer.index.layout import TRAINED_INDEX_NAME as ANN_CACHE

    first = _ranking(approximate_index, embedder)
    assert (approximate_index / ANN_CACHE).is_file()
    with caplog.at_level("INFO", logger="indexer.index.snapshot"):
        again = _ranking(approximate_index, embedder)
    assert any("reusing the trained" in record.getMessage() for record in caplog.records)
    assert again == first


def test_the_saved_index_is_brought_up_to_date_or_set_aside(approximate_index, embedder, seed_takes, caplog):
    import dataclasses

    from embeddings import DEFAULT_MODEL
    from indexer.index.layout import TRAINED_INDEX_NAME as ANN_CACHE

    def reused() -> bool:
        return any("reusing the trained" in record.getMessage() for record in caplog.records)

    _ranking(approximate_index, embedder)  # trains and saves generation 1
    new_take = dataclasses.replace(seed_takes[0], id="new-1", text="Compute thresholds are a blunt but workable lever.")
    with IndexWriter(approximate_index, ann_threshold=10) as writer:
        writer.add([new_take], embedder, model=DEFAULT_MODEL)
    with caplog.at_level("INFO", logger="indexer.index.snapshot"):
        added = _ranking(approximate_index, embedder)
    assert reused()  # generation 1's trained index plus the new segment
    (approximate_index / ANN_CACHE).unlink()
    assert added == _ranking(approximate_index, embedder)  # from scratch: the same answers

    # A removal is applied to the saved index too: no training again.
    with IndexWriter(approximate_index, ann_threshold=10) as writer:
        writer.remove([seed_takes[5].id])
    caplog.clear()
    with caplog.at_level("INFO", logger="indexer.index.snapshot"):
        removed = _ranking(approximate_index, embedder)
    assert reused()
    assert seed_takes[5].id not in {take_id for ids in removed.values() for take_id in ids}
    (approximate_index / ANN_CACHE).unlink()
    assert removed == _ranking(approximate_index, embedder)

    # A rebuild writes new segments: the saved index no longer applies and is not used.
    with IndexWriter(approximate_index, ann_threshold=10) as writer:
        writer.rebuild(embedder, model=DEFAULT_MODEL)
    caplog.clear()
    with caplog.at_level("INFO", logger="indexer.index.snapshot"):
        rebuilt = _ranking(approximate_index, embedder)
    assert not reused()
    assert rebuilt == removed


def test_a_damaged_saved_index_means_a_normal_load(approximate_index, embedder):
    from indexer.index.layout import TRAINED_INDEX_NAME as ANN_CACHE

    first = _ranking(approximate_index, embedder)
    (approximate_index / ANN_CACHE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert _ranking(approximate_index, embedder) == first
    (approximate_index / ANN_CACHE).write_bytes((approximate_index / ANN_CACHE).read_bytes()[:100])
    assert _ranking(approximate_index, embedder) == first


def test_a_served_approximate_index_takes_a_removal_without_a_full_load(approximate_index, embedder, seed_takes):
    from indexer.index.snapshot import extend, load_snapshot

    searcher = Searcher(approximate_index, embedder=embedder)
    served = searcher.snapshot
    gone = searcher.search("what about compute governance", 1, mode="dense")[0].take.id
    with IndexWriter(approximate_index, ann_threshold=10) as writer:
        writer.remove([gone])
    fresh = load_snapshot(approximate_index)
    # The served generation, minus the removed take, without training: what a refresh does.
    extended = extend(served, fresh.manifest, ann.stored_ids(fresh.faiss_index), approximate_index)
    assert extended is not None
    assert sorted(ann.stored_ids(extended)) == sorted(ann.stored_ids(fresh.faiss_index))
    assert extended.ntotal == served.manifest.count - 1
    assert ann.stored_ids(served.faiss_index).size == served.manifest.count  # the served copy is untouched
    assert searcher.refresh()
    assert gone not in [r.take.id for r in searcher.search("what about compute governance", 10, mode="hybrid")]
    searcher.close()


@pytest.mark.parametrize("index_type", ["flat", "hnsw16", "ivf64"])
def test_mean_direction_is_the_unit_mean_of_the_stored_vectors_after_removals(index_type):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64) * 3
    index = ann.build_index(index_type, 16, vectors, ids)
    if index_type != "hnsw16":  # HNSW cannot remove
        ann.remove_ids(index, ids[:1000])
        vectors = vectors[1000:]
    expected = vectors.mean(axis=0)
    np.testing.assert_allclose(ann.mean_direction(index, 16), expected / np.linalg.norm(expected), atol=1e-5)
    assert not ann.mean_direction(ann.build_index(index_type, 16, vectors[:0], ids[:0]), 16).any()
