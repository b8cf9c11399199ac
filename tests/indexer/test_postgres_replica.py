"""A streaming replica: writes on the primary, searches on the replica, the replica's lag bounded.

The replica is made by ``pg_basebackup`` from the primary the test suite
started (the bundled server ships the replication tools) and follows it over
the primary's Unix socket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import pytest

from embeddings import DEFAULT_MODEL
from indexer.errors import IndexReadOnly
from indexer.postgres import PostgresStore
from indexer.storage import Filters
from tests.cli_process import wait_until
from tests.indexer.test_store_contract import QUERY, new_take
from tests.postgres import SYSTEM_DATABASE_URL

# Generous for a shared two-core machine; the lag measured here is milliseconds.
LAG_BOUND_SECONDS = 10

pytestmark = pytest.mark.skipif(
    bool(SYSTEM_DATABASE_URL), reason="needs the bundled server's data folder (TAKES_TEST_DATABASE_URL is a system server)"
)


def _run(command: list[str], user: str | None) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120, user=user)


@pytest.fixture
def replica(postgres_server, database_url):
    """(primary URL, replica URL) of the test database, the replica streaming from the primary."""
    from pgserver._commands import POSTGRES_BIN_PATH

    primary_socket = urllib.parse.parse_qs(urllib.parse.urlsplit(database_url).query)["host"][0]
    # The server runs as a dedicated user when the tests run as root (PostgreSQL refuses root).
    user = "pgserver" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="takes-replica-"))
    folder.chmod(0o755)
    data, socket_dir = folder / "data", folder / "socket"
    socket_dir.mkdir()
    if user:
        shutil.chown(folder, user)
        shutil.chown(socket_dir, user)
    _run([str(POSTGRES_BIN_PATH / "pg_basebackup"), "-D", str(data), "-h", primary_socket, "-U", "postgres", "-R", "-X", "stream", "--checkpoint=fast"], user)
    _run(
        [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data), "-w", "-l", str(folder / "log"),
         "-o", f'-h "" -k {socket_dir} -c hot_standby_feedback=on', "start"],
        user,
    )
    try:
        yield database_url, urllib.parse.urlunsplit(
            urllib.parse.urlsplit(database_url)._replace(query=urllib.parse.urlencode({"host": str(socket_dir)}))
        )
    finally:
        subprocess.run([str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True, user=user, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_replica_serves_what_the_primary_commits_within_the_lag_bound(replica, seed_takes, embedder):
    primary_url, replica_url = replica
    primary, standby = PostgresStore(primary_url), PostgresStore(replica_url)
    try:
        with primary.writer() as writer:
            writer.replace_all(seed_takes, embedder, model=DEFAULT_MODEL)
        wait_until(lambda: standby.current_generation() == 1, timeout=LAG_BOUND_SECONDS, what="the replica to reach generation 1")
        vector = embedder.encode([QUERY])[0]
        assert standby.load().nearest(vector, 10, Filters()) == primary.load().nearest(vector, 10, Filters())

        committed = time.monotonic()
        with primary.writer() as writer:
            writer.add([new_take(1)], embedder, model=DEFAULT_MODEL)
        wait_until(lambda: standby.current_generation() == 2, timeout=LAG_BOUND_SECONDS, what="the replica to reach generation 2")
        lag = time.monotonic() - committed
        assert standby.load().take("dana-1") == new_take(1), f"lag {lag:.3f}s"

        # Writes go to the primary: on the replica they are refused, with nothing changed.
        with pytest.raises(IndexReadOnly):
            with standby.writer(lock_timeout=1) as writer:
                writer.remove(["dana-1"])
        assert primary.current_generation() == 2
    finally:
        primary.close()
        standby.close()
