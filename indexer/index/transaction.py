"""The generation transaction of IndexWriter: all of a generation commits, or none of it.

Inside one SQLite write transaction (``BEGIN IMMEDIATE``) a writer checks that
the committed generation is still the one it started from, writes the new
segment file aside (fsync, rename) and records the manifest naming it; the
commit is the switch. Files written for a transaction that fails are deleted
before the write lock is released.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import Callable, Sequence

from indexer import ann
from indexer.errors import IndexConflict
from indexer.fsutil import checksum_bytes, write_atomic
from indexer.index.layout import LIVE, LOCK_NAME, SEGMENTS_DIR
from indexer.index.manifest import Manifest, Segment, read_manifest
from indexer.index.write_safety import pause_point, translated


class GenerationTransaction:
    """The transaction half of IndexWriter (``self`` is the writer, holding the lock)."""

    def _write_segment(self, generation: int, index, count: int) -> Segment:
        """Write a segment file inside the open transaction (so a failed commit deletes it)."""
        import faiss

        file = f"{SEGMENTS_DIR}/seg-{generation:06d}.faiss"
        path = self.index_dir / file
        path.parent.mkdir(exist_ok=True)
        data = faiss.serialize_index(index)
        pause_point("before-segment")
        # Written and flushed before the commit that names it; deleted if the commit fails.
        self._written.append(path)
        write_atomic(path, memoryview(data))
        pause_point("after-segment")
        return Segment(generation, file, count, checksum_bytes(memoryview(data)))

    @contextlib.contextmanager
    def _transaction(self, on_failure: Callable[[], None] | None = None):
        """A write transaction holding SQLite's write lock; rolled back on any failure.

        ``on_failure`` runs before the rollback, while the lock is still held.
        """
        connection = self._connection
        with translated(self.index_dir, self.generation):
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

        pause_point("before-transaction")
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
                f"SELECT rowid, text FROM takes WHERE rowid IN ({placeholders}) AND {LIVE}", chunk
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
            f"SELECT count(*) FROM takes WHERE {LIVE}"
        ).fetchone()[0]
        return Manifest(
            model=model,
            dim=dim,
            count=count,
            generation=generation,
            segments=tuple(segments),
            # Exact search below the threshold, approximate above: readers build this type.
            index_type=ann.index_type_for(count, self.ann_threshold, self.compressed_threshold),
            backend=backend,
            updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )

    def _published(self, manifest: Manifest) -> None:
        """After a commit: mirror the manifest and drop segments no generation names."""
        self.manifest = manifest
        pause_point("after-commit")
        self._tidy(after_commit=True)
