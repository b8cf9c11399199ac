"""The index on disk, and the one module that writes it.

Layout of an index directory::

    takes.sqlite            takes, their generations, FTS5 text, the manifest (commit point)
    manifest.json           a readable mirror of the manifest, rewritten after each commit
    segments/seg-NNNNNN.faiss
                            vectors added by generation NNNNNN, ids = SQLite row ids
    embedding-cache.sqlite  vectors by (model, text hash): re-embedding known text is free
    ann-cache.faiss         a trained approximate index saved by a load, for the next load
    .lock                   held by the single writer

Every change is one new *generation*. A writer embeds first, then writes the
new segment file aside (fsync, rename), then commits the SQLite transaction
that inserts the rows and names the new segment in the manifest. That commit is
the switch: a crash before it leaves the previous generation untouched (the
orphan segment is removed by the next writer), and a crash after it leaves the
new one complete. Rows are never deleted in place: a removal records the
generation that removed the row, so a reader that loaded generation G keeps a
consistent view (rows with ``added_generation <= G`` and not removed by G)
while later generations are written.

manifest.json trails the SQLite manifest by at most a crash: it is written
after the commit, so it may be older (the next writer rewrites it) but never
newer. Loading compares the two and reports anything else as IndexCorrupt.

Crash tests stop a writer at a named point: with ``TAKES_TEST_PAUSE_AT`` set to
one of ``PAUSE_POINTS``, the writer touches ``TAKES_TEST_PAUSE_FILE`` there and
sleeps, so the test can ``kill -9`` it at exactly that point.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from embeddings import Embedder
from indexer import ann
from indexer.errors import IndexCorrupt, IndexLocked, IndexNotFound, ModelMismatch, TakesError
from indexer.fsutil import fsync_dir, write_atomic
from indexer.models import TAKE_FIELDS, Take

FORMAT_VERSION = 1
DATABASE_NAME = "takes.sqlite"
MANIFEST_NAME = "manifest.json"
SEGMENTS_DIR = "segments"
CACHE_NAME = "embedding-cache.sqlite"
LOCK_NAME = ".lock"

# Where a crash test may stop a writer (see _pause_point), in the order reached.
PAUSE_POINTS = ("before-segment", "after-segment", "after-commit", "after-mirror")

# Columns stored for each take, in Take field order.
_COLUMNS = ", ".join(TAKE_FIELDS)

_SCHEMA = """
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
    removed_generation INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS takes_live_id ON takes(id) WHERE removed_generation IS NULL;
CREATE INDEX IF NOT EXISTS takes_live_text_key ON takes(text_key) WHERE removed_generation IS NULL;
CREATE INDEX IF NOT EXISTS takes_thread ON takes(thread_id, position);
CREATE VIRTUAL TABLE IF NOT EXISTS takes_fts USING fts5(
    text, content='takes', content_rowid='row_id', tokenize='porter unicode61 remove_diacritics 2'
);
"""


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a SQLite database the way every part of the project should.

    WAL lets readers keep their snapshot while a writer commits, so a search
    never sees "database is locked"; the busy timeout covers checkpoints.
    """
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


@dataclass(frozen=True)
class Segment:
    generation: int
    file: str
    count: int


