"""Query latency in-process and over HTTP, 8-client throughput, cold start and RSS."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from bench.common import free_port, percentiles_ms, rss_mib
from bench.fixtures import queries

SEQUENTIAL = 300
CONCURRENT_REQUESTS = 400
CLIENTS = 8
WARM_UP = 30


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 120, path: str = "/health") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.stderr.read() if process.stderr else ''}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"no 200 from {path} on port {port} within {timeout}s")


class Server:
    """A `takes serve` subprocess on a free loopback port."""

    def __init__(self, index_dir: Path, backend: str = "torch", env: dict | None = None, command: list[str] | None = None, health_path: str = "/health"):
        self.port = free_port()
        self.health_path = health_path
        takes = Path(sys.executable).with_name("takes")
        self.command = command or [str(takes), "serve", "--host", "127.0.0.1", "--port", str(self.port), "--index-dir", str(index_dir), "--backend", backend]
        self.env = {**os.environ, "TAKES_RELOAD_INTERVAL": "0", **(env or {})}

    def __enter__(self):
        started = time.perf_counter()
        self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_healthy(self.port, self.process, path=self.health_path)
        except BaseException:
            self.__exit__()
            raise
        self.cold_start_s = time.perf_counter() - started
        return self

    def rss_mib(self) -> float:
        return rss_mib(self.process.pid)

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def _get(connection: http.client.HTTPConnection, path: str) -> bytes:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    # Which worker process answered (takes serve --workers): the clients' spread over them.
    connection.last_worker = response.getheader("x-takes-worker")
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
    return body


def search_path(query: str, k: int = 10) -> str:
    return "/search?" + urllib.parse.urlencode({"q": query, "k": k})


def http_sequential(port: int, count: int = SEQUENTIAL, path_for=search_path) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    for query in queries(WARM_UP):
        _get(connection, path_for(query))
    latencies = []
    for query in queries(count):
        started = time.perf_counter()
        _get(connection, path_for(query))
        latencies.append(time.perf_counter() - started)
    connection.close()
    p50, p99 = percentiles_ms(latencies)
    return {"p50_ms": p50, "p99_ms": p99, "requests_per_s": count / sum(latencies)}


def http_concurrent(port: int, count: int = CONCURRENT_REQUESTS, clients: int = CLIENTS, path_for=search_path) -> dict:
    """``clients`` keep-alive connections each sending its share of ``count`` requests back to back."""
    all_queries = queries(count)
    latencies: list[float] = []
    workers: list[str | None] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        _get(connection, path_for(all_queries[offset]))
        with lock:
            workers.append(connection.last_worker)
        mine = []
        barrier.wait()
        for index in range(offset, count, clients):
            started = time.perf_counter()
            _get(connection, path_for(all_queries[index]))
            mine.append(time.perf_counter() - started)
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(offset,)) for offset in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    p50, p99 = percentiles_ms(latencies)
    spread = sorted((workers.count(worker) for worker in set(workers)), reverse=True)
    return {"clients": clients, "requests": count, "requests_per_s": count / elapsed, "p50_ms": p50, "p99_ms": p99, "connections_per_worker": spread}


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _with_cpu(server: Server, measure, requests: int) -> dict:
    """``measure()`` plus the server's and this client's CPU milliseconds per request (warm-up included)."""
    server_before, client_before = cpu_seconds(server.process.pid), cpu_seconds()
    result = measure()
    result["server_cpu_ms"] = (cpu_seconds(server.process.pid) - server_before) / requests * 1000
    result["client_cpu_ms"] = (cpu_seconds() - client_before) / requests * 1000
    return result


def serve_and_measure(index_dir: Path, backend: str, env: dict | None = None) -> dict:
    with Server(index_dir, backend, env) as server:
        result = {"backend": backend, "cold_start_s": server.cold_start_s}
        result["sequential"] = _with_cpu(server, lambda: http_sequential(server.port), SEQUENTIAL + WARM_UP)
        result["concurrent"] = _with_cpu(server, lambda: http_concurrent(server.port), CONCURRENT_REQUESTS + CLIENTS)
        result["rss_mib"] = server.rss_mib()
    return result


def cold_start(index_dir: Path, backend: str, runs: int = 3) -> dict:
    """Seconds from `takes serve` process start to its first 200 on /health, and RSS, in ``runs`` fresh processes.

    RSS is read after one search (the model has then run once). Medians, plus every run.
    """
    import statistics

    starts, rss = [], []
    for _ in range(runs):
        with Server(index_dir, backend) as server:
            starts.append(server.cold_start_s)
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            _get(connection, search_path("what about compute governance"))
            connection.close()
            rss.append(server.rss_mib())
    return {"backend": backend, "runs": runs, "cold_start_s": statistics.median(starts), "rss_mib": statistics.median(rss), "cold_start_all": starts, "rss_all": rss}


def in_process(index_dir: Path, threads: int, count: int = SEQUENTIAL) -> dict:
    """Searcher.search (encode + search + SQLite), and a bare sentence-transformers encode of one query."""
    from sentence_transformers import SentenceTransformer

    from embeddings import DEFAULT_MODEL, resolve_model_path
    from indexer.serving import Searcher
    from indexer.openmp import limit_threads

    bare = SentenceTransformer(resolve_model_path(DEFAULT_MODEL), device="cpu")
    rows = {}
    # The bare encode at torch's default threads first: what a user of the library gets.
    for label in ("default threads", f"{threads} thread(s)"):
        if label != "default threads":
            limit_threads(threads)
        for query in queries(10):
            bare.encode(query)
        latencies = []
        # Two threads on two busy cores can stall for seconds a query: bound that run.
        for query in queries(count if label != "default threads" else min(count, 60)):
            started = time.perf_counter()
            bare.encode(query)
            latencies.append(time.perf_counter() - started)
        p50, p99 = percentiles_ms(latencies)
        rows[f"bare encode, {label}"] = {"p50_ms": p50, "p99_ms": p99}
    searcher = Searcher(index_dir)
    for mode in ("hybrid", "dense"):
        for query in queries(WARM_UP):
            searcher.search(query, 10, mode=mode)
        latencies = []
        for query in queries(count):
            started = time.perf_counter()
            searcher.search(query, 10, mode=mode)
            latencies.append(time.perf_counter() - started)
        p50, p99 = percentiles_ms(latencies)
        rows[f"Searcher.search {mode}"] = {"p50_ms": p50, "p99_ms": p99}
    searcher.close()
    return rows


if __name__ == "__main__":
    from bench.fixtures import bench_dir, build_seed_index

    index_dir = build_seed_index(bench_dir() / "seed-index")
    backend = sys.argv[1] if len(sys.argv) > 1 else "torch"
    print(json.dumps(serve_and_measure(index_dir, backend), indent=1))
