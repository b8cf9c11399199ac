"""The files of an index directory and its SQLite schema: names, format, connections, the live-rows SQL.

Layout of an index directory::

    takes.sqlite            takes, their generations, FTS5 text, the manifest (commit point)
    manifest.json           a readable mirror of the manifest, rewritten after each commit
    segments/seg-NNNNNN.faiss
                            vectors added by generation NNNNNN, ids = SQLite row ids
    embedding-cache.sqlite  vectors by (model, text hash): re-embedding known text is free
    ann-cache.faiss         a trained approximate index saved by a load, for the next load
    onnx-models/            the index's own copy of the int8 ONNX model (embeddings.onnx)
    .lock                   held by the single writer while it waits and writes
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import unicodedata
import urllib.parse
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from indexer.errors import IndexCorrupt
from indexer.models import TAKE_FIELDS, Take

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
DATABASE_NAME = "takes.sqlite"
MANIFEST_NAME = "manifest.json"
SEGMENTS_DIR = "segments"
CACHE_NAME = "embedding-cache.sqlite"
LOCK_NAME = ".lock"
TRAINED_INDEX_NAME = "ann-cache.faiss"
MODEL_COPIES_DIR = "onnx-models"


# Names the index creates. Cleanup deletes only unnamed files matching these.
SEGMENT_FILE = re.compile(r"^seg-\d{6,}\.faiss$")
SEGMENT_TEMPORARY = re.compile(r"^\.seg-\d{6,}\.faiss\.tmp$")
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
OWN_NAMES = frozenset(
    [DATABASE_NAME + suffix for suffix in SQLITE_SUFFIXES]
    + [CACHE_NAME + suffix for suffix in SQLITE_SUFFIXES]
    + [LOCK_NAME, TRAINED_INDEX_NAME, MODEL_COPIES_DIR]
)
OWN_TEMPORARY = re.compile(
    r"^(\.manifest\.json\.tmp|\.ann-cache\.faiss\..+|\.takes\.sqlite\.recover.*|takes\.sqlite\.damaged-.+)$"
)

# Vectors are L2-normalized; a stored vector further than this from unit
# length was damaged after it was written (float32 rounding stays near 1e-6).
UNIT_TOLERANCE = 1e-3

# Columns stored for each take, in Take field order.
COLUMNS = ", ".join(TAKE_FIELDS)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS takes (
    -- AUTOINCREMENT: a purged row's id must never be reused, because old
    -- vector segments may still hold a vector under it.
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    text TEXT NOT NULL,
    author TEXT,
    handle TEXT,
    date TEXT,
    thread_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    thread_size INTEGER,
    url TEXT,
    source TEXT NOT NULL,
    text_key TEXT NOT NULL,
    added_generation INTEGER NOT NULL,
    removed_generation INTEGER,
    -- The take's token vectors as the model made them (indexer/token_vectors.py);
    -- NULL for rows written before they were stored: computed at query time.
    token_vectors BLOB
);
CREATE UNIQUE INDEX IF NOT EXISTS takes_live_id ON takes(id) WHERE removed_generation IS NULL;
CREATE INDEX IF NOT EXISTS takes_live_text_key ON takes(text_key) WHERE removed_generation IS NULL;
CREATE INDEX IF NOT EXISTS takes_thread ON takes(thread_id, position);
-- A take by id in the generation served (GET /takes/{id}), which may hold
-- rows a later one removed: takes_live_id has only never-removed rows, so
-- without this every look-up scanned the table (40 ms at 100k takes).
CREATE INDEX IF NOT EXISTS takes_id ON takes(id);
-- Filters: the author, handle and day expressions reader.filter_sql compares.
CREATE INDEX IF NOT EXISTS takes_author ON takes(author);
CREATE INDEX IF NOT EXISTS takes_handle ON takes(lower(handle));
CREATE INDEX IF NOT EXISTS takes_day ON takes(substr(date, 1, 10));
CREATE VIRTUAL TABLE IF NOT EXISTS takes_fts USING fts5(
    text, content='takes', content_rowid='row_id', tokenize='porter unicode61 remove_diacritics 2'
);
"""

TOKEN_COLUMN = "token_vectors"


def has_token_column(connection: sqlite3.Connection) -> bool:
    return TOKEN_COLUMN in {row[1] for row in connection.execute("PRAGMA table_info(takes)")}


def add_token_column(connection: sqlite3.Connection) -> bool:
    """Give an index made before token vectors were stored their column (NULL in every row); whether it was missing.

    ADD COLUMN of a nullable column rewrites nothing: old rows read NULL, and
    a takes that predates the column still reads the database (it names its
    columns), so the format version stays.
    """
    if has_token_column(connection):
        return False
    connection.execute(f"ALTER TABLE takes ADD COLUMN {TOKEN_COLUMN} BLOB")
    return True


