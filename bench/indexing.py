"""Indexing throughput: takes embedded per second, torch fp32 vs the ONNX int8 backend."""

from __future__ import annotations

import sys
import time
import traceback

TARGET = 5000


def texts(target: int = TARGET) -> list[str]:
    """The seed takes repeated to ``target`` texts (encode does not deduplicate)."""
    from bench.fixtures import seed_takes

    seed = [take.text for take in seed_takes()]
    return [seed[index % len(seed)] for index in range(target)]


def run(cache_dir: str, backends=("torch", "onnx"), target: int = TARGET) -> list[dict]:
    from embeddings import DEFAULT_MODEL, load_embedder

    corpus = texts(target)
    rows = []
    for backend in backends:
        try:
            started = time.perf_counter()
            embedder = load_embedder(DEFAULT_MODEL, backend, cache_dir=cache_dir)
            load_seconds = time.perf_counter() - started
            embedder.encode(corpus[:64])
            started = time.perf_counter()
            embedder.encode(corpus)
            seconds = time.perf_counter() - started
            rows.append({"backend": backend, "takes": len(corpus), "seconds": seconds, "takes_per_s": len(corpus) / seconds, "load_s": load_seconds})
        except Exception as error:  # noqa: BLE001 - a missing backend is reported, not fatal
            traceback.print_exc(file=sys.stderr)
            rows.append({"backend": backend, "error": f"{type(error).__name__}: {error}"})
        print(f"  indexing {rows[-1]}", file=sys.stderr, flush=True)
    return rows