@dataclass(frozen=True)
class Manifest:
    """What an index is: written in SQLite at each commit, mirrored to manifest.json."""

    model: str
    dim: int
    count: int
    generation: int
    segments: tuple[Segment, ...] = ()
    index_type: str = "flat"
    # The embedding backend that made the vectors; queries use it too by default.
    backend: str = "torch"
    format_version: int = FORMAT_VERSION
    updated_at: str = ""

    def to_json(self) -> str:
        data = {
            "format_version": self.format_version,
            "model": self.model,
            "dim": self.dim,
            "count": self.count,
            "generation": self.generation,
            "index_type": self.index_type,
            "backend": self.backend,
            "segments": [asdict(segment) for segment in self.segments],
            "updated_at": self.updated_at,
        }
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, raw: str) -> "Manifest":
        data = json.loads(raw)
        if data.get("format_version") != FORMAT_VERSION:
            raise IndexCorrupt(
                f"index format version {data.get('format_version')} is not the supported "
                f"version {FORMAT_VERSION}: rebuild it with `takes index`"
            )
        segments = tuple(Segment(**segment) for segment in data.get("segments", []))
        return cls(
            model=data["model"],
            dim=int(data["dim"]),
            count=int(data["count"]),
            generation=int(data["generation"]),
            segments=segments,
            index_type=data.get("index_type", "flat"),
            backend=data.get("backend", "torch"),
            updated_at=data.get("updated_at", ""),
        )

    def check_model(self, model: str | None, dim: int | None = None) -> None:
        """Raise ModelMismatch unless ``model`` (and ``dim``) is what built this index."""
        if model is not None and normalize_model_name(model) != self.model:
            raise ModelMismatch(self.model, self.dim, model, dim)
        if dim is not None and dim != self.dim:
            raise ModelMismatch(self.model, self.dim, model or self.model, dim)


def read_manifest(connection: sqlite3.Connection) -> Manifest | None:
    row = connection.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
    return Manifest.from_json(row[0]) if row else None


def database_path(index_dir: Path) -> Path:
    return Path(index_dir) / DATABASE_NAME


def open_index_database(index_dir: Path) -> tuple[sqlite3.Connection, Manifest]:
    """Open an existing index for reading; IndexNotFound when there is none.

    Also checks manifest.json against the committed manifest (check_mirror).
    """
    path = database_path(index_dir)
    if not path.exists():
        raise IndexNotFound(index_dir)
    # The mirror first: read in this order, a healthy mirror is never newer.
    mirror_text = _read_mirror_text(Path(index_dir))
    connection = connect(path, readonly=True)
    try:
        manifest = read_manifest(connection)
    except sqlite3.DatabaseError as error:
        connection.close()
        raise IndexCorrupt(f"{path} is not a readable takes index ({error})") from error
    if manifest is None:
        connection.close()
        raise IndexNotFound(index_dir)
    try:
        check_mirror(Path(index_dir), manifest, mirror_text)
    except IndexCorrupt:
        connection.close()
        raise
    return connection, manifest


def _read_mirror_text(index_dir: Path) -> str | None:
    try:
        return (index_dir / MANIFEST_NAME).read_text()
    except FileNotFoundError:
        return None


def check_mirror(index_dir: Path, manifest: Manifest, mirror_text: str | None) -> None:
    """Raise IndexCorrupt if manifest.json (read before the database) disagrees with ``manifest``.

    An older mirror is what a crash between the commit and the mirror write
    leaves; it is harmless and the next writer rewrites it. A newer mirror, or
    a different one for the same generation, means the database and the other
    files come from different states of the index.
    """
    if mirror_text is None:
        return
    path = Path(index_dir) / MANIFEST_NAME
    try:
        mirror = Manifest.from_json(mirror_text)
    except (ValueError, KeyError, TypeError) as error:
        raise IndexCorrupt(
            f"{path} is not a readable manifest ({error}); it only mirrors {DATABASE_NAME}: "
            f"delete it and the next `takes add` or `takes rebuild` rewrites it"
        ) from None
    if mirror.generation < manifest.generation:
        return
    if mirror.generation > manifest.generation:
        raise IndexCorrupt(
            f"{index_dir}: {MANIFEST_NAME} is at generation {mirror.generation} but {DATABASE_NAME} only at "
            f"{manifest.generation}: the database is older than the rest of the index (restored or copied "
            f"separately?); restore the whole folder together or rebuild it with `takes index`"
        )
    differing = [name for name in ("model", "dim", "count", "segments", "index_type") if getattr(mirror, name) != getattr(manifest, name)]
    if differing:
        raise IndexCorrupt(
            f"{index_dir}: {MANIFEST_NAME} and {DATABASE_NAME} disagree about generation {manifest.generation} "
            f"({', '.join(differing)}): the files come from different indexes; rebuild with `takes index`"
        )


