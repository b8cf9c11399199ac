"""The shared store: a corpus in PostgreSQL with pgvector, for several servers and writers.

One database holds the takes, their text search (a ``tsvector`` column, GIN
index), their vectors (a float32 ``vector`` column, an HNSW index over half
precision copies), the embedding cache and the corpus row (model, dimension,
backend, generation, count). Schema: ``indexer/postgres/schema.py``.

Consistency is the embedded store's, by the same means: every write is one
transaction that makes the next generation; rows are never changed in place
but marked with the generation that added and the one that removed them, so a
reader that loaded generation G answers from exactly G (``visible``) while
later ones commit, and a removed take leaves text and vector search together
at the commit that removes it. A crash before the commit leaves nothing: the
server rolls the transaction back when the connection drops.

Writers exclude each other with a session advisory lock held while the writer
is open (any machine: the lock lives in the server), and each commit checks
that the generation is still the one the writer started from. A writer embeds
before it opens its transaction, so the lock on the corpus row is held for
the inserts only.

Readers poll ``current_generation`` (one primary-key read); every commit also
sends ``NOTIFY takes_generation`` for those that listen.

The password in a database URL never reaches a message: ``location`` and every
error carry the URL without it (``redact``).

Crash tests stop a writer at a named point like the embedded store's: with
``TAKES_TEST_PAUSE_AT`` set to one of ``PAUSE_POINTS`` the writer touches
``TAKES_TEST_PAUSE_FILE`` there and sleeps, so a test can ``kill -9`` it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer.errors import (
    IndexConflict,
    IndexLocked,
    IndexNotFound,
    IndexReadOnly,
    IndexWriteFailed,
    ModelMismatch,
    TakeNotFound,
    TakesError,
)
from indexer.models import TAKE_FIELDS, AuthorSummary, Take, ThreadSummary, first_words
from indexer.postgres import schema
from indexer.storage import ChangeReport, CompactReport, Filters

logger = logging.getLogger(__name__)

INDEX_TYPE = "pgvector-hnsw"
NOTIFY_CHANNEL = "takes_generation"
PAUSE_POINTS = ("before-transaction", "inside-transaction", "after-commit")

# BM25 as FTS5 computes it (indexer/ranking.py divides by the idf mass).
BM25_K1 = 1.2
BM25_B = 0.75

# A filter passed by at most this many takes is answered by an exact scan of
# them (cheaper and exact); a broader one by the HNSW index with iterative
# scan, which keeps walking the graph until enough takes pass the filter.
EXACT_SCAN_LIMIT = 2000
# Candidates HNSW keeps while walking (pgvector's ef_search): at least twice
# what is asked, so recall at the fusion depth stays near exact.
MIN_EF_SEARCH = 100

_COLUMNS = ", ".join(TAKE_FIELDS)
_INSERT_COLUMNS = (*TAKE_FIELDS, "text_key", "added_generation", "embedding")


class DatabaseUnavailable(IndexWriteFailed):
    """The database could not be reached or refused the work; nothing was changed."""


class DatabaseEmpty(IndexNotFound):
    """No corpus has been written to the database yet."""

    def __init__(self, location: str):
        self.index_dir = Path(".")
        self.location = location
        TakesError.__init__(
            self,
            f"no corpus in {location}: build one with `takes index --database-url ...` "
            f"(or `takes copy --from DIR --to {location}`)",
        )


# -- secrets --------------------------------------------------------------------


def _password(url: str) -> str | None:
    """The password a database URL or conninfo string carries, if any."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(url).get("password") or None
    except Exception:
        match = re.search(r"://[^/@:]*:([^@/]*)@", url)
        return urllib.parse.unquote(match.group(1)) if match and match.group(1) else None


def redact(url: str) -> str:
    """``url`` without its password (kept as ``***``), for messages, logs and /stats."""
    if "://" in url:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            credentials, host = netloc.rsplit("@", 1)
            if ":" in credentials:
                credentials = credentials.split(":", 1)[0] + (":***" if credentials.split(":", 1)[1] else "")
            netloc = f"{credentials}@{host}"
        query = re.sub(r"(?i)(^|&)password=[^&]*", r"\1password=***", parts.query)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
    return re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)


def is_database_url(value: str | os.PathLike | None) -> bool:
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


# -- the corpus row -------------------------------------------------------------


@dataclass(frozen=True)
class CorpusRow:
    """One generation's corpus row: what ``CorpusInfo`` is for this store."""

    generation: int
    count: int
    model: str
    dim: int
    backend: str
    total_length: int = 0
    index_type: str = INDEX_TYPE

    def check_model(self, model: str | None, dim: int | None = None) -> None:
        """Raise ModelMismatch unless ``model`` (and ``dim``) is what embedded this corpus."""
        from indexer.index.layout import normalize_model_name

        if model is not None and normalize_model_name(model) != self.model:
            raise ModelMismatch(self.model, self.dim, model, dim)
        if dim is not None and dim != self.dim:
            raise ModelMismatch(self.model, self.dim, model or self.model, dim)

    @property
    def average_length(self) -> float:
        return self.total_length / self.count if self.count else 1.0


def _read_corpus(connection) -> CorpusRow | None:
    row = connection.execute(
        "SELECT generation, count, model, dim, backend, total_length FROM takes_corpus"
    ).fetchone()
    return CorpusRow(*row) if row else None


# -- SQL pieces -----------------------------------------------------------------

_NAME_SEPARATORS = ",.;:()[]/|"


def visible(generation: int) -> tuple[str, list]:
    """SQL condition for rows of ``generation`` (added by it, not removed by it)."""
    return (
        "takes.added_generation <= %s AND (takes.removed_generation IS NULL OR takes.removed_generation > %s)",
        [generation, generation],
    )


