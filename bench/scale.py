"""Exact vs approximate FAISS search at 100k and 1M synthetic takes.

Synthetic vectors imitate sentence embeddings: points scattered around many
topic centres, L2-normalized, 384-d. Uniform random vectors on the sphere
would be a worst case no real corpus looks like (every neighbour is nearly
equidistant), so they would understate ANN recall.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bench.common import Timer, percentiles_ms

DIM = 384
K = 10
WARM_UP = 20


def synthetic(count: int, dim: int = DIM, seed: int = 0, topics: int | None = None) -> np.ndarray:
    """``count`` unit vectors around ``topics`` random centres."""
    rng = np.random.default_rng(seed)
    topics = topics or max(count // 200, 10)
    centres = rng.standard_normal((topics, dim), dtype=np.float32)
    vectors = np.empty((count, dim), np.float32)
    step = 100_000
    for start in range(0, count, step):
        stop = min(start + step, count)
        chosen = rng.integers(0, topics, stop - start)
        vectors[start:stop] = centres[chosen] + 0.7 * rng.standard_normal((stop - start, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def queries_for(vectors: np.ndarray, count: int, seed: int = 1) -> np.ndarray:
    """Queries near stored vectors (a paraphrase of a take), not copies of them."""
    rng = np.random.default_rng(seed)
    picked = vectors[rng.integers(0, len(vectors), count)]
    queries = picked + 0.05 * rng.standard_normal(picked.shape, dtype=np.float32)
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def measure(index_type: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray | None) -> dict:
    """Build ``index_type`` over ``vectors`` the way the loader does, then time single queries."""
    import faiss

    from indexer import ann

    ids = np.arange(len(vectors), dtype=np.int64)
    with Timer() as build:
        index = ann.build_index(index_type, vectors.shape[1], vectors, ids)
    # Serialized size: what the index holds (vectors, ids, lists, centroids);
    # RSS growth is blurred by the allocator reusing freed memory.
    memory = faiss.serialize_index(index).nbytes / len(vectors)
    params = ann.search_parameters(index_type)
    for query in queries[:WARM_UP]:  # untimed: first touches of a fresh index's pages
        index.search(query[None, :], K, params=params)
    latencies, found = [], []
    for query in queries:
        started = time.perf_counter()
        _, hits = index.search(query[None, :], K, params=params)
        latencies.append(time.perf_counter() - started)
        found.append(hits[0])
    found = np.asarray(found)
    recall = 1.0 if truth is None else float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)]))
    p50, p99 = percentiles_ms(latencies)
    del index
    return {"index": index_type, "build_s": build.seconds, "bytes_per_take": memory, "p50_ms": p50, "p99_ms": p99, "recall": recall, "found": found}


def run(sizes=(100_000, 1_000_000), approximate=None, query_count: int = 300) -> list[dict]:
    import faiss

    from indexer import ann

    faiss.omp_set_num_threads(1)
    approximate = approximate or None
    rows = []
    for size in sizes:
        vectors = synthetic(size)
        queries = queries_for(vectors, query_count)
        exact = measure("flat", vectors, queries, None)
        truth = exact.pop("found")
        rows.append({"takes": size, **exact})
        print(f"  {size:>9,} {'flat':<12} build {exact['build_s']:.1f}s p50 {exact['p50_ms']:.2f}ms", file=sys.stderr, flush=True)
        for index_type in approximate or [ann.index_type_for(size)]:
            if index_type == "flat":
                continue  # below the threshold: the exact row above is the index
            result = measure(index_type, vectors, queries, truth)
            result.pop("found")
            rows.append({"takes": size, **result})
            print(f"  {size:>9,} {index_type:<12} build {result['build_s']:.1f}s p50 {result['p50_ms']:.2f}ms recall {result['recall']:.3f}", file=sys.stderr, flush=True)
        del vectors
    return rows


def run_isolated(sizes, query_count: int) -> list[dict]:
    """``run`` in a fresh process, so the suite's earlier parts (models, servers, memory) do not weigh on it."""
    import json
    import subprocess

    command = [sys.executable, "-m", "bench.scale", ",".join(str(size) for size in sizes), "", str(query_count), "--json"]
    completed = subprocess.run(command, capture_output=True, text=True, check=True, timeout=3600)
    sys.stderr.write(completed.stderr)
    return json.loads(completed.stdout)


if __name__ == "__main__":
    sizes = tuple(int(size) for size in sys.argv[1].split(",")) if len(sys.argv) > 1 else (100_000, 1_000_000)
    approximate = [name for name in sys.argv[2].split(",") if name] if len(sys.argv) > 2 else None
    query_count = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    rows = run(sizes, approximate, query_count)
    if "--json" in sys.argv:
        import json

        print(json.dumps(rows))
    else:
        for row in rows:
            print(row)
