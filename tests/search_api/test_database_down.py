"""The database going down under a running `takes serve --database-url`, and coming back.

A server of its own (not the session's: this test stops it). While it is
down a search answers 503 with one line saying what failed (no traceback, no
password); once it is back the same server answers again without a restart.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import httpx
import pytest

from embeddings import DEFAULT_MODEL
from indexer.postgres import PostgresStore
from tests.cli_process import serving, wait_until
from tests.indexer.test_postgres import SECRET, with_password
from tests.postgres import SYSTEM_DATABASE_URL

QUERY = "who should pay for AI auditors"


@pytest.fixture
def own_server():
    """A pgserver of this test's own: (server, URL)."""
    if SYSTEM_DATABASE_URL:
        pytest.skip("stops the database server: needs the bundled one, not TAKES_TEST_DATABASE_URL")
    import pgserver

    folder = tempfile.mkdtemp(prefix="takes-pg-down-")
    server = pgserver.get_server(os.path.join(folder, "data"), cleanup_mode="delete")
    try:
        yield server, server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def _stop(server) -> None:
    from pgserver._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


def _start(server) -> None:
    with server._lock:
        server.ensure_postgres_running()


def test_a_search_while_the_database_is_down_is_a_503_and_the_server_recovers(own_server, seed_takes, embedder, tmp_path):
    server, url = own_server
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    store = PostgresStore(url)
    with store.writer() as writer:
        writer.replace_all(seed_takes[:20], embedder, model=DEFAULT_MODEL)
    store.close()
    log = tmp_path / "serve.log"
    env = {"TAKES_DATABASE_URL": with_password(url), "TAKES_RELOAD_INTERVAL": "0.5"}
    with serving(tmp_path / "no-index-here", log, **env) as (base, process):
        assert httpx.get(f"{base}/search", params={"q": QUERY}, timeout=30).status_code == 200
        _stop(server)
        try:
            response = httpx.get(f"{base}/search", params={"q": QUERY}, timeout=30)
            assert response.status_code == 503, response.text
            message = response.json()["error"] if "error" in response.json() else response.json()["detail"]
            assert "\n" not in message and "Traceback" not in message and SECRET not in message
            assert message.startswith("cannot connect to postgresql://") and len(message) < 400, message
            assert process.poll() is None
        finally:
            _start(server)

        def answers() -> bool:
            return httpx.get(f"{base}/search", params={"q": QUERY}, timeout=30).status_code == 200

        wait_until(answers, timeout=30, what="the server to answer again once the database is back", interval=0.5)
        assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    text = log.read_text()
    assert SECRET not in text and "Traceback" not in text, text[-2000:]
