"""Sequential HTTP search latency of this checkout against an earlier commit, in one sitting.

Run: ``.venv/bin/python -m bench.ranking_speed [--before REV] [--rounds 5] [--index-dir DIR --generated N]``.

Both servers serve the same seed index (each checkout builds its own) and
answer the bench's query list in alternating rounds, so a machine that slows
down slows both alike; the ratio of the per-round p50s is the figure. With
``--index-dir`` both serve that index instead (a copy of the bench's 100k
corpus, say: serving only reads it), and ``--generated N`` asks the queries
the 100k bench asks of its N generated takes (``bench.postgres.query_texts``).
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

from bench.common import REPO, percentiles_ms
from bench.fixtures import queries
from bench.latency import Server, _get

REQUESTS_PER_ROUND = 200


def checkout(revision: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="takes-before-"))
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), revision], check=True, capture_output=True)
    return folder


def build_index(code: Path, index_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "search_api.cli", "index", "--index-dir", str(index_dir)], cwd=code, env=env, check=True, capture_output=True)


def round_p50(port: int, texts: list[str]) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for number in range(REQUESTS_PER_ROUND):
        path = "/search?" + urllib.parse.urlencode({"q": texts[number % len(texts)], "k": 10})
        started = time.perf_counter()
        _get(connection, path)
        times.append(time.perf_counter() - started)
    connection.close()
    return percentiles_ms(times)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="main", help="the earlier commit (default: main)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--index-dir", type=Path, help="serve this index with both checkouts (default: each builds the seed's)")
    parser.add_argument("--generated", type=int, help="ask the queries of the bench's N generated takes (bench.postgres)")
    args = parser.parse_args()
    if args.generated:
        from bench.postgres import query_texts, synthetic_takes

        texts = query_texts(synthetic_takes(args.generated), REQUESTS_PER_ROUND)
    else:
        texts = queries(REQUESTS_PER_ROUND)
    before = checkout(args.before)
    try:
        work = Path(tempfile.mkdtemp(prefix="takes-speed-"))
        servers = {}
        for name, code in (("before", before), ("now", REPO)):
            index_dir = args.index_dir or work / name
            if args.index_dir is None:
                build_index(code, index_dir)
            command = [sys.executable, "-m", "search_api.cli", "serve", "--host", "127.0.0.1", "--index-dir", str(index_dir)]
            servers[name] = (code, index_dir, command)
        p50 = {"before": [], "now": []}
        running = {}
        try:
            for name, (code, index_dir, command) in servers.items():
                server = Server(index_dir, env={"PYTHONPATH": str(code)})
                server.command = [*command, "--port", str(server.port)]
                running[name] = server.__enter__()
            for name in running:
                round_p50(running[name].port, texts)  # warm-up
            for _ in range(args.rounds):
                for name, server in running.items():
                    p50[name].append(round_p50(server.port, texts))
        finally:
            for server in running.values():
                server.__exit__()
        ratios = [now / then for now, then in zip(p50["now"], p50["before"])]
        print(f"sequential HTTP p50 per round, ms: before {p50['before']}, now {p50['now']}")
        print(
            f"median p50: before {statistics.median(p50['before']):.2f} ms, now {statistics.median(p50['now']):.2f} ms; "
            f"median ratio now/before {statistics.median(ratios):.2f} over {args.rounds} rounds of {REQUESTS_PER_ROUND}"
        )
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(before)], capture_output=True)


if __name__ == "__main__":
    main()