def filter_sql(filters: Filters) -> tuple[str, list]:
    """SQL condition (and parameters) for the takes passing ``filters``: the embedded store's rules.

    ``author`` matches the whole name, any word of it (after the separators
    in names become spaces) or the handle with or without '@', ignoring case.
    """
    clauses, params = ["true"], []
    if filters.author:
        wanted = " ".join(filters.author.split()).lower()
        name = "lower(takes.author)"
        for separator in _NAME_SEPARATORS:
            name = f"replace({name}, '{separator}', ' ')"
        words = wanted.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(f"((' ' || {name} || ' ') LIKE %s ESCAPE '\\' OR lower(takes.handle) = %s)")
        params += [f"% {words} %", "@" + wanted.lstrip("@")]
    if filters.handle:
        clauses.append("lower(takes.handle) = lower(%s)")
        params.append("@" + filters.handle.strip().lstrip("@"))
    if filters.thread_id:
        clauses.append("takes.thread_id = %s")
        params.append(filters.thread_id)
    # Dates compare as text: ISO dates (and timestamps) sort chronologically.
    if filters.since:
        clauses.append("substr(takes.date, 1, 10) >= %s")
        params.append(filters.since)
    if filters.until:
        clauses.append("substr(takes.date, 1, 10) <= %s")
        params.append(filters.until)
    return " AND ".join(clauses), params


def _take(row: Sequence) -> Take:
    return Take(*row)


def _pause_point(name: str) -> None:
    """Crash-test hook: stop here when TAKES_TEST_PAUSE_AT names this point (see PAUSE_POINTS)."""
    if os.environ.get("TAKES_TEST_PAUSE_AT") != name:
        return
    if marker := os.environ.get("TAKES_TEST_PAUSE_FILE"):
        Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + float(os.environ.get("TAKES_TEST_PAUSE_SECONDS", "60"))
    while time.monotonic() < deadline:
        time.sleep(0.05)


# -- the store --------------------------------------------------------------------


