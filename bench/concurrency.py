"""Sequential against 8 keep-alive clients, per worker count, with the server's CPU per request.

    python -m bench.concurrency --workers 1,2 --rounds 3

Each round starts one `takes serve --workers N` per N over the int8 seed
index, in turn, and measures: a sequential client (300 requests after 30
untimed), then 8 clients (400 requests), each with the CPU the server spent
per request, summed from /proc over the supervising process and every worker.
The bare encode is the int8 model alone (``embedder.encode([query])`` at one
thread, in this process) over the same queries: the floor a request's CPU is
compared with. Ratios are taken within a round; the table shows medians over
the rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from bench.common import machine
from bench.fixtures import bench_dir, build_seed_index, queries
from bench.latency import CLIENTS, CONCURRENT_REQUESTS, SEQUENTIAL, WARM_UP, Server, cpu_seconds, http_concurrent, http_sequential


NOTES = (
    "`python -m bench.concurrency --workers 1,2 --rounds 3` (also a part of `make bench`): the int8 seed index, "
    "one `takes serve --workers N` per row and round, a sequential keep-alive client (300 requests after 30) "
    "and then 8 keep-alive clients (400 requests), in one run; medians over the rounds, ratios taken within each "
    "round. Server CPU is read from /proc for the supervising process and every worker; the bare encode is the "
    "int8 model alone encoding the same queries one at a time in the benchmark's process (one thread). "
    "One Python process serves one request's Python at a time (the interpreter lock), so with one worker "
    "eight clients get little more than one; `--workers 2` runs two processes on the shared socket, each with "
    "its own model, index and SQLite connections (about 2x the resident memory), and the kernel hands each new "
    "connection to one of them (the \"spread\" in the raw results: 4/4 or 5/3 of the 8 connections). "
    "The load generator runs on the same two cores, so 2x sequential is the ceiling."
)


BREAKDOWN_NOTES = (
    "CPU per sequential request, from `python -m bench.concurrency`: the model, `Takes.search` and the handler's "
    "work timed in one process (one thread, the same queries interleaved), and the one-worker server's CPU "
    "from /proc; each layer is the difference from the one inside it."
)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the workers of a pre-forked server), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    tree, frontier = [pid], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        tree += children
        frontier = children
    return tree


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for member in process_tree(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            pass  # exited between listing and reading
    return total


def bare_encode_cpu_ms(index_dir: Path, count: int = SEQUENTIAL) -> dict:
    """CPU milliseconds per query, one thread, in this process: the int8 model alone, then the layers over it.

    ``mean_ms``: ``embedder.encode([query])``; ``search_ms``: ``Takes.search``
    (ranking, FAISS, FTS5, SQLite rows); ``respond_ms``: the /search handler's
    work (parameters validated, search, JSON body). Interleaved, so a drift of
    the machine's speed hits all three alike, and each step over every query,
    but never right after another step ran the same query: a query searched
    twice in a row finds its model run and its candidates' rows and tokens
    in the CPU's caches, which a server cycling through queries does not.
    """
    from embeddings import DEFAULT_MODEL, load_embedder
    from indexer.api import Takes
    from indexer.openmp import limit_threads
    from search_api.routers.search import respond
    from search_api.schemas import SearchParams

    limit_threads(1)
    embedder = load_embedder(DEFAULT_MODEL, "onnx", cache_dir=str(index_dir), threads=1)
    takes = Takes(index_dir, threads=1).load()
    steps = {
        "mean_ms": lambda query: embedder.encode([query]),
        "search_ms": lambda query: takes.search(query, 10),
        "respond_ms": lambda query: respond(takes, SearchParams.model_validate({"q": query, "k": "10"})),
    }
    for query in queries(WARM_UP):
        for step in steps.values():
            step(query)
    costs: dict[str, list[float]] = {name: [] for name in steps}
    pool = queries(count)
    for index in range(count):
        for offset, (name, step) in enumerate(steps.items()):
            query = pool[(index + offset) % count]
            started = time.process_time()
            step(query)
            costs[name].append(time.process_time() - started)
    takes.close()
    out = {name: statistics.fmean(values) * 1000 for name, values in costs.items()}
    out["p50_ms"] = statistics.median(costs["mean_ms"]) * 1000
    return out


def measure(index_dir: Path, workers: int, checkout: Path | None = None, requests: int = CONCURRENT_REQUESTS, search_threads: int | None = None) -> dict:
    """One server with ``workers`` processes: sequential, then 8 clients, each with server CPU per request.

    ``checkout``: run the server from that source tree instead (a before/after comparison in one run).
    """
    env = {"TAKES_WORKERS": str(workers)}
    if search_threads is not None:
        env["TAKES_SEARCH_THREADS"] = str(search_threads)
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    with Server(index_dir, "onnx", env) as server:
        result = {"workers": workers, "cold_start_s": server.cold_start_s, "processes": len(process_tree(server.process.pid))}
        if checkout is not None:
            result["checkout"] = str(checkout)
        for name, run, requests in (
            ("sequential", lambda: http_sequential(server.port), SEQUENTIAL + WARM_UP),
            ("concurrent", lambda: http_concurrent(server.port, count=requests), requests + CLIENTS),
        ):
            before = tree_cpu_seconds(server.process.pid)
            client_before = cpu_seconds()
            row = run()
            row["server_cpu_ms"] = (tree_cpu_seconds(server.process.pid) - before) / requests * 1000
            row["client_cpu_ms"] = (cpu_seconds() - client_before) / requests * 1000
            result[name] = row
    return result


def run(
    index_dir: Path,
    worker_counts=(1, 2),
    rounds: int = 3,
    baseline: Path | None = None,
    requests: int = CONCURRENT_REQUESTS,
    search_threads: tuple[int | None, ...] = (None,),
) -> dict:
    """``baseline``: another checkout, served with each worker count before this one's rows in every round.

    ``search_threads``: TAKES_SEARCH_THREADS values, a row each per worker count (None: the server's default).
    """
    rounds_out = []
    servers = [(None, workers, threads) for workers in worker_counts for threads in search_threads]
    if baseline is not None:
        servers = [(baseline, workers, None) for workers in worker_counts] + servers
    for round_number in range(rounds):
        bare = bare_encode_cpu_ms(index_dir)
        rows = []
        for checkout, workers, threads in servers:
            row = measure(index_dir, workers, checkout, requests, threads)
            row["speedup"] = row["concurrent"]["requests_per_s"] / row["sequential"]["requests_per_s"]
            row["p99_over_sequential_p50"] = row["concurrent"]["p99_ms"] / row["sequential"]["p50_ms"]
            row["cpu_over_bare"] = row["sequential"]["server_cpu_ms"] / bare["mean_ms"]
            rows.append(row)
            print(f"[concurrency] round {round_number + 1} workers {workers}{f' search threads {threads}' if threads else ''}: {json.dumps(_brief(row, bare))}", file=sys.stderr, flush=True)
        rounds_out.append({"bare_encode": bare, "rows": rows})
    return {"machine": machine(), "rounds": rounds_out, "summary": summarize(rounds_out, servers)}


def _brief(row: dict, bare: dict) -> dict:
    return {
        "seq_rps": round(row["sequential"]["requests_per_s"]),
        "seq_p50": round(row["sequential"]["p50_ms"], 2),
        "c8_rps": round(row["concurrent"]["requests_per_s"]),
        "c8_p99": round(row["concurrent"]["p99_ms"], 2),
        "x": round(row["speedup"], 2),
        "p99/p50": round(row["p99_over_sequential_p50"], 2),
        "cpu_seq": round(row["sequential"]["server_cpu_ms"], 2),
        "cpu_c8": round(row["concurrent"]["server_cpu_ms"], 2),
        "bare": round(bare["mean_ms"], 2),
        "spread": row["concurrent"].get("connections_per_worker"),
    }


def summarize(rounds: list[dict], servers) -> list[dict]:
    """Per server (checkout, worker count), the median over rounds of every figure."""
    summary = []
    for position, (checkout, workers, threads) in enumerate(servers):
        rows = [round_["rows"][position] for round_ in rounds]

        def median(get):
            return statistics.median(get(row) for row in rows)

        summary.append(
            {
                "workers": workers,
                "server": (f"{_commit(checkout)} (baseline)" if checkout else _commit(None))
                + (f", TAKES_SEARCH_THREADS={threads}" if threads is not None else ""),
                "sequential_rps": median(lambda row: row["sequential"]["requests_per_s"]),
                "sequential_p50_ms": median(lambda row: row["sequential"]["p50_ms"]),
                "sequential_p99_ms": median(lambda row: row["sequential"]["p99_ms"]),
                "concurrent_rps": median(lambda row: row["concurrent"]["requests_per_s"]),
                "concurrent_p50_ms": median(lambda row: row["concurrent"]["p50_ms"]),
                "concurrent_p99_ms": median(lambda row: row["concurrent"]["p99_ms"]),
                "speedup": median(lambda row: row["speedup"]),
                "p99_over_sequential_p50": median(lambda row: row["p99_over_sequential_p50"]),
                "server_cpu_ms_sequential": median(lambda row: row["sequential"]["server_cpu_ms"]),
                "server_cpu_ms_concurrent": median(lambda row: row["concurrent"]["server_cpu_ms"]),
                "client_cpu_ms": median(lambda row: row["concurrent"]["client_cpu_ms"]),
                "cpu_over_bare": median(lambda row: row["cpu_over_bare"]),
                "cold_start_s": median(lambda row: row["cold_start_s"]),
                "spreads": [row["concurrent"].get("connections_per_worker") for row in rows],
            }
        )
    bare = statistics.median(round_["bare_encode"]["mean_ms"] for round_ in rounds)
    for row in summary:
        row["bare_encode_cpu_ms"] = bare
    for name in ("search_ms", "respond_ms"):
        values = [round_["bare_encode"][name] for round_ in rounds if name in round_["bare_encode"]]
        if values:
            summary[0]["in_process_" + name] = statistics.median(values)
    return summary


def breakdown(summary: list[dict]) -> str:
    """Where a sequential request's server CPU goes, from the in-process steps and the one-worker server row."""
    row = next((row for row in summary if row["workers"] == 1 and "baseline" not in row["server"]), summary[0])
    first = summary[0]
    if "in_process_search_ms" not in first:
        return ""
    bare, search, respond_ms, server = first["bare_encode_cpu_ms"], first["in_process_search_ms"], first["in_process_respond_ms"], row["server_cpu_ms_sequential"]
    parts = [
        ("the int8 model (tokenize + forward pass + pooling)", bare),
        ("search around the model (FTS5, FAISS, fusion, SQLite rows)", search - bare),
        ("parameters and the JSON body", respond_ms - search),
        ("HTTP, ASGI and the thread hand-off (server − handler)", server - respond_ms),
    ]
    lines = ["| where | CPU ms/request | share |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {value:.2f} | {value / server * 100:.0f}% |" for name, value in parts]
    lines.append(f"| server total, sequential ({row['server']}, 1 worker) | {server:.2f} | {server / bare:.2f}x the model |")
    return "\n".join(lines)


def _commit(checkout: Path | None) -> str:
    """The short commit of a source tree (this one by default), with "+" when it has uncommitted changes."""
    import subprocess

    where = str(checkout or Path(__file__).resolve().parent.parent)
    try:
        commit = subprocess.run(["git", "-C", where, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", where, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+" if dirty else "")


def table(summary: list[dict]) -> str:
    lines = [
        "| server | workers | sequential req/s | sequential p50 ms | 8 clients req/s | 8-client p50 ms | 8-client p99 ms "
        "| 8 clients / sequential req/s | 8-client p99 / sequential p50 | server CPU ms/request, sequential → 8 clients "
        "| bare int8 encode CPU ms | server CPU / bare encode | 8 connections per worker, each round |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for row in summary:
        lines.append(
            f"| {row['server']} | {row['workers']} | {row['sequential_rps']:.0f} | {row['sequential_p50_ms']:.2f} | {row['concurrent_rps']:.0f} "
            f"| {row['concurrent_p50_ms']:.2f} | {row['concurrent_p99_ms']:.2f} | {row['speedup']:.2f}x "
            f"| {row['p99_over_sequential_p50']:.1f}x | {row['server_cpu_ms_sequential']:.2f} → {row['server_cpu_ms_concurrent']:.2f} "
            f"| {row['bare_encode_cpu_ms']:.2f} | {row['cpu_over_bare']:.2f}x | {', '.join('/'.join(map(str, spread or [])) for spread in row['spreads'])} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.concurrency", description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="worker counts to compare, comma-separated (default 1,2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the table shows medians (default 3)")
    parser.add_argument("--baseline", type=Path, help="also serve from this checkout (each worker count), for a before/after in one run")
    parser.add_argument("--search-threads", help="TAKES_SEARCH_THREADS values to compare, comma-separated (default: the server's)")
    parser.add_argument(
        "--requests", type=int, default=CONCURRENT_REQUESTS, help=f"8-client requests per row and round; more give a steadier p99 (default {CONCURRENT_REQUESTS})"
    )
    args = parser.parse_args(argv)
    counts = tuple(int(part) for part in args.workers.split(","))
    index_dir = build_seed_index(bench_dir() / "seed-index-onnx", "onnx")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open("/proc/loadavg") as handle:
        load_before = handle.read().split()[:3]
    threads = tuple(int(part) for part in args.search_threads.split(",")) if args.search_threads else (None,)
    results = run(index_dir, counts, args.rounds, args.baseline, args.requests, threads)
    with open("/proc/loadavg") as handle:
        load_after = handle.read().split()[:3]
    results.update(started=started, load_before=load_before, load_after=load_after)
    (bench_dir() / "concurrency.json").write_text(json.dumps(results, indent=1))
    print(f"{started}; load average {' '.join(load_before)} before, {' '.join(load_after)} after")
    print(table(results["summary"]))
    print()
    print(breakdown(results["summary"]))


if __name__ == "__main__":
    main()
