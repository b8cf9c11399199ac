"""Recovering a damaged takes.sqlite: salvage every readable live take into a new database."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from indexer import ann
from indexer.fsutil import fsync_dir
from indexer.index.layout import DATABASE_NAME, LIVE, SCHEMA, SQLITE_SUFFIXES, database_path
from indexer.index.manifest import Manifest, read_mirror_bytes_quietly
from indexer.models import TAKE_FIELDS

logger = logging.getLogger(__name__)


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


_SALVAGED_COLUMNS = ("row_id", *TAKE_FIELDS, "text_key", "added_generation", "removed_generation")


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
    columns = ", ".join(_SALVAGED_COLUMNS)
    manifest_text = None
    with contextlib.suppress(sqlite3.Error):
        row = source.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
        manifest_text = row[0] if row else None
    try:
        rows = source.execute(f"SELECT {columns} FROM takes WHERE {LIVE} ORDER BY row_id").fetchall()
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
    for suffix in SQLITE_SUFFIXES:
        Path(f"{staging}{suffix}").unlink(missing_ok=True)
    rows, manifest_text, highest, method = _salvage_rows(database, index_dir / ".takes.sqlite.recover-scratch.tmp")
    previous = _previous_manifest(manifest_text, index_dir)
    kept = _first_row_per_id(rows)
    _write_salvaged(staging, kept, highest, previous)
    damaged = _swap_in(database, staging)
    expected = previous.count if previous.generation else None
    return RecoveryReport(recovered=len(kept), expected=expected, method=method, damaged_copy=damaged.name)


def _previous_manifest(manifest_text: str | None, index_dir: Path) -> Manifest:
    """The manifest the damaged database held (or its mirror's), else a default one."""
    for text in (manifest_text, read_mirror_bytes_quietly(index_dir)):
        if text is None:
            continue
        with contextlib.suppress(ValueError, TypeError, RecursionError):
            return Manifest.from_json(text)
    from embeddings import DEFAULT_BACKEND, DEFAULT_MODEL

    return Manifest(model=DEFAULT_MODEL, dim=384, count=0, generation=0, backend=DEFAULT_BACKEND)


def _first_row_per_id(rows: list[tuple]) -> list[tuple]:
    seen_ids: set[str] = set()
    kept = []
    for row in rows:
        if row[1] in seen_ids:
            continue
        seen_ids.add(row[1])
        kept.append(row)
    return kept


def _write_salvaged(staging: Path, kept: list[tuple], highest: int, previous: Manifest) -> None:
    """A new database at ``staging`` holding ``kept`` and a manifest naming no segment, fsynced."""
    connection = sqlite3.connect(staging, isolation_level=None)
    try:
        connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        connection.executescript(SCHEMA)
        connection.execute("BEGIN")
        placeholders = ",".join("?" * len(_SALVAGED_COLUMNS))
        connection.executemany(f"INSERT INTO takes ({', '.join(_SALVAGED_COLUMNS)}) VALUES ({placeholders})", kept)
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


def _swap_in(database: Path, staging: Path) -> Path:
    """Rename the damaged database (and its side files) aside and ``staging`` in; the damaged copy's path."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    damaged = database.with_name(f"{DATABASE_NAME}.damaged-{stamp}")
    # The damaged database's WAL belongs to it: applied to the new file it would corrupt it.
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{database}{suffix}", f"{damaged}{suffix}")
    os.replace(database, damaged)
    os.replace(staging, database)
    fsync_dir(database.parent)
    return damaged
