"""Indexing throughput: takes embedded per second, torch fp32 vs the ONNX int8 backend.

The machine's speed drifts by up to 2x over minutes (a shared VM), so the two
backends take turns: each round embeds the same texts with torch, then with
onnx, and the ratio is taken within each round; the report gives medians.
"""

from __future__ import annotations

import statistics
import sys
import time
import traceback

TARGET = 5000
ROUNDS = 3


def texts(target: int = TARGET) -> list[str]:
    """The seed takes repeated to ``target`` texts (encode does not deduplicate)."""
    from bench.fixtures import seed_takes

    seed = [take.text for take in seed_takes()]
    return [seed[index % len(seed)] for index in range(target)]


def run(cache_dir: str, backends=("torch", "onnx"), target: int = TARGET, rounds: int = ROUNDS) -> list[dict]:
    """One row per backend: ``target`` texts split over ``rounds`` interleaved rounds."""
    from embeddings import DEFAULT_MODEL, load_embedder

    per_round = texts(max(1, target // rounds))
    embedders, rows = {}, {}
    for backend in backends:
        try:
            started = time.perf_counter()
            embedders[backend] = load_embedder(DEFAULT_MODEL, backend, cache_dir=cache_dir)
            rows[backend] = {"backend": backend, "load_s": time.perf_counter() - started, "rounds": []}
            embedders[backend].encode(per_round[:64])
        except Exception as error:  # noqa: BLE001 - a missing backend is reported, not fatal
            traceback.print_exc(file=sys.stderr)
            rows[backend] = {"backend": backend, "error": f"{type(error).__name__}: {error}"}
    for _ in range(rounds):
        for backend, embedder in embedders.items():
            started = time.perf_counter()
            embedder.encode(per_round)
            rows[backend]["rounds"].append(time.perf_counter() - started)
    for backend in embedders:
        row = rows[backend]
        row["takes"] = len(per_round) * rounds
        row["seconds"] = sum(row["rounds"])
        row["takes_per_s"] = statistics.median(len(per_round) / seconds for seconds in row["rounds"])
    if "torch" in embedders and "onnx" in embedders:
        ratios = [torch / onnx for torch, onnx in zip(rows["torch"]["rounds"], rows["onnx"]["rounds"])]
        rows["onnx"]["ratio_to_torch"] = statistics.median(ratios)
        rows["onnx"]["ratios"] = ratios
    for row in rows.values():
        print(f"  indexing {row}", file=sys.stderr, flush=True)
    return list(rows.values())
