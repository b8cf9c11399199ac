"""Query micro-batching: same vectors and results as unbatched, and real coalescing."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from indexer.serving import Searcher
from search_api.app import create_app
from indexer.query_batching import QueryBatcher
from search_api.settings import Settings

QUERIES = [
    "what about compute governance",
    "guillotines",
    "should AI labs publish their models",
    "export controls on chips",
    "who measures AI capabilities",
    "regulation of frontier models",
    "open source and safety",
    "government should build evaluation capacity",
]


def _run_concurrently(function, items, threads: int = 8) -> list:
    """``function(item)`` for every item, started together from ``threads`` threads."""
    results = [None] * len(items)
    barrier = threading.Barrier(threads)

    def worker(offset: int) -> None:
        barrier.wait()
        for index in range(offset, len(items), threads):
            results[index] = function(items[index])

    pool = [threading.Thread(target=worker, args=(offset,)) for offset in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return results


@pytest.fixture
def batcher(embedder):
    batcher = QueryBatcher(embedder.encode)
    yield batcher
    batcher.close()


def test_batched_vectors_match_one_at_a_time_encoding(embedder, batcher):
    batched = _run_concurrently(batcher.encode_one, QUERIES * 3)
    for query, vector in zip(QUERIES * 3, batched):
        assert vector.shape == (1, embedder.dim)
        np.testing.assert_allclose(vector, embedder.encode([query]), atol=1e-5)


def test_concurrent_queries_from_eight_threads_are_coalesced(batcher):
    _run_concurrently(batcher.encode_one, QUERIES * 8)
    assert batcher.requests == len(QUERIES) * 8
    assert batcher.batches < batcher.requests


def test_a_lone_query_is_encoded_in_its_own_thread(embedder, batcher):
    """An idle batcher hands nothing to its worker: the hand-off would only add two thread switches."""
    for query in QUERIES:
        np.testing.assert_allclose(batcher.encode_one(query), embedder.encode([query]), atol=1e-5)
    assert batcher.direct == batcher.requests == len(QUERIES)


def test_a_query_s_token_vectors_come_from_the_run_that_gives_its_vector(embedder):
    """Late interaction's query tokens ride on the vector's model run: one run a query, batched or not."""
    batcher = QueryBatcher(embedder.encode, encode_with_tokens=embedder.encode_with_token_vectors)
    runs, token_runs = embedder.texts_encoded, getattr(embedder, "token_texts_encoded", 0)
    try:
        assert batcher.with_tokens
        queries = QUERIES * 3
        # Callers that want tokens and callers that do not share the batches.
        found = _run_concurrently(
            lambda query: batcher.encode_one_with_tokens(query) if len(query) % 2 else batcher.encode_one(query), queries
        )
    finally:
        batcher.close()
    assert embedder.texts_encoded - runs == len(queries)
    assert getattr(embedder, "token_texts_encoded", 0) == token_runs
    for query, result in zip(queries, found):
        expected_vector, expected_tokens = embedder.encode_with_tokens(query)
        if len(query) % 2:
            vector, tokens = result
            np.testing.assert_allclose(tokens, expected_tokens, atol=1e-5)
        else:
            vector = result
        np.testing.assert_allclose(vector, expected_vector[None, :], atol=1e-5)


def test_a_batcher_without_token_encoding_says_so(embedder, batcher):
    assert not batcher.with_tokens
    with pytest.raises(ValueError, match="encode_with_tokens"):
        batcher.submit("guillotines", tokens=True)


def test_batched_search_returns_the_same_results(seed_index, embedder, searcher, batcher):
    batched = Searcher(seed_index, embedder=embedder, query_encoder=batcher)
    for mode in ("dense", "hybrid"):
        found = _run_concurrently(lambda query: batched.search(query, 10, mode=mode), QUERIES)
        for query, results in zip(QUERIES, found):
            expected = searcher.search(query, 10, mode=mode)
            assert [r.take.id for r in results] == [r.take.id for r in expected]
            np.testing.assert_allclose([r.score for r in results], [r.score for r in expected], atol=1e-5)
    batched.close()


def test_an_encoding_error_reaches_every_caller_and_the_worker_survives(embedder):
    def encode(texts):
        if "boom" in texts:
            raise ValueError("model failed")
        return embedder.encode(texts)

    batcher = QueryBatcher(encode, max_batch=1)
    try:
        with pytest.raises(ValueError, match="model failed"):
            batcher.encode_one("boom")
        np.testing.assert_allclose(batcher.encode_one("guillotines"), embedder.encode(["guillotines"]), atol=1e-5)
    finally:
        batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("after close")


def test_the_server_batches_concurrent_requests_and_restores_the_searcher(seed_index, searcher):
    settings = Settings(index_dir=seed_index, reload_interval=0)
    with TestClient(create_app(settings, searcher)) as client:
        batcher = client.app.state.takes.query_batcher
        assert searcher.query_encoder is batcher
        responses = _run_concurrently(
            lambda query: client.get("/search", params={"q": query, "k": 5, "mode": "dense"}), QUERIES * 4
        )
        assert all(response.status_code == 200 for response in responses)
        assert batcher.requests == len(QUERIES) * 4
        for query, response in zip(QUERIES * 4, responses):
            assert [r["id"] for r in response.json()["results"]] == [
                r.take.id for r in searcher.search(query, 5, mode="dense")
            ]
    # Shutdown hands the shared searcher back unbatched.
    assert searcher.query_encoder is None


def test_a_served_hybrid_search_runs_the_model_once(seed_index, searcher):
    """The server's default ranking takes the query's tokens from the batcher's run, not from a second pass."""
    settings = Settings(index_dir=seed_index, reload_interval=0)
    with TestClient(create_app(settings, searcher)) as client:
        assert client.app.state.takes.query_batcher.with_tokens
        embedder = searcher.embedder
        assert client.get("/search", params={"q": QUERIES[0]}).status_code == 200  # candidates' tokens warm
        runs, token_runs = embedder.texts_encoded, getattr(embedder, "token_texts_encoded", 0)
        assert client.get("/search", params={"q": QUERIES[0]}).status_code == 200
        assert embedder.texts_encoded - runs == 1
        assert getattr(embedder, "token_texts_encoded", 0) == token_runs


def test_batching_can_be_turned_off(seed_index, searcher):
    settings = Settings(index_dir=seed_index, reload_interval=0, query_batching=False)
    with TestClient(create_app(settings, searcher)) as client:
        assert client.app.state.takes.query_batcher is None
        assert client.get("/search", params={"q": "guillotines"}).status_code == 200
