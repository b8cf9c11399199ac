"""The server's thread limits reach every thread that searches or encodes.

OpenMP thread counts (FAISS, torch) belong to the thread that sets them: the
request and batching threads must each apply the limit themselves.
"""

from __future__ import annotations

import threading

import faiss
from fastapi.testclient import TestClient

from indexer.search import Searcher
from search_api.app import create_app
from search_api.settings import Settings


def test_thread_setup_runs_once_in_each_searching_thread(seed_index, embedder):
    calls: list[str] = []
    searcher = Searcher(seed_index, embedder=embedder, thread_setup=lambda: calls.append(threading.current_thread().name))

    def search_twice():
        searcher.search("compute", 3)
        searcher.search("export controls", 3)

    workers = [threading.Thread(target=search_twice, name=f"worker-{number}") for number in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(calls) == ["worker-0", "worker-1", "worker-2"]


def test_request_and_batching_threads_run_with_the_configured_openmp_threads(seed_index, embedder):
    """FAISS's OpenMP limit, read from inside the threads that serve a search."""
    seen: dict[str, int] = {}
    searcher = Searcher(seed_index, embedder=embedder)
    original_encode = embedder.encode

    class Spy:
        name, backend, dim = embedder.name, embedder.backend, embedder.dim

        def encode(self, texts, **options):
            seen["batcher"] = faiss.omp_get_max_threads()
            return original_encode(texts, **options)

    searcher._embedder = Spy()
    original_dense = searcher._dense_vector

    def dense(*args, **options):
        result = original_dense(*args, **options)
        seen["request"] = faiss.omp_get_max_threads()
        return result

    searcher._dense_vector = dense
    before = faiss.omp_get_max_threads()
    settings = Settings(index_dir=seed_index, threads=1, reload_interval=0)
    try:
        with TestClient(create_app(settings, searcher)) as client:
            assert client.get("/search", params={"q": "compute governance", "k": 3}).status_code == 200
    finally:
        faiss.omp_set_num_threads(before)
    assert seen == {"batcher": 1, "request": 1}
