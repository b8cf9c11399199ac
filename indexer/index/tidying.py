"""After a commit (and when a writer opens): rewrite a stale manifest.json, delete what crashed writes left."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3

from indexer.errors import IndexCorrupt
from indexer.fsutil import fsync_dir, temporary_name, write_atomic
from indexer.index.layout import MANIFEST_NAME, SEGMENT_FILE, SEGMENT_TEMPORARY, SEGMENTS_DIR, TRAINED_INDEX_NAME
from indexer.index.manifest import Manifest, is_our_manifest, read_manifest
from indexer.index.segments import trained_index_header
from indexer.index.write_safety import pause_point

logger = logging.getLogger(__name__)


class Tidying:
    """The tidying half of IndexWriter (``self`` is the writer, holding the lock)."""

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
                pause_point("after-mirror")
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
            if path.is_file() and is_our_manifest(path):
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
            ours = SEGMENT_FILE.match(path.name) or SEGMENT_TEMPORARY.match(path.name)
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
            header, _ = trained_index_header(path)
            saved = Manifest.from_json(json.dumps(header))
            current_files = {segment.file for segment in self.manifest.segments}
            stale = not {segment.file for segment in saved.segments} <= current_files or saved.model != self.manifest.model
        except (OSError, ValueError, TypeError):
            stale = True
        if stale:
            with contextlib.suppress(OSError):
                path.unlink()
