"""`takes serve --workers N`: several processes on one port serve the same index, follow the same writes."""

from __future__ import annotations

import os
import signal
import socket
from collections import Counter
from urllib.parse import urlsplit

import httpx
import pytest

from search_api.workers import worker_cores
from tests.cli_process import free_port, run_takes, serving, wait_until
from tests.samples import UNROLL, UNROLL_IDS

QUERY = {"q": "who should pay for AI auditors", "k": 5}
TOKEN = "workers-token"
# Generous: the workers share two busy cores with the rest of the suite.
DEADLINE = 60


def _ask(url: str, path: str, **params) -> tuple[str, httpx.Response]:
    """One request on a fresh connection, so the kernel may hand it to any worker; (worker pid, response)."""
    response = httpx.get(f"{url}{path}", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.headers["x-takes-worker"], response


def _by_worker(url: str, path: str, workers: int, done=lambda response: True, **params) -> dict[str, httpx.Response]:
    """A response satisfying ``done`` from each of ``workers`` distinct workers (new connections until then)."""
    answers: dict[str, httpx.Response] = {}

    def every_worker_answered() -> bool:
        pid, response = _ask(url, path, **params)
        if done(response):
            answers[pid] = response
        return len(answers) >= workers

    wait_until(every_worker_answered, timeout=DEADLINE, what=f"{workers} workers to answer {path}", interval=0.01)
    return answers


def test_workers_serve_the_same_results_and_all_follow_an_add(index_copy, tmp_path):
    unroll = tmp_path / "dana.txt"
    unroll.write_text(UNROLL)
    with serving(index_copy, log=tmp_path / "serve.log", TAKES_WORKERS="2", TAKES_ADMIN_TOKEN=TOKEN) as (url, server):
        searches = _by_worker(url, "/search", 2, **QUERY)
        assert server.pid not in {int(pid) for pid in searches}  # the supervisor serves nothing itself
        found = {pid: [result["id"] for result in response.json()["results"]] for pid, response in searches.items()}
        first, second = found.values()
        assert first == second and len(first) == 5
        assert not set(first) & set(UNROLL_IDS)
        generation = _ask(url, "/health")[1].json()["generation"]

        # Through one worker: the index lock serializes it with any other writer.
        added = run_takes(tmp_path / "unused", "add", unroll, "--server", url, TAKES_ADMIN_TOKEN=TOKEN)
        assert added.returncode == 0, added.stderr
        assert "added 3, skipped 0 duplicates" in added.stdout

        # Every worker serves the new generation (the others within TAKES_RELOAD_INTERVAL).
        _by_worker(url, "/health", 2, done=lambda response: response.json()["generation"] == generation + 1)
        after = _by_worker(url, "/search", 2, done=lambda response: response.json()["results"][0]["id"] in UNROLL_IDS, **QUERY)
        first, second = ([result["id"] for result in response.json()["results"]] for response in after.values())
        assert first == second
        counts = _by_worker(url, "/stats", 2)
        assert {response.json()["takes"] for response in counts.values()} == {102}
        assert server.poll() is None


def test_a_worker_that_dies_is_replaced_and_the_others_keep_serving(index_copy, tmp_path):
    with serving(index_copy, log=tmp_path / "serve.log", TAKES_WORKERS="2") as (url, server):
        workers = set(_by_worker(url, "/health", 2))
        victim = int(sorted(workers)[0])
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            return bool(set(_by_worker(url, "/health", 2)) - workers)

        # Meanwhile every request is answered (by the survivor), and then by a new worker too.
        wait_until(replaced, timeout=DEADLINE, what="a new worker in place of the killed one", interval=0.1)
        assert server.poll() is None
    assert "starting another" in (tmp_path / "serve.log").read_text()


def test_workers_stop_with_the_server(index_copy, tmp_path):
    with serving(index_copy, log=tmp_path / "serve.log", TAKES_WORKERS="2") as (url, server):
        workers = [int(pid) for pid in _by_worker(url, "/health", 2)]
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=DEADLINE) == 0

    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie until its parent's parent reaps it: stopped all the same.
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"

    wait_until(lambda: all(gone(pid) for pid in workers), timeout=DEADLINE, what="every worker to exit")
    assert "in 2 worker processes" in (tmp_path / "serve.log").read_text()