def take_from_row(row: Sequence) -> Take:
    return Take(*row)


def read_segment(index_dir: Path, segment: Segment) -> tuple[np.ndarray, np.ndarray]:
    """Return (ids, vectors) stored in one segment file."""
    import faiss

    path = Path(index_dir) / segment.file
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise IndexCorrupt(f"cannot read vector segment {path} ({error}): rebuild with `takes rebuild`") from error
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    vectors = index.index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)
    if len(ids) != segment.count:
        raise IndexCorrupt(f"vector segment {path} holds {len(ids)} vectors, the manifest says {segment.count}")
    return ids, vectors


TRAINED_INDEX_NAME = "ann-cache.faiss"
# The file is FAISS's own format followed by the manifest of the generation it
# holds and that manifest's length (8 bytes): FAISS reads the file directly,
# ignoring what trails it, and the manifest is checked without reading the index.
_LENGTH_BYTES = 8


def read_trained_index(index_dir: Path, manifest: Manifest):
    """(manifest, FAISS index) of the approximate index saved by an earlier load, or None.

    Training IVF is most of a large load (about 26 s of a 1M-take start here);
    the caller brings the saved generation up to date from the segments, or
    declines when the segments it was built from are gone (a rebuild). Any
    problem with the file means a normal load, never an error.
    """
    import faiss

    path = Path(index_dir) / TRAINED_INDEX_NAME
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(size - _LENGTH_BYTES)
            header_size = int.from_bytes(handle.read(_LENGTH_BYTES), "little")
            if not 0 < header_size < size - _LENGTH_BYTES:
                return None
            handle.seek(size - _LENGTH_BYTES - header_size)
            saved = Manifest.from_json(handle.read(header_size).decode("utf-8"))
        if (saved.model, saved.dim, saved.index_type) != (manifest.model, manifest.dim, manifest.index_type):
            return None
        index = faiss.read_index(str(path))
    except (OSError, ValueError, RuntimeError, IndexCorrupt, KeyError):
        return None
    return (saved, index) if index.ntotal == saved.count else None


def save_trained_index(index_dir: Path, manifest: Manifest, index) -> None:
    """Save a freshly trained approximate index with the manifest it holds; best effort.

    Readers call this, and may lack write access: failing only costs the next
    load its training time. Written aside and renamed in, like every file here.
    """
    import faiss

    index_dir = Path(index_dir)
    # A load killed while saving leaves its temporary file: clear old ones
    # (a recent one may be another process's save in progress).
    for leftover in index_dir.glob(f".{TRAINED_INDEX_NAME}.*"):
        with contextlib.suppress(OSError):
            if time.time() - leftover.stat().st_mtime > 600:
                leftover.unlink()
    header = manifest.to_json().encode("utf-8")
    temporary = index_dir / f".{TRAINED_INDEX_NAME}.{os.getpid()}.{threading.get_ident()}"
    try:
        # Streamed to disk by FAISS: no in-memory copy of a 1.5 GB index.
        faiss.write_index(index, str(temporary))
        with open(temporary, "ab") as handle:
            handle.write(header)
            handle.write(len(header).to_bytes(_LENGTH_BYTES, "little"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, index_dir / TRAINED_INDEX_NAME)
        fsync_dir(index_dir)
    except (OSError, RuntimeError) as error:
        logging.getLogger(__name__).info("not saving the trained index in %s: %s", index_dir, error)
        with contextlib.suppress(OSError):
            temporary.unlink()


@dataclass
class ChangeReport:
    """What a write did, for the CLI and API to report."""

    added: int = 0
    skipped: int = 0
    removed: int = 0
    embedded: int = 0
    threads: int = 0
    generation: int = 0
    added_ids: list[str] = field(default_factory=list)


class EmbeddingCache:
    """Vectors keyed by (model, text hash), so unchanged text is never embedded twice."""

    def __init__(self, path: Path):
        self._connection = connect(path)
        self._connection.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, text_hash TEXT, vector BLOB, PRIMARY KEY (model, text_hash))"
        )

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(hashes), 500):
            chunk = list(hashes[start : start + 500])
            placeholders = ",".join("?" * len(chunk))
            for text_digest, blob in self._connection.execute(
                f"SELECT text_hash, vector FROM vectors WHERE model = ? AND text_hash IN ({placeholders})",
                [model, *chunk],
            ):
                found[text_digest] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        with self._connection:
            self._connection.execute("BEGIN")
            self._connection.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [(model, digest, np.asarray(vector, np.float32).tobytes()) for digest, vector in items],
            )

    def close(self) -> None:
        self._connection.close()