class PostgresStore:
    """A corpus in one PostgreSQL database (``Store``); safe to share between threads."""

    def __init__(self, url: str, *, application: str = "takes"):
        try:
            import pgvector  # noqa: F401
            import psycopg  # noqa: F401
        except ImportError:
            raise TakesError(
                "a database URL needs the PostgreSQL driver: pip install 'takes[postgres]' (psycopg and pgvector)"
            ) from None
        self.url = url
        self.location = redact(url)
        self._secret = _password(url)
        self._application = application
        self._local = threading.local()
        self._connections: list = []
        self._connections_lock = threading.Lock()

    # -- connections ----------------------------------------------------------

    def scrub(self, message: str) -> str:
        """``message`` with the password (and any URL carrying it) taken out."""
        message = message.replace(self.url, self.location)
        if self._secret:
            message = message.replace(self._secret, "***")
            quoted = urllib.parse.quote(self._secret, safe="")
            if quoted != self._secret:
                message = message.replace(quoted, "***")
        return message

    def unavailable(self, error: Exception, doing: str) -> TakesError:
        """The one-line error for a database failure met while ``doing`` something."""
        import psycopg

        text = self.scrub(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)
        if isinstance(error, psycopg.errors.InsufficientPrivilege) and doing in ("read", "search", "read the corpus in"):
            return DatabaseUnavailable(
                f"{self.location}: the database role may not {doing} the takes tables ({text}): "
                f"grant it SELECT on them (docs/DEPLOY.md, \"A read-only role\")"
            )
        if isinstance(error, psycopg.errors.InsufficientPrivilege):
            return IndexReadOnly(
                f"{self.location}: the database role may not {doing} ({text}); searching works, changes need a role "
                f"with write grants (docs/DEPLOY.md)"
            )
        if isinstance(error, psycopg.errors.ReadOnlySqlTransaction):
            return IndexReadOnly(
                f"{self.location} is a read-only replica ({text}); searching works, changes go to the primary's URL"
            )
        if isinstance(error, psycopg.errors.LockNotAvailable):
            return IndexLocked(f"{self.location} is being written by another writer ({text}); try again when it finishes")
        return DatabaseUnavailable(f"cannot {doing} {self.location} ({text}); nothing was changed")

    def connect(self, *, autocommit: bool = True, application: str | None = None, register: bool = True):
        """A new connection with the vector types registered (when the extension is there)."""
        import psycopg

        try:
            connection = psycopg.connect(
                self.url, autocommit=autocommit, application_name=application or self._application, connect_timeout=10
            )
        except psycopg.Error as error:
            raise self.unavailable(error, "connect to") from None
        if register:
            self._register_vector(connection)
        return connection

    @staticmethod
    def _register_vector(connection) -> bool:
        from pgvector.psycopg import register_vector

        try:
            register_vector(connection)
            return True
        except Exception:
            # No extension yet (a new database): the first writer creates it.
            if not connection.autocommit:
                connection.rollback()
            return False

    def reader(self):
        """This thread's reading connection (autocommit), opened once."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and connection.closed:
            connection = None
        if connection is None:
            connection = self.connect(register=False)
            connection.execute("SET hnsw.iterative_scan = relaxed_order")
            self._local.connection = connection
            self._local.registered = self._register_vector(connection)
            self._local.ef_search = None
            with self._connections_lock:
                self._connections.append(connection)
        return connection

    @contextlib.contextmanager
    def reading(self, doing: str = "read"):
        """This thread's connection, with database failures turned into one-line errors."""
        import psycopg

        try:
            yield self.reader()
        except psycopg.OperationalError as error:
            # A dropped connection: the next call opens a new one.
            self._local.connection = None
            raise self.unavailable(error, doing) from None
        except psycopg.Error as error:
            raise self.unavailable(error, doing) from None

    def set_ef_search(self, connection, value: int) -> None:
        if getattr(self._local, "ef_search", None) != value:
            connection.execute(f"SET hnsw.ef_search = {int(value)}")
            self._local.ef_search = value

    # -- Store ------------------------------------------------------------------

    def _corpus(self) -> CorpusRow | None:
        with self.reading("read the corpus in") as connection:
            if schema.schema_version(connection) == 0:
                return None
            return _read_corpus(connection)

    def exists(self) -> bool:
        return self._corpus() is not None

    def committed_info(self) -> CorpusRow | None:
        """What the committed generation is, without loading it; None when nothing was written."""
        return self._corpus()

    def lookup(self) -> "PostgresGeneration":
        """The committed generation's takes (listing, stats): loading one costs a read here."""
        return self.load()

    def not_found(self) -> DatabaseEmpty:
        return DatabaseEmpty(self.location)

    def current_generation(self) -> int:
        """The committed generation (one primary-key read); 0 when empty."""
        import psycopg

        with self.reading("read the corpus in") as connection:
            try:
                row = connection.execute("SELECT generation FROM takes_corpus").fetchone()
            except psycopg.errors.UndefinedTable:
                return 0  # a database takes has not written yet
            return row[0] if row else 0

    def load(self, previous: "PostgresGeneration | None" = None) -> "PostgresGeneration":
        """The current generation, for reading; DatabaseEmpty when nothing was written."""
        with self.reading("read the corpus in") as connection:
            version = schema.schema_version(connection)
            if version > schema.LATEST_VERSION:
                raise DatabaseUnavailable(
                    f"{self.location} has schema version {version}, newer than this takes knows "
                    f"({schema.LATEST_VERSION}): upgrade takes"
                )
            info = _read_corpus(connection) if version else None
        if info is None:
            raise DatabaseEmpty(self.location)
        if not getattr(self._local, "registered", False):
            # A connection opened before the first writer created the extension.
            self._local.registered = self._register_vector(self.reader())
        if previous is not None and previous.info == info:
            return previous
        return PostgresGeneration(self, info)

    def writer(self, *, lock_timeout: float = 30.0) -> "PostgresWriter":
        return PostgresWriter(self, lock_timeout=lock_timeout)

    def new_takes(self, takes: Sequence[Take]) -> list[Take]:
        """The takes an add would store (a dry run: nothing is written, no lock is taken)."""
        from indexer.index.layout import first_of_each as _first_of_each, text_key

        keys = [text_key(take.text, take.author) for take in takes]
        with self.reading("read") as connection:
            if schema.schema_version(connection) == 0:
                return _first_of_each(takes, keys, set(), set())
            return _first_of_each(
                takes, keys, _existing(connection, "id", [take.id for take in takes]), _existing(connection, "text_key", keys)
            )

    def listen(self):
        """A connection LISTENing for new generations: ``connection.notifies()`` yields one per commit."""
        connection = self.connect()
        connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return connection

    def close(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(Exception):
                connection.close()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"


def _existing(connection, column: str, values: Sequence[str]) -> set[str]:
    """Which of ``values`` a live take already has in ``column`` (``id`` or ``text_key``)."""
    unique = list(dict.fromkeys(values))
    if not unique:
        return set()
    rows = connection.execute(
        f"SELECT {column} FROM takes WHERE removed_generation IS NULL AND {column} = ANY(%s)", (unique,)
    )
    return {row[0] for row in rows}


# -- reading ------------------------------------------------------------------------


class PostgresGeneration:
    """One generation of the corpus for reading (``Generation``); every query names its number."""

    def __init__(self, store: PostgresStore, info: CorpusRow):
        self.store = store
        self.info = info
        self._document_counts: dict[str, int] = {}
        self._lexemes: dict[str, tuple[str, ...]] = {}
        self._mean: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self.info.generation

    @property
    def manifest(self) -> CorpusRow:
        return self.info

    def _visible(self) -> tuple[str, list]:
        return visible(self.info.generation)

    # -- TakeLookup ---------------------------------------------------------------

    def takes(self, row_ids: Sequence[int]) -> dict[int, Take]:
        if not row_ids:
            return {}
        clause, params = self._visible()
        with self.store.reading() as connection:
            rows = connection.execute(
                f"SELECT row_id, {_COLUMNS} FROM takes WHERE row_id = ANY(%s) AND {clause}",
                [list(map(int, row_ids)), *params],
            ).fetchall()
        return {row[0]: _take(row[1:]) for row in rows}

    def take(self, take_id: str) -> Take:
        clause, params = self._visible()
        with self.store.reading() as connection:
            row = connection.execute(f"SELECT {_COLUMNS} FROM takes WHERE id = %s AND {clause}", [take_id, *params]).fetchone()
        if row is None:
            raise TakeNotFound(f"no take with id {take_id!r}")
        return _take(row)

    def thread(self, thread_id: str) -> list[Take]:
        clause, params = self._visible()
        with self.store.reading() as connection:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM takes WHERE thread_id = %s AND {clause} ORDER BY position, row_id",
                [thread_id, *params],
            ).fetchall()
        if not rows:
            raise TakeNotFound(f"no thread with id {thread_id!r}")
        return [_take(row) for row in rows]

    def neighbours(self, take: Take, size: int) -> tuple[tuple[Take, ...], tuple[Take, ...]]:
        if size <= 0:
            return (), ()
        clause, params = self._visible()
        with self.store.reading() as connection:
            before = connection.execute(
                f"SELECT {_COLUMNS} FROM takes WHERE thread_id = %s AND position < %s AND {clause} "
                f"ORDER BY position DESC LIMIT %s",
                [take.thread_id, take.position, *params, size],
            ).fetchall()
            after = connection.execute(
                f"SELECT {_COLUMNS} FROM takes WHERE thread_id = %s AND position > %s AND {clause} "
                f"ORDER BY position LIMIT %s",
                [take.thread_id, take.position, *params, size],
            ).fetchall()
        return tuple(_take(row) for row in reversed(before)), tuple(_take(row) for row in after)

    def _term_lexemes(self, connection, terms: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Each term's lexemes, as the text search indexes words (usually one: its stem)."""
        missing = [term for term in dict.fromkeys(terms) if term not in self._lexemes]
        if missing:
            rows = connection.execute(
                "SELECT term, array(SELECT lexeme FROM unnest(takes_document(term)) ORDER BY lexeme) "
                "FROM unnest(%s::text[]) AS term",
                [missing],
            ).fetchall()
            with self._lock:
                for term, lexemes in rows:
                    self._lexemes[term] = tuple(lexemes)
        return {term: self._lexemes[term] for term in terms}

    def _posting_visible(self) -> tuple[str, list]:
        """SQL condition for postings of takes in this generation (postings are never changed)."""
        generation = self.info.generation
        return (
            "p.added_generation <= %s AND NOT EXISTS (SELECT 1 FROM takes r WHERE r.row_id = p.row_id "
            "AND r.removed_generation IS NOT NULL AND r.removed_generation <= %s)",
            [generation, generation],
        )

    def _counts(self, connection, lexemes: Sequence[str]) -> dict[str, int]:
        """How many takes of the generation hold each lexeme (from the postings, for the missing ones)."""
        missing = [lexeme for lexeme in dict.fromkeys(lexemes) if lexeme not in self._document_counts]
        if missing:
            clause, params = self._posting_visible()
            found = dict(
                connection.execute(
                    f"SELECT p.lexeme, count(*) FROM takes_postings p WHERE p.lexeme = ANY(%s) AND {clause} GROUP BY p.lexeme",
                    [missing, *params],
                ).fetchall()
            )
            with self._lock:
                if len(self._document_counts) > 10_000:
                    self._document_counts.clear()
                self._document_counts.update({lexeme: found.get(lexeme, 0) for lexeme in missing})
        return {lexeme: self._document_counts[lexeme] for lexeme in lexemes}

    def document_counts(self, terms: Sequence[str]) -> list[int]:
        if not terms:
            return []
        with self.store.reading() as connection:
            lexemes = self._term_lexemes(connection, terms)
            counts = self._counts(connection, [lexeme for values in lexemes.values() for lexeme in values])
        # A term the text search splits ("gpt_4") counts as its rarest part.
        return [min((counts[lexeme] for lexeme in lexemes[term]), default=0) for term in terms]

    def lexical(self, terms: Sequence[str], depth: int, filters: Filters) -> list[tuple[int, float]]:
        """BM25 computed in SQL from term frequencies and document lengths, as FTS5's bm25() does.

        (ts_rank is not BM25: it has no idf and a different length norm, and
        the calibrated scores of indexer/ranking.py assume BM25.) The postings
        give each matching take's counts; with filters, only the takes passing
        them are scored.
        """
        if not terms or self.info.count == 0:
            return []
        from indexer.ranking import idf

        with self.store.reading() as connection:
            lexemes = sorted({lexeme for values in self._term_lexemes(connection, terms).values() for lexeme in values})
            if not lexemes:
                return []
            counts = self._counts(connection, lexemes)
            idfs = [idf(self.info.count, counts[lexeme]) for lexeme in lexemes]
            clause, params = self._posting_visible()
            passing, join, passing_params = "", "", []
            if filters.restricts_rows():
                # The takes passing the filters first, once: joining them to the
                # postings by row id costs what they number (a correlated check
                # per posting cost a row lookup for every take holding a common word).
                visible_clause, visible_params = self._visible()
                filter_clause, filter_params = filter_sql(filters)
                passing = f"WITH passing AS MATERIALIZED (SELECT takes.row_id FROM takes WHERE {visible_clause} AND {filter_clause})"
                join = "JOIN passing ON passing.row_id = p.row_id"
                passing_params = [*visible_params, *filter_params]
            rows = connection.execute(
                f"""{passing}
                    SELECT p.row_id,
                           sum(q.idf * p.tf * {BM25_K1 + 1} / (p.tf + {BM25_K1} * ({1 - BM25_B} + {BM25_B} * p.length / %s))) AS score
                    FROM unnest(%s::text[], %s::float8[]) AS q(lexeme, idf)
                    JOIN takes_postings p ON p.lexeme = q.lexeme {join}
                    WHERE {clause}
                    GROUP BY p.row_id ORDER BY score DESC, p.row_id LIMIT %s""",
                [*passing_params, self.info.average_length, lexemes, idfs, *params, depth],
            ).fetchall()
        return [(int(row_id), float(score)) for row_id, score in rows]

    def authors(self) -> list[AuthorSummary]:
        clause, params = self._visible()
        with self.store.reading() as connection:
            rows = connection.execute(
                f"""SELECT min(author), min(handle), count(*), count(DISTINCT thread_id) FROM takes WHERE {clause}
                    GROUP BY lower(coalesce(author, '')), lower(coalesce(handle, ''))
                    ORDER BY count(*) DESC, lower(coalesce(min(author), min(handle), '')) COLLATE "C" """,
                params,
            ).fetchall()
        return [AuthorSummary(author, handle, takes, threads) for author, handle, takes, threads in rows]

    def threads(self, filters: Filters) -> list[ThreadSummary]:
        clause, params = self._visible()
        filter_clause, filter_params = filter_sql(filters or Filters())
        # The first take passing the filters stands for its thread, as in the embedded store.
        with self.store.reading() as connection:
            rows = connection.execute(
                f"""WITH passing AS (SELECT row_id, thread_id, author, handle, date, text, position, thread_size
                                 FROM takes WHERE {clause} AND {filter_clause}),
                         firsts AS (SELECT DISTINCT ON (thread_id) thread_id, author, handle, date, text
                                    FROM passing ORDER BY thread_id, position, row_id),
                         sizes AS (SELECT thread_id, count(*) AS takes, max(thread_size) AS size FROM passing GROUP BY thread_id)
                    SELECT firsts.thread_id, author, handle, date, sizes.takes, sizes.size, text
                    FROM firsts JOIN sizes USING (thread_id)
                    ORDER BY date COLLATE "C" DESC NULLS LAST, firsts.thread_id COLLATE "C" """,
                [*params, *filter_params],
            ).fetchall()
        return [
            ThreadSummary(thread_id, author, handle, day, takes, size, first_words(text))
            for thread_id, author, handle, day, takes, size, text in rows
        ]

    def texts(self, limit: int) -> list[str]:
        """Up to ``limit`` texts of the generation (word statistics for the search page)."""
        clause, params = self._visible()
        with self.store.reading() as connection:
            return [row[0] for row in connection.execute(f"SELECT text FROM takes WHERE {clause} ORDER BY row_id LIMIT %s", [*params, limit])]

    def stats(self) -> dict:
        clause, params = self._visible()
        with self.store.reading() as connection:
            threads = connection.execute(f"SELECT count(DISTINCT thread_id) FROM takes WHERE {clause}", params).fetchone()[0]
            sizes = connection.execute(
                """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)
                   FROM pg_class c WHERE c.relname IN ('takes', 'takes_corpus') AND c.relkind = 'r'"""
            ).fetchone()[0]
            removed = connection.execute(
                "SELECT count(*) FROM takes WHERE removed_generation IS NOT NULL"
            ).fetchone()[0]
            stored = connection.execute("SELECT count(*) FROM takes").fetchone()[0]
            dead = connection.execute(
                "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables WHERE relname = 'takes'"
            ).fetchone()
        per_row = sizes / max(stored, 1)
        return {
            "takes": self.info.count,
            "threads": threads,
            "model": self.info.model,
            "dim": self.info.dim,
            "index_bytes": int(sizes),
            "reclaimable_bytes": int(per_row * (removed + (dead[0] if dead else 0))),
            "index_type": self.info.index_type,
            "generation": self.info.generation,
            "backend": self.info.backend,
        }

    # -- VectorSearch -------------------------------------------------------------

    def nearest(self, vector: np.ndarray, depth: int, filters: Filters) -> list[tuple[int, float]]:
        """Filters and vector search in one SQL statement; exact when few takes pass the filters."""
        if self.info.count == 0 or depth <= 0:
            return []
        query = np.ascontiguousarray(np.ravel(vector), dtype=np.float32)
        if len(query) != self.info.dim:
            raise ModelMismatch(self.info.model, self.info.dim, self.info.model, len(query))
        dim = int(self.info.dim)
        clause, params = self._visible()
        filter_clause, filter_params = filter_sql(filters)
        # Every take visible in a generation has its dimension; the HNSW index is
        # partial on it, so the approximate query names it (reading each row's
        # vector to check it would slow the scans below: not there).
        where = f"{clause} AND {filter_clause}"
        indexed = f"vector_dims(takes.embedding) = {dim} AND {where}"
        from pgvector import Vector

        query_value = Vector(query)
        with self.store.reading("search") as connection:
            exact = False
            if filters.restricts_rows():
                passing = connection.execute(
                    f"SELECT count(*) FROM (SELECT 1 FROM takes WHERE {where} LIMIT {EXACT_SCAN_LIMIT + 1}) AS passing",
                    [*params, *filter_params],
                ).fetchone()[0]
                if passing == 0:
                    return []
                exact = passing <= EXACT_SCAN_LIMIT
            rows = [] if exact else self._approximate(connection, query_value, dim, indexed, [*params, *filter_params], depth)
            wanted = min(depth, self.info.count)
            if exact or len(rows) < wanted:
                # Ordering by the float32 distance (no index on it) is an exact scan of the passing takes.
                rows = connection.execute(
                    f"""SELECT row_id, -(embedding <#> %s) AS score FROM takes WHERE {where}
                        ORDER BY embedding <#> %s, row_id LIMIT %s""",
                    [query_value, *params, *filter_params, query_value, depth],
                ).fetchall()
        return [(int(row_id), float(score)) for row_id, score in rows]

    def _approximate(self, connection, query_value, dim: int, where: str, params: list, depth: int):
        self.store.set_ef_search(connection, min(max(MIN_EF_SEARCH, 2 * depth), 1000))
        # relaxed_order iterative scan: HNSW keeps walking until ``depth`` rows
        # pass the WHERE; the outer ORDER BY restores exact order by the float32 score.
        return connection.execute(
            f"""WITH nearest AS MATERIALIZED (
                    SELECT row_id, embedding FROM takes WHERE {where}
                    ORDER BY embedding::halfvec({dim}) <#> %s::halfvec({dim}) LIMIT %s)
                SELECT row_id, -(embedding <#> %s) AS score FROM nearest ORDER BY score DESC, row_id""",
            [*params, query_value, depth, query_value],
        ).fetchall()

    def inner_products(self, vector: np.ndarray, row_ids: Sequence[int]) -> dict[int, float]:
        if not row_ids:
            return {}
        from pgvector import Vector

        query = Vector(np.ascontiguousarray(np.ravel(vector), dtype=np.float32))
        with self.store.reading("search") as connection:
            rows = connection.execute(
                "SELECT row_id, -(embedding <#> %s) FROM takes WHERE row_id = ANY(%s)", [query, list(map(int, row_ids))]
            ).fetchall()
        return {int(row_id): float(score) for row_id, score in rows}

    def mean_direction(self) -> np.ndarray:
        if self._mean is not None:
            return self._mean
        clause, params = self._visible()
        with self.store.reading("search") as connection:
            row = connection.execute(
                f"SELECT avg(embedding) FROM takes WHERE vector_dims(embedding) = {int(self.info.dim)} AND {clause}", params
            ).fetchone()
        mean = np.zeros(self.info.dim, np.float32) if row[0] is None else np.asarray(row[0].to_numpy(), dtype=np.float32)
        norm = float(np.linalg.norm(mean))
        self._mean = mean / norm if norm > 0 else mean
        return self._mean

    def vectors(self, row_ids: Sequence[int]) -> dict[int, np.ndarray]:
        """The stored float32 vectors of these takes (``takes copy`` moves them as they are)."""
        with self.store.reading() as connection:
            rows = connection.execute(
                "SELECT row_id, embedding FROM takes WHERE row_id = ANY(%s)", [list(map(int, row_ids))]
            ).fetchall()
        return {int(row_id): np.asarray(embedding.to_numpy(), dtype=np.float32) for row_id, embedding in rows}

    def row_ids(self) -> list[int]:
        """Every row id of the generation, in insertion order."""
        clause, params = self._visible()
        with self.store.reading() as connection:
            return [row[0] for row in connection.execute(f"SELECT row_id FROM takes WHERE {clause} ORDER BY row_id", params)]


def _tsquery(lexemes: Sequence[str]) -> str:
    """A tsquery matching any of ``lexemes``, each quoted: words are data, never query syntax."""
    return " | ".join("'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'" for lexeme in lexemes)


# -- writing ------------------------------------------------------------------------


@dataclass
class _Prepared:
    takes: list
    vectors: np.ndarray
    embedded: int
    model: str
    backend: str
    dim: int


class PostgresWriter:
    """The single writer of the corpus while open (``Writer``): holds the advisory lock."""

    def __init__(self, store: PostgresStore, *, lock_timeout: float = 30.0):
        import psycopg

        self.store = store
        self.location = store.location
        holder = f"takes writer pid {os.getpid()} on {socket.gethostname()}"
        self._connection = store.connect(autocommit=True, application=holder[:63])
        try:
            try:
                schema.migrate(self._connection)
            except psycopg.Error as error:
                raise store.unavailable(error, "create or migrate the schema in") from None
            if not store._register_vector(self._connection):
                raise DatabaseUnavailable(f"{self.location}: the vector extension is not installed (docs/DEPLOY.md)")
            self._lock(lock_timeout)
            self.info: CorpusRow | None = _read_corpus(self._connection)
        except BaseException:
            self._connection.close()
            raise

    def _lock(self, timeout: float) -> None:
        """Take the writer lock, waiting up to ``timeout`` seconds for another writer."""
        deadline = time.monotonic() + timeout
        while True:
            got = self._connection.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (schema.LOCK_NAMESPACE, schema.WRITER_LOCK)
            ).fetchone()[0]
            if got:
                return
            if time.monotonic() >= deadline:
                row = self._connection.execute(
                    """SELECT a.application_name, a.client_addr FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                       WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted LIMIT 1""",
                    (schema.LOCK_NAMESPACE, schema.WRITER_LOCK),
                ).fetchone()
                holder = (row[0] or "another process") if row else "another process"
                raise IndexLocked(
                    f"{self.location} is being written by another writer ({holder}); waited {timeout:g}s: "
                    f"try again when it finishes, or wait longer with --lock-timeout"
                )
            time.sleep(0.1)

    def __enter__(self) -> "PostgresWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        # Closing the session releases the advisory lock.
        with contextlib.suppress(Exception):
            self._connection.close()

    @property
    def generation(self) -> int:
        return self.info.generation if self.info else 0

    @property
    def manifest(self) -> CorpusRow | None:
        """The committed corpus row (the embedded writer's name for ``info``)."""
        return self.info

    # -- operations ---------------------------------------------------------------

    def new_takes(self, takes: Sequence[Take]) -> list[Take]:
        from indexer.index.layout import first_of_each as _first_of_each, text_key

        keys = [text_key(take.text, take.author) for take in takes]
        with self._translated("read"):
            return _first_of_each(
                takes, keys, _existing(self._connection, "id", [take.id for take in takes]), _existing(self._connection, "text_key", keys)
            )

    def add(self, takes: Sequence[Take], embedder, *, model: str, backend: str | None = None, progress: bool = False) -> ChangeReport:
        """Add the takes not already stored (same id, or same text from the same author)."""
        self._check_model(model)
        fresh = self.new_takes(takes)
        if not fresh and self.info is not None:
            return ChangeReport(skipped=len(takes), generation=self.info.generation)
        report = self._commit(self._prepare(fresh, embedder, model, backend, progress), replace=False)
        report.skipped = len(takes) - len(fresh)
        return report

    def replace_all(self, takes: Sequence[Take], embedder, *, model: str, backend: str | None = None, progress: bool = False) -> ChangeReport:
        from indexer.index.layout import first_of_each as _first_of_each, text_key

        unique = _first_of_each(takes, [text_key(take.text, take.author) for take in takes], set(), set())
        report = self._commit(self._prepare(unique, embedder, model, backend, progress), replace=True)
        report.skipped = len(takes) - len(unique)
        return report

    def rebuild(self, embedder, *, model: str, backend: str | None = None, progress: bool = False) -> ChangeReport:
        if self.info is None:
            raise DatabaseEmpty(self.location)
        with self._translated("read"):
            rows = self._connection.execute(
                f"SELECT {_COLUMNS} FROM takes WHERE removed_generation IS NULL ORDER BY row_id"
            ).fetchall()
        return self._commit(self._prepare([_take(row) for row in rows], embedder, model, backend, progress), replace=True)

    def add_vectors(self, takes: Sequence[Take], vectors: np.ndarray, *, model: str, backend: str) -> ChangeReport:
        """Add takes with vectors already made by ``model`` (``takes copy``): nothing is embedded."""
        from indexer.index.layout import normalize_model_name

        self._check_model(model)
        fresh = self.new_takes(takes)
        keep = {id(take) for take in fresh}
        selected = np.asarray([vector for take, vector in zip(takes, vectors) if id(take) in keep], dtype=np.float32)
        dim = int(vectors.shape[1]) if len(vectors) else (self.info.dim if self.info else 0)
        prepared = _Prepared(list(fresh), selected.reshape(len(fresh), dim), 0, normalize_model_name(model), backend, dim)
        if not fresh and self.info is not None:
            return ChangeReport(skipped=len(takes), generation=self.info.generation)
        report = self._commit(prepared, replace=False)
        report.skipped = len(takes) - len(fresh)
        return report

    def remove(self, ids: Sequence[str] = (), thread_id: str | None = None) -> ChangeReport:
        if self.info is None:
            raise DatabaseEmpty(self.location)
        generation = self.info.generation + 1
        with self._transaction(generation) as connection:
            row_ids: set[int] = set()
            if ids:
                found = dict(
                    connection.execute(
                        "SELECT id, row_id FROM takes WHERE removed_generation IS NULL AND id = ANY(%s)", (list(ids),)
                    ).fetchall()
                )
                missing = [take_id for take_id in ids if take_id not in found]
                if missing:
                    raise TakeNotFound(f"no take with id {', '.join(map(repr, missing))} in {self.location}; nothing removed")
                row_ids.update(found.values())
            if thread_id is not None:
                thread_rows = [
                    row[0]
                    for row in connection.execute(
                        "SELECT row_id FROM takes WHERE removed_generation IS NULL AND thread_id = %s", (thread_id,)
                    )
                ]
                if not thread_rows:
                    raise TakeNotFound(f"no thread with id {thread_id!r} in {self.location}; nothing removed")
                row_ids.update(thread_rows)
            connection.execute(
                "UPDATE takes SET removed_generation = %s WHERE row_id = ANY(%s) AND removed_generation IS NULL",
                (generation, sorted(row_ids)),
            )
            self._record(connection, generation, self.info.model, self.info.dim, self.info.backend)
        return ChangeReport(removed=len(row_ids), generation=generation)

    def compact(self) -> CompactReport:
        """Delete removed takes (a new generation when there are some), then VACUUM the tables."""
        if self.info is None:
            raise DatabaseEmpty(self.location)
        before = self._bytes()
        with self._translated("read"):
            removed = self._connection.execute("SELECT count(*) FROM takes WHERE removed_generation IS NOT NULL").fetchone()[0]
        generation = self.info.generation
        if removed:
            generation += 1
            with self._transaction(generation, purge_before=generation + 1) as connection:
                self._record(connection, generation, self.info.model, self.info.dim, self.info.backend)
        not_vacuumed = None
        try:
            with self._translated("vacuum"):
                for table in ("takes", "takes_embedding_cache", "takes_corpus"):
                    self._connection.execute(f"VACUUM (ANALYZE) {table}")
        except TakesError as error:
            not_vacuumed = str(error)
        return CompactReport(
            bytes_before=before,
            bytes_after=self._bytes(),
            purged=removed,
            segments_before=1,
            segments_after=1,
            generation=generation,
            not_vacuumed=not_vacuumed,
        )

    # -- internals ------------------------------------------------------------------

    def _bytes(self) -> int:
        with self._translated("read"):
            return int(
                self._connection.execute(
                    """SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                       WHERE c.relname IN ('takes', 'takes_corpus', 'takes_embedding_cache') AND c.relkind = 'r'"""
                ).fetchone()[0]
            )

    def _check_model(self, model: str) -> None:
        if self.info is not None and self.info.count > 0:
            self.info.check_model(model)

    @contextlib.contextmanager
    def _translated(self, doing: str):
        import psycopg

        try:
            yield
        except psycopg.Error as error:
            raise self.store.unavailable(error, doing + " in" if doing in ("read", "vacuum") else doing) from None

    def _prepare(self, takes: Sequence[Take], embedder, model: str, backend: str | None, progress: bool) -> _Prepared:
        """Vectors for ``takes``, from the cache where possible: all of it before any transaction."""
        from indexer.index.embedding_cache import cache_model_name
        from indexer.index.layout import normalize_model_name, text_hash

        def _instance(embedder):
            return embedder if hasattr(embedder, "encode") else embedder()

        backend = backend or getattr(embedder, "backend", None) or (self.info.backend if self.info else "torch")
        model = normalize_model_name(model)
        cache_model = cache_model_name(model, backend)
        hashes = [text_hash(take.text) for take in takes]
        dim = self.info.dim if self.info and self.info.model == model else 0
        cached: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        with self._translated("read the embedding cache in"):
            for start in range(0, len(unique), 1000):
                for digest, embedding in self._connection.execute(
                    "SELECT text_hash, embedding FROM takes_embedding_cache WHERE model = %s AND text_hash = ANY(%s)",
                    (cache_model, unique[start : start + 1000]),
                ):
                    vector = np.asarray(embedding.to_numpy(), dtype=np.float32)
                    if not dim or len(vector) == dim:
                        cached[digest] = vector
        missing = [digest for digest in unique if digest not in cached]
        if missing:
            instance = _instance(embedder)
            text_by_hash = dict(zip(hashes, (take.text for take in takes)))
            fresh = instance.encode([text_by_hash[digest] for digest in missing], progress=progress)
            cached.update(zip(missing, fresh))
            dim = instance.dim
            self._cache(cache_model, list(zip(missing, fresh)))
        if not takes:
            dim = dim or (self.info.dim if self.info and self.info.model == model else 0) or _instance(embedder).dim
            return _Prepared([], np.zeros((0, dim), np.float32), 0, model, backend, dim)
        vectors = np.stack([cached[digest] for digest in hashes]).astype(np.float32, copy=False)
        return _Prepared(list(takes), vectors, len(missing), model, backend, int(vectors.shape[1]))

    def fill_cache(self, takes: Sequence[Take], vectors: np.ndarray, *, model: str, backend: str) -> None:
        """Put vectors made elsewhere (another store) in the embedding cache: writing those takes then embeds nothing."""
        from indexer.index.embedding_cache import cache_model_name
        from indexer.index.layout import normalize_model_name, text_hash

        items = list({text_hash(take.text): vector for take, vector in zip(takes, vectors)}.items())
        for start in range(0, len(items), 5000):
            self._cache(cache_model_name(normalize_model_name(model), backend), items[start : start + 5000])

    def _cache(self, cache_model: str, items: list) -> None:
        """Keep fresh vectors in the cache, in their own transaction: a failed add still keeps them."""
        import psycopg

        try:
            with self._connection.transaction():
                with self._connection.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO takes_embedding_cache (model, text_hash, embedding) VALUES (%s, %s, %s) "
                        "ON CONFLICT (model, text_hash) DO UPDATE SET embedding = excluded.embedding",
                        [(cache_model, digest, np.asarray(vector, np.float32)) for digest, vector in items],
                    )
        except psycopg.Error as error:
            # Only a speed-up is lost.
            logger.warning("cannot write the embedding cache in %s: %s", self.location, self.store.scrub(str(error)))

    @contextlib.contextmanager
    def _transaction(self, generation: int, *, purge_before: int | None = None):
        """One transaction for ``generation``: all of it commits, or none of it.

        It locks the corpus row and checks that the committed generation is
        still the one this writer started from, then purges the rows removed
        before the previous generation (no reader can still need them).
        """
        import psycopg

        _pause_point("before-transaction")
        try:
            with self._connection.transaction():
                row = self._connection.execute("SELECT generation FROM takes_corpus FOR UPDATE").fetchone()
                committed = row[0] if row else 0
                if committed != generation - 1:
                    raise IndexConflict(
                        f"another writer committed generation {committed} to {self.location} while this one "
                        f"prepared generation {generation}; nothing was changed: run the command again"
                    )
                purge_below = (generation if purge_before is None else purge_before) - 1
                self._connection.execute(
                    "DELETE FROM takes_postings WHERE row_id IN "
                    "(SELECT row_id FROM takes WHERE removed_generation IS NOT NULL AND removed_generation < %s)",
                    (purge_below,),
                )
                self._connection.execute(
                    "DELETE FROM takes WHERE removed_generation IS NOT NULL AND removed_generation < %s", (purge_below,)
                )
                yield self._connection
                _pause_point("inside-transaction")
                self._connection.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, str(generation)))
        except psycopg.Error as error:
            raise self.store.unavailable(error, "write to") from None
        self.info = _read_corpus(self._connection)
        _pause_point("after-commit")

    def _record(self, connection, generation: int, model: str, dim: int, backend: str) -> None:
        """Write the corpus row inside the open transaction: its commit is the switch."""
        count, total_length = connection.execute(
            "SELECT count(*), coalesce(sum(length), 0) FROM takes WHERE removed_generation IS NULL"
        ).fetchone()
        connection.execute(
            """INSERT INTO takes_corpus (model, dim, backend, generation, count, total_length, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s, now())
               ON CONFLICT (singleton) DO UPDATE SET model = excluded.model, dim = excluded.dim, backend = excluded.backend,
                   generation = excluded.generation, count = excluded.count, total_length = excluded.total_length,
                   updated_at = excluded.updated_at""",
            (model, dim, backend, generation, count, total_length),
        )

    def _commit(self, prepared: _Prepared, *, replace: bool) -> ChangeReport:
        from indexer.index.layout import text_key

        current = self.info
        if current is not None and not replace and current.count and prepared.dim != current.dim:
            raise ModelMismatch(current.model, current.dim, prepared.model, prepared.dim)
        generation = (current.generation if current else 0) + 1
        with self._transaction(generation) as connection:
            if replace:
                connection.execute(
                    "UPDATE takes SET removed_generation = %s WHERE removed_generation IS NULL", (generation,)
                )
            # A first load (or a new dimension) inserts first and builds the
            # HNSW index after: much faster than growing it row by row.
            index_exists = connection.execute(
                "SELECT 1 FROM pg_indexes WHERE tablename = 'takes' AND indexname = %s",
                (schema.vector_index_name(prepared.dim),),
            ).fetchone()
            if prepared.takes:
                (last_row,) = connection.execute("SELECT coalesce(max(row_id), 0) FROM takes").fetchone()
                with connection.cursor().copy(
                    f"COPY takes ({', '.join(_INSERT_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(["text", "text", "text", "text", "text", "text", "int4", "int4", "text", "text", "text", "int8", "vector"])
                    for take, vector in zip(prepared.takes, prepared.vectors):
                        copy.write_row(
                            (*(getattr(take, name) for name in TAKE_FIELDS), text_key(take.text, take.author), generation, vector)
                        )
                connection.execute(
                    """INSERT INTO takes_postings (lexeme, row_id, tf, length, added_generation)
                       SELECT u.lexeme, t.row_id, coalesce(array_length(u.positions, 1), 1), t.length, t.added_generation
                       FROM takes t, unnest(t.document) AS u WHERE t.row_id > %s""",
                    (last_row,),
                )
            if not index_exists:
                schema.ensure_vector_index(connection, prepared.dim)
            self._record(connection, generation, prepared.model, prepared.dim, prepared.backend)
        if len(prepared.takes) >= 1000:
            # Fresh statistics for the planner, and a visibility map that lets
            # BM25 read the postings from their index alone.
            with contextlib.suppress(Exception):
                self._connection.execute("VACUUM (ANALYZE) takes_postings, takes")
        return ChangeReport(
            added=len(prepared.takes),
            embedded=prepared.embedded,
            threads=len({take.thread_id for take in prepared.takes}),
            generation=generation,
            added_ids=[take.id for take in prepared.takes],
        )
