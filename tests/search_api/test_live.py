"""A running `takes serve` picks up takes that `takes add` writes from another process, without a restart."""

from __future__ import annotations

import threading

import httpx

from tests.cli_process import run_takes, serving, wait_until
from tests.samples import UNROLL, UNROLL_IDS

NEW_IDS = set(UNROLL_IDS)
QUERY = {"q": "who should pay for AI auditors", "k": 5}


def test_live_server_serves_takes_added_by_another_process(index_copy, tmp_path, seed_takes):
    unroll = tmp_path / "dana.txt"
    unroll.write_text(UNROLL)
    with serving(index_copy, log=tmp_path / "serve.log") as (url, server):
        with httpx.Client(base_url=url, timeout=30) as client:
            generation = client.get("/health").json()["generation"]
            assert not {r["id"] for r in client.get("/search", params=QUERY).json()["results"]} & NEW_IDS

            # Searches keep arriving while the other process embeds and commits.
            statuses: list[int] = []
            errors: list[BaseException] = []
            done = threading.Event()

            def keep_searching():
                with httpx.Client(base_url=url, timeout=30) as searcher:
                    while not done.is_set():
                        try:
                            statuses.append(searcher.get("/search", params=QUERY).status_code)
                        except httpx.HTTPError as error:
                            errors.append(error)
                        done.wait(0.05)

            def new_takes_served() -> bool:
                results = client.get("/search", params=QUERY).json()["results"]
                return results[0]["id"] in NEW_IDS

            searching = threading.Thread(target=keep_searching)
            searching.start()
            try:
                added = run_takes(index_copy, "add", unroll)
                assert added.returncode == 0, added.stderr
                assert "added 3, skipped 0 duplicates" in added.stdout
                # The server polls for new generations every 0.2 s (TAKES_RELOAD_INTERVAL).
                wait_until(new_takes_served, timeout=10, what="the server to serve the added takes", interval=0.1)
            finally:
                done.set()
                searching.join(timeout=30)

            assert server.poll() is None  # the same process, never restarted
            assert not errors, errors
            assert len(statuses) >= 3 and set(statuses) == {200}
            assert client.get("/health").json()["generation"] == generation + 1
            assert client.get("/stats").json()["takes"] == len(seed_takes) + 3
            assert client.get("/takes/dana-okafor-2024-03-03-2").status_code == 200


def test_add_through_a_running_server(index_copy, tmp_path, seed_takes):
    """`takes add --server` posts the parsed takes: the server embeds them with its loaded model."""
    unroll = tmp_path / "dana.txt"
    unroll.write_text(UNROLL)
    with serving(index_copy, log=tmp_path / "serve.log", TAKES_ADMIN_TOKEN="s3cret") as (url, _):
        added = run_takes(tmp_path / "unused", "add", unroll, "--server", url, TAKES_ADMIN_TOKEN="s3cret")
        assert added.returncode == 0, added.stderr
        assert "added 3, skipped 0 duplicates" in added.stdout
        take = httpx.get(f"{url}/takes/{UNROLL_IDS[1]}").json()
        assert take["source"] == "dana.txt" and take["position"] == 2 and take["thread_size"] == 3
        assert httpx.get(f"{url}/search", params=QUERY).json()["results"][0]["id"] in NEW_IDS
        again = run_takes(tmp_path / "unused", "add", unroll, "--server", url, TAKES_ADMIN_TOKEN="s3cret")
        assert "added 0, skipped 3 duplicates" in again.stdout
        wrong = run_takes(tmp_path / "unused", "add", unroll, "--server", url, TAKES_ADMIN_TOKEN="nope")
        assert wrong.returncode == 1 and "refused dana.txt (403)" in wrong.stderr
    gone = run_takes(tmp_path / "unused", "add", unroll, "--server", url, TAKES_ADMIN_TOKEN="s3cret")
    assert gone.returncode == 1 and "cannot reach the takes server" in gone.stderr
    assert not (tmp_path / "unused").exists()
