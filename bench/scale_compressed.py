"""Ten million takes on one box: a compressed index with exact re-scoring, chosen by measurement.

    .venv/bin/python -m bench.scale_compressed embed      # once: real int8 vectors of generated takes
    .venv/bin/python -m bench.scale_compressed recall     # candidates on the real vectors
    .venv/bin/python -m bench.scale_compressed scale      # 10M synthetic vectors: build, memory, latency

Files live in /work/bench-data (outside the repo; ``TAKES_BENCH_DATA`` moves it).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("TAKES_BENCH_DATA", "/work/bench-data"))
REAL_TARGET = 200_000
CHUNK = 5_000


def real_vectors_path() -> Path:
    return DATA / "real-int8-vectors.npy"


def embed(target: int = REAL_TARGET) -> None:
    """Embed ``target`` generated takes with the shipped int8 model, in resumable chunks."""
    from bench.take_texts import generate
    from embeddings import DEFAULT_MODEL, load_embedder

    chunks = DATA / "real-chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    texts = generate(target, seed=0)
    embedder = load_embedder(DEFAULT_MODEL, "onnx", cache_dir=str(DATA / "model-index"))
    for start in range(0, target, CHUNK):
        path = chunks / f"{start:08d}.npy"
        if path.exists():
            continue
        started = time.perf_counter()
        vectors = embedder.encode(texts[start : start + CHUNK])
        np.save(path.with_suffix(".tmp.npy"), vectors)
        os.replace(path.with_suffix(".tmp.npy"), path)
        print(f"embedded {start + CHUNK:,} ({CHUNK / (time.perf_counter() - started):.0f} takes/s)", file=sys.stderr, flush=True)
    gather()


def gather(save: bool = True) -> np.ndarray:
    """The embedded chunks so far, as one array (also saved as one .npy)."""
    parts = sorted((DATA / "real-chunks").glob("[0-9]*[0-9].npy"))
    vectors = np.concatenate([np.load(path) for path in parts]) if parts else np.zeros((0, 384), np.float32)
    if save:
        np.save(real_vectors_path(), vectors)
    return vectors


HELD_OUT = 1_000
K = 10
# Candidates measured on the real vectors: FAISS factory strings (one thread).
CANDIDATES = (
    "IVF1024,SQ8", "IVF4096,SQ8", "IVF1024,SQ4", "IVF4096,SQ4",
    "IVF4096,PQ48", "IVF4096,PQ96", "OPQ48,IVF4096,PQ48", "OPQ96,IVF4096,PQ96",
)
NPROBES = (8, 16, 32, 64)
RESCORED = (50, 100, 200)


def split_queries(vectors: np.ndarray, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(base, queries): the last HELD_OUT takes are queries and not stored, half of them perturbed.

    A perturbed query (noise of norm ~0.45, cosine ~0.9 to its take) stands in
    for a paraphrase; a held-out take is a query about a subject the corpus covers.
    """
    rng = np.random.default_rng(seed)
    base, held = vectors[:-HELD_OUT], vectors[-HELD_OUT:].copy()
    half = HELD_OUT // 2
    noise = rng.standard_normal((half, vectors.shape[1])).astype(np.float32) * (0.45 / np.sqrt(vectors.shape[1]))
    held[:half] += noise
    held /= np.linalg.norm(held, axis=1, keepdims=True)
    return np.ascontiguousarray(base), np.ascontiguousarray(held)


def exact_top(base: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Ground truth: the ids of the k largest inner products, by a chunked flat pass."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), k), np.int64)
    step = 200_000
    for start in range(0, len(base), step):
        scores = queries @ np.asarray(base[start : start + step], dtype=np.float32).T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], axis=1)
        merged_ids = np.concatenate([best_ids, top + start], axis=1)
        order = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, 1)
        best_ids = np.take_along_axis(merged_ids, order, 1)
    return best_ids


def rescore(candidates: np.ndarray, query: np.ndarray, full: np.ndarray, k: int = K) -> np.ndarray:
    """The k candidates with the largest exact inner product (full vectors, float32 or float16)."""
    candidates = candidates[candidates >= 0]
    scores = np.asarray(full[candidates], dtype=np.float32) @ query
    return candidates[np.argsort(-scores)[:k]]


def recall_at(found: list[np.ndarray], truth: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(row, want[: len(row)])) / K for row, want in zip(found, truth)]))


def recall(candidates=CANDIDATES, nprobes=NPROBES, rescored=RESCORED) -> list[dict]:
    """Recall@10 and single-query latency of each candidate on the real vectors."""
    import faiss

    from bench.common import percentiles_ms

    vectors = gather(save=False)
    base, queries = split_queries(vectors)
    truth = exact_top(base, queries)
    half16 = base.astype(np.float16)
    rows = []
    print(f"{len(base):,} real vectors, {len(queries)} queries (half perturbed), k={K}", file=sys.stderr, flush=True)
    for factory in candidates:
        faiss.omp_set_num_threads(2)
        index = faiss.index_factory(base.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.niter = 10
        started = time.perf_counter()
        sample = base[np.random.default_rng(0).permutation(len(base))[: min(len(base), ivf.nlist * 40)]]
        index.train(sample)
        index.add(base)
        build_s = time.perf_counter() - started
        code_bytes = ivf.code_size + 8
        faiss.omp_set_num_threads(1)
        for nprobe in nprobes:
            ivf.nprobe = nprobe
            for depth in rescored:
                found, found16, times = [], [], []
                for query in queries:
                    began = time.perf_counter()
                    _, ids = index.search(query[None, :], depth)
                    top = rescore(ids[0], query, base)
                    times.append(time.perf_counter() - began)
                    found.append(top)
                    found16.append(rescore(ids[0], query, half16))
                p50, p99 = percentiles_ms(times)
                row = {
                    "index": factory, "nprobe": nprobe, "rescored": depth, "recall": recall_at(found, truth),
                    "recall_f16": recall_at(found16, truth), "p50_ms": p50, "p99_ms": p99,
                    "code_bytes": code_bytes, "build_s": build_s, "count": len(base),
                }
                rows.append(row)
                print(
                    f"| {factory} | {nprobe} | {depth} | {row['recall']:.3f} | {row['recall_f16']:.3f} | "
                    f"{p50:.2f} / {p99:.2f} | {code_bytes} | {build_s:.0f} |",
                    flush=True,
                )
    return rows


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "recall"
    if command == "embed":
        embed(int(sys.argv[2]) if len(sys.argv) > 2 else REAL_TARGET)
    elif command == "gather":
        print(gather().shape)
    elif command == "recall":
        chosen = sys.argv[2].split(";") if len(sys.argv) > 2 else CANDIDATES
        recall(chosen)
    else:
        sys.exit(f"unknown command {command!r}: expected embed, gather, recall or scale")