REPAIR_HINT = "`takes repair` rebuilds what is damaged from what is intact (`takes check` lists it)"


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a SQLite database the way every part of the project should.

    WAL lets readers keep their snapshot while a writer commits, so a search
    never sees "database is locked"; the busy timeout covers checkpoints. A
    reader of a folder it cannot write (a read-only mount) opens the file
    read-only, and immutable when SQLite cannot create its shared-memory file
    there: nobody can write such a folder, so nothing can change under it.
    """
    path = Path(path)
    if readonly and not os.access(path.parent, os.W_OK):
        uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
        try:
            connection = sqlite3.connect(f"{uri}", uri=True, timeout=30, check_same_thread=False, isolation_level=None)
            connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError:
            connection = sqlite3.connect(
                f"{uri}&immutable=1", uri=True, timeout=30, check_same_thread=False, isolation_level=None
            )
        connection.execute("PRAGMA query_only = ON")
        return connection
    connection = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA busy_timeout = 30000")
    if readonly:
        connection.execute("PRAGMA query_only = ON")
    else:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = FULL")
    return connection


def text_key(text: str, author: str | None) -> str:
    """Identity of a take's content: same words from the same author, whatever the spacing or case."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    words = " ".join(re.findall(r"\w+", folded))
    author_part = (author or "").strip().casefold()
    return hashlib.sha1(f"{author_part}\x00{words}".encode()).hexdigest()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def normalize_model_name(name: str) -> str:
    """The name recorded in the manifest: the hub prefix of the default model is noise."""
    return name.removeprefix("sentence-transformers/")


def database_path(index_dir: Path) -> Path:
    return Path(index_dir) / DATABASE_NAME


def damaged_database(path: Path, error: sqlite3.Error) -> IndexCorrupt:
    """The IndexCorrupt for a SQLite error met while reading the index database."""
    return IndexCorrupt(
        f"{path} is damaged ({error}): `takes repair` recovers the readable takes and re-embeds them "
        f"(`takes check` lists the damage)"
    )


def take_from_row(row: Sequence) -> Take:
    return Take(*row)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Which rows are finite unit vectors, as every model here writes them."""
    with np.errstate(all="ignore"):
        norms = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    return np.isfinite(norms) & (np.abs(norms - 1.0) <= UNIT_TOLERANCE)


# A take is live now while no generation has removed it (the writer's view).
LIVE = "removed_generation IS NULL"


def visible_clause(generation: int) -> tuple[str, tuple[int, int]]:
    """SQL condition for rows that exist in ``generation`` (added by it, not yet removed)."""
    return (
        "takes.added_generation <= ? AND (takes.removed_generation IS NULL OR takes.removed_generation > ?)",
        (generation, generation),
    )


def iter_live_rows(connection: sqlite3.Connection, generation: int) -> Iterator[int]:
    """Row ids visible at ``generation``."""
    clause, params = visible_clause(generation)
    for (rowid,) in connection.execute(f"SELECT rowid FROM takes WHERE {clause}", params):
        yield rowid


def live_row_array(connection: sqlite3.Connection, generation: int) -> np.ndarray:
    """Row ids visible at ``generation`` as int64, in rowid order: what ``iter_live_rows`` yields, read at C speed.

    SQLite joins them into one string and numpy parses it: a follower's load at
    100k takes then costs the table scan alone, not a Python int per row too (about half).
    """
    clause, params = visible_clause(generation)
    (joined,) = connection.execute(f"SELECT group_concat(rowid) FROM (SELECT rowid FROM takes WHERE {clause} ORDER BY rowid)", params).fetchone()
    if not joined:
        return np.zeros(0, np.int64)
    return np.fromstring(joined, dtype=np.int64, sep=",")


def existing(connection: sqlite3.Connection, column: str, values: Sequence[str]) -> set[str]:
    """Which of ``values`` a live take already has in ``column`` (``id`` or ``text_key``): indexed look-ups only."""
    found: set[str] = set()
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        found.update(
            row[0]
            for row in connection.execute(
                f"SELECT {column} FROM takes WHERE {LIVE} AND {column} IN ({','.join('?' * len(chunk))})",
                chunk,
            )
        )
    return found


def first_of_each(takes: Sequence[Take], keys: Sequence[str], known_ids: set[str], known_keys: set[str]) -> list[Take]:
    """Takes whose id and content key are in neither the known sets nor earlier in ``takes``."""
    fresh: list[Take] = []
    for take, key in zip(takes, keys):
        if take.id in known_ids or key in known_keys:
            continue
        known_ids.add(take.id)
        known_keys.add(key)
        fresh.append(take)
    return fresh
