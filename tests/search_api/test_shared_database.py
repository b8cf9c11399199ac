"""Several `takes serve` processes on one PostgreSQL database.

A take added through one server is served by the other within seconds
(servers poll the corpus row's generation), and clients hammering both see
no error while it happens.
"""

from __future__ import annotations

import threading

import httpx

from embeddings import DEFAULT_MODEL
from indexer.postgres import PostgresStore
from tests.cli_process import run_takes, serving, wait_until

QUERY = "who should pay for AI auditors"
CLIENT_LOOPS = 8
REQUESTS_PER_LOOP = 40


def test_two_servers_on_one_database_serve_each_others_writes(database_url, seed_takes, embedder, unroll, tmp_path):
    store = PostgresStore(database_url)
    with store.writer() as writer:
        writer.replace_all(seed_takes, embedder, model=DEFAULT_MODEL)
    store.close()
    unused = tmp_path / "no-index-here"
    from tests.indexer.test_postgres import SECRET, with_password

    env = {"TAKES_DATABASE_URL": with_password(database_url), "TAKES_ADMIN_TOKEN": "s3cret"}
    with serving(unused, tmp_path / "first.log", **env) as (first, _), serving(unused, tmp_path / "second.log", **env) as (second, _):
        errors: list[str] = []
        stop = threading.Event()

        def client(base: str) -> None:
            with httpx.Client(base_url=base, timeout=30) as session:
                for _ in range(REQUESTS_PER_LOOP):
                    if stop.is_set():
                        return
                    response = session.get("/search", params={"q": QUERY, "k": 5})
                    if response.status_code != 200:
                        errors.append(f"{base}: {response.status_code} {response.text[:200]}")

        loops = [threading.Thread(target=client, args=(first if n % 2 else second,)) for n in range(CLIENT_LOOPS)]
        for loop in loops:
            loop.start()
        added = run_takes(unused, "add", unroll, "--server", first, TAKES_ADMIN_TOKEN="s3cret")
        assert added.returncode == 0, added.stderr

        def served_by_second() -> bool:
            results = httpx.get(f"{second}/search", params={"q": QUERY, "k": 3}, timeout=30).json()["results"]
            return any(result["id"].startswith("dana-okafor") for result in results)

        # The bound only keeps a broken follower from hanging the suite: the
        # follow latency itself is measured by bench.postgres, not asserted.
        wait_until(served_by_second, timeout=60, what="the second server to serve the take added through the first")
        for loop in loops:
            loop.join(timeout=120)
        stop.set()
        assert not errors, errors[:3]
        assert httpx.get(f"{second}/stats", timeout=10).json()["generation"] == 2
        assert SECRET not in httpx.get(f"{second}/stats", timeout=10).text
    # Nor the servers' logs.
    for log in ("first.log", "second.log"):
        assert SECRET not in (tmp_path / log).read_text()
