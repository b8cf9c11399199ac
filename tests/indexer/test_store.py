"""The on-disk index: round trip, stable ids, generations, model mismatch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embeddings import DEFAULT_MODEL
from indexer.errors import IndexNotFound, ModelMismatch
from indexer.index.snapshot import load_snapshot
from indexer.serving import Searcher
from indexer.sources import read_takes
from indexer.index.manifest import open_index_database
from indexer.index.writer import IndexWriter
from tests.samples import nearest_takes


def test_round_trip_keeps_every_field(seed_index, seed_takes, searcher):
    stored = {take.id: take for take in seed_takes}
    for take in seed_takes[:5] + seed_takes[-5:]:
        assert searcher.get_take(take.id) == stored[take.id]
    assert searcher.manifest.count == len(seed_takes)
    assert searcher.snapshot.faiss_index.ntotal == len(seed_takes)


def test_vectors_are_the_models_vectors(seed_index, seed_takes, searcher, embedder):
    take = seed_takes[40]
    expected = embedder.encode([take.text])[0]
    (nearest, score), = nearest_takes(searcher.snapshot, expected, 1)
    assert nearest.id == take.id
    assert score == pytest.approx(1.0, abs=1e-4)


def test_manifest_records_model_dimension_count_generation(seed_index, seed_takes):
    manifest = json.loads((seed_index / "manifest.json").read_text())
    assert manifest["model"] == DEFAULT_MODEL
    assert manifest["dim"] == 384
    assert manifest["count"] == len(seed_takes)
    assert manifest["generation"] >= 1
    assert manifest["format_version"] == 2
    assert all(segment["checksum"].startswith("crc32:") for segment in manifest["segments"])


def test_ids_are_stable_across_rebuilds(index_copy, seed_takes, embedder):
    connection, _ = open_index_database(index_copy)
    before = sorted(row[0] for row in connection.execute("SELECT id FROM takes WHERE removed_generation IS NULL"))
    connection.close()
    with IndexWriter(index_copy) as writer:
        writer.replace_all(read_takes(_seed_path()), embedder, model=DEFAULT_MODEL)
    connection, manifest = open_index_database(index_copy)
    after = sorted(row[0] for row in connection.execute("SELECT id FROM takes WHERE removed_generation IS NULL"))
    connection.close()
    assert before == after
    assert manifest.generation == 2


def _seed_path():
    from indexer import SEED_CORPUS

    return SEED_CORPUS


def test_each_change_is_a_new_generation_and_old_segments_go(index_copy, seed_takes, embedder):
    with IndexWriter(index_copy) as writer:
        report = writer.remove([seed_takes[0].id])
        assert report.removed == 1
        writer.rebuild(embedder, model=DEFAULT_MODEL)
    snapshot = load_snapshot(index_copy)
    assert snapshot.manifest.count == len(seed_takes) - 1
    assert [segment.generation for segment in snapshot.manifest.segments] == [snapshot.generation]
    assert sorted(p.name for p in (index_copy / "segments").iterdir()) == [f"seg-{snapshot.generation:06d}.faiss"]


def test_missing_index_is_a_named_error(tmp_path):
    with pytest.raises(IndexNotFound, match="takes index"):
        Searcher(tmp_path / "nowhere")


def test_other_model_name_is_a_mismatch_before_loading_it(seed_index):
    with pytest.raises(ModelMismatch) as caught:
        Searcher(seed_index, model="some-other-model")
    message = str(caught.value)
    assert DEFAULT_MODEL in message and "some-other-model" in message and "384" in message


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    """A genuinely different sentence-transformers model: MiniLM plus a 128-d projection."""
    from sentence_transformers import SentenceTransformer, models

    from embeddings import resolve_model_path

    base = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
    dense = models.Dense(in_features=384, out_features=128, bias=False)
    np.random.seed(0)
    model = SentenceTransformer(modules=[*base, dense], device="cpu")
    path = tmp_path_factory.mktemp("projected-model")
    model.save(str(path))
    return path


def test_another_model_path_indexes_and_a_mismatch_names_both(tmp_path, seed_takes, small_model_dir, embedder):
    from embeddings import load_embedder

    other = load_embedder(str(small_model_dir))
    assert other.dim == 128
    with IndexWriter(tmp_path) as writer:
        writer.replace_all(seed_takes[:10], other, model=str(small_model_dir))
    searcher = Searcher(tmp_path, embedder=other)
    assert len(searcher.search("AI policy", 3)) == 3
    with pytest.raises(ModelMismatch) as caught:
        Searcher(tmp_path, embedder=embedder)
    assert str(small_model_dir) in str(caught.value) and DEFAULT_MODEL in str(caught.value)
    # Adding with the wrong model is refused too, and nothing is written.
    with IndexWriter(tmp_path) as writer, pytest.raises(ModelMismatch):
        writer.add(seed_takes[10:12], embedder, model=DEFAULT_MODEL)
    assert load_snapshot(tmp_path).manifest.count == 10


def test_a_take_by_id_reads_an_index_not_the_table(index_copy, seed_takes):
    import sqlite3

    from indexer.index.layout import database_path, visible_clause

    connection = sqlite3.connect(database_path(index_copy))
    # An index written before these indexes existed gets them when a writer next opens it.
    connection.execute("DROP INDEX takes_id")
    connection.commit()
    with IndexWriter(index_copy) as writer:
        writer.remove([seed_takes[0].id], thread_id=None)
    clause, params = visible_clause(1)
    # The query reader.take runs (the served generation may hold rows a later
    # one removed) can be answered from the index: INDEXED BY fails when the
    # named index cannot serve the query. (On 100 rows the planner rightly
    # prefers a scan; on 100k it picks the index.)
    found = connection.execute(f"SELECT id FROM takes INDEXED BY takes_id WHERE id = ? AND {clause}", (seed_takes[0].id, *params)).fetchall()
    assert found == [(seed_takes[0].id,)]
    connection.close()
