"""The single writer of an index directory: the lock, the generation transaction, add/replace/rebuild/remove.

Every change is one new generation, committed in one SQLite transaction whose
commit is the switch (see ``indexer/index/__init__.py`` for the whole design).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from embeddings import Embedder
from indexer import ann, token_vectors
from indexer.errors import IndexCorrupt, IndexNotFound, IndexReadOnly, ModelMismatch, TakeNotFound
from indexer.index.compaction import Compaction
from indexer.index.embedding_cache import EmbeddingCache, cache_model_name
from indexer.index.layout import (
    CACHE_NAME,
    COLUMNS,
    DATABASE_NAME,
    LIVE,
    LOCK_NAME,
    SCHEMA,
    SQLITE_SUFFIXES,
    TOKEN_COLUMN,
    add_token_column,
    connect,
    database_path,
    existing,
    first_of_each,
    normalize_model_name,
    take_from_row,
    text_hash,
    text_key,
)
from indexer.index.manifest import Manifest, foreign_entries, not_an_index, open_index_database, read_manifest
from indexer.index.segments import flat_index
from indexer.index.tidying import Tidying
from indexer.index.transaction import GenerationTransaction
from indexer.index.recovery import RecoveryReport, recover_database
from indexer.index.write_safety import acquire_lock, release_lock, translated
from indexer.models import TAKE_FIELDS, Take
from indexer.storage import ChangeReport

logger = logging.getLogger(__name__)

EmbedderFactory = Callable[[], Embedder]


class IndexWriter(GenerationTransaction, Compaction, Tidying):
    """The single writer of an index directory (holds the lock while open).

    The embedder is created only when some text is not in the cache, so adding
    a file that is already indexed never loads the model.
    """

    def __init__(
        self,
        index_dir: Path | str,
        *,
        lock_timeout: float = 30.0,
        recover: bool = False,
        ann_threshold: int = ann.DEFAULT_THRESHOLD,
        store_token_vectors: bool = True,
        compressed_threshold: int = ann.COMPRESSED_THRESHOLD,
    ):
        self.index_dir = Path(index_dir)
        # Keep each new take's token vectors (about 390 bytes a token) so that
        # late interaction reads them instead of running the model per candidate.
        self.store_token_vectors = store_token_vectors
        # Take counts from which a new generation is served approximately,
        # then from compressed codes (indexer/ann.py).
        self.ann_threshold = ann_threshold
        self.compressed_threshold = compressed_threshold
        self._lock_handle = None
        self._written: list[Path] = []
        self.recovery: RecoveryReport | None = None
        database = database_path(self.index_dir)
        with translated(self.index_dir, None):
            self.index_dir.mkdir(parents=True, exist_ok=True)
        if not database.exists() and (foreign := foreign_entries(self.index_dir)):
            raise not_an_index(self.index_dir, foreign)
        if not os.access(self.index_dir, os.W_OK):
            raise IndexReadOnly(f"{self.index_dir} is read-only: searching works, changes need write access")
        with translated(self.index_dir, None):
            self._lock_handle = acquire_lock(self.index_dir / LOCK_NAME, lock_timeout)
        try:
            with translated(self.index_dir, None):
                try:
                    self._open_database()
                except (sqlite3.DatabaseError, IndexCorrupt) as error:
                    if not recover:
                        raise
                    logger.info("recovering %s: %s", database, error)
                    with contextlib.suppress(Exception):
                        self._connection.close()
                    self.recovery = recover_database(self.index_dir)
                    self._open_database()
                if recover and self.recovery is None and not database_is_sound(self._connection):
                    self._connection.close()
                    self.recovery = recover_database(self.index_dir)
                    self._open_database()
                self._cache = EmbeddingCache(self.index_dir / CACHE_NAME)
            self._tidy()
        except BaseException:
            self._release()
            raise

    def _open_database(self) -> None:
        self._connection = connect(database_path(self.index_dir))
        tables = {row[0] for row in self._connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables and not {"meta", "takes"} <= tables:
            self._connection.close()
            raise not_an_index(self.index_dir, [f"{DATABASE_NAME} with tables {', '.join(sorted(tables)[:3])}"])
        if not tables:
            # Lets `takes compact` hand freed pages back without a full VACUUM.
            self._connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self._connection.executescript(SCHEMA)
        add_token_column(self._connection)
        self.manifest = read_manifest(self._connection)

    # -- context management -------------------------------------------------

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for resource in ("_connection", "_cache"):
            with contextlib.suppress(Exception):
                getattr(self, resource).close()
        self._release()

    def _release(self) -> None:
        if self._lock_handle is not None:
            release_lock(self._lock_handle)
            self._lock_handle = None

    @property
    def info(self) -> Manifest | None:
        """The committed manifest (``Writer.info``); None before the first write."""
        return self.manifest

    @property
    def generation(self) -> int:
        return self.manifest.generation if self.manifest else 0

    # -- public operations --------------------------------------------------

    def add(
        self, takes: Sequence[Take], embedder: EmbedderFactory | Embedder, *, model: str, backend: str | None = None, progress: bool = False
    ) -> ChangeReport:
        """Add takes that are not already indexed (same id, or same text from the same author)."""
        self._check_model(model)
        # Look up only the incoming ids and keys (both indexed): the cost
        # follows the size of the batch, not of the index.
        with translated(self.index_dir, self.generation):
            fresh = fresh_takes(self._connection, takes)
        if not fresh and self.manifest is not None:
            # Nothing new: no generation, no model load.
            return ChangeReport(skipped=len(takes), generation=self.manifest.generation)
        report = self._commit(fresh, embedder, model=model, remove_live=False, backend=backend, progress=progress)
        report.skipped = len(takes) - len(fresh)
        return report

    def new_takes(self, takes: Sequence[Take]) -> list[Take]:
        """Which of ``takes`` ``add`` would store (a dry run: nothing is written)."""
        with translated(self.index_dir, self.generation):
            return fresh_takes(self._connection, takes)

    def replace_all(
        self, takes: Sequence[Take], embedder: EmbedderFactory | Embedder, *, model: str, backend: str | None = None, progress: bool = False
    ) -> ChangeReport:
        """Make the index hold exactly ``takes`` (deduplicated), embedded by ``model``."""
        unique = first_of_each(takes, [text_key(take.text, take.author) for take in takes], set(), set())
        report = self._commit(unique, embedder, model=model, remove_live=True, backend=backend, progress=progress)
        report.skipped = len(takes) - len(unique)
        return report

    def rebuild(self, embedder: EmbedderFactory | Embedder, *, model: str, backend: str | None = None, progress: bool = False) -> ChangeReport:
        """Re-embed every live take (with a new model, say) into one fresh segment.

        Afterwards the cheap part of compacting runs: freed pages go back to
        the file system and the write-ahead log is truncated.
        """
        if self.manifest is None:
            raise IndexNotFound(self.index_dir)
        with translated(self.index_dir, self.generation):
            takes = self.live_takes()
        report = self._commit(takes, embedder, model=model, remove_live=True, backend=backend, progress=progress)
        self._shrink()
        return report

    def remove(self, ids: Sequence[str] = (), thread_id: str | None = None) -> ChangeReport:
        """Remove takes by id or a whole thread; unknown ids are an error, nothing is removed then."""
        if self.manifest is None:
            raise IndexNotFound(self.index_dir)
        rowids: list[int] = []
        with translated(self.index_dir, self.generation):
            if ids:
                placeholders = ",".join("?" * len(ids))
                found = dict(
                    self._connection.execute(
                        f"SELECT id, rowid FROM takes WHERE {LIVE} AND id IN ({placeholders})", list(ids)
                    ).fetchall()
                )
                missing = [take_id for take_id in ids if take_id not in found]
                if missing:
                    raise TakeNotFound(f"no take with id {', '.join(map(repr, missing))} in {self.index_dir}; nothing removed")
                rowids.extend(found.values())
            if thread_id is not None:
                thread_rows = [
                    row[0]
                    for row in self._connection.execute(
                        f"SELECT rowid FROM takes WHERE {LIVE} AND thread_id = ?", (thread_id,)
                    )
                ]
                if not thread_rows:
                    raise TakeNotFound(f"no thread with id {thread_id!r} in {self.index_dir}; nothing removed")
                rowids.extend(thread_rows)
        rowids = sorted(set(rowids))
        generation = self.manifest.generation + 1
        with self._generation(generation):
            self._retire(rowids, generation)
            manifest = self._next_manifest(
                generation, self.manifest.segments, self.manifest.model, self.manifest.dim, self.manifest.backend
            )
            self._record(manifest)
        self._published(manifest)
        return ChangeReport(removed=len(rowids), generation=generation)

    def live_takes(self) -> list[Take]:
        rows = self._connection.execute(
            f"SELECT {COLUMNS} FROM takes WHERE {LIVE} ORDER BY rowid"
        ).fetchall()
        return [take_from_row(row) for row in rows]

    # -- repair helpers (`takes repair`) --------------------------------------

    def rebuild_text_index(self) -> None:
        """Rebuild FTS5 from the live rows (the rows removed rows are deliberately absent from it)."""
        connection = self._connection
        with self._transaction():
            connection.execute("INSERT INTO takes_fts(takes_fts) VALUES ('delete-all')")
            connection.execute(f"INSERT INTO takes_fts(rowid, text) SELECT rowid, text FROM takes WHERE {LIVE}")

    def drop_damaged_cache_entries(self) -> int:
        """Delete cache entries that fail their check; the cache file itself if SQLite cannot read it."""
        try:
            damaged = self._cache.damaged_entries()
        except sqlite3.DatabaseError:
            self._cache.close()
            for suffix in SQLITE_SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    (self.index_dir / f"{CACHE_NAME}{suffix}").unlink()
            self._cache = EmbeddingCache(self.index_dir / CACHE_NAME)
            return -1
        self._cache.delete(damaged)
        return len(damaged)

    def restore_token_vectors(self, embedder: EmbedderFactory | Embedder) -> int:
        """Compute again the token vectors of live takes whose stored ones fail their checksum; how many.

        They are derived from the text alone, so writing them in place changes
        nothing a reader of any generation sees but the time it takes.
        """
        dim = self.manifest.dim
        with translated(self.index_dir, self.generation):
            damaged = [
                (rowid, text)
                for rowid, text, value in self._connection.execute(
                    f"SELECT rowid, text, {TOKEN_COLUMN} FROM takes WHERE {LIVE} AND {TOKEN_COLUMN} IS NOT NULL"
                )
                if not token_vectors.is_sound(value, text, dim)
            ]
        if not damaged:
            return 0
        matrices = embedder_instance(embedder).token_vectors([text for _, text in damaged])
        with self._transaction():
            self._connection.executemany(
                f"UPDATE takes SET {TOKEN_COLUMN} = ? WHERE rowid = ?",
                [(token_vectors.encode(tokens, text), rowid) for (rowid, text), tokens in zip(damaged, matrices)],
            )
        return len(damaged)

    def forget_cached_vectors(self, cache_model: str) -> None:
        """Forget every cached vector of one model (its copy changed: the old vectors are not its own)."""
        self._cache.delete(model=cache_model)

    # -- internals ----------------------------------------------------------

    def _check_model(self, model: str) -> None:
        if self.manifest is not None and self.manifest.count > 0:
            self.manifest.check_model(model)

    def _embed(
        self, takes: Sequence[Take], embedder: EmbedderFactory | Embedder, model: str, backend: str, progress: bool
    ) -> tuple[np.ndarray, list[bytes | None], int]:
        """Vectors and stored token vectors for ``takes``, from the cache where possible; (vectors, token values, texts embedded).

        A cached text's token vectors come from the cache too; an entry
        written before they were kept gives None (the take's are then
        computed at query time), so known text is still never embedded again.
        """
        # Each take is embedded alone: adding its thread's opening take measured
        # better on the dev judgments but biased every query toward long threads
        # (docs/QUALITY.md, "Thread context").
        texts = [take.text for take in takes]
        hashes = [text_hash(text) for text in texts]
        # Backends give slightly different vectors: never mix them in the cache.
        cache_model = cache_model_name(model, backend)
        dim = self.manifest.dim if self.manifest and self.manifest.model == model else 0
        token_values: dict[str, bytes] = {}
        cached = self._cache.get_many(cache_model, hashes, dim or None, tokens=token_values)
        missing = sorted({digest for digest in hashes if digest not in cached})
        if missing:
            model_instance = embedder_instance(embedder)
            text_by_hash = dict(zip(hashes, texts))
            missing_texts = [text_by_hash[digest] for digest in missing]
            fresh, fresh_tokens = token_vectors.embed(model_instance, missing_texts, store=self.store_token_vectors, progress=progress)
            self._cache.put_many(cache_model, zip(missing, fresh, fresh_tokens))
            cached.update(zip(missing, fresh))
            token_values.update((digest, value) for digest, value in zip(missing, fresh_tokens) if value is not None)
            dim = model_instance.dim
        if not takes:
            return np.zeros((0, dim), np.float32), [], 0
        vectors = np.stack([cached[digest] for digest in hashes]).astype(np.float32, copy=False)
        dim = vectors.shape[1]
        stored: list[bytes | None] = []
        for digest, text in zip(hashes, texts):
            value = token_values.get(digest) if self.store_token_vectors else None
            # A damaged cache entry's token vectors are left out, never stored.
            stored.append(value if value is not None and token_vectors.is_sound(value, text, dim) else None)
        return vectors, stored, len(missing)

    def _commit(self, takes: Sequence[Take], embedder, *, model: str, remove_live: bool, backend: str | None, progress: bool) -> ChangeReport:
        # An embedder object knows its backend; a factory's caller says it.
        backend = backend or getattr(embedder, "backend", None) or (self.manifest.backend if self.manifest else "torch")
        model = normalize_model_name(model)
        with translated(self.index_dir, self.generation):
            vectors, token_values, embedded = self._embed(takes, embedder, model, backend, progress)
        current = self.manifest
        dim = vectors.shape[1] if len(takes) else (current.dim if current else 0)
        if not takes and dim == 0:
            # An empty first index still needs a dimension: ask the model.
            dim = embedder_instance(embedder).dim
        if current is not None and not remove_live and current.count and dim != current.dim:
            raise ModelMismatch(current.model, current.dim, model, dim)
        generation = (current.generation if current else 0) + 1

        with self._generation(generation):
            if remove_live:
                self._retire([row[0] for row in self._connection.execute(f"SELECT rowid FROM takes WHERE {LIVE}")], generation)
            rowids = self._insert(takes, token_values, generation)
            segments = () if remove_live else (current.segments if current else ())
            if takes:
                segments = (*segments, self._write_segment(generation, flat_index(dim, vectors, np.asarray(rowids)), len(takes)))
            manifest = self._next_manifest(generation, segments, model, dim, backend)
            self._record(manifest)
        self._published(manifest)
        threads = len({take.thread_id for take in takes})
        return ChangeReport(
            added=len(takes), embedded=embedded, threads=threads, generation=generation, added_ids=[t.id for t in takes]
        )

    def _insert(self, takes: Sequence[Take], token_values: Sequence[bytes | None], generation: int) -> list[int]:
        """Insert ``takes`` (with their stored token vectors) as added by ``generation``, text indexed too; their new row ids."""
        rowids = []
        for take, token_value in zip(takes, token_values, strict=True):
            cursor = self._connection.execute(
                f"INSERT INTO takes ({COLUMNS}, text_key, added_generation, {TOKEN_COLUMN}) "
                f"VALUES ({','.join('?' * (len(TAKE_FIELDS) + 3))})",
                (*(getattr(take, name) for name in TAKE_FIELDS), text_key(take.text, take.author), generation, token_value),
            )
            rowids.append(cursor.lastrowid)
            self._connection.execute("INSERT INTO takes_fts(rowid, text) VALUES (?, ?)", (cursor.lastrowid, take.text))
        return rowids


def database_is_sound(connection: sqlite3.Connection) -> bool:
    try:
        return connection.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        return False


def embedder_instance(embedder: EmbedderFactory | Embedder) -> Embedder:
    """The embedder itself, creating it when given a factory (the model loads only here)."""
    return embedder if hasattr(embedder, "encode") else embedder()


def new_takes(index_dir: Path, takes: Sequence[Take]) -> list[Take]:
    """The takes ``IndexWriter.add`` would add, found without the writer lock or writing anything (a dry run)."""
    if not database_path(index_dir).exists():
        return fresh_takes(None, takes)
    connection, _ = open_index_database(index_dir)
    try:
        return fresh_takes(connection, takes)
    finally:
        connection.close()


def fresh_takes(connection: sqlite3.Connection | None, takes: Sequence[Take]) -> list[Take]:
    """Which of ``takes`` are new to the live takes of ``connection`` and to the takes before them."""
    keys = [text_key(take.text, take.author) for take in takes]
    if connection is None:
        return first_of_each(takes, keys, set(), set())
    return first_of_each(takes, keys, existing(connection, "id", [take.id for take in takes]), existing(connection, "text_key", keys))
