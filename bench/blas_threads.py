"""CPU a search costs a Python program that imported numpy before takes, and one that did not.

    .venv/bin/python -m bench.blas_threads --rounds 3 [--baseline CHECKOUT]

numpy's OpenBLAS sizes its thread pool when numpy loads. A program that
embeds takes (a chatbot's tool, a notebook) has usually imported numpy
first, before takes could set ``OMP_NUM_THREADS``. Each row is a fresh
interpreter that searches the int8 seed index through ``Takes(threads=1)``
one query at a time (the dev and paraphrase queries, five times, after a
warm-up), from this checkout or ``--baseline``'s, with and without
``import numpy`` first; it reports the process's CPU and the searching
thread's CPU a search, wall ms a search, and the BLAS pools' thread counts.
Rows alternate within each round; the table shows medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench.common import REPO, run_in_checkout
from bench.fixtures import bench_dir, build_seed_index

PROGRAM = """
import json, sys, time
if {numpy_first}:
    import numpy
from indexer.api import Takes
from threadpoolctl import threadpool_info
queries = []
for name in ("dev_queries.json", "paraphrase_queries.json"):
    with open({data!r} + "/" + name, encoding="utf-8") as file:
        queries += [item["query"] for item in json.load(file)["queries"]]
takes = Takes({index!r}, threads=1).load()
for query in queries:
    takes.search(query)
queries *= 5
process, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
for query in queries:
    takes.search(query)
count = len(queries)
print(json.dumps({{
    "process_cpu_ms": (time.process_time() - process) / count * 1e3,
    "thread_cpu_ms": (time.thread_time() - thread) / count * 1e3,
    "wall_ms": (time.perf_counter() - wall) / count * 1e3,
    "blas_threads": sorted(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"),
}}))
"""


def measure(checkout: Path, index_dir: Path, numpy_first: bool) -> dict:
    program = PROGRAM.format(numpy_first=numpy_first, data=str(REPO / "tests" / "data"), index=str(index_dir))
    output = run_in_checkout(checkout, program, unset=("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    return json.loads(output.splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.blas_threads", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the table shows medians (default 3)")
    parser.add_argument("--baseline", type=Path, help="also run from this checkout, for a before/after in one run")
    args = parser.parse_args(argv)
    index_dir = build_seed_index(bench_dir() / "seed-index-onnx", "onnx")
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    checkouts = [(REPO, head)]
    if args.baseline is not None:
        base = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.baseline, capture_output=True, text=True).stdout.strip()
        checkouts.insert(0, (args.baseline.resolve(), f"{base} (baseline)"))
    rows: dict[tuple[str, bool], list[dict]] = {}
    for round_number in range(1, args.rounds + 1):
        for checkout, label in checkouts:
            for numpy_first in (False, True):
                result = measure(checkout, index_dir, numpy_first)
                rows.setdefault((label, numpy_first), []).append(result)
                print(f"[blas_threads] round {round_number} {label} numpy first {numpy_first}: {json.dumps(result)}", file=sys.stderr, flush=True)
    print("| code | numpy imported first | process CPU ms/search | searching thread CPU ms/search | wall ms/search | BLAS pools' threads | process CPU, each round |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for (label, numpy_first), results in rows.items():
        median = lambda key: statistics.median(result[key] for result in results)  # noqa: E731
        each = ", ".join(f"{result['process_cpu_ms']:.2f}" for result in results)
        pools = "/".join(map(str, results[-1]["blas_threads"]))
        print(
            f"| {label} | {'yes' if numpy_first else 'no'} | {median('process_cpu_ms'):.2f} | {median('thread_cpu_ms'):.2f} "
            f"| {median('wall_ms'):.2f} | {pools} | {each} |"
        )


if __name__ == "__main__":
    main()
