"""Query-encode latency of several embedding models, measured side by side.

Run: ``python -m bench.embedding_models [--rounds 200] MODEL:BACKEND[:INDEX_DIR] ...``
(the default model on both backends when none is given). Each round encodes
one query with every model in turn, so a busy neighbour on the shared cores
slows all of them alike and the ratios stay fair even when the absolute
figures do not. An INDEX_DIR makes the onnx backend reuse that index's
quantized model instead of deriving one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from bench.common import machine
from embeddings import DEFAULT_MODEL, load_embedder
from search_api.settings import Settings
from indexer.openmp import limit_threads

QUERIES = [
    "what about compute governance",
    "should models be open sourced",
    "export controls on chips",
    "policy work as brand defense",
    "geopolitics of cheaper AI",
    "does he think industry AI policy teams have real clout inside their companies?",
    "policymakers who never bother learning how the systems actually work",
    "GPU clusters for academic research",
]
WARM_UP = 10


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``MODEL:BACKEND[:INDEX_DIR]`` -> (model, backend, cache_dir)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        raise SystemExit(f"expected MODEL:BACKEND[:INDEX_DIR], got {spec!r}")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def measure(specs: list[str], rounds: int) -> dict:
    limit_threads(Settings().threads)
    embedders = {}
    for spec in specs:
        model, backend, cache_dir = parse_spec(spec)
        started = time.perf_counter()
        embedders[spec] = load_embedder(model, backend, cache_dir=cache_dir)
        print(f"loaded {spec} in {time.perf_counter() - started:.1f}s (dim {embedders[spec].dim})", flush=True)
    # torch may have been imported by a later load: apply the thread limit again.
    limit_threads(Settings().threads)
    timings: dict[str, list[float]] = {spec: [] for spec in specs}
    # CPU seconds too: on shared cores the wall clock also counts waiting for a core.
    cpu_timings: dict[str, list[float]] = {spec: [] for spec in specs}
    for round_number in range(WARM_UP + rounds):
        query = QUERIES[round_number % len(QUERIES)]
        for spec, embedder in embedders.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            embedder.encode([query])
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            if round_number >= WARM_UP:
                timings[spec].append(elapsed)
                cpu_timings[spec].append(cpu)
    baseline = statistics.median(timings[specs[0]])
    rows = {}
    for spec, seconds in timings.items():
        ordered = sorted(seconds)
        median = statistics.median(ordered)
        rows[spec] = {
            "dim": embedders[spec].dim,
            "p50_ms": round(median * 1000, 2),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))] * 1000, 2),
            "ratio_to_first": round(median / baseline, 2),
            "cpu_p50_ms": round(statistics.median(cpu_timings[spec]) * 1000, 2),
        }
    return {"rounds": rounds, "machine": machine(), "models": rows}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.embedding_models", description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="*", help="MODEL:BACKEND[:INDEX_DIR]; the first is the baseline of the ratios")
    parser.add_argument("--rounds", type=int, default=200)
    arguments = parser.parse_args(argv)
    specs = arguments.specs or [f"{DEFAULT_MODEL}:onnx", f"{DEFAULT_MODEL}:torch"]
    result = measure(specs, arguments.rounds)
    print(f"{'model:backend':60s} {'dim':>4s} {'p50 ms':>8s} {'p90 ms':>8s} {'x first':>8s} {'CPU p50':>8s}")
    for spec, row in result["models"].items():
        print(
            f"{spec[-60:]:60s} {row['dim']:4d} {row['p50_ms']:8.2f} {row['p90_ms']:8.2f} "
            f"{row['ratio_to_first']:8.2f} {row['cpu_p50_ms']:8.2f}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
