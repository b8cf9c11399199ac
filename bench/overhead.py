"""Server CPU a search request against the bare encode: the HTTP floor, and the search with and without its second stage.

    python -m bench.overhead --rounds 3

Issue 16 asks for server CPU per request at most 1.6x the bare int8 encode
of the query. This splits what stands between the two, on the int8 seed
index, one worker, a sequential keep-alive client (1,000 requests after 30),
server CPU from /proc as in bench.concurrency:

- the floor of the HTTP stack: uvicorn with httptools answering a body of a
  search response's size from a bare ASGI callable, inline and through
  anyio's thread pool (the hand-off every search takes);
- `takes serve` with its defaults (hybrid, late interaction and thread
  evidence), with ``TAKES_LATE_INTERACTION=false`` (the first stage only),
  and that in dense mode.

The bare encode is measured in this process before each round, as in
bench.concurrency. Rows alternate within a round; the table shows medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

from bench.common import free_port
from bench.concurrency import bare_encode_cpu_ms, tree_cpu_seconds
from bench.fixtures import bench_dir, build_seed_index
from bench.latency import WARM_UP, Server, http_sequential, search_path

REQUESTS = 1000
# About the size of a seed search's JSON body of ten takes.
FLOOR_BODY_BYTES = 6000

FLOOR_APP = f'''
import anyio.to_thread, os

BODY = b'{{"x":"' + b"a" * {FLOOR_BODY_BYTES} + b'"}}'
THREAD = bool(os.environ.get("FLOOR_THREAD"))


def body():
    return BODY


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            done = message["type"] == "lifespan.shutdown"
            await send({{"type": message["type"] + ".complete"}})
            if done:
                return
    payload = await anyio.to_thread.run_sync(body) if THREAD else BODY
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({{"type": "http.response.start", "status": 200, "headers": headers}})
    await send({{"type": "http.response.body", "body": payload}})
'''


def dense_path(query: str) -> str:
    return "/search?" + urllib.parse.urlencode({"q": query, "k": 10, "mode": "dense"})


def server_cpu_ms(process: subprocess.Popen, port: int, path_for) -> tuple[float, float]:
    """(server CPU ms per request, sequential p50 ms) over REQUESTS after the warm-up."""
    http_sequential(port, WARM_UP, path_for)
    before = tree_cpu_seconds(process.pid)
    result = http_sequential(port, REQUESTS, path_for)
    return (tree_cpu_seconds(process.pid) - before) / (REQUESTS + WARM_UP) * 1000, result["p50_ms"]


def floor(thread: bool) -> tuple[float, float]:
    folder = bench_dir() / "overhead-floor"
    folder.mkdir(exist_ok=True)
    (folder / "floor_app.py").write_text(FLOOR_APP)
    port = free_port()
    uvicorn = Path(sys.executable).with_name("uvicorn")
    command = [str(uvicorn), "floor_app:app", "--app-dir", str(folder), "--port", str(port), "--log-level", "warning", "--no-access-log"]
    server = Server(folder, command=command, env={"FLOOR_THREAD": "1" if thread else ""}, health_path="/")
    server.port = port
    with server:
        return server_cpu_ms(server.process, port, search_path)


def takes(index_dir: Path, env: dict, path_for) -> tuple[float, float]:
    with Server(index_dir, "onnx", {"TAKES_WORKERS": "1", **env}) as server:
        return server_cpu_ms(server.process, server.port, path_for)


def rows(index_dir: Path):
    return (
        ("HTTP floor: bare ASGI app, inline", lambda: floor(False)),
        ("HTTP floor: bare ASGI app, through the thread pool", lambda: floor(True)),
        ("takes serve, default (hybrid + late interaction + thread)", lambda: takes(index_dir, {}, search_path)),
        ("takes serve, TAKES_LATE_INTERACTION=false (hybrid)", lambda: takes(index_dir, {"TAKES_LATE_INTERACTION": "false"}, search_path)),
        ("takes serve, TAKES_LATE_INTERACTION=false, mode=dense", lambda: takes(index_dir, {"TAKES_LATE_INTERACTION": "false"}, dense_path)),
    )


def run(index_dir: Path, rounds: int = 3) -> dict:
    measured: dict[str, list[dict]] = {}
    for round_number in range(rounds):
        bare = bare_encode_cpu_ms(index_dir)["mean_ms"]
        for name, measure in rows(index_dir):
            cpu, p50 = measure()
            measured.setdefault(name, []).append({"server_cpu_ms": cpu, "p50_ms": p50, "bare_ms": bare, "over_bare": cpu / bare})
            print(f"[overhead] round {round_number + 1}: {name}: {cpu:.2f} ms CPU, {cpu / bare:.2f}x the bare {bare:.2f}", file=sys.stderr, flush=True)
    return measured


def table(measured: dict[str, list[dict]]) -> str:
    lines = [
        "| server | server CPU ms/request (median) | each round | x bare encode (median) | sequential p50 ms |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for name, values in measured.items():
        cpus = [value["server_cpu_ms"] for value in values]
        lines.append(
            f"| {name} | {statistics.median(cpus):.2f} | {', '.join(f'{cpu:.2f}' for cpu in cpus)} "
            f"| {statistics.median(value['over_bare'] for value in values):.2f}x | {statistics.median(value['p50_ms'] for value in values):.2f} |"
        )
    bares = [value["bare_ms"] for value in next(iter(measured.values()))]
    lines.append(f"\nBare int8 encode, CPU ms a query, each round: {', '.join(f'{bare:.2f}' for bare in bares)}.")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the table shows medians (default 3)")
    args = parser.parse_args(argv)
    index_dir = build_seed_index(bench_dir() / "seed-index-onnx", "onnx")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open("/proc/loadavg") as handle:
        load_before = handle.read().split()[:3]
    measured = run(index_dir, args.rounds)
    with open("/proc/loadavg") as handle:
        load_after = handle.read().split()[:3]
    (bench_dir() / "overhead.json").write_text(json.dumps({"started": started, "rows": measured}, indent=1))
    print(f"{started}; load average {' '.join(load_before)} before, {' '.join(load_after)} after")
    print(table(measured))


if __name__ == "__main__":
    main()
