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
from indexer.storage import Filters, LexicalRetrieval, name_words_sql


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
    # author, and the takes are then found through the takes_author and
    # takes_handle indexes, not by running LIKE over every row. The distinct
    # authors come from a skip scan of takes_author (one seek per author:
    # "names"), not SELECT DISTINCT: SQLite pushed the LIKE down into that
    # subquery, running it over every row (0.3-1.2 s at 100k takes), and a scan of
    # the whole index still grows with the takes.
    return (
        "(takes.author IN (WITH RECURSIVE names(author) AS (SELECT min(author) FROM takes UNION ALL"
        " SELECT (SELECT min(author) FROM takes WHERE author > names.author) FROM names WHERE names.author IS NOT NULL)"
        f" SELECT author FROM names WHERE (' ' || {name_words_sql('names.author')} || ' ') LIKE ? ESCAPE '\\')"
        " OR lower(takes.handle) = ?)",
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


def lexical(
    connection, generation: int, terms: Sequence[str], depth: int, filters: Filters, retrieval: LexicalRetrieval | None = None
) -> list[tuple[int, float]]:
    """The top ``depth`` takes ``retrieval`` names (default: any of ``terms``) by FTS5's BM25 over ``terms``, as (row id, score), best first."""
    if not terms:
        return []
    if retrieval is None or (not retrieval.every and set(retrieval.terms) == set(terms)):
        return _bm25(connection, generation, fts_match(terms), depth, filters)
    if retrieval.every:
        # Every term required: FTS5 intersects the postings by seeking, and
        # the score of a take holding them all is the same as in the OR query.
        found = _bm25(connection, generation, " AND ".join(f'"{term}"' for term in terms), depth, filters)
        return found if len(found) >= depth else _bm25(connection, generation, fts_match(terms), depth, filters)
    # The rare words retrieve; the common ones still score. bm25() sums a
    # term per phrase of its query, so a take holding a rare and a common word
    # gets its whole score from "(rare) AND (common)" (every query phrase, the
    # same idf), and one holding rare words only gets it from "(rare)" alone:
    # the common words' postings are only seeked through, never scored.
    rare = fts_match(retrieval.terms)
    both = f"({rare}) AND ({fts_match([term for term in terms if term not in retrieval.terms])})"
    found = _bm25(connection, generation, both, depth, filters) + _bm25(
        connection, generation, rare, depth, filters, except_match=both
    )
    found.sort(key=lambda row: row[1], reverse=True)
    return found[:depth]


def _bm25(
    connection, generation: int, match: str, depth: int, filters: Filters, except_match: str | None = None
) -> list[tuple[int, float]]:
    """The top ``depth`` takes of ``generation`` passing ``filters`` that FTS5 query ``match`` finds (and ``except_match`` does not), by BM25."""
    excluded, excluded_params = "", ()
    if except_match is not None:
        excluded = "AND takes_fts.rowid NOT IN (SELECT rowid FROM takes_fts WHERE takes_fts MATCH ?)"
        excluded_params = (except_match,)
    if not filters.restricts_rows():
        # FTS5 ranks alone, then the top few are checked against the
        # generation: joining every matching take to its row first cost as
        # much as the scores (half of a lexical search over a common word at
        # 100k takes). Rows FTS5 holds beyond this generation are those of
        # later commits, a few at most; when they push a visible take out of
        # the top, the joined query below answers instead.
        ranked = connection.execute(
            f"""SELECT rowid, -bm25(takes_fts) FROM takes_fts WHERE takes_fts MATCH ? {excluded}
                ORDER BY bm25(takes_fts) LIMIT ?""",
            (match, *excluded_params, 2 * depth),
        ).fetchall()
        clause, params = visible_clause(generation)
        placeholders = ",".join("?" * len(ranked))
        visible = {
            row[0]
            for row in connection.execute(
                f"SELECT rowid FROM takes WHERE rowid IN ({placeholders}) AND {clause}", (*(r[0] for r in ranked), *params)
            )
        } if ranked else set()
        if len(visible) == len(ranked) or len(visible) >= depth:
            return [(int(row_id), float(score)) for row_id, score in ranked if row_id in visible][:depth]
    clause, params = _visible_and(generation, filters)
    # bm25() is lower-is-better (negative); negate so higher is better everywhere.
    rows = connection.execute(
        f"""SELECT takes.rowid, -bm25(takes_fts) AS score
            FROM takes_fts JOIN takes ON takes.rowid = takes_fts.rowid
            WHERE takes_fts MATCH ? {excluded} AND {clause}
            ORDER BY bm25(takes_fts) LIMIT ?""",
        (match, *excluded_params, *params, depth),
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
