"""The write side of the shared store: the one writer (a session advisory lock), its transactions and commits."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from indexer import token_vectors
from indexer.errors import IndexConflict, IndexLocked, ModelMismatch, TakeNotFound, TakesError
from indexer.models import TAKE_FIELDS, Take
from indexer.postgres import schema
from indexer.postgres.connection import DatabaseEmpty, DatabaseUnavailable
from indexer.postgres.corpus import COLUMNS, NOTIFY_CHANNEL, CorpusRow, existing_values, read_corpus, take_from_row
from indexer.storage import ChangeReport, CompactReport

if TYPE_CHECKING:
    from indexer.postgres.store import PostgresStore

logger = logging.getLogger(__name__)

PAUSE_POINTS = ("before-transaction", "inside-transaction", "after-commit")

_INSERT_COLUMNS = (*TAKE_FIELDS, "text_key", "added_generation", "embedding", "token_vectors")


def _pause_point(name: str) -> None:
    """Crash-test hook: stop here when TAKES_TEST_PAUSE_AT names this point (see PAUSE_POINTS)."""
    if os.environ.get("TAKES_TEST_PAUSE_AT") != name:
        return
    if marker := os.environ.get("TAKES_TEST_PAUSE_FILE"):
        Path(marker).write_text(str(os.getpid()))
    deadline = time.monotonic() + float(os.environ.get("TAKES_TEST_PAUSE_SECONDS", "60"))
    while time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass
class _Prepared:
    takes: list
    vectors: np.ndarray
    embedded: int
    model: str
    backend: str
    dim: int
    # Each take's stored token vectors (indexer/token_vectors.py), None where not kept.
    token_values: list | None = None


class PostgresWriter:
    """The single writer of the corpus while open (``Writer``): holds the advisory lock."""

    def __init__(self, store: PostgresStore, *, lock_timeout: float = 30.0):
        import psycopg

        self.store = store
        # Keep each new take's token vectors, as the embedded writer does.
        self.store_token_vectors = getattr(store, "store_token_vectors", True)
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
            self.info: CorpusRow | None = read_corpus(self._connection)
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
                takes, keys, existing_values(self._connection, "id", [take.id for take in takes]), existing_values(self._connection, "text_key", keys)
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
                f"SELECT {COLUMNS} FROM takes WHERE removed_generation IS NULL ORDER BY row_id"
            ).fetchall()
        return self._commit(self._prepare([take_from_row(row) for row in rows], embedder, model, backend, progress), replace=True)

    def add_vectors(
        self, takes: Sequence[Take], vectors: np.ndarray, *, model: str, backend: str, token_values: Sequence[bytes | None] | None = None
    ) -> ChangeReport:
        """Add takes with vectors (and stored token vectors) already made by ``model``: nothing is embedded."""
        from indexer.index.layout import normalize_model_name

        self._check_model(model)
        fresh = self.new_takes(takes)
        keep = {id(take) for take in fresh}
        selected = np.asarray([vector for take, vector in zip(takes, vectors) if id(take) in keep], dtype=np.float32)
        dim = int(vectors.shape[1]) if len(vectors) else (self.info.dim if self.info else 0)
        prepared = _Prepared(list(fresh), selected.reshape(len(fresh), dim), 0, normalize_model_name(model), backend, dim)
        if token_values is not None:
            prepared.token_values = [value for take, value in zip(takes, token_values) if id(take) in keep]
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
                self._record(connection, generation, self.info.model, self.info.dim, self.info.backend, recount=True)
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
        cached_tokens: dict[str, bytes] = {}
        unique = list(dict.fromkeys(hashes))
        with self._translated("read the embedding cache in"):
            for start in range(0, len(unique), 1000):
                for digest, embedding, token_value in self._connection.execute(
                    "SELECT text_hash, embedding, token_vectors FROM takes_embedding_cache WHERE model = %s AND text_hash = ANY(%s)",
                    (cache_model, unique[start : start + 1000]),
                ):
                    vector = np.asarray(embedding.to_numpy(), dtype=np.float32)
                    if not dim or len(vector) == dim:
                        cached[digest] = vector
                        if token_value is not None:
                            cached_tokens[digest] = bytes(token_value)
        missing = [digest for digest in unique if digest not in cached]
        if missing:
            instance = _instance(embedder)
            text_by_hash = dict(zip(hashes, (take.text for take in takes)))
            missing_texts = [text_by_hash[digest] for digest in missing]
            fresh, fresh_tokens = token_vectors.embed(instance, missing_texts, store=self.store_token_vectors, progress=progress)
            cached.update(zip(missing, fresh))
            cached_tokens.update((digest, value) for digest, value in zip(missing, fresh_tokens) if value is not None)
            dim = instance.dim
            self._cache(cache_model, list(zip(missing, fresh, fresh_tokens)))
        if not takes:
            dim = dim or (self.info.dim if self.info and self.info.model == model else 0) or _instance(embedder).dim
            return _Prepared([], np.zeros((0, dim), np.float32), 0, model, backend, dim)
        vectors = np.stack([cached[digest] for digest in hashes]).astype(np.float32, copy=False)
        dim = int(vectors.shape[1])
        stored = []
        for digest, take in zip(hashes, takes):
            value = cached_tokens.get(digest) if self.store_token_vectors else None
            # A cache entry written before token vectors were kept (or damaged) gives none: computed at query time.
            stored.append(value if value is not None and token_vectors.is_sound(value, take.text, dim) else None)
        return _Prepared(list(takes), vectors, len(missing), model, backend, dim, stored)

    def fill_cache(
        self, takes: Sequence[Take], vectors: np.ndarray, *, model: str, backend: str, token_values: Sequence[bytes | None] | None = None
    ) -> None:
        """Put vectors (and stored token vectors) made elsewhere in the embedding cache: writing those takes then embeds nothing."""
        from indexer.index.embedding_cache import cache_model_name
        from indexer.index.layout import normalize_model_name, text_hash

        values = token_values if token_values is not None else [None] * len(takes)
        items = [
            (digest, vector, value)
            for digest, (vector, value) in {
                text_hash(take.text): (vector, value) for take, vector, value in zip(takes, vectors, values)
            }.items()
        ]
        for start in range(0, len(items), 5000):
            self._cache(cache_model_name(normalize_model_name(model), backend), items[start : start + 5000])

    def _cache(self, cache_model: str, items: list) -> None:
        """Keep fresh vectors in the cache, in their own transaction: a failed add still keeps them."""
        import psycopg

        try:
            with self._connection.transaction():
                with self._connection.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO takes_embedding_cache (model, text_hash, embedding, token_vectors) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (model, text_hash) DO UPDATE SET embedding = excluded.embedding, "
                        "token_vectors = coalesce(excluded.token_vectors, takes_embedding_cache.token_vectors)",
                        [(cache_model, digest, np.asarray(vector, np.float32), value) for digest, vector, value in items],
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
        self.info = read_corpus(self._connection)
        _pause_point("after-commit")

    def _record(self, connection, generation: int, model: str, dim: int, backend: str, *, recount: bool = False) -> None:
        """Write the corpus row inside the open transaction: its commit is the switch.

        Its count and total length are the committed row's plus what this
        generation added minus what it removed, both found through indexes
        (a pass over the table took 0.1 s at 100k takes, 1 s at a million);
        ``recount`` (compact) counts every live row instead.
        """
        committed = connection.execute("SELECT count, total_length FROM takes_corpus").fetchone()
        if recount or committed is None:
            count, total_length = connection.execute(
                "SELECT count(*), coalesce(sum(length), 0) FROM takes WHERE removed_generation IS NULL"
            ).fetchone()
        else:
            # Row ids grow with the generations: this one's rows are the top of the primary key.
            added = connection.execute(
                """SELECT count(*), coalesce(sum(length), 0) FROM takes
                   WHERE row_id > (SELECT coalesce(max(row_id), 0) FROM takes WHERE added_generation < %s)
                     AND added_generation = %s AND removed_generation IS NULL""",
                (generation, generation),
            ).fetchone()
            removed = connection.execute(
                "SELECT count(*), coalesce(sum(length), 0) FROM takes WHERE removed_generation = %s AND added_generation < %s",
                (generation, generation),
            ).fetchone()
            count = committed[0] + added[0] - removed[0]
            total_length = committed[1] + added[1] - removed[1]
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
                    copy.set_types(
                        ["text", "text", "text", "text", "text", "text", "int4", "int4", "text", "text", "text", "int8", "vector", "bytea"]
                    )
                    token_values = prepared.token_values or [None] * len(prepared.takes)
                    for take, vector, token_value in zip(prepared.takes, prepared.vectors, token_values, strict=True):
                        copy.write_row(
                            (*(getattr(take, name) for name in TAKE_FIELDS), text_key(take.text, take.author), generation, vector, token_value)
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
