"""Thread limits reach every thread that searches or encodes (Searcher, and the server's workers).

OpenMP thread counts (FAISS, torch) belong to the thread that sets them: the
request and batching threads must each apply the limit themselves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import faiss
from fastapi.testclient import TestClient

from indexer.serving import Searcher
from search_api.app import create_app
from search_api.settings import Settings


def test_each_searching_thread_keeps_to_the_configured_openmp_threads(seed_index, embedder):
    searcher = Searcher(seed_index, embedder=embedder, threads=1)
    seen: dict[str, int] = {}

    def search():
        searcher.search("compute", 3, mode="dense")
        seen[threading.current_thread().name] = faiss.omp_get_max_threads()

    workers = [threading.Thread(target=search, name=f"worker-{number}") for number in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert [seen[f"worker-{number}"] for number in range(3)] == [1, 1, 1]


def test_a_program_that_loaded_numpy_first_searches_with_one_blas_thread(seed_index):
    """numpy's OpenBLAS sizes its pool when numpy loads: a program that imported numpy before takes must not keep
    one thread per core, whose idle worker spun after every MaxSim product (twice the CPU a search)."""
    code = f"""
import json
import numpy
from threadpoolctl import threadpool_info
blas = lambda: sorted({{pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}})
before = blas()
from indexer.api import Takes
takes = Takes({str(seed_index)!r}, threads=1).load()
takes.search("how should governments measure and monitor what AI systems can do")
print(json.dumps({{"before": before, "after": blas()}}))
"""
    # Two BLAS threads at load, whatever this machine's core count.
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2"}
    env.pop("OMP_NUM_THREADS", None)
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert json.loads(output.splitlines()[-1]) == {"before": [2], "after": [1]}


def test_threads_come_from_the_environment_and_zero_leaves_the_libraries_alone(seed_index, embedder, monkeypatch):
    monkeypatch.setenv("TAKES_THREADS", "0")
    assert Searcher(seed_index, embedder=embedder, threads=Settings().threads).threads == 0
    monkeypatch.setenv("TAKES_THREADS", "3")
    assert Searcher(seed_index, embedder=embedder, threads=Settings().threads).threads == 3
    # Below Settings the variable is not read: no count given is the measured default.
    assert Searcher(seed_index, embedder=embedder).threads == 1
    monkeypatch.delenv("TAKES_THREADS")
    assert Searcher(seed_index, embedder=embedder, threads=Settings().threads).threads == 1


def test_request_and_batching_threads_run_with_the_configured_openmp_threads(seed_index, embedder):
    """FAISS's OpenMP limit, read from inside the threads that serve a search."""
    seen: dict[str, int] = {}
    searcher = Searcher(seed_index, embedder=embedder, threads=1)
    original_encode = embedder.encode

    class Spy:
        name, backend, dim = embedder.name, embedder.backend, embedder.dim

        def encode(self, texts, **options):
            seen["batcher"] = faiss.omp_get_max_threads()
            return original_encode(texts, **options)

    searcher.ranker.embedder = Spy()
    original_dense = searcher.snapshot.nearest

    def dense(*args, **options):
        result = original_dense(*args, **options)
        seen["request"] = faiss.omp_get_max_threads()
        return result

    searcher.snapshot.nearest = dense
    before = faiss.omp_get_max_threads()
    settings = Settings(index_dir=seed_index, threads=1, reload_interval=0)
    try:
        with TestClient(create_app(settings, searcher)) as client:
            assert client.get("/search", params={"q": "compute governance", "k": 3}).status_code == 200
    finally:
        faiss.omp_set_num_threads(before)
    assert seen == {"batcher": 1, "request": 1}


def test_the_servers_thread_setting_reaches_the_onnx_model(seed_index, monkeypatch):
    """Settings(threads=...) is passed down, not re-read from TAKES_THREADS below the server."""
    monkeypatch.delenv("TAKES_THREADS", raising=False)
    # limit_threads sets it for libraries not loaded yet: undone after the test.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    settings = Settings(index_dir=seed_index, threads=2, reload_interval=0, query_batching=False)
    with TestClient(create_app(settings)) as client:
        embedder = client.app.state.takes.searcher.embedder
        assert embedder._runtime._session.get_session_options().intra_op_num_threads == 2


def test_the_ann_threshold_comes_from_the_environment_through_settings_to_the_writer(run, tmp_path, unroll):
    from indexer.index import EmbeddedStore

    index_dir = tmp_path / "index"
    result = run("add", unroll, "--index-dir", index_dir, TAKES_ANN_THRESHOLD="1")
    assert result.exit_code == 0, result.output
    assert EmbeddedStore(index_dir).committed_info().index_type.startswith("ivf")
    result = run("add", unroll, "--index-dir", tmp_path / "exact")
    assert result.exit_code == 0, result.output
    assert EmbeddedStore(tmp_path / "exact").committed_info().index_type == "flat"


def test_a_threshold_set_in_code_reaches_the_writer(tmp_path, unroll):
    from indexer.index import EmbeddedStore
    from search_api.settings import open_takes

    open_takes(Settings(index_dir=tmp_path / "index", ann_threshold=1)).add(unroll)
    assert EmbeddedStore(tmp_path / "index").committed_info().index_type.startswith("ivf")
