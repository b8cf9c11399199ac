"""Single-query latency (encode + search) with torch and FAISS at 1 or 2 threads.

Each setting runs in its own process so one setting's OpenMP pools cannot
colour the next.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

QUERY_COUNT = 300
SETTINGS = [(1, 1), (1, 2), (2, 1), (2, 2)]


def _one(index_dir: str, torch_threads: int, faiss_threads: int, count: int) -> dict:
    import faiss
    import torch

    from bench.common import percentiles_ms
    from bench.fixtures import queries
    from indexer.serving import Searcher

    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)
    searcher = Searcher(index_dir, threads=0)  # 0: keep the settings made above
    for query in queries(20):
        searcher.search(query, 10)
    latencies = []
    for query in queries(count):
        started = time.perf_counter()
        searcher.search(query, 10)
        latencies.append(time.perf_counter() - started)
    p50, p99 = percentiles_ms(latencies)
    return {"torch_threads": torch_threads, "faiss_threads": faiss_threads, "p50_ms": p50, "p99_ms": p99, "max_ms": max(latencies) * 1000}


def run(index_dir, count: int = QUERY_COUNT) -> list[dict]:
    rows = []
    for torch_threads, faiss_threads in SETTINGS:
        output = subprocess.run(
            [sys.executable, "-m", "bench.threads", str(index_dir), str(torch_threads), str(faiss_threads), str(count)],
            check=True, capture_output=True, text=True,
        ).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(f"  threads torch={torch_threads} faiss={faiss_threads}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    index_dir, torch_threads, faiss_threads, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(_one(index_dir, torch_threads, faiss_threads, count)))
