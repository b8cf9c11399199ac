"""A server's refresh builds the next generation from the one it serves, and must equal a fresh load."""

from __future__ import annotations

import numpy as np

from embeddings import DEFAULT_MODEL
from indexer import ann
from indexer.models import Take
from indexer.index.snapshot import load_snapshot
from indexer.serving import Searcher
from indexer.index.writer import IndexWriter


def new_thread(count: int) -> list[Take]:
    return [
        Take(
            id=f"tester-2024-05-01-{n}", text=f"Take {n}: export controls on accelerators shape who can train frontier models, part {n}.",
            author="Tester", handle="@tester", date="2024-05-01", thread_id="tester-2024-05-01",
            position=n, thread_size=count, url=None, source="new.txt",
        )
        for n in range(1, count + 1)
    ]


def ids_and_vectors(snapshot):
    ids = ann.stored_ids(snapshot.faiss_index)
    order = np.argsort(ids)
    vectors = np.vstack([snapshot.faiss_index.reconstruct(int(i)) for i in ids[order]])
    return ids[order], vectors


def test_refresh_after_add_and_remove_equals_a_fresh_load(index_copy, embedder):
    searcher = Searcher(index_copy, embedder=embedder)
    served = searcher.snapshot
    with IndexWriter(index_copy) as writer:
        writer.add(new_thread(3), embedder, model=DEFAULT_MODEL)
    assert searcher.refresh()
    incremental = searcher.snapshot
    assert incremental.faiss_index is not served.faiss_index
    assert served.faiss_index.ntotal == 99  # the snapshot in use was not changed in place
    fresh = load_snapshot(index_copy)
    for a, b in zip(ids_and_vectors(incremental), ids_and_vectors(fresh)):
        np.testing.assert_array_equal(a, b)

    with IndexWriter(index_copy) as writer:
        writer.remove(["tester-2024-05-01-2"], thread_id=None)
    assert searcher.refresh()
    assert searcher.snapshot.faiss_index.ntotal == 101
    for a, b in zip(ids_and_vectors(searcher.snapshot), ids_and_vectors(load_snapshot(index_copy))):
        np.testing.assert_array_equal(a, b)
    found = [r.take.id for r in searcher.search("export controls on accelerators", 5)]
    assert "tester-2024-05-01-1" in found and "tester-2024-05-01-2" not in found


def test_a_rebuild_is_loaded_from_scratch(index_copy, embedder):
    searcher = Searcher(index_copy, embedder=embedder)
    with IndexWriter(index_copy) as writer:
        writer.rebuild(embedder, model=DEFAULT_MODEL)
    assert searcher.refresh()
    assert searcher.snapshot.faiss_index.ntotal == 99
    assert [s.generation for s in searcher.manifest.segments] == [searcher.snapshot.generation]


def test_the_manifest_records_the_backend_and_search_follows_it(tmp_path, seed_takes):
    from embeddings import load_embedder

    onnx = load_embedder(DEFAULT_MODEL, "onnx", cache_dir=str(tmp_path))
    with IndexWriter(tmp_path) as writer:
        writer.replace_all(seed_takes[:20], onnx, model=DEFAULT_MODEL)
    assert load_snapshot(tmp_path).manifest.backend == "onnx"
    searcher = Searcher(tmp_path)
    assert searcher.backend == "onnx" and searcher.embedder is onnx
    assert searcher.search(seed_takes[3].text, 1, mode="dense")[0].take.id == seed_takes[3].id


def test_live_row_array_is_every_row_visible_at_each_generation(index_copy, embedder):
    from indexer.index.layout import iter_live_rows, live_row_array
    from indexer.index.manifest import open_index_database

    with IndexWriter(index_copy) as writer:
        writer.add(new_thread(3), embedder, model=DEFAULT_MODEL)
    with IndexWriter(index_copy) as writer:
        writer.remove(["tester-2024-05-01-2"], thread_id=None)
    connection, manifest = open_index_database(index_copy)
    try:
        for generation in range(manifest.generation + 1):
            expected = np.fromiter(iter_live_rows(connection, generation), dtype=np.int64)
            found = live_row_array(connection, generation)
            assert found.dtype == np.int64 and found.tolist() == expected.tolist()
        assert len(live_row_array(connection, manifest.generation)) == manifest.count
        assert live_row_array(connection, 0).tolist() == []
    finally:
        connection.close()