EmbedderFactory = Callable[[], Embedder]


class IndexWriter:
    """The single writer of an index directory (holds the lock while open).

    The embedder is created only when some text is not in the cache, so adding
    a file that is already indexed never loads the model.
    """

    def __init__(self, index_dir: Path | str, *, lock_timeout: float = 30.0):
        self.index_dir = Path(index_dir)
        self.index_dir.mkdir(parents=True, exist_ok=True)
        self._lock_handle = _acquire_lock(self.index_dir / LOCK_NAME, lock_timeout)
        try:
            self._connection = connect(database_path(self.index_dir))
            self._connection.executescript(_SCHEMA)
            self._cache = EmbeddingCache(self.index_dir / CACHE_NAME)
            self.manifest = read_manifest(self._connection)
            self._repair_mirror()
            self._remove_orphans()
        except BaseException:
            self._release()
            raise

    # -- context management -------------------------------------------------

    def __enter__(self) -> "IndexWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._connection.close()
            self._cache.close()
        self._release()

    def _release(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    # -- public operations --------------------------------------------------

    def add(
        self, takes: Sequence[Take], embedder: EmbedderFactory | Embedder, *, model: str, backend: str | None = None, progress: bool = False
    ) -> ChangeReport:
        """Add takes that are not already indexed (same id, or same text from the same author)."""
        self._check_model(model)
        keys = [text_key(take.text, take.author) for take in takes]
        # Look up only the incoming ids and keys (both indexed): the cost
        # follows the size of the batch, not of the index.
        fresh = _first_of_each(
            takes, keys, self._existing("id", [take.id for take in takes]), self._existing("text_key", keys)
        )
        if not fresh and self.manifest is not None:
            # Nothing new: no generation, no model load.
            return ChangeReport(skipped=len(takes), generation=self.manifest.generation)
        report = self._commit(fresh, embedder, model=model, remove_live=False, backend=backend, progress=progress)
        report.skipped = len(takes) - len(fresh)
        return report

    def _existing(self, column: str, values: Sequence[str]) -> set[str]:
        """Which of ``values`` a live take already has in ``column`` (``id`` or ``text_key``)."""
        found: set[str] = set()
        unique = list(dict.fromkeys(values))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            found.update(
                row[0]
                for row in self._connection.execute(
                    f"SELECT {column} FROM takes WHERE removed_generation IS NULL AND {column} IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
            )
        return found

    def replace_all(
        self, takes: Sequence[Take], embedder: EmbedderFactory | Embedder, *, model: str, backend: str | None = None, progress: bool = False
    ) -> ChangeReport:
        """Make the index hold exactly ``takes`` (deduplicated), embedded by ``model``."""
        unique = _first_of_each(takes, [text_key(take.text, take.author) for take in takes], set(), set())
        report = self._commit(unique, embedder, model=model, remove_live=True, backend=backend, progress=progress)
        report.skipped = len(takes) - len(unique)
        return report

    def rebuild(self, embedder: EmbedderFactory | Embedder, *, model: str, backend: str | None = None, progress: bool = False) -> ChangeReport:
        """Re-embed every live take (with a new model, say) into one fresh segment."""
        takes = self.live_takes()
        if self.manifest is None:
            raise IndexNotFound(self.index_dir)
        return self._commit(takes, embedder, model=model, remove_live=True, backend=backend, progress=progress)

    def remove(self, ids: Sequence[str] = (), thread_id: str | None = None) -> ChangeReport:
        """Remove takes by id or a whole thread; unknown ids are an error, nothing is removed then."""
        if self.manifest is None:
            raise IndexNotFound(self.index_dir)
        rowids: list[int] = []
        if ids:
            placeholders = ",".join("?" * len(ids))
            found = dict(
                self._connection.execute(
                    f"SELECT id, rowid FROM takes WHERE removed_generation IS NULL AND id IN ({placeholders})", list(ids)
                ).fetchall()
            )
            missing = [take_id for take_id in ids if take_id not in found]
            if missing:
                from indexer.errors import TakeNotFound

                raise TakeNotFound(f"no take with id {', '.join(map(repr, missing))} in {self.index_dir}; nothing removed")
            rowids.extend(found.values())
        if thread_id is not None:
            thread_rows = [
                row[0]
                for row in self._connection.execute(
                    "SELECT rowid FROM takes WHERE removed_generation IS NULL AND thread_id = ?", (thread_id,)
                )
            ]
            if not thread_rows:
                from indexer.errors import TakeNotFound

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
            f"SELECT {_COLUMNS} FROM takes WHERE removed_generation IS NULL ORDER BY rowid"
        ).fetchall()
        return [take_from_row(row) for row in rows]

    # -- internals ----------------------------------------------------------

    def _check_model(self, model: str) -> None:
        if self.manifest is not None and self.manifest.count > 0:
            self.manifest.check_model(model)

    def _embed(
        self, takes: Sequence[Take], embedder: EmbedderFactory | Embedder, model: str, backend: str, progress: bool
    ) -> tuple[np.ndarray, int]:
        """Vectors for ``takes``, from the cache where possible; returns (vectors, texts embedded)."""
        # Each take is embedded alone: adding its thread's opening take measured
        # better on the dev judgments but biased every query toward long threads
        # (docs/QUALITY.md, "Thread context").
        texts = [take.text for take in takes]
        hashes = [text_hash(text) for text in texts]
        # Backends give slightly different vectors: never mix them in the cache.
        cache_model = model if backend == "torch" else f"{model}|{backend}"
        cached = self._cache.get_many(cache_model, hashes)
        missing = sorted({digest for digest in hashes if digest not in cached})
        dim = self.manifest.dim if self.manifest and self.manifest.model == model else 0
        if missing:
            model_instance = _instance(embedder)
            text_by_hash = dict(zip(hashes, texts))
            fresh = model_instance.encode([text_by_hash[digest] for digest in missing], progress=progress)
            self._cache.put_many(cache_model, zip(missing, fresh))
            cached.update(zip(missing, fresh))
            dim = model_instance.dim
        if not takes:
            return np.zeros((0, dim), np.float32), 0
        vectors = np.stack([cached[digest] for digest in hashes]).astype(np.float32, copy=False)
        return vectors, len(missing)

    def _commit(self, takes: Sequence[Take], embedder, *, model: str, remove_live: bool, backend: str | None, progress: bool) -> ChangeReport:
        import faiss

        # An embedder object knows its backend; a factory's caller says it.
        backend = backend or getattr(embedder, "backend", None) or (self.manifest.backend if self.manifest else "torch")
        model = normalize_model_name(model)
        vectors, embedded = self._embed(takes, embedder, model, backend, progress)
        current = self.manifest
        dim = vectors.shape[1] if len(takes) else (current.dim if current else 0)
        if not takes and dim == 0:
            # An empty first index still needs a dimension: ask the model.
            dim = _instance(embedder).dim
        if current is not None and not remove_live and current.count and dim != current.dim:
            raise ModelMismatch(current.model, current.dim, model, dim)
        generation = (current.generation if current else 0) + 1

        connection = self._connection
        with self._generation(generation):
            if remove_live:
                live = [row[0] for row in connection.execute("SELECT rowid FROM takes WHERE removed_generation IS NULL")]
                self._retire(live, generation)
            rowids = []
            for take in takes:
                cursor = connection.execute(
                    f"INSERT INTO takes ({_COLUMNS}, text_key, added_generation) VALUES ({','.join('?' * (len(TAKE_FIELDS) + 2))})",
                    (*(getattr(take, name) for name in TAKE_FIELDS), text_key(take.text, take.author), generation),
                )
                rowids.append(cursor.lastrowid)
                connection.execute("INSERT INTO takes_fts(rowid, text) VALUES (?, ?)", (cursor.lastrowid, take.text))
            segments = () if remove_live else (current.segments if current else ())
            if takes:
                segment = Segment(generation, f"{SEGMENTS_DIR}/seg-{generation:06d}.faiss", len(takes))
                index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
                index.add_with_ids(vectors, np.asarray(rowids, dtype=np.int64))
                segment_path = self.index_dir / segment.file
                segment_path.parent.mkdir(exist_ok=True)
                _pause_point("before-segment")
                # Written and flushed before the commit that names it.
                write_atomic(segment_path, faiss.serialize_index(index).tobytes())
                _pause_point("after-segment")
                segments = (*segments, segment)
            manifest = self._next_manifest(generation, segments, model, dim, backend)
            self._record(manifest)
        self._published(manifest)
        threads = len({take.thread_id for take in takes})
        return ChangeReport(
            added=len(takes), embedded=embedded, threads=threads, generation=generation, added_ids=[t.id for t in takes]
        )

    @contextlib.contextmanager
    def _generation(self, generation: int):
        """One write transaction for ``generation``: all of it commits, or none of it."""
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            self._purge_removed(generation)
            yield
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def _record(self, manifest: Manifest) -> None:
        """Write the manifest inside the open transaction: its commit is the switch."""
        self._connection.execute("INSERT OR REPLACE INTO meta VALUES ('manifest', ?)", (manifest.to_json(),))

    def _retire(self, rowids: Sequence[int], generation: int) -> None:
        """Mark rows removed by ``generation`` and take them out of the FTS5 index.

        The text index drops them at once so BM25's document counts stay those
        of the live takes (a rebuild would otherwise count every text twice); a
        reader still on the previous generation finds them by meaning only.
        """
        connection = self._connection
        for start in range(0, len(rowids), 500):
            chunk = list(rowids[start : start + 500])
            placeholders = ",".join("?" * len(chunk))
            rows = connection.execute(
                f"SELECT rowid, text FROM takes WHERE rowid IN ({placeholders}) AND removed_generation IS NULL", chunk
            ).fetchall()
            connection.executemany("INSERT INTO takes_fts(takes_fts, rowid, text) VALUES ('delete', ?, ?)", rows)
            connection.executemany(
                "UPDATE takes SET removed_generation = ? WHERE rowid = ?", [(generation, rowid) for rowid, _ in rows]
            )

    def _purge_removed(self, generation: int) -> None:
        """Delete rows removed before the previous generation (their text left FTS5 when retired).

        A reader still on generation ``generation - 1`` may need rows removed by
        this generation, so only older removals are purged.
        """
        self._connection.execute(
            "DELETE FROM takes WHERE removed_generation IS NOT NULL AND removed_generation < ?", (generation - 1,)
        )

    def _next_manifest(self, generation: int, segments: tuple[Segment, ...], model: str, dim: int, backend: str) -> Manifest:
        """The manifest for a new generation, counting live rows as the open transaction sees them."""
        count = self._connection.execute(
            "SELECT count(*) FROM takes WHERE removed_generation IS NULL"
        ).fetchone()[0]
        return Manifest(
            model=model,
            dim=dim,
            count=count,
            generation=generation,
            segments=tuple(segments),
            # Exact search below the threshold, approximate above: readers build this type.
            index_type=ann.index_type_for(count),
            backend=backend,
            updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )

    def _published(self, manifest: Manifest) -> None:
        """After a commit: mirror the manifest and drop segments no generation names."""
        self.manifest = manifest
        _pause_point("after-commit")
        write_atomic(self.index_dir / MANIFEST_NAME, manifest.to_json().encode())
        _pause_point("after-mirror")
        self._remove_orphans()

    def _repair_mirror(self) -> None:
        """Rewrite manifest.json when it is not the committed manifest (a crash after a commit)."""
        if self.manifest is None:
            # A mirror without a database (takes.sqlite deleted to start over) mirrors nothing.
            (self.index_dir / MANIFEST_NAME).unlink(missing_ok=True)
            return
        text = self.manifest.to_json()
        if _read_mirror_text(self.index_dir) != text:
            write_atomic(self.index_dir / MANIFEST_NAME, text.encode())

    def _remove_orphans(self) -> None:
        """Delete what a crashed or superseded write left: unnamed segments and temp files."""
        # write_atomic's temporary for manifest.json, left by a crash mid-write.
        (self.index_dir / f".{MANIFEST_NAME}.tmp").unlink(missing_ok=True)
        named = {segment.file for segment in self.manifest.segments} if self.manifest else set()
        segments_dir = self.index_dir / SEGMENTS_DIR
        if not segments_dir.is_dir():
            return
        removed = False
        for path in segments_dir.iterdir():
            if f"{SEGMENTS_DIR}/{path.name}" not in named:
                path.unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_dir(segments_dir)


def _pause_point(name: str) -> None:
    """Crash-test hook: stop here when TAKES_TEST_PAUSE_AT names this point (see PAUSE_POINTS)."""
    if os.environ.get("TAKES_TEST_PAUSE_AT") != name:
        return
    if marker := os.environ.get("TAKES_TEST_PAUSE_FILE"):
        Path(marker).write_text(str(os.getpid()))
    # Long enough for the test to kill us; if it does not, the write carries on.
    time.sleep(float(os.environ.get("TAKES_TEST_PAUSE_SECONDS", "60")))


def _instance(embedder: EmbedderFactory | Embedder) -> Embedder:
    """The embedder itself, creating it when given a factory (the model loads only here)."""
    return embedder if hasattr(embedder, "encode") else embedder()


def _first_of_each(takes: Sequence[Take], keys: Sequence[str], known_ids: set[str], known_keys: set[str]) -> list[Take]:
    """Takes whose id and content key are in neither the known sets nor earlier in ``takes``."""
    fresh: list[Take] = []
    for take, key in zip(takes, keys):
        if take.id in known_ids or key in known_keys:
            continue
        known_ids.add(take.id)
        known_keys.add(key)
        fresh.append(take)
    return fresh


def _acquire_lock(path: Path, timeout: float):
    """Take the writer lock, waiting up to ``timeout`` seconds for another writer."""
    handle = open(path, "a+")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise IndexLocked(
                    f"{path.parent} is being written by another writer ({holder}); waited {timeout:g}s: "
                    f"try again when it finishes, or wait longer with --lock-timeout"
                ) from None
            time.sleep(0.1)
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def iter_live_rows(connection: sqlite3.Connection, generation: int) -> Iterator[int]:
    """Row ids visible at ``generation``."""
    for (rowid,) in connection.execute(
        "SELECT rowid FROM takes WHERE added_generation <= ? AND (removed_generation IS NULL OR removed_generation > ?)",
        (generation, generation),
    ):
        yield rowid


__all__ = [
    "ChangeReport",
    "IndexWriter",
    "Manifest",
    "PAUSE_POINTS",
    "Segment",
    "TakesError",
    "check_mirror",
    "connect",
    "open_index_database",
    "read_segment",
    "text_key",
]
