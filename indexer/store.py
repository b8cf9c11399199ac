"""The on-disk index, and the one module that writes it.

Layout of an index directory::

    takes.sqlite            takes, their generations, FTS5 text, the manifest (commit point)
    manifest.json           a readable mirror of the manifest, rewritten after each commit
    segments/seg-NNNNNN.faiss
                            vectors added by generation NNNNNN, ids = SQLite row ids
    embedding-cache.sqlite  vectors by (model, text hash): re-embedding known text is free
    ann-cache.faiss         a trained approximate index saved by a load, for the next load
    onnx-models/            the index's own copy of the int8 ONNX model (embeddings.onnx)
    .lock                   held by the single writer while it waits and writes

Every change is one new *generation*. A writer embeds first, then, inside one
SQLite write transaction (``BEGIN IMMEDIATE``), checks that the committed
generation is still the one it started from, writes the new segment file
aside (fsync, rename) and commits the rows and the manifest that names the
segment. That commit is the switch: a crash before it leaves the previous
generation untouched (the orphan segment is removed by the next writer), and a
crash after it leaves the new one complete. Rows are never deleted in place: a
removal records the generation that removed the row, so a reader that loaded
generation G keeps a consistent view (rows with ``added_generation <= G`` and
not removed by G) while later generations are written.

Exclusion does not rest on ``.lock``: that file only lets a second writer wait
politely and name the first. The database's own write lock serializes
everything that writes or deletes index files (the segment write, the mirror,
orphan cleanup), and a writer whose starting generation was overtaken fails
with IndexConflict and changes nothing, so deleting ``.lock`` cannot make two
writers commit the same generation.

Nothing the index did not create is ever written over or deleted: a writer
refuses a non-empty folder that is not an index (NotAnIndex), and cleanup
removes only files named like ours (``seg-NNNNNN.faiss`` that no generation
names, our temporaries).

Every file the index relies on carries a checksum (CRC-32: damage, not tampering): segments in the manifest,
the saved trained index in its own trailer, the ONNX model copy in its
``takes-onnx.json``, each embedding-cache entry in its row. Loading verifies
them once per file per process (fsutil.cached_checksum); a segment that fails is
IndexCorrupt naming `takes repair`, a cache entry or trained index that fails
is discarded and rebuilt. Format 1 indexes (no checksums) still load; their
next generation, `takes compact` or `takes repair` writes checksummed files.

manifest.json trails the SQLite manifest by at most a crash: it is written
after the commit, so it may be older (the next writer rewrites it) but never
newer. Loading compares the two and reports anything else as IndexCorrupt.

Crash tests stop a writer at a named point: with ``TAKES_TEST_PAUSE_AT`` set to
one of ``PAUSE_POINTS``, the writer touches ``TAKES_TEST_PAUSE_FILE`` there and
sleeps, so the test can ``kill -9`` it at exactly that point.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import shutil
import sqlite3
import subprocess
import threading
import time
import unicodedata
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from embeddings import Embedder
from indexer import ann
from indexer.storage import ChangeReport, CompactReport
from indexer.errors import (
    DiskFull,
    IndexConflict,
    IndexCorrupt,
    IndexLocked,
    IndexNotFound,
    IndexReadOnly,
    IndexWriteFailed,
    ModelMismatch,
    NotAnIndex,
    TakesError,
)
from indexer.fsutil import CHECKSUM_PREFIX, cached_checksum, checksum_bytes, checksum_file, fsync_dir, temporary_name, write_atomic
from indexer.models import TAKE_FIELDS, Take

# 2: segments and the saved trained index carry checksums, cache entries too.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
DATABASE_NAME = "takes.sqlite"
MANIFEST_NAME = "manifest.json"
SEGMENTS_DIR = "segments"
CACHE_NAME = "embedding-cache.sqlite"
LOCK_NAME = ".lock"
TRAINED_INDEX_NAME = "ann-cache.faiss"
MODEL_COPIES_DIR = "onnx-models"

# Where a crash test may stop a writer (see _pause_point), in the order reached.
PAUSE_POINTS = ("before-transaction", "before-segment", "after-segment", "after-commit", "after-mirror")

# Names the index creates. Cleanup deletes only unnamed files matching these.
_SEGMENT_FILE = re.compile(r"^seg-\d{6,}\.faiss$")
_SEGMENT_TEMPORARY = re.compile(r"^\.seg-\d{6,}\.faiss\.tmp$")
_SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")
_OWN_NAMES = frozenset(
    [DATABASE_NAME + suffix for suffix in _SQLITE_SUFFIXES]
    + [CACHE_NAME + suffix for suffix in _SQLITE_SUFFIXES]
    + [LOCK_NAME, TRAINED_INDEX_NAME, MODEL_COPIES_DIR]
)
_OWN_TEMPORARY = re.compile(
    r"^(\.manifest\.json\.tmp|\.ann-cache\.faiss\..+|\.takes\.sqlite\.recover.*|takes\.sqlite\.damaged-.+)$"
)

# Vectors are L2-normalized; a stored vector further than this from unit
# length was damaged after it was written (float32 rounding stays near 1e-6).
_UNIT_TOLERANCE = 1e-3

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

REPAIR_HINT = "`takes repair` rebuilds what is damaged from what is intact (`takes check` lists it)"

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Segment:
    generation: int
    file: str
    count: int
    # Checksum of the file as committed ("crc32:..."); None in format 1 indexes.
    checksum: str | None = None


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

    def to_dict(self) -> dict:
        return {
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

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Manifest":
        """Parse a manifest; ValueError naming the first field that is wrong."""
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        version = data.get("format_version")
        if version not in READABLE_FORMATS or isinstance(version, bool):
            raise UnsupportedFormat(version)
        segments = data.get("segments", [])
        if not isinstance(segments, list):
            raise ValueError("segments is not a list")
        return cls(
            model=_field(data, "model", str),
            dim=_field(data, "dim", int, minimum=1),
            count=_field(data, "count", int, minimum=0),
            generation=_field(data, "generation", int, minimum=0),
            segments=tuple(_segment(item) for item in segments),
            index_type=_field(data, "index_type", str, default="flat"),
            backend=_field(data, "backend", str, default="torch"),
            format_version=version,
            updated_at=_field(data, "updated_at", str, default=""),
        )

    def check_model(self, model: str | None, dim: int | None = None) -> None:
        """Raise ModelMismatch unless ``model`` (and ``dim``) is what built this index."""
        if model is not None and normalize_model_name(model) != self.model:
            raise ModelMismatch(self.model, self.dim, model, dim)
        if dim is not None and dim != self.dim:
            raise ModelMismatch(self.model, self.dim, model or self.model, dim)


class UnsupportedFormat(ValueError):
    def __init__(self, version):
        self.version = version
        super().__init__(
            f"index format version {version!r} is not one this version of takes reads "
            f"({', '.join(map(str, READABLE_FORMATS))}): upgrade takes, or build a new index from your files"
        )


_MISSING = object()


def _field(data: dict, name: str, kind: type, *, default=_MISSING, minimum: int | None = None):
    value = data.get(name, default)
    if value is _MISSING:
        raise ValueError(f"{name} is missing")
    # bool is an int to Python, never to a manifest; 1e400 parses as a float.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"{name} is {value!r}, not a {kind.__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} is {value!r}, below {minimum}")
    return value


def _segment(item) -> Segment:
    if not isinstance(item, dict):
        raise ValueError(f"a segment is {item!r}, not an object")
    file = _field(item, "file", str)
    if not file.startswith(f"{SEGMENTS_DIR}/") or not _SEGMENT_FILE.match(file.removeprefix(f"{SEGMENTS_DIR}/")):
        raise ValueError(f"segment file {file!r} is not a segments/seg-NNNNNN.faiss name")
    digest = item.get("checksum")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(rf"{CHECKSUM_PREFIX}[0-9a-f]{{8}}", digest)):
        raise ValueError(f"segment {file} has checksum {digest!r}, not a {CHECKSUM_PREFIX} checksum")
    return Segment(
        generation=_field(item, "generation", int, minimum=0),
        file=file,
        count=_field(item, "count", int, minimum=0),
        checksum=digest,
    )


def read_manifest(connection: sqlite3.Connection) -> Manifest | None:
    row = connection.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
    if row is None:
        return None
    try:
        return Manifest.from_json(row[0])
    except UnsupportedFormat as error:
        raise IndexCorrupt(str(error)) from None
    except (ValueError, TypeError, RecursionError) as error:
        raise IndexCorrupt(f"the manifest stored in {DATABASE_NAME} is not readable ({error}): {REPAIR_HINT}") from None


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
    try:
        connection = connect(path, readonly=True)
    except sqlite3.Error as error:
        raise IndexCorrupt(f"cannot open {path} ({error}): {REPAIR_HINT}") from None
    try:
        manifest = read_manifest(connection)
    except sqlite3.DatabaseError as error:
        connection.close()
        raise damaged_database(path, error) from None
    except IndexCorrupt:
        connection.close()
        raise
    if manifest is None:
        connection.close()
        raise IndexNotFound(index_dir)
    try:
        check_mirror(Path(index_dir), manifest, mirror_text)
    except IndexCorrupt:
        connection.close()
        raise
    return connection, manifest


def damaged_database(path: Path, error: sqlite3.Error) -> IndexCorrupt:
    """The IndexCorrupt for a SQLite error met while reading the index database."""
    return IndexCorrupt(
        f"{path} is damaged ({error}): `takes repair` recovers the readable takes and re-embeds them "
        f"(`takes check` lists the damage)"
    )


def _read_mirror_text(index_dir: Path) -> bytes | None:
    try:
        return (index_dir / MANIFEST_NAME).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise IndexCorrupt(f"cannot read {index_dir / MANIFEST_NAME} ({error.strerror})") from None


def check_mirror(index_dir: Path, manifest: Manifest, mirror_text: str | bytes | None) -> None:
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
    except (ValueError, TypeError, RecursionError) as error:
        raise IndexCorrupt(
            f"{path} is not a readable manifest ({error}); it only mirrors {DATABASE_NAME}: "
            f"`takes repair` (or the next `takes add`) rewrites it"
        ) from None
    if mirror.generation < manifest.generation:
        return
    if mirror.generation > manifest.generation:
        raise IndexCorrupt(
            f"{index_dir}: {MANIFEST_NAME} is at generation {mirror.generation} but {DATABASE_NAME} only at "
            f"{manifest.generation}: the database is older than the rest of the index (restored or copied "
            f"separately?); restore the whole folder together, or `takes repair` to keep what the database holds"
        )
    differing = [name for name in ("model", "dim", "count", "segments", "index_type") if getattr(mirror, name) != getattr(manifest, name)]
    if differing:
        raise IndexCorrupt(
            f"{index_dir}: {MANIFEST_NAME} and {DATABASE_NAME} disagree about generation {manifest.generation} "
            f"({', '.join(differing)}): the files come from different copies of the index; restore the whole "
            f"folder together, or `takes repair` to keep what the database holds"
        )


def _is_our_manifest(path: Path) -> bool:
    try:
        Manifest.from_json(path.read_bytes())
        return True
    except (OSError, ValueError, TypeError, RecursionError):
        return False


def foreign_entries(index_dir: Path) -> list[str]:
    """Entries of a folder without an index database that no takes index would hold.

    A folder holding only these names is a fresh or interrupted index (or
    one whose database was deleted to start over) and may be written.
    """
    foreign = []
    for entry in sorted(Path(index_dir).iterdir()):
        name = entry.name
        if name in _OWN_NAMES or _OWN_TEMPORARY.match(name):
            continue
        if name == MANIFEST_NAME and entry.is_file() and _is_our_manifest(entry):
            continue
        if name == SEGMENTS_DIR and entry.is_dir():
            strangers = [item.name for item in entry.iterdir() if not (_SEGMENT_FILE.match(item.name) or _SEGMENT_TEMPORARY.match(item.name))]
            if not strangers:
                continue
            foreign.extend(f"{SEGMENTS_DIR}/{stranger}" for stranger in sorted(strangers))
            continue
        foreign.append(name)
    return foreign


def _not_an_index(index_dir: Path, examples: Sequence[str]) -> NotAnIndex:
    shown = ", ".join(repr(name) for name in examples[:3]) + (" ..." if len(examples) > 3 else "")
    return NotAnIndex(
        f"{index_dir} is not a takes index (it holds {shown}); nothing was written there: "
        f"choose a new or empty folder with --index-dir / TAKES_INDEX_DIR"
    )


def take_from_row(row: Sequence) -> Take:
    return Take(*row)


def _segment_damaged(path: Path, problem: str) -> IndexCorrupt:
    return IndexCorrupt(f"vector segment {path} {problem}: `takes repair` re-embeds its takes from the database")


def read_segment(index_dir: Path, segment: Segment, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (ids, vectors) stored in one segment file, verified against its checksum.

    Vectors must be unit length too: that catches damage in format 1
    segments, which have no checksum.
    """
    import faiss

    path = Path(index_dir) / segment.file
    try:
        if segment.checksum is not None and cached_checksum(path) != segment.checksum:
            raise _segment_damaged(path, f"does not match the checksum recorded by generation {segment.generation} (damaged on disk)")
        index = faiss.read_index(str(path))
    except OSError as error:
        raise IndexCorrupt(
            f"cannot read vector segment {path} ({error.strerror or error}): `takes repair` re-embeds its takes from the database"
        ) from None
    except RuntimeError as error:
        raise IndexCorrupt(
            f"cannot read vector segment {path} ({str(error).splitlines()[0][:200]}): `takes repair` re-embeds its takes from the database"
        ) from None
    if not hasattr(index, "id_map"):
        raise _segment_damaged(path, "is not a vector segment")
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    vectors = index.index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, index.d), np.float32)
    if len(ids) != segment.count:
        raise _segment_damaged(path, f"holds {len(ids)} vectors, the manifest says {segment.count}")
    if dim is not None and index.d != dim:
        raise _segment_damaged(path, f"holds {index.d}-dimensional vectors, the manifest says {dim}")
    if len(vectors) and not _unit_rows(vectors).all():
        raise _segment_damaged(path, "holds vectors that are not unit length (damaged on disk)")
    return ids, vectors


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Which rows are finite unit vectors, as every model here writes them."""
    with np.errstate(all="ignore"):
        norms = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    return np.isfinite(norms) & (np.abs(norms - 1.0) <= _UNIT_TOLERANCE)


# The trained-index file is FAISS's own format followed by a JSON header (the
# manifest of the generation it holds plus the checksum of the FAISS part) and
# that header's length (8 bytes): FAISS reads the file directly, ignoring what
# trails it, and the header is checked without reading the index.
_LENGTH_BYTES = 8


def _trained_index_header(path: Path) -> tuple[dict, int]:
    """(header, length of the FAISS part) of a saved trained index; ValueError/OSError if unreadable."""
    with open(path, "rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size <= _LENGTH_BYTES:
            raise ValueError("too short")
        handle.seek(size - _LENGTH_BYTES)
        header_size = int.from_bytes(handle.read(_LENGTH_BYTES), "little")
        if not 0 < header_size < size - _LENGTH_BYTES:
            raise ValueError("no header")
        handle.seek(size - _LENGTH_BYTES - header_size)
        header = json.loads(handle.read(header_size).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    return header, size - _LENGTH_BYTES - header_size


def verify_trained_index(path: Path) -> str | None:
    """What is wrong with a saved trained index file, or None when it is intact."""
    try:
        header, faiss_bytes = _trained_index_header(path)
        Manifest.from_json(json.dumps(header))
    except (OSError, ValueError, TypeError, RecursionError) as error:
        return f"unreadable header ({error})"
    expected = header.get("faiss_checksum")
    if not isinstance(expected, str):
        return "no checksum (saved by an older takes)"
    try:
        if cached_checksum(path, limit=faiss_bytes) != expected:
            return "does not match its checksum (damaged on disk)"
    except OSError as error:
        return f"unreadable ({error.strerror})"
    return None


def read_trained_index(index_dir: Path, manifest: Manifest):
    """(manifest, FAISS index) of the approximate index saved by an earlier load, or None.

    Training IVF is most of a large load (about 26 s of a 1M-take start here);
    the caller brings the saved generation up to date from the segments, or
    declines when the segments it was built from are gone (a rebuild). A file
    that fails its checksum is discarded (the load trains afresh and saves a
    new one); any other problem means a normal load, never an error.
    """
    import faiss

    path = Path(index_dir) / TRAINED_INDEX_NAME
    if not path.exists():
        return None
    problem = verify_trained_index(path)
    if problem is not None:
        logger.warning("discarding the saved trained index %s: %s", path, problem)
        with contextlib.suppress(OSError):
            path.unlink()
        return None
    try:
        header, _ = _trained_index_header(path)
        saved = Manifest.from_json(json.dumps(header))
        if (saved.model, saved.dim, saved.index_type) != (manifest.model, manifest.dim, manifest.index_type):
            return None
        index = faiss.read_index(str(path))
    except (OSError, ValueError, RuntimeError, TypeError):
        return None
    return (saved, index) if index.ntotal == saved.count and index.d == saved.dim else None


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
    temporary = index_dir / f".{TRAINED_INDEX_NAME}.{os.getpid()}.{threading.get_ident()}"
    try:
        # Streamed to disk by FAISS: no in-memory copy of a 1.5 GB index.
        faiss.write_index(index, str(temporary))
        header = json.dumps({**manifest.to_dict(), "faiss_checksum": checksum_file(temporary)}).encode("utf-8")
        with open(temporary, "ab") as handle:
            handle.write(header)
            handle.write(len(header).to_bytes(_LENGTH_BYTES, "little"))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, index_dir / TRAINED_INDEX_NAME)
        fsync_dir(index_dir)
    except (OSError, RuntimeError) as error:
        logger.info("not saving the trained index in %s: %s", index_dir, error)
        with contextlib.suppress(OSError):
            temporary.unlink()


def _cache_checksum(model: str, digest: str, blob: bytes) -> str:
    # Bound to its key too: a vector moved to another text's row fails.
    return checksum_bytes(b"\0".join((model.encode(), digest.encode(), blob)))


class EmbeddingCache:
    """Vectors keyed by (model, text hash), so unchanged text is never embedded twice.

    Each entry carries a checksum, verified before reuse; an entry that fails
    (or a cache file SQLite cannot read) is treated as absent, so the text is
    embedded again and the entry rewritten. The cache never fails a write.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.rejected = 0
        self._connection: sqlite3.Connection | None = None
        try:
            connection = connect(self.path)
            connection.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT, text_hash TEXT, vector BLOB, checksum TEXT, "
                "PRIMARY KEY (model, text_hash))"
            )
            if "checksum" not in {row[1] for row in connection.execute("PRAGMA table_info(vectors)")}:
                connection.execute("ALTER TABLE vectors ADD COLUMN checksum TEXT")
            self._connection = connection
        except sqlite3.Error as error:
            logger.warning("ignoring the embedding cache %s (%s): `takes repair` rebuilds it", self.path, error)

    @staticmethod
    def entry_is_sound(model: str, digest: str, blob, checksum: str | None) -> bool:
        if not isinstance(blob, bytes) or len(blob) % 4 or not blob:
            return False
        if checksum is not None:
            return checksum == _cache_checksum(model, digest, blob)
        # Entries written before checksums: accept only finite unit vectors.
        return bool(_unit_rows(np.frombuffer(blob, dtype=np.float32)[None, :])[0])

    def get_many(self, model: str, hashes: Sequence[str], dim: int | None = None) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        if self._connection is None:
            return found
        try:
            for start in range(0, len(hashes), 500):
                chunk = list(hashes[start : start + 500])
                placeholders = ",".join("?" * len(chunk))
                for text_digest, blob, checksum in self._connection.execute(
                    f"SELECT text_hash, vector, checksum FROM vectors WHERE model = ? AND text_hash IN ({placeholders})",
                    [model, *chunk],
                ):
                    if not self.entry_is_sound(model, text_digest, blob, checksum) or (dim and len(blob) != 4 * dim):
                        self.rejected += 1
                        continue
                    found[text_digest] = np.frombuffer(blob, dtype=np.float32)
        except sqlite3.Error as error:
            logger.warning("ignoring the embedding cache %s (%s): `takes repair` rebuilds it", self.path, error)
            return {}
        if self.rejected:
            logger.warning("%d damaged entries in %s are embedded again", self.rejected, self.path)
        return found

    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        if self._connection is None:
            return
        rows = []
        for digest, vector in items:
            blob = np.asarray(vector, np.float32).tobytes()
            rows.append((model, digest, blob, _cache_checksum(model, digest, blob)))
        try:
            with self._connection:
                self._connection.execute("BEGIN")
                self._connection.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?)", rows)
        except sqlite3.Error as error:
            # Only a speed-up is lost: the vectors still go into the segment.
            logger.warning("cannot write the embedding cache %s: %s", self.path, error)

    def damaged_entries(self) -> list[tuple[str, str]]:
        """(model, text hash) of every entry that fails its check; reads the whole cache."""
        if self._connection is None:
            raise sqlite3.DatabaseError("unreadable")
        return [
            (model, digest)
            for model, digest, blob, checksum in self._connection.execute("SELECT model, text_hash, vector, checksum FROM vectors")
            if not self.entry_is_sound(model, digest, blob, checksum)
        ]

    def delete(self, keys: Sequence[tuple[str, str]] = (), *, model: str | None = None) -> None:
        """Delete entries by key, or every entry of ``model``."""
        if self._connection is None:
            return
        with self._connection:
            self._connection.execute("BEGIN")
            if model is not None:
                self._connection.execute("DELETE FROM vectors WHERE model = ?", (model,))
            self._connection.executemany("DELETE FROM vectors WHERE model = ? AND text_hash = ?", list(keys))

    def vacuum(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.execute("VACUUM")
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


EmbedderFactory = Callable[[], Embedder]


def _nearly_full(index_dir: Path) -> bool:
    """Whether the index's file system has (almost) no space left: SQLite reports that as an I/O error at times."""
    try:
        status = os.statvfs(index_dir)
    except OSError:
        return False
    return status.f_bavail * status.f_frsize < (1 << 20)


def _write_error(index_dir: Path, error: BaseException, generation: int | None) -> TakesError | None:
    """The one-line error for an OS or SQLite failure met while writing, or None to let it through."""
    kept = "nothing was changed" + (f" (the index still holds generation {generation})" if generation else "")
    if isinstance(error, sqlite3.Error):
        message = str(error)
        if "full" in message or ("I/O" in message and _nearly_full(index_dir)):
            return DiskFull(f"{index_dir}: the disk is full (no space left on the device); {kept}: free some space and run the command again")
        if "readonly" in message or "read-only" in message:
            return IndexReadOnly(f"{index_dir} is read-only ({message}); {kept}: searching works, changes need write access")
        if "locked" in message or "busy" in message:
            return IndexLocked(f"{index_dir} is being written by another writer ({message}); {kept}: try again when it finishes")
        if "I/O" in message:
            return IndexWriteFailed(f"{index_dir}: the disk failed a write ({message}); {kept}")
        if isinstance(error, sqlite3.DatabaseError) and ("malformed" in message or "not a database" in message):
            return damaged_database(database_path(index_dir), error)
        return None
    if isinstance(error, OSError):
        where = error.filename or index_dir
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(f"cannot write {where}: the disk is full (no space left on the device); {kept}: free some space and run the command again")
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return IndexReadOnly(f"cannot write {where} ({error.strerror}); {kept}: searching works, changes need write access")
        if error.errno == errno.EIO:
            return IndexWriteFailed(f"cannot write {where} (input/output error); {kept}")
    return None


@contextlib.contextmanager
def _translated(index_dir: Path, generation: int | None):
    """Turn OS and SQLite write failures into one-line TakesErrors (see _write_error)."""
    try:
        yield
    except (OSError, sqlite3.Error) as error:
        translated = _write_error(index_dir, error, generation)
        if translated is None:
            raise
        raise translated from None


class IndexWriter:
    """The single writer of an index directory (holds the lock while open).

    The embedder is created only when some text is not in the cache, so adding
    a file that is already indexed never loads the model.
    """

    def __init__(self, index_dir: Path | str, *, lock_timeout: float = 30.0, recover: bool = False):
        self.index_dir = Path(index_dir)
        self._lock_handle = None
        self._written: list[Path] = []
        self.recovery: RecoveryReport | None = None
        database = database_path(self.index_dir)
        with _translated(self.index_dir, None):
            self.index_dir.mkdir(parents=True, exist_ok=True)
        if not database.exists() and (foreign := foreign_entries(self.index_dir)):
            raise _not_an_index(self.index_dir, foreign)
        if not os.access(self.index_dir, os.W_OK):
            raise IndexReadOnly(f"{self.index_dir} is read-only: searching works, changes need write access")
        # A bad setting fails here, before any text is embedded.
        ann.threshold()
        with _translated(self.index_dir, None):
            self._lock_handle = _acquire_lock(self.index_dir / LOCK_NAME, lock_timeout)
        try:
            with _translated(self.index_dir, None):
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
                if recover and self.recovery is None and not _database_is_sound(self._connection):
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
            raise _not_an_index(self.index_dir, [f"{DATABASE_NAME} with tables {', '.join(sorted(tables)[:3])}"])
        if not tables:
            # Lets `takes compact` hand freed pages back without a full VACUUM.
            self._connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self._connection.executescript(_SCHEMA)
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
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            # A pid the full disk would not take may still sit in the buffer.
            with contextlib.suppress(OSError):
                self._lock_handle.close()
            self._lock_handle = None

    @property
    def generation(self) -> int:
        return self.manifest.generation if self.manifest else 0

    # -- public operations --------------------------------------------------

    def add(
        self, takes: Sequence[Take], embedder: EmbedderFactory | Embedder, *, model: str, backend: str | None = None, progress: bool = False
    ) -> ChangeReport:
        """Add takes that are not already indexed (same id, or same text from the same author)."""
        self._check_model(model)
        keys = [text_key(take.text, take.author) for take in takes]
        # Look up only the incoming ids and keys (both indexed): the cost
        # follows the size of the batch, not of the index.
        with _translated(self.index_dir, self.generation):
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
        return _existing(self._connection, column, values)

    def replace_all(
        self, takes: Sequence[Take], embedder: EmbedderFactory | Embedder, *, model: str, backend: str | None = None, progress: bool = False
    ) -> ChangeReport:
        """Make the index hold exactly ``takes`` (deduplicated), embedded by ``model``."""
        unique = _first_of_each(takes, [text_key(take.text, take.author) for take in takes], set(), set())
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
        with _translated(self.index_dir, self.generation):
            takes = self.live_takes()
        report = self._commit(takes, embedder, model=model, remove_live=True, backend=backend, progress=progress)
        self._shrink()
        return report

    def remove(self, ids: Sequence[str] = (), thread_id: str | None = None) -> ChangeReport:
        """Remove takes by id or a whole thread; unknown ids are an error, nothing is removed then."""
        if self.manifest is None:
            raise IndexNotFound(self.index_dir)
        from indexer.errors import TakeNotFound

        rowids: list[int] = []
        with _translated(self.index_dir, self.generation):
            if ids:
                placeholders = ",".join("?" * len(ids))
                found = dict(
                    self._connection.execute(
                        f"SELECT id, rowid FROM takes WHERE removed_generation IS NULL AND id IN ({placeholders})", list(ids)
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
                        "SELECT rowid FROM takes WHERE removed_generation IS NULL AND thread_id = ?", (thread_id,)
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

    def compact(self) -> CompactReport:
        """Purge removed takes, merge the segments into one checksummed file, VACUUM.

        Runs as a new generation with the same live takes, so the old one
        stays whole until it commits; a reader on the generation before it
        keeps every take it can see.
        """
        if self.manifest is None:
            raise IndexNotFound(self.index_dir)
        import faiss

        before = self.manifest
        bytes_before = disk_bytes(self.index_dir)
        with _translated(self.index_dir, before.generation):
            removed_rows = self._connection.execute("SELECT count(*) FROM takes WHERE removed_generation IS NOT NULL").fetchone()[0]
        stored = sum(segment.count for segment in before.segments)
        needs_generation = (
            removed_rows
            or len(before.segments) > 1
            or stored != before.count
            or any(segment.checksum is None for segment in before.segments)
            or before.format_version != FORMAT_VERSION
        )
        generation = before.generation
        if needs_generation:
            generation = before.generation + 1
            live = np.fromiter(iter_live_rows(self._connection, before.generation), dtype=np.int64)
            kept_ids, kept_vectors = [], []
            for segment in before.segments:
                ids, vectors = read_segment(self.index_dir, segment, before.dim)
                keep = np.isin(ids, live)
                kept_ids.append(ids[keep])
                kept_vectors.append(vectors[keep])
            ids = np.concatenate(kept_ids) if kept_ids else np.zeros(0, np.int64)
            if len(ids) != len(live):
                raise IndexCorrupt(
                    f"{self.index_dir}: {len(live) - len(ids)} takes have no vector in any segment; nothing was compacted: {REPAIR_HINT}"
                )
            vectors = np.concatenate(kept_vectors) if kept_vectors else np.zeros((0, before.dim), np.float32)
            order = np.argsort(ids, kind="stable")
            # The same transaction as any write: purge everything removed
            # before this generation (it shows exactly the takes of the last).
            with self._generation(generation, purge_before=generation):
                segments: tuple[Segment, ...] = ()
                if len(ids):
                    index = faiss.IndexIDMap2(faiss.IndexFlatIP(before.dim))
                    index.add_with_ids(np.ascontiguousarray(vectors[order]), np.ascontiguousarray(ids[order]))
                    segments = (self._write_segment(generation, index, len(ids)),)
                manifest = self._next_manifest(generation, segments, before.model, before.dim, before.backend)
                self._record(manifest)
            self._published(manifest)
        not_vacuumed = None
        try:
            with _translated(self.index_dir, generation):
                with contextlib.suppress(sqlite3.OperationalError):
                    self._connection.execute("INSERT INTO takes_fts(takes_fts) VALUES ('optimize')")
                # VACUUM rewrites the file through the WAL: a crash leaves the old
                # pages or the new ones. It also turns on incremental vacuum for
                # databases made before it was the default.
                self._connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
                self._connection.execute("VACUUM")
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except TakesError as error:
            # The new generation stands; only the space VACUUM would free is not back yet.
            not_vacuumed = str(error).split("; nothing was changed")[0]
        self._cache.vacuum()
        self._drop_stale_trained_index()
        return CompactReport(
            bytes_before=bytes_before,
            bytes_after=disk_bytes(self.index_dir),
            purged=removed_rows,
            segments_before=len(before.segments),
            segments_after=len(self.manifest.segments),
            generation=generation,
            not_vacuumed=not_vacuumed,
        )

    def live_takes(self) -> list[Take]:
        rows = self._connection.execute(
            f"SELECT {_COLUMNS} FROM takes WHERE removed_generation IS NULL ORDER BY rowid"
        ).fetchall()
        return [take_from_row(row) for row in rows]

    # -- repair helpers (`takes repair`) --------------------------------------

    def rebuild_text_index(self) -> None:
        """Rebuild FTS5 from the live rows (the rows removed rows are deliberately absent from it)."""
        connection = self._connection
        with self._transaction():
            connection.execute("INSERT INTO takes_fts(takes_fts) VALUES ('delete-all')")
            connection.execute("INSERT INTO takes_fts(rowid, text) SELECT rowid, text FROM takes WHERE removed_generation IS NULL")

    def drop_damaged_cache_entries(self) -> int:
        """Delete cache entries that fail their check; the cache file itself if SQLite cannot read it."""
        try:
            damaged = self._cache.damaged_entries()
        except sqlite3.DatabaseError:
            self._cache.close()
            for suffix in _SQLITE_SUFFIXES:
                with contextlib.suppress(FileNotFoundError):
                    (self.index_dir / f"{CACHE_NAME}{suffix}").unlink()
            self._cache = EmbeddingCache(self.index_dir / CACHE_NAME)
            return -1
        self._cache.delete(damaged)
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
    ) -> tuple[np.ndarray, int]:
        """Vectors for ``takes``, from the cache where possible; returns (vectors, texts embedded)."""
        # Each take is embedded alone: adding its thread's opening take measured
        # better on the dev judgments but biased every query toward long threads
        # (docs/QUALITY.md, "Thread context").
        texts = [take.text for take in takes]
        hashes = [text_hash(text) for text in texts]
        # Backends give slightly different vectors: never mix them in the cache.
        cache_model = cache_model_name(model, backend)
        dim = self.manifest.dim if self.manifest and self.manifest.model == model else 0
        cached = self._cache.get_many(cache_model, hashes, dim or None)
        missing = sorted({digest for digest in hashes if digest not in cached})
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
        with _translated(self.index_dir, self.generation):
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
                index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
                index.add_with_ids(vectors, np.asarray(rowids, dtype=np.int64))
                segments = (*segments, self._write_segment(generation, index, len(takes)))
            manifest = self._next_manifest(generation, segments, model, dim, backend)
            self._record(manifest)
        self._published(manifest)
        threads = len({take.thread_id for take in takes})
        return ChangeReport(
            added=len(takes), embedded=embedded, threads=threads, generation=generation, added_ids=[t.id for t in takes]
        )

    def _write_segment(self, generation: int, index, count: int) -> Segment:
        """Write a segment file inside the open transaction (so a failed commit deletes it)."""
        import faiss

        file = f"{SEGMENTS_DIR}/seg-{generation:06d}.faiss"
        path = self.index_dir / file
        path.parent.mkdir(exist_ok=True)
        data = faiss.serialize_index(index)
        _pause_point("before-segment")
        # Written and flushed before the commit that names it; deleted if the commit fails.
        self._written.append(path)
        write_atomic(path, memoryview(data))
        _pause_point("after-segment")
        return Segment(generation, file, count, checksum_bytes(memoryview(data)))

    @contextlib.contextmanager
    def _transaction(self, on_failure: Callable[[], None] | None = None):
        """A write transaction holding SQLite's write lock; rolled back on any failure.

        ``on_failure`` runs before the rollback, while the lock is still held.
        """
        connection = self._connection
        with _translated(self.index_dir, self.generation):
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield
                connection.execute("COMMIT")
            except BaseException:
                if on_failure is not None:
                    on_failure()
                # SQLite rolls back by itself after some failures (disk full):
                # a second ROLLBACK would replace the real error with "no transaction".
                if connection.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        connection.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def _generation(self, generation: int, *, purge_before: int | None = None):
        """One write transaction for ``generation``: all of it commits, or none of it.

        It first checks that the committed generation is still the one this
        writer started from: with ``.lock`` deleted, a second writer may have
        committed meanwhile, and this one must then change nothing. Files it
        wrote are deleted if it fails, before the write lock is released.
        """
        self._written = []

        def delete_written() -> None:
            for path in self._written:
                with contextlib.suppress(OSError):
                    path.unlink()

        _pause_point("before-transaction")
        try:
            with self._transaction(on_failure=delete_written):
                committed = read_manifest(self._connection)
                committed_generation = committed.generation if committed else 0
                if committed_generation != generation - 1:
                    raise IndexConflict(
                        f"another writer committed generation {committed_generation} to {self.index_dir} while this one "
                        f"prepared generation {generation} (was {LOCK_NAME} deleted?); nothing was changed: run the command again"
                    )
                self._purge_removed(generation if purge_before is None else purge_before + 1)
                yield
        finally:
            self._written = []

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
        self._tidy(after_commit=True)

    def _tidy(self, *, after_commit: bool = False) -> None:
        """Rewrite a stale manifest.json and delete what crashed or superseded writes left; best effort.

        Done under SQLite's write lock, so it can never delete the segment of
        a writer that is between writing it and committing. After a commit
        nothing here may fail the write: it has happened, and the next writer
        finishes whatever this one could not.
        """
        connection = self._connection
        try:
            connection.execute("PRAGMA busy_timeout = 2000")
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as error:
            logger.info("not tidying %s now (%s): the next writer does", self.index_dir, error)
            return
        finally:
            connection.execute("PRAGMA busy_timeout = 30000")
        try:
            current = read_manifest(connection)
            self._repair_mirror(current)
            if after_commit:
                _pause_point("after-mirror")
            self._remove_orphans(current)
        except (OSError, sqlite3.Error, IndexCorrupt) as error:
            logger.warning("could not tidy %s (%s): the next writer does", self.index_dir, error)
        finally:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")

    def _repair_mirror(self, current: Manifest | None) -> None:
        """Rewrite manifest.json when it is not the committed manifest (a crash after a commit)."""
        path = self.index_dir / MANIFEST_NAME
        if current is None:
            # A mirror of a database deleted to start over mirrors nothing;
            # a manifest.json that is not ours is never touched.
            if path.is_file() and _is_our_manifest(path):
                path.unlink()
            return
        text = current.to_json().encode()
        try:
            stale = path.read_bytes() != text
        except FileNotFoundError:
            stale = True
        if stale:
            write_atomic(path, text)

    def _remove_orphans(self, current: Manifest | None) -> None:
        """Delete what a crashed or superseded write left: unnamed segments of ours and our temporaries."""
        # write_atomic's temporary for manifest.json, left by a crash mid-write.
        temporary_name(self.index_dir / MANIFEST_NAME).unlink(missing_ok=True)
        named = {segment.file for segment in current.segments} if current else set()
        segments_dir = self.index_dir / SEGMENTS_DIR
        if not segments_dir.is_dir():
            return
        removed = False
        for path in segments_dir.iterdir():
            ours = _SEGMENT_FILE.match(path.name) or _SEGMENT_TEMPORARY.match(path.name)
            if ours and f"{SEGMENTS_DIR}/{path.name}" not in named and path.is_file():
                path.unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_dir(segments_dir)

    def _shrink(self) -> None:
        """The cheap part of compacting: hand free pages back, truncate the write-ahead log; best effort."""
        with contextlib.suppress(sqlite3.Error):
            self._connection.execute("PRAGMA incremental_vacuum")
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._drop_stale_trained_index()

    def _drop_stale_trained_index(self) -> None:
        """Delete a saved trained index no load can reuse (its segments are gone)."""
        path = self.index_dir / TRAINED_INDEX_NAME
        if not path.exists() or self.manifest is None:
            return
        try:
            header, _ = _trained_index_header(path)
            saved = Manifest.from_json(json.dumps(header))
            current_files = {segment.file for segment in self.manifest.segments}
            stale = not {segment.file for segment in saved.segments} <= current_files or saved.model != self.manifest.model
        except (OSError, ValueError, TypeError):
            stale = True
        if stale:
            with contextlib.suppress(OSError):
                path.unlink()


def cache_model_name(model: str, backend: str) -> str:
    """The embedding cache's model key: backends give slightly different vectors."""
    return model if backend == "torch" else f"{model}|{backend}"


def _database_is_sound(connection: sqlite3.Connection) -> bool:
    try:
        return connection.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        return False


def _pause_point(name: str) -> None:
    """Crash-test hook: stop here when TAKES_TEST_PAUSE_AT names this point (see PAUSE_POINTS)."""
    if os.environ.get("TAKES_TEST_PAUSE_AT") != name:
        return
    if marker := os.environ.get("TAKES_TEST_PAUSE_FILE"):
        Path(marker).write_text(str(os.getpid()))
    # Long enough for the test to kill us; if it does not, the write carries
    # on, sooner if the test creates TAKES_TEST_RESUME_FILE.
    deadline = time.monotonic() + float(os.environ.get("TAKES_TEST_PAUSE_SECONDS", "60"))
    resume = os.environ.get("TAKES_TEST_RESUME_FILE")
    while time.monotonic() < deadline and not (resume and Path(resume).exists()):
        time.sleep(0.05)


def _instance(embedder: EmbedderFactory | Embedder) -> Embedder:
    """The embedder itself, creating it when given a factory (the model loads only here)."""
    return embedder if hasattr(embedder, "encode") else embedder()


def _existing(connection: sqlite3.Connection, column: str, values: Sequence[str]) -> set[str]:
    """Which of ``values`` a live take already has in ``column`` (``id`` or ``text_key``): indexed look-ups only."""
    found: set[str] = set()
    unique = list(dict.fromkeys(values))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        found.update(
            row[0]
            for row in connection.execute(
                f"SELECT {column} FROM takes WHERE removed_generation IS NULL AND {column} IN ({','.join('?' * len(chunk))})",
                chunk,
            )
        )
    return found


def new_takes(index_dir: Path, takes: Sequence[Take]) -> list[Take]:
    """The takes ``IndexWriter.add`` would add, found without writing anything (``takes add --dry-run``)."""
    keys = [text_key(take.text, take.author) for take in takes]
    if not database_path(index_dir).exists():
        return _first_of_each(takes, keys, set(), set())
    connection, _ = open_index_database(index_dir)
    try:
        return _first_of_each(
            takes, keys, _existing(connection, "id", [take.id for take in takes]), _existing(connection, "text_key", keys)
        )
    finally:
        connection.close()


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
    # Naming the holder is a courtesy: on a full disk the lock must still be held, not leaked.
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
    except OSError:
        pass
    return handle


def iter_live_rows(connection: sqlite3.Connection, generation: int) -> Iterator[int]:
    """Row ids visible at ``generation``."""
    for (rowid,) in connection.execute(
        "SELECT rowid FROM takes WHERE added_generation <= ? AND (removed_generation IS NULL OR removed_generation > ?)",
        (generation, generation),
    ):
        yield rowid


# -- recovery, checks and sizes ------------------------------------------------


@dataclass(frozen=True)
class RecoveryReport:
    """What recover_database salvaged from a damaged database."""

    recovered: int
    expected: int | None
    method: str
    damaged_copy: str

    def __str__(self) -> str:
        lost = f", {self.expected - self.recovered} lost" if self.expected is not None and self.expected > self.recovered else ""
        of = f" of {self.expected}" if self.expected is not None else ""
        return (
            f"recovered {self.recovered}{of} takes from the damaged database ({self.method}){lost}; "
            f"the damaged file is kept as {self.damaged_copy}"
        )


_TAKE_ROW_COLUMNS = ("row_id", *TAKE_FIELDS, "text_key", "added_generation", "removed_generation")


def _salvage_rows(database: Path, scratch: Path) -> tuple[list[tuple], str | None, int, str]:
    """(live take rows, manifest text, highest row id, method) readable from a damaged database.

    SQLite's own recovery (the ``sqlite3`` shell's ``.recover``) reads every
    page it can, past damaged b-tree pages; without the shell, rows are read
    one by one, skipping those SQLite cannot read.
    """
    shell = shutil.which("sqlite3")
    if shell is not None:
        scratch.unlink(missing_ok=True)
        try:
            dump = subprocess.run([shell, str(database), ".recover"], capture_output=True, timeout=600, check=False)
            # A shell built without the sqlite_dbpage table cannot recover: it says so and exits 1.
            if dump.returncode == 0 and dump.stdout:
                subprocess.run([shell, str(scratch)], input=dump.stdout, capture_output=True, timeout=600, check=False)
                source = sqlite3.connect(scratch)
                try:
                    rows, manifest_text, highest = _readable_rows(source)
                finally:
                    source.close()
                if rows:
                    return rows, manifest_text, highest, "sqlite3 .recover"
        except (OSError, subprocess.SubprocessError, sqlite3.Error) as error:
            logger.info("sqlite3 .recover failed on %s (%s): reading rows one by one", database, error)
        finally:
            scratch.unlink(missing_ok=True)
    source = sqlite3.connect(f"file:{urllib.parse.quote(str(database.resolve()))}?mode=ro", uri=True)
    try:
        rows, manifest_text, highest = _readable_rows(source)
    finally:
        source.close()
    return rows, manifest_text, highest, "row by row"


def _readable_rows(source: sqlite3.Connection) -> tuple[list[tuple], str | None, int]:
    columns = ", ".join(_TAKE_ROW_COLUMNS)
    manifest_text = None
    with contextlib.suppress(sqlite3.Error):
        row = source.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
        manifest_text = row[0] if row else None
    try:
        rows = source.execute(f"SELECT {columns} FROM takes WHERE removed_generation IS NULL ORDER BY row_id").fetchall()
    except sqlite3.Error:
        rows = []
        highest = 0
        for query in ("SELECT max(row_id) FROM takes", "SELECT seq FROM sqlite_sequence WHERE name = 'takes'"):
            with contextlib.suppress(sqlite3.Error, TypeError):
                highest = max(highest, int(source.execute(query).fetchone()[0] or 0))
        for row_id in range(1, (highest or 1_000_000) + 1):
            try:
                row = source.execute(f"SELECT {columns} FROM takes WHERE row_id = ?", (row_id,)).fetchone()
            except sqlite3.Error:
                continue
            if row is not None and row[-1] is None:
                rows.append(row)
    highest = max((row[0] for row in rows), default=0)
    with contextlib.suppress(sqlite3.Error, TypeError):
        highest = max(highest, int(source.execute("SELECT seq FROM sqlite_sequence WHERE name = 'takes'").fetchone()[0]))
    # Rows must still make sense as takes: SQLite's recovery may return cells of damaged pages.
    sound = [row for row in rows if isinstance(row[0], int) and isinstance(row[1], str) and isinstance(row[2], str) and isinstance(row[6], str)]
    return sound, manifest_text, highest


def recover_database(index_dir: Path) -> RecoveryReport:
    """Replace a damaged takes.sqlite with a new one holding every live take still readable.

    The caller holds the writer lock. The new database is built aside and
    renamed in; the damaged file (and its WAL) is kept beside it, never
    deleted. Its vectors are not trusted: the caller re-embeds (a rebuild).
    """
    index_dir = Path(index_dir)
    database = database_path(index_dir)
    staging = index_dir / ".takes.sqlite.recover.tmp"
    for suffix in _SQLITE_SUFFIXES:
        Path(f"{staging}{suffix}").unlink(missing_ok=True)
    rows, manifest_text, highest, method = _salvage_rows(database, index_dir / ".takes.sqlite.recover-scratch.tmp")
    previous = None
    for text in (manifest_text, _read_mirror_bytes_quietly(index_dir)):
        if text is None:
            continue
        with contextlib.suppress(ValueError, TypeError, RecursionError):
            previous = Manifest.from_json(text)
            break
    if previous is None:
        from embeddings import DEFAULT_BACKEND, DEFAULT_MODEL

        previous = Manifest(model=DEFAULT_MODEL, dim=384, count=0, generation=0, backend=DEFAULT_BACKEND)
    connection = sqlite3.connect(staging, isolation_level=None)
    try:
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        connection.executescript(_SCHEMA)
        connection.execute("BEGIN")
        placeholders = ",".join("?" * len(_TAKE_ROW_COLUMNS))
        seen_ids: set[str] = set()
        kept = []
        for row in rows:
            if row[1] in seen_ids:
                continue
            seen_ids.add(row[1])
            kept.append(row)
        connection.executemany(f"INSERT INTO takes ({', '.join(_TAKE_ROW_COLUMNS)}) VALUES ({placeholders})", kept)
        connection.execute("INSERT INTO takes_fts(rowid, text) SELECT rowid, text FROM takes")
        # Row ids are never reused (old segments hold vectors under them).
        connection.execute("INSERT OR REPLACE INTO sqlite_sequence (name, seq) VALUES ('takes', ?)", (highest,))
        # No segment is trusted: the rebuild that follows writes the vectors.
        manifest = Manifest(
            model=previous.model,
            dim=previous.dim,
            count=len(kept),
            generation=previous.generation,
            segments=(),
            index_type=ann.index_type_for(len(kept)),
            backend=previous.backend,
            updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        connection.execute("INSERT OR REPLACE INTO meta VALUES ('manifest', ?)", (manifest.to_json(),))
        connection.execute("COMMIT")
    finally:
        connection.close()
    with open(staging, "rb") as handle:
        os.fsync(handle.fileno())
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    damaged = index_dir / f"{DATABASE_NAME}.damaged-{stamp}"
    # The damaged database's WAL belongs to it: applied to the new file it would corrupt it.
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{database}{suffix}", f"{damaged}{suffix}")
    os.replace(database, damaged)
    os.replace(staging, database)
    fsync_dir(index_dir)
    expected = previous.count if previous.generation else None
    return RecoveryReport(recovered=len(kept), expected=expected, method=method, damaged_copy=damaged.name)


def _read_mirror_bytes_quietly(index_dir: Path) -> bytes | None:
    with contextlib.suppress(OSError):
        return (Path(index_dir) / MANIFEST_NAME).read_bytes()
    return None


@dataclass(frozen=True)
class Problem:
    """One thing `takes check` found wrong: the file, what is wrong, and what repairs it."""

    path: str
    message: str
    # What `takes repair` does about it: text, fts, segments, cache, trained, model, mirror, database.
    kind: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def check_index(index_dir: Path) -> tuple[list[Problem], list[str]]:
    """Verify every file of an index; (problems, notes). Reads every byte, so it is not cheap."""
    from indexer.fsutil import forget_digests

    index_dir = Path(index_dir)
    database = database_path(index_dir)
    if not database.exists():
        raise IndexNotFound(index_dir)
    forget_digests()
    problems: list[Problem] = []
    notes: list[str] = []

    def problem(path, message, kind):
        problems.append(Problem(str(path), message, kind))

    try:
        connection = connect(database, readonly=True)
        integrity = [row[0] for row in connection.execute("PRAGMA integrity_check(20)")]
    except sqlite3.DatabaseError as error:
        problem(database, f"SQLite cannot read it ({error}): `takes repair` recovers the readable takes", "database")
        return problems, notes
    try:
        if integrity != ["ok"]:
            problem(database, f"damaged pages ({integrity[0]}; {len(integrity)} findings): `takes repair` recovers the readable takes", "database")
            return problems, notes
        try:
            manifest = read_manifest(connection)
        except IndexCorrupt as error:
            problem(database, str(error), "database")
            return problems, notes
        if manifest is None:
            raise IndexNotFound(index_dir)
        try:
            check_mirror(index_dir, manifest, _read_mirror_text(index_dir))
        except IndexCorrupt as error:
            problem(index_dir / MANIFEST_NAME, str(error).split(": ", 1)[-1] if str(error).startswith(str(index_dir)) else str(error), "mirror")
        live = np.fromiter(iter_live_rows(connection, manifest.generation), dtype=np.int64)
        if len(live) != manifest.count:
            problem(database, f"the manifest counts {manifest.count} takes but the database holds {len(live)}: `takes repair` re-embeds them", "segments")
        current_rows = {row[0] for row in connection.execute("SELECT rowid FROM takes WHERE removed_generation IS NULL")}
        try:
            text_rows = {row[0] for row in connection.execute("SELECT id FROM takes_fts_docsize")}
            connection.execute("SELECT count(*) FROM takes_fts WHERE takes_fts MATCH 'a'").fetchone()
        except sqlite3.DatabaseError as error:
            text_rows = None
            problem(database, f"the FTS5 text index is damaged ({error}): `takes repair` rebuilds it", "fts")
        if text_rows is not None and text_rows != current_rows:
            problem(
                database,
                f"the FTS5 text index holds {len(text_rows)} takes, {len(text_rows - current_rows)} of them not live, "
                f"and misses {len(current_rows - text_rows)}: `takes repair` rebuilds it",
                "fts",
            )
        covered = np.zeros(0, np.int64)
        for segment in manifest.segments:
            try:
                ids, _ = read_segment(index_dir, segment, manifest.dim)
            except IndexCorrupt as error:
                problem(index_dir / segment.file, str(error).split(f"{segment.file} ", 1)[-1], "segments")
                continue
            covered = np.concatenate([covered, ids])
            if segment.checksum is None:
                notes.append(f"{index_dir / segment.file}: no checksum (format 1): `takes compact` writes a checksummed segment")
        missing = np.setdiff1d(live, covered)
        if len(missing) and not any(p.kind == "segments" for p in problems):
            problem(database, f"{len(missing)} takes have no vector in any segment: `takes repair` re-embeds them", "segments")
    finally:
        connection.close()

    trained = index_dir / TRAINED_INDEX_NAME
    if trained.exists() and (issue := verify_trained_index(trained)) is not None:
        problem(trained, f"{issue}: loads ignore it and train afresh; `takes repair` deletes it", "trained")

    cache_path = index_dir / CACHE_NAME
    if cache_path.exists():
        try:
            cache = connect(cache_path, readonly=True)
            try:
                findings = [row[0] for row in cache.execute("PRAGMA integrity_check(5)")]
                if findings != ["ok"]:
                    raise sqlite3.DatabaseError(findings[0])
                columns = {row[1] for row in cache.execute("PRAGMA table_info(vectors)")}
                select = "model, text_hash, vector, " + ("checksum" if "checksum" in columns else "NULL")
                damaged = sum(
                    not EmbeddingCache.entry_is_sound(model, digest, blob, checksum)
                    for model, digest, blob, checksum in cache.execute(f"SELECT {select} FROM vectors")
                )
            finally:
                cache.close()
            if damaged:
                problem(cache_path, f"{damaged} entries fail their checksum: they are embedded again when needed; `takes repair` deletes them", "cache")
        except sqlite3.DatabaseError as error:
            problem(cache_path, f"SQLite cannot read it ({error}): it is ignored; `takes repair` rebuilds it", "cache")

    for path, issue in model_copy_problems(index_dir, manifest):
        problem(path, f"{issue}: `takes repair` restores the model copy", "model")
    orphans = [path for path in (index_dir / SEGMENTS_DIR).glob("*") if _SEGMENT_FILE.match(path.name) and f"{SEGMENTS_DIR}/{path.name}" not in {s.file for s in manifest.segments}]
    if orphans:
        notes.append(f"{len(orphans)} segment files no generation names: the next write (or `takes compact`) deletes them")
    return problems, notes


def model_copy_problems(index_dir: Path, manifest: Manifest) -> list[tuple[str, str]]:
    """(path, problem) for the files of the index's own ONNX model copy that fail their checksums."""
    if manifest.backend != "onnx":
        return []
    from embeddings.onnx import model_cache_dir, verify_model_files

    model_dir = model_cache_dir(manifest.model, index_dir)
    # No copy yet is no problem: the first load makes one.
    return verify_model_files(model_dir) if model_dir.exists() else []


def repair_index(
    index_dir: Path, embedder_for: Callable[[str, str], "EmbedderFactory"], *, lock_timeout: float = 30.0
) -> tuple[list[str], list[Problem]]:
    """Rebuild what is damaged from what is intact; (what was done, problems left).

    Order matters: the database first (everything else is derived from its
    rows), then the model copy and the cache (the vectors come from them),
    then the text index and the vectors.
    """
    index_dir = Path(index_dir)
    problems, _ = check_index(index_dir)
    if not problems:
        return [], []
    kinds = {problem.kind for problem in problems}
    actions: list[str] = []
    reembed = "segments" in kinds
    with IndexWriter(index_dir, lock_timeout=lock_timeout, recover="database" in kinds) as writer:
        if writer.recovery is not None:
            actions.append(str(writer.recovery))
            reembed = True
        manifest = writer.manifest
        if manifest is None:
            raise IndexNotFound(index_dir)
        if "mirror" in kinds:
            actions.append(f"rewrote {MANIFEST_NAME} from {DATABASE_NAME} (generation {manifest.generation})")
        if "trained" in kinds:
            (index_dir / TRAINED_INDEX_NAME).unlink(missing_ok=True)
            actions.append(f"deleted the damaged {TRAINED_INDEX_NAME} (the next load trains a new one)")
        if "cache" in kinds:
            dropped = writer.drop_damaged_cache_entries()
            actions.append(
                f"rebuilt {CACHE_NAME} (SQLite could not read it)" if dropped < 0 else f"deleted {dropped} damaged entries of {CACHE_NAME}"
            )
        if "model" in kinds:
            from embeddings.onnx import restore_model_copy

            if restore_model_copy(manifest.model, index_dir):
                actions.append(f"restored the ONNX model copy of {manifest.model} (identical to the one that embedded the takes)")
            else:
                writer.forget_cached_vectors(cache_model_name(manifest.model, manifest.backend))
                reembed = True
                actions.append(f"replaced the ONNX model copy of {manifest.model}; it differs from the old one, so every take is embedded again")
        if "fts" in kinds and writer.recovery is None:
            writer.rebuild_text_index()
            actions.append("rebuilt the FTS5 text index from the live takes")
        if reembed:
            report = writer.rebuild(embedder_for(manifest.model, manifest.backend), model=manifest.model, backend=manifest.backend)
            actions.append(
                f"re-embedded {report.added} takes into generation {report.generation} "
                f"({report.embedded} embedded, the rest from verified cache entries)"
            )
    remaining, _ = check_index(index_dir)
    return actions, remaining


def disk_bytes(index_dir: Path) -> int:
    """Bytes of the index's files but its model copy: database, segments, caches, orphans."""
    total = 0
    model_copies = Path(index_dir) / MODEL_COPIES_DIR
    for path in Path(index_dir).rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file() and model_copies not in path.parents:
                total += path.stat().st_size
    return total


def reclaimable_bytes(index_dir: Path, connection: sqlite3.Connection, manifest: Manifest) -> int:
    """Bytes `takes compact` would about free: removed rows, unused vectors and pages, orphan files, the WAL."""
    index_dir = Path(index_dir)
    total = 0
    with contextlib.suppress(sqlite3.Error):
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        total += connection.execute("PRAGMA freelist_count").fetchone()[0] * page_size
        removed_text = connection.execute(
            "SELECT coalesce(sum(length(CAST(text AS BLOB)) + 120), 0) FROM takes WHERE removed_generation IS NOT NULL"
        ).fetchone()[0]
        # The row, its indexes and (until purged) its FTS5 postings: about twice the text.
        total += 2 * removed_text
    stored = sum(segment.count for segment in manifest.segments)
    total += max(0, stored - manifest.count) * manifest.dim * 4
    named = {segment.file for segment in manifest.segments}
    for path in (index_dir / SEGMENTS_DIR).glob("*"):
        if (_SEGMENT_FILE.match(path.name) or _SEGMENT_TEMPORARY.match(path.name)) and f"{SEGMENTS_DIR}/{path.name}" not in named:
            with contextlib.suppress(OSError):
                total += path.stat().st_size
    with contextlib.suppress(OSError):
        total += (index_dir / f"{DATABASE_NAME}-wal").stat().st_size
    return total


def named_files_bytes(index_dir: Path, manifest: Manifest) -> int:
    """Bytes of the index proper: the database (with its WAL) and the segments the manifest names."""
    index_dir = Path(index_dir)
    total = 0
    for path in [index_dir / f"{DATABASE_NAME}{suffix}" for suffix in ("", "-wal")] + [index_dir / s.file for s in manifest.segments]:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


__all__ = [
    "ChangeReport",
    "CompactReport",
    "IndexWriter",
    "Manifest",
    "PAUSE_POINTS",
    "Problem",
    "Segment",
    "TakesError",
    "check_index",
    "repair_index",
    "check_mirror",
    "connect",
    "open_index_database",
    "read_segment",
    "recover_database",
    "text_key",
]
