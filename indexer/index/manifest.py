"""What an index is: the manifest committed in SQLite, and its mirror manifest.json."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from indexer.errors import IndexCorrupt, IndexNotFound, ModelMismatch, NotAnIndex
from indexer.fsutil import CHECKSUM_PREFIX
from indexer.index.layout import (
    DATABASE_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    OWN_NAMES,
    OWN_TEMPORARY,
    READABLE_FORMATS,
    REPAIR_HINT,
    SEGMENT_FILE,
    SEGMENT_TEMPORARY,
    SEGMENTS_DIR,
    connect,
    damaged_database,
    database_path,
    normalize_model_name,
)


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
    if not file.startswith(f"{SEGMENTS_DIR}/") or not SEGMENT_FILE.match(file.removeprefix(f"{SEGMENTS_DIR}/")):
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


def open_index_database(index_dir: Path) -> tuple[sqlite3.Connection, Manifest]:
    """Open an existing index for reading; IndexNotFound when there is none.

    Also checks manifest.json against the committed manifest (check_mirror).
    """
    path = database_path(index_dir)
    if not path.exists():
        raise IndexNotFound(index_dir)
    # The mirror first: read in this order, a healthy mirror is never newer.
    mirror_text = read_mirror_text(Path(index_dir))
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


def read_mirror_text(index_dir: Path) -> bytes | None:
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


def is_our_manifest(path: Path) -> bool:
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
        if name in OWN_NAMES or OWN_TEMPORARY.match(name):
            continue
        if name == MANIFEST_NAME and entry.is_file() and is_our_manifest(entry):
            continue
        if name == SEGMENTS_DIR and entry.is_dir():
            strangers = [item.name for item in entry.iterdir() if not (SEGMENT_FILE.match(item.name) or SEGMENT_TEMPORARY.match(item.name))]
            if not strangers:
                continue
            foreign.extend(f"{SEGMENTS_DIR}/{stranger}" for stranger in sorted(strangers))
            continue
        foreign.append(name)
    return foreign


def not_an_index(index_dir: Path, examples: Sequence[str]) -> NotAnIndex:
    shown = ", ".join(repr(name) for name in examples[:3]) + (" ..." if len(examples) > 3 else "")
    return NotAnIndex(
        f"{index_dir} is not a takes index (it holds {shown}); nothing was written there: "
        f"choose a new or empty folder with --index-dir / TAKES_INDEX_DIR"
    )


def read_mirror_bytes_quietly(index_dir: Path) -> bytes | None:
    with contextlib.suppress(OSError):
        return (Path(index_dir) / MANIFEST_NAME).read_bytes()
    return None
