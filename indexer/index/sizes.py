"""Bytes on disk: the whole index, the index proper, and what `takes compact` would free."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from indexer.index.layout import DATABASE_NAME, MODEL_COPIES_DIR, SEGMENT_FILE, SEGMENT_TEMPORARY, SEGMENTS_DIR
from indexer.index.manifest import Manifest


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
        if (SEGMENT_FILE.match(path.name) or SEGMENT_TEMPORARY.match(path.name)) and f"{SEGMENTS_DIR}/{path.name}" not in named:
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


def index_bytes(index_dir: Path, manifest: Manifest | None = None) -> int:
    """Bytes on disk of the index proper: the database and the vector segments the manifest names.

    Not the embedding cache, the saved trained index, the model copy, or
    segments no generation names (those are reclaimable).
    """
    if manifest is None:
        from indexer.index.manifest import open_index_database

        connection, manifest = open_index_database(index_dir)
        connection.close()
    return named_files_bytes(index_dir, manifest)