def test_serve_with_workers_on_a_missing_index_is_one_line(tmp_path):
    result = run_takes(tmp_path / "missing", "serve", "--port", free_port(), "--workers", "2", timeout=DEADLINE)
    assert result.returncode == 1
    assert "no index in" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_worker_that_cannot_load_stops_the_server_with_its_reason(index_copy):
    """The model check fails inside each worker: its one line reaches the user once, and nothing keeps serving."""
    result = run_takes(index_copy, "serve", "--port", free_port(), "--workers", "2", "--model", "some-other-model", timeout=DEADLINE)
    assert result.returncode == 1
    assert "some-other-model" in result.stderr and "Traceback" not in result.stderr
    assert "serving" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _worker_of(connection: socket.socket) -> str:
    """The X-Takes-Worker of one /health asked on ``connection``."""
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(65536)
        assert chunk, "the server closed the connection"
        head += chunk
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return next(line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("x-takes-worker:"))


def test_a_burst_of_new_connections_is_shared_between_the_workers(index_copy, tmp_path):
    # The 8 connections are all waiting in the socket's queue before either
    # worker accepts one: a worker taking whatever is waiting (asyncio's and
    # uvloop's accept) took 6 of them every time. Taking turns gives 4/4 here
    # even beside two busy loops; 3 leaves room for a slow machine.
    with serving(index_copy, log=tmp_path / "serve.log", TAKES_WORKERS="2") as (url, _server):
        _by_worker(url, "/health", 2)
        connections = [socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=DEADLINE) for _ in range(8)]
        try:
            workers = [_worker_of(connection) for connection in connections]
        finally:
            for connection in connections:
                connection.close()
    spread = sorted(Counter(workers).values())
    assert len(spread) == 2 and spread[0] >= 3, spread


def _cores_of_every_thread(pid: int) -> list[set[int]]:
    """The affinity of each thread of process ``pid`` (its model, lexical and pool threads included)."""
    cores = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            cores.append(os.sched_getaffinity(int(task)))
        except ProcessLookupError:
            pass  # a thread that ended between listing and asking
    return cores


MY_CORES = os.sched_getaffinity(0)
two_cores = pytest.mark.skipif(len(MY_CORES) < 2, reason="a core for each of two workers needs two cores")


def test_which_workers_are_held_to_cores():
    cores = sorted(MY_CORES)
    assert worker_cores(1) is None  # one worker keeps every core for its model and lexical threads
    assert worker_cores(len(cores) + 1) is None  # more workers than cores: the kernel shares them out
    if len(cores) >= 2:
        assert worker_cores(2) == cores[:2]


@two_cores
def test_each_worker_is_held_to_a_core_of_its_own_and_a_replacement_takes_its_core(index_copy, tmp_path):
    with serving(index_copy, log=tmp_path / "serve.log", TAKES_WORKERS="2") as (url, server):
        workers = [int(pid) for pid in _by_worker(url, "/health", 2)]
        held = {pid: _cores_of_every_thread(pid) for pid in workers}
        for pid, threads in held.items():
            assert len(threads) > 1 and all(cores == threads[0] and len(cores) == 1 for cores in threads), (pid, threads)
        assert held[workers[0]][0] != held[workers[1]][0]
        assert os.sched_getaffinity(server.pid) == MY_CORES  # the supervisor stays free

        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        seen: set[int] = set()

        def replaced() -> bool:
            seen.update(int(pid) for pid in _by_worker(url, "/health", 2))
            return bool(seen - set(workers))

        wait_until(replaced, timeout=DEADLINE, what="a new worker in place of the killed one", interval=0.1)
        (replacement,) = seen - set(workers)
        assert os.sched_getaffinity(replacement) == held[victim][0]
    named = sorted(core for threads in held.values() for core in threads[0])
    assert f"in 2 worker processes, each on its own core ({named[0]}, {named[1]})" in (tmp_path / "serve.log").read_text()


@two_cores
def test_workers_stay_on_every_core_when_told_not_to_hold_them(index_copy, tmp_path):
    with serving(index_copy, log=tmp_path / "serve.log", TAKES_WORKERS="2", TAKES_PIN_WORKERS="false") as (url, _server):
        for pid in _by_worker(url, "/health", 2):
            assert all(cores == MY_CORES for cores in _cores_of_every_thread(int(pid)))
    assert "own core" not in (tmp_path / "serve.log").read_text()
