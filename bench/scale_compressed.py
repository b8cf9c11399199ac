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


def gather() -> np.ndarray:
    """The embedded chunks so far, as one array (also saved as one .npy)."""
    parts = sorted((DATA / "real-chunks").glob("[0-9]*[0-9].npy"))
    vectors = np.concatenate([np.load(path) for path in parts]) if parts else np.zeros((0, 384), np.float32)
    np.save(real_vectors_path(), vectors)
    return vectors


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else "recall"
    if command == "embed":
        embed(int(sys.argv[2]) if len(sys.argv) > 2 else REAL_TARGET)
