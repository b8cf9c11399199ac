"""`takes serve` under hostile clients: idle sockets, slow headers, a pile of writes; and its own start-up errors.

Real servers (uvicorn in a separate process) with small configured limits, so
each case stays small; timeouts here are guards, not measurements.
"""

from __future__ import annotations

import contextlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from indexer.index.writer import IndexWriter
from tests.cli_process import free_port, run_takes, serving, wait_until

TOKEN = "serve-limits-token-41aa"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GUARD = 60


@contextlib.contextmanager
def served(index_dir: Path, log: Path, *, open_files: int | None = None, **env: str):
    """`takes serve` on a free port, optionally with a small open-file limit; yields (URL, port) once /health answers."""
    with serving(index_dir, log, open_files=open_files, **env) as (url, _process):
        yield url, urlsplit(url).port


# Two workers take connections through their own accept loop (search_api/workers.py, share_accepts).
@pytest.mark.parametrize("workers", ["1", "2"])
def test_idle_sockets_and_endless_heads_do_not_lock_out_a_new_client(index_copy, tmp_path, workers):
    # 300 idle sockets against a server allowed 256 open files: without the cap
    # it runs out of descriptors and /health is never accepted.
    limits = {"TAKES_MAX_CONNECTIONS": "50", "TAKES_HEADER_TIMEOUT": "120", "TAKES_WORKERS": workers}
    with served(index_copy, tmp_path / "serve.log", open_files=256, **limits) as (url, port):
        idle = []
        try:
            for _ in range(300):
                idle.append(socket.create_connection(("127.0.0.1", port), timeout=GUARD))
            response = httpx.get(f"{url}/health", timeout=GUARD)
            assert response.status_code == 200
            assert httpx.get(f"{url}/search", params={"q": "compute governance", "k": 1}, timeout=GUARD).status_code == 200
        finally:
            for connection in idle:
                connection.close()
        # With the header deadline far off, a head that never ends is cut off by its size.
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as connection:
            connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                for _ in range(200):
                    connection.sendall(b"X-Padding: " + b"a" * 1000 + b"\r\n")
            connection.settimeout(GUARD)
            with contextlib.suppress(ConnectionResetError):
                assert connection.recv(1) == b""


def closed_by_server(connection: socket.socket, trickle: bytes) -> bool:
    """Send ``trickle`` a byte at a time (a slow client) until the server hangs up; False if it never does."""
    connection.settimeout(0.2)
    deadline = time.monotonic() + GUARD
    for byte in trickle:
        if time.monotonic() > deadline:
            return False
        try:
            connection.sendall(bytes([byte]))
            if connection.recv(1) == b"":
                return True
        except socket.timeout:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return True
    connection.settimeout(GUARD)
    try:
        return connection.recv(1) == b""
    except (socket.timeout, ConnectionResetError):
        return False


def test_a_client_that_sends_its_headers_too_slowly_is_dropped(index_copy, tmp_path):
    with served(index_copy, tmp_path / "serve.log", TAKES_HEADER_TIMEOUT="1") as (url, port):
        # A byte every 0.2 s: each byte arrives in time, the whole head does not.
        slow_head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 1000
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as connection:
            assert closed_by_server(connection, slow_head)
        # A connection that sends nothing at all is dropped too.
        with socket.create_connection(("127.0.0.1", port), timeout=GUARD) as connection:
            assert closed_by_server(connection, b"")
        # A client that keeps the pace is served.
        assert httpx.get(f"{url}/health", timeout=GUARD).status_code == 200


def test_waiting_writes_never_hold_the_threads_that_serve_searches(index_copy, tmp_path):
    with served(
        index_copy, tmp_path / "serve.log", TAKES_ADMIN_TOKEN=TOKEN, TAKES_MAX_QUEUED_WRITES="3", TAKES_LOCK_TIMEOUT="120"
    ) as (url, _port):
        body = [{"text": "Queue the writes, keep the reads moving."}]

        def post(index: int) -> httpx.Response:
            return httpx.post(f"{url}/takes", json=[{**body[0], "id": f"queued-{index}"}], headers=AUTH, timeout=GUARD * 3)

        # Another writer (as `takes add` would) holds the index: every write waits.
        writer = IndexWriter(index_copy)
        writer.__enter__()
        released = False
        try:
            with ThreadPoolExecutor(max_workers=45) as pool:
                futures = [pool.submit(post, index) for index in range(45)]
                # All but the few the queue holds are refused at once, while the writer is still held.
                wait_until(lambda: sum(future.done() for future in futures) >= 42, timeout=GUARD, what="the refused writes")
                # While the writes wait, searches answer.
                search = httpx.get(f"{url}/search", params={"q": "compute governance", "k": 1}, timeout=GUARD)
                assert search.status_code == 200
                writer.__exit__(None, None, None)
                released = True
                answers = [future.result() for future in futures]
        finally:
            if not released:
                writer.__exit__(None, None, None)
        statuses = sorted(answer.status_code for answer in answers)
        assert statuses.count(200) >= 1 and set(statuses) <= {200, 429}, statuses
        busy = [answer for answer in answers if answer.status_code == 429]
        assert len(busy) >= 42
        assert busy[0].headers["Retry-After"].isdigit()
        assert "TAKES_MAX_QUEUED_WRITES" in busy[0].json()["detail"]


# -- start-up ------------------------------------------------------------------


def test_serve_refuses_a_port_out_of_range_in_one_line(tmp_path):
    result = run_takes(tmp_path / "missing", "serve", "--port", "99999", timeout=GUARD)
    assert result.returncode == 2
    assert "99999" in result.stderr and "1<=x<=65535" in result.stderr.replace(" ", "")
    assert "serving" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_on_a_busy_port_says_so_before_claiming_to_serve(index_copy, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_takes(index_copy, "serve", "--host", "127.0.0.1", "--port", port, timeout=GUARD)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr
    assert "serving" not in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("variable", "value"), [("TAKES_MAX_BODY_BYTES", "abc"), ("TAKES_RELOAD_INTERVAL", "abc")])
def test_serve_with_a_bad_setting_names_the_variable_in_one_line(index_copy, variable, value):
    result = run_takes(index_copy, "serve", "--port", free_port(), timeout=GUARD, **{variable: value})
    assert result.returncode == 1
    assert f"{variable}='{value}'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_every_serve_option_has_help_and_its_environment_variable(tmp_path):
    result = run_takes(tmp_path, "serve", "--help", timeout=GUARD)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option, variable in [
        ("--host", "TAKES_HOST"),
        ("--port", "TAKES_PORT"),
        ("--index-dir", "TAKES_INDEX_DIR"),
        ("--model", "TAKES_MODEL"),
        ("--backend", "TAKES_BACKEND"),
        ("--token-file", "TAKES_ADMIN_TOKEN_FILE"),
    ]:
        assert option in text and f"env var: {variable}" in text, option
    assert "TAKES_ALLOWED_HOSTS" in text and "TAKES_MAX_CONNECTIONS" in text


def test_add_through_the_server_reads_the_token_from_a_file(index_copy, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    thread = tmp_path / "thread.txt"
    thread.write_text("A take about tokens kept in files, not on command lines.\n")
    with served(index_copy, tmp_path / "serve.log", TAKES_ADMIN_TOKEN_FILE=str(token_file)) as (url, _port):
        result = run_takes(index_copy, "add", thread, "--server", url, "--token-file", token_file, timeout=GUARD)
        assert result.returncode == 0, result.stderr
        assert "added 1" in result.stdout
        assert httpx.get(f"{url}/stats", timeout=GUARD).json()["takes"] == 100
