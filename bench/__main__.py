"""Run every benchmark, print a table, and write docs/PERFORMANCE.md: `make bench`.

Bounded to a few minutes on two cores. Sections of docs/PERFORMANCE.md that
this suite does not write (e.g. "Adding takes to a live index") are kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import report
from bench.common import REPO, machine
from bench.fixtures import bench_dir, build_seed_index


def _step(name: str, function, *args, **kwargs):
    print(f"[bench] {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        return function(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - one failed part must not lose the rest
        import traceback

        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        print(f"[bench] {name} took {time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)


def _onnx_available(index_dir: Path) -> bool:
    try:
        from embeddings import DEFAULT_MODEL, load_embedder

        load_embedder(DEFAULT_MODEL, "onnx", cache_dir=str(index_dir))
        return True
    except Exception as error:  # noqa: BLE001
        print(f"[bench] onnx backend unavailable: {type(error).__name__}: {error}", file=sys.stderr)
        return False


def _add_latency() -> dict:
    """The live-add benchmark, when its module is present (another part of the suite)."""
    if not (REPO / "bench" / "add_latency.py").exists():
        return {"skipped": "bench/add_latency.py not present"}
    # Both backends, three sizes up to 100k, three runs each: about 6 min on two idle cores (measured), more when busy.
    completed = subprocess.run([sys.executable, "-m", "bench.add_latency"], capture_output=True, text=True, timeout=2400)
    return {"returncode": completed.returncode, "output": completed.stdout[-2000:]}


def _postgres(work: Path, quick: bool) -> dict:
    """The PostgreSQL store beside the embedded one (bench/postgres.py), in its own process: its servers and corpora are its own."""
    output = work / "postgres-run.json"
    command = [sys.executable, "-m", "bench.postgres", "--json", str(output)] + (["--takes", "0"] if quick else [])
    # The seed part takes about 3 minutes, 100k about 6 with its corpus cached (the first build: 8 more), on two busy cores.
    completed = subprocess.run(command, capture_output=True, text=True, timeout=2400)
    if completed.returncode != 0:
        return {"error": completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else f"exit {completed.returncode}"}
    return json.loads(output.read_text())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (scale at 100k only), for a smoke test")
    parser.add_argument("--reuse", action="store_true", help="keep the previous run's figures for skipped parts")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave docs/PERFORMANCE.md alone")
    parser.add_argument("--skip", action="append", default=[], help="parts to skip: indexing, threads, latency, http, concurrency, cold, scale, profile, txtai, add, postgres")
    args = parser.parse_args(argv)

    from search_api.settings import Settings

    work = bench_dir()
    results: dict = {}
    if args.reuse and (bench_dir() / "results.json").exists():
        # Parts skipped in this run keep their figures from the previous one.
        results = json.loads((bench_dir() / "results.json").read_text())
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.reuse and "started" in results:
        # The figures kept from the earlier run keep its time; say which parts were redone when.
        redone = [part for part in ("indexing", "threads", "latency", "http", "concurrency", "cold", "scale", "profile", "txtai", "add", "postgres") if part not in args.skip]
        if redone:
            results.setdefault("reruns", []).append(f"{now}: {', '.join(redone)}")
        results["machine"] = machine()
    else:
        results.update({"machine": machine(), "started": now, "reruns": []})
    chosen_threads = Settings().threads
    torch_index = _step("seed index (torch)", build_seed_index, work / "seed-index")
    onnx = _onnx_available(work / "seed-index-onnx")
    onnx_index = _step("seed index (onnx)", build_seed_index, work / "seed-index-onnx", "onnx") if onnx else None
    skip = set(args.skip)

    if "indexing" not in skip:
        from bench import indexing

        results["indexing"] = _step("indexing throughput", indexing.run, str(work / "seed-index-onnx"), ("torch", "onnx"), 1000 if args.quick else 5000)
    if "threads" not in skip:
        from bench import threads

        results["threads"] = _step("thread settings", threads.run, torch_index, 100 if args.quick else 300)
    if "latency" not in skip:
        from bench import latency

        results["in_process"] = _step("in-process latency", latency.in_process, torch_index, chosen_threads)
    if "http" not in skip:
        from bench import latency

        results["http"] = [_step("HTTP torch", latency.serve_and_measure, torch_index, "torch")]
        if onnx_index is not None:
            results["http"].append(_step("HTTP onnx", latency.serve_and_measure, onnx_index, "onnx"))
    if "concurrency" not in skip and onnx_index is not None:
        from bench import concurrency

        results["concurrency"] = _step("concurrency (workers 1, 2)", concurrency.run, onnx_index, (1, 2), 1 if args.quick else 3)
    if "cold" not in skip:
        from bench import latency

        # Three fresh servers per backend (medians); they replace the single start the HTTP part saw.
        results["cold_start"] = [_step("cold start torch", latency.cold_start, torch_index, "torch")]
        if onnx_index is not None:
            results["cold_start"].append(_step("cold start onnx", latency.cold_start, onnx_index, "onnx"))
        print(json.dumps(results["cold_start"], indent=1), file=sys.stderr)
        for row in results.get("http") or []:
            cold = next((c for c in results["cold_start"] if "cold_start_s" in c and isinstance(row, dict) and c["backend"] == row.get("backend")), None)
            if cold:
                row.update(cold_start_s=cold["cold_start_s"], rss_mib=cold["rss_mib"])
    if "profile" not in skip:
        from bench import profile_request

        # The default backend's index: what a server built by `make run` does.
        results["profile"] = _step("request profile", profile_request.run, onnx_index or torch_index)
        results["profile"]["backend"] = "onnx" if onnx_index else "torch"
    if "scale" not in skip:
        from bench import scale

        sizes = (100_000,) if args.quick else (100_000, 1_000_000)
        results["scale"] = _step("scale", scale.run_isolated, sizes, 300)
    if "txtai" not in skip:
        from bench import txtai_compare

        results["txtai"] = _step("txtai", txtai_compare.run, work / "txtai")
    if "add" not in skip:
        results["add_latency"] = _step("add latency", _add_latency)
    if "postgres" not in skip:
        results["postgres"] = _step("PostgreSQL beside embedded", _postgres, work, args.quick)

    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(report.table(results))
    if not args.no_write:
        path = report.write(results, REPO / "docs" / "PERFORMANCE.md")
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
