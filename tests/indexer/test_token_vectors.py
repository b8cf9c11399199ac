"""Token vectors kept at indexing (indexer/token_vectors.py): their encoding, old indexes, damage, turning them off."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from embeddings import DEFAULT_MODEL
from indexer import token_vectors
from indexer.index import EmbeddedStore
from indexer.index.check import check_index, repair_index
from indexer.index.layout import CACHE_NAME, database_path
from indexer.search import Ranker
from tests.indexer.test_store_contract import QUERY, live_row_ids, new_take, within_int8_rounding


def test_encoding_round_trips_within_half_a_step_and_binds_the_text(embedder):
    text = "Compute thresholds are a blunt but auditable instrument."
    (tokens,) = embedder.token_vectors([text])
    value = token_vectors.encode(tokens, text)
    assert len(value) == 4 + len(tokens) * (embedder.dim + 4)
    assert within_int8_rounding(token_vectors.decode(value, text, embedder.dim), tokens)
    assert token_vectors.decode(value, text + " ", embedder.dim) is None
    damaged = bytearray(value)
    damaged[len(value) // 2] ^= 0x01
    assert token_vectors.decode(bytes(damaged), text, embedder.dim) is None
    assert token_vectors.decode(value[:-1], text, embedder.dim) is None
    assert token_vectors.decode(None, text, embedder.dim) is None


def test_scores_equal_those_of_computed_token_vectors_up_to_int8_rounding(seed_index, index_copy, embedder):
    """The same ranking whether a take's token vectors are read (int8) or computed (float32)."""
    stored = EmbeddedStore(seed_index)
    computed = EmbeddedStore(index_copy)
    with sqlite3.connect(database_path(index_copy)) as connection:
        connection.execute("UPDATE takes SET token_vectors = NULL")
    try:
        for query in (QUERY, "who should pay for AI auditors", "open weights and misuse"):
            read = {result.take.id: result.score for result in Ranker(embedder).search(stored.load(), query, 10)}
            before = embedder.token_texts_encoded
            fresh = {result.take.id: result.score for result in Ranker(embedder).search(computed.load(), query, 10)}
            assert embedder.token_texts_encoded > before
            shared = read.keys() & fresh.keys()
            assert len(shared) >= 9, query
            assert max(abs(read[take_id] - fresh[take_id]) for take_id in shared) < 0.01, query
    finally:
        stored.close()
        computed.close()


def make_old(index_dir) -> None:
    """Make an index look as if written before token vectors were kept: no column, no cached ones."""
    with sqlite3.connect(database_path(index_dir)) as connection:
        connection.execute("ALTER TABLE takes DROP COLUMN token_vectors")
    with sqlite3.connect(index_dir / CACHE_NAME) as connection:
        connection.execute("ALTER TABLE vectors DROP COLUMN token_vectors")


def test_an_index_made_before_the_column_searches_then_gains_it_on_open(index_copy, embedder, seed_takes):
    make_old(index_copy)
    store = EmbeddedStore(index_copy)
    try:
        generation = store.load()
        assert generation.token_vectors(live_row_ids(generation)) == {}
        before = embedder.token_texts_encoded
        assert len(Ranker(embedder).search(generation, QUERY, 10)) == 10
        assert embedder.token_texts_encoded > before
        _, notes = check_index(index_copy)
        assert any("made before token vectors were stored" in note for note in notes)
        with store.writer() as writer:
            # Opening for writing adds the column; the takes are all still there.
            assert writer.live_takes() == seed_takes
            report = writer.add([new_take(1)], embedder, model=DEFAULT_MODEL)
            rebuilt = writer.rebuild(embedder, model=DEFAULT_MODEL)
        assert report.added == 1 and rebuilt.embedded == 0
        generation = store.load()
        row_ids = live_row_ids(generation)
        stored = generation.token_vectors(row_ids)
        # Only the new take has them: cached texts are never embedded again.
        assert [generation.takes(list(stored))[row_id].id for row_id in stored] == ["dana-1"]
        problems, notes = check_index(index_copy)
        assert problems == [] and any("99 takes have no stored token vectors" in note for note in notes)
    finally:
        store.close()


def test_check_finds_damaged_token_vectors_and_repair_stores_them_again(index_copy, embedder):
    with sqlite3.connect(database_path(index_copy)) as connection:
        row_id, value = connection.execute("SELECT rowid, token_vectors FROM takes ORDER BY rowid LIMIT 1").fetchone()
        damaged = bytearray(value)
        damaged[100] ^= 0x10
        connection.execute("UPDATE takes SET token_vectors = ? WHERE rowid = ?", (bytes(damaged), row_id))
    store = EmbeddedStore(index_copy)
    try:
        generation = store.load()
        # A search never scores with damaged token vectors: that take's are computed.
        assert row_id not in generation.token_vectors([row_id])
        problems, _ = check_index(index_copy)
        assert [problem.kind for problem in problems] == ["tokens"]
        assert "1 takes fail their checksum" in problems[0].message or "of 1 takes fail" in problems[0].message
        actions, remaining = repair_index(index_copy, lambda model, backend: embedder)
        assert remaining == [] and any("token vectors of 1 takes" in action for action in actions)
        assert row_id in store.load().token_vectors([row_id])
    finally:
        store.close()


def test_storing_them_can_be_turned_off(tmp_path, embedder, seed_takes, monkeypatch):
    from search_api.settings import Settings

    store = EmbeddedStore(tmp_path / "index", store_token_vectors=False)
    try:
        with store.writer() as writer:
            writer.replace_all(seed_takes[:20], embedder, model=DEFAULT_MODEL)
        generation = store.load()
        assert generation.token_vectors(live_row_ids(generation)) == {}
        before = embedder.token_texts_encoded
        assert Ranker(embedder).search(generation, QUERY, 5)
        assert embedder.token_texts_encoded > before
    finally:
        store.close()
    monkeypatch.setenv("TAKES_STORE_TOKENS", "0")
    assert Settings().store_tokens is False


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_the_batch_pass_gives_encode_and_token_vectors(backend, request, seed_takes):
    model = request.getfixturevalue("embedder" if backend == "onnx" else "torch_embedder")
    texts = [take.text for take in seed_takes[:40]]
    vectors, tokens = model.encode_with_token_vectors(texts)
    assert np.allclose(vectors, model.encode(texts), atol=1e-5)
    for mine, alone in zip(tokens, model.token_vectors(texts)):
        assert mine.shape == alone.shape and np.allclose(mine, alone, atol=1e-4)


def test_a_cache_entry_rewritten_without_token_vectors_keeps_its_own(tmp_path):
    from indexer.index.embedding_cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / CACHE_NAME)
    vector = np.full(4, 0.5, np.float32)
    cache.put_many("model", [("digest", vector, b"stored")])
    cache.put_many("model", [("digest", vector)])
    tokens: dict[str, bytes] = {}
    assert list(cache.get_many("model", ["digest"], tokens=tokens)) == ["digest"] and tokens == {"digest": b"stored"}
    cache.put_many("model", [("digest", vector, b"newer")])
    cache.get_many("model", ["digest"], tokens=tokens)
    assert tokens == {"digest": b"newer"}
    cache.close()
