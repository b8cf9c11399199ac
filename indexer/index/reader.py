"""SQL reads of one generation: takes, threads, neighbours, FTS5 BM25, document counts, filters, authors, stats.

Every query sees the rows of one generation (``visible_clause``), so a reader
keeps a consistent view while writers commit later generations.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.errors import TakeNotFound
from indexer import token_vectors as stored_token_vectors
from indexer.index.layout import COLUMNS, TOKEN_COLUMN, connect, damaged_database, database_path, take_from_row, visible_clause
from indexer.index.manifest import Manifest
from indexer.index.sizes import named_files_bytes, reclaimable_bytes
from indexer.models import AuthorSummary, Take, ThreadSummary, first_words
from indexer.storage import Filters, name_words_sql


class ThreadConnections:
    """One read-only SQLite connection per thread, opened on first use, shared by every generation loaded."""

    def __init__(self, index_dir: Path):
        self.path = database_path(index_dir)
        self._local = threading.local()
        self._opened: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = connect(self.path, readonly=True)
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.close()
        self._local = threading.local()


def fts_match(terms: Sequence[str]) -> str | None:
    """An FTS5 query matching any of ``terms``, each as a plain word; None when there is none.

    Query text is data, never FTS5 syntax: every word is quoted, so quotes,
    ``*``, ``NEAR(``, ``AND``/``OR``/``NOT``, parentheses and colons search as
    plain words.
    """
    return " OR ".join(f'"{term}"' for term in terms) if terms else None


def author_clause(filters: Filters) -> tuple[str, list[str]]:
    """SQL matching ``filters.author`` against the name (all of it, or any of its words) or the handle.

    Case-insensitive (SQLite's lower(): ASCII letters); the handle matches
    with or without its '@'. ``Clark``, ``jack clark``, ``@jackclarkSF`` and
    ``jackclarksf`` all find Jack Clark (@jackclarkSF).
    """
    pattern, handle = filters.author_match()
    # Authors are few and takes many: the name is matched once per distinct
    # author (the subquery, read from the takes_author index), and the takes
    # are then found through that index and takes_handle, not by running
    # LIKE over every row.
    return (
        f"(takes.author IN (SELECT author FROM (SELECT DISTINCT author FROM takes) AS takes"
        f" WHERE (' ' || {name_words_sql('takes.author')} || ' ') LIKE ? ESCAPE '\\') OR lower(takes.handle) = ?)",
        [pattern, handle],
    )


def filter_sql(filters: Filters) -> tuple[str, tuple]:
    """SQL condition (and parameters) for the takes passing ``filters``."""
    clauses, params = ["1"], []
    if filters.author:
        clause, author_params = author_clause(filters)
        clauses.append(clause)
        params += author_params
    if filters.handle:
        clauses.append("lower(takes.handle) = ?")
        params.append(filters.handle_match())
    if filters.thread_id:
        clauses.append("takes.thread_id = ?")
        params.append(filters.thread_id)
    # Dates compare as text: ISO dates (and timestamps) sort chronologically.
    if filters.since:
        clauses.append("substr(takes.date, 1, 10) >= ?")
        params.append(filters.since)
    if filters.until:
        clauses.append("substr(takes.date, 1, 10) <= ?")
        params.append(filters.until)
    return " AND ".join(clauses), tuple(params)


def _visible_and(generation: int, filters: Filters) -> tuple[str, tuple]:
    """SQL condition (and parameters) for the takes of ``generation`` passing ``filters``."""
    clause, params = visible_clause(generation)
    filter_clause, filter_params = filter_sql(filters)
    return f"{clause} AND {filter_clause}", (*params, *filter_params)


def lexical(connection, generation: int, terms: Sequence[str], depth: int, filters: Filters) -> list[tuple[int, float]]:
    """The top ``depth`` takes holding any of ``terms`` by FTS5's BM25, as (row id, score), best first."""
    match = fts_match(terms)
    if match is None:
        return []
    clause, params = _visible_and(generation, filters)
    # bm25() is lower-is-better (negative); negate so higher is better everywhere.
    rows = connection.execute(
        f"""SELECT takes.rowid, -bm25(takes_fts) AS score
            FROM takes_fts JOIN takes ON takes.rowid = takes_fts.rowid
            WHERE takes_fts MATCH ? AND {clause}
            ORDER BY bm25(takes_fts) LIMIT ?""",
        (match, *params, depth),
    ).fetchall()
    return [(int(row_id), float(score)) for row_id, score in rows]


def document_count(connection, term: str) -> int:
    """How many takes the text index holds ``term`` in (the live ones: removed takes leave FTS5 at once)."""
    return connection.execute("SELECT count(*) FROM takes_fts WHERE takes_fts MATCH ?", (fts_match([term]),)).fetchone()[0]


def allowed_rows(connection, generation: int, filters: Filters) -> np.ndarray | None:
    """Row ids of ``generation`` passing ``filters``, or None when nothing filters."""
    if not filters.restricts_rows():
        return None
    clause, params = _visible_and(generation, filters)
    rows = connection.execute(f"SELECT rowid FROM takes WHERE {clause}", params)
    return np.fromiter((row[0] for row in rows), dtype=np.int64)


def takes_by_row(connection, row_ids: Sequence[int]) -> dict[int, Take]:
    if not row_ids:
        return {}
    placeholders = ",".join("?" * len(row_ids))
    rows = connection.execute(f"SELECT rowid, {COLUMNS} FROM takes WHERE rowid IN ({placeholders})", list(row_ids))
    return {row[0]: take_from_row(row[1:]) for row in rows}


def token_vectors(connection, row_ids: Sequence[int], dim: int, where: str) -> dict[int, np.ndarray]:
    """The stored token vectors of these rows, one query for all; rows without (or damaged) are left out."""
    return stored_token_vectors.decode_rows(token_rows(connection, row_ids), dim, where)


def token_rows(connection, row_ids: Sequence[int]) -> list[tuple[int, str, bytes]]:
    """(row id, text, stored token vectors) of those of these rows that have them."""
    if not row_ids:
        return []
    placeholders = ",".join("?" * len(row_ids))
    try:
        rows = connection.execute(
            f"SELECT rowid, text, {TOKEN_COLUMN} FROM takes WHERE rowid IN ({placeholders}) AND {TOKEN_COLUMN} IS NOT NULL",
            list(row_ids),
        ).fetchall()
    except sqlite3.OperationalError as error:
        # An index made before the column, opened by a reader (only a writer adds it).
        if TOKEN_COLUMN in str(error):
            return []
        raise
    return rows


def take(connection, generation: int, take_id: str) -> Take:
    clause, params = visible_clause(generation)
    row = connection.execute(f"SELECT {COLUMNS} FROM takes WHERE id = ? AND {clause}", (take_id, *params)).fetchone()
    if row is None:
        raise TakeNotFound(f"no take with id {take_id!r}")
    return take_from_row(row)


def thread(connection, generation: int, thread_id: str) -> list[Take]:
    clause, params = visible_clause(generation)
    rows = connection.execute(
        f"SELECT {COLUMNS} FROM takes WHERE thread_id = ? AND {clause} ORDER BY position, rowid", (thread_id, *params)
    ).fetchall()
    if not rows:
        raise TakeNotFound(f"no thread with id {thread_id!r}")
    return [take_from_row(row) for row in rows]


def neighbours(connection, generation: int, take: Take, size: int) -> tuple[tuple[Take, ...], tuple[Take, ...]]:
    """Up to ``size`` takes before and after ``take`` in its thread, in order."""
    if size <= 0:
        return (), ()
    clause, params = visible_clause(generation)
    before = connection.execute(
        f"SELECT {COLUMNS} FROM takes WHERE thread_id = ? AND position < ? AND {clause} ORDER BY position DESC LIMIT ?",
        (take.thread_id, take.position, *params, size),
    ).fetchall()
    after = connection.execute(
        f"SELECT {COLUMNS} FROM takes WHERE thread_id = ? AND position > ? AND {clause} ORDER BY position LIMIT ?",
        (take.thread_id, take.position, *params, size),
    ).fetchall()
    return tuple(take_from_row(row) for row in reversed(before)), tuple(take_from_row(row) for row in after)


def authors(connection, generation: int) -> list[AuthorSummary]:
    """Every author of ``generation`` with their counts, most takes first."""
    clause, params = visible_clause(generation)
    rows = connection.execute(
        f"""SELECT author, handle, count(*), count(DISTINCT thread_id) FROM takes WHERE {clause}
            GROUP BY lower(coalesce(author, '')), lower(coalesce(handle, ''))
            ORDER BY count(*) DESC, lower(coalesce(author, handle, ''))""",
        params,
    ).fetchall()
    return [AuthorSummary(author, handle, takes, threads) for author, handle, takes, threads in rows]


def threads(connection, generation: int, filters: Filters | None = None) -> list[ThreadSummary]:
    """Every thread of ``generation`` passing ``filters``, newest first."""
    clause, params = _visible_and(generation, filters or Filters())
    # SQLite fills the bare columns of a min() aggregate from the row holding the minimum: the first take.
    rows = connection.execute(
        f"""SELECT thread_id, author, handle, date, count(*), max(thread_size), min(position), text
            FROM takes WHERE {clause}
            GROUP BY thread_id ORDER BY date DESC, thread_id""",
        params,
    ).fetchall()
    return [
        ThreadSummary(thread_id, author, handle, day, takes, size, first_words(text))
        for thread_id, author, handle, day, takes, size, _, text in rows
    ]


def texts(connection, generation: int, limit: int) -> list[str]:
    """Up to ``limit`` texts of ``generation`` (word statistics for the search page)."""
    clause, params = visible_clause(generation)
    return [row[0] for row in connection.execute(f"SELECT text FROM takes WHERE {clause} LIMIT ?", (*params, limit))]


def index_stats(index_dir: Path, connection, manifest: Manifest, *, backend: str | None = None) -> dict:
    """Counts, model and size of one generation (``backend``: the one serving queries, if any).

    ``index_bytes`` counts the database and the segments the manifest names
    (never orphans); ``reclaimable_bytes`` estimates what `takes compact` frees.
    """
    clause, params = visible_clause(manifest.generation)
    try:
        thread_count = connection.execute(f"SELECT count(DISTINCT thread_id) FROM takes WHERE {clause}", params).fetchone()[0]
    except sqlite3.DatabaseError as error:
        raise damaged_database(database_path(index_dir), error) from None
    return {
        "takes": manifest.count,
        "threads": thread_count,
        "model": manifest.model,
        "dim": manifest.dim,
        "index_bytes": named_files_bytes(index_dir, manifest),
        "reclaimable_bytes": reclaimable_bytes(index_dir, connection, manifest),
        "index_type": manifest.index_type,
        "generation": manifest.generation,
        "backend": backend or manifest.backend,
    }
