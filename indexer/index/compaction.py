"""`takes compact`: one new generation holding the same takes in one segment, then VACUUM."""

from __future__ import annotations

import contextlib
import sqlite3

import numpy as np

from indexer.errors import IndexCorrupt, IndexNotFound, TakesError
from indexer.index.layout import FORMAT_VERSION, REPAIR_HINT, iter_live_rows
from indexer.index.manifest import Manifest, Segment
from indexer.index.segments import flat_index, live_vectors
from indexer.index.sizes import disk_bytes
from indexer.index.write_safety import translated
from indexer.storage import CompactReport


class Compaction:
    """The compaction half of IndexWriter (``self`` is the writer, holding the lock)."""

    def compact(self) -> CompactReport:
        """Purge removed takes, merge the segments into one checksummed file, VACUUM.

        Runs as a new generation with the same live takes, so the old one
        stays whole until it commits; a reader on the generation before it
        keeps every take it can see.
        """
        if self.manifest is None:
            raise IndexNotFound(self.index_dir)
        before = self.manifest
        bytes_before = disk_bytes(self.index_dir)
        with translated(self.index_dir, before.generation):
            removed_rows = self._connection.execute("SELECT count(*) FROM takes WHERE removed_generation IS NOT NULL").fetchone()[0]
        generation = before.generation
        if removed_rows or _needs_rewrite(before):
            generation = before.generation + 1
            self._merge_segments(before, generation)
        not_vacuumed = self._vacuum(generation)
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

    def _merge_segments(self, before: Manifest, generation: int) -> None:
        """Commit ``generation``: the live takes of ``before`` in one segment, everything removed purged."""
        live = np.fromiter(iter_live_rows(self._connection, before.generation), dtype=np.int64)
        ids, vectors = live_vectors(self.index_dir, before.segments, live, before.dim)
        if len(ids) != len(live):
            raise IndexCorrupt(
                f"{self.index_dir}: {len(live) - len(ids)} takes have no vector in any segment; nothing was compacted: {REPAIR_HINT}"
            )
        order = np.argsort(ids, kind="stable")
        # The same transaction as any write: purge everything removed
        # before this generation (it shows exactly the takes of the last).
        with self._generation(generation, purge_before=generation):
            segments: tuple[Segment, ...] = ()
            if len(ids):
                index = flat_index(before.dim, vectors[order], ids[order])
                segments = (self._write_segment(generation, index, len(ids)),)
            manifest = self._next_manifest(generation, segments, before.model, before.dim, before.backend)
            self._record(manifest)
        self._published(manifest)

    def _vacuum(self, generation: int) -> str | None:
        """Hand the freed pages back; why not, if the disk refused (the new generation stands either way)."""
        try:
            with translated(self.index_dir, generation):
                with contextlib.suppress(sqlite3.OperationalError):
                    self._connection.execute("INSERT INTO takes_fts(takes_fts) VALUES ('optimize')")
                # VACUUM rewrites the file through the WAL: a crash leaves the old
                # pages or the new ones. It also turns on incremental vacuum for
                # databases made before it was the default.
                self._connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
                self._connection.execute("VACUUM")
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except TakesError as error:
            # Only the space VACUUM would free is not back yet.
            return str(error).split("; nothing was changed")[0]
        return None


def _needs_rewrite(manifest: Manifest) -> bool:
    """Whether the segments are not yet one checksummed file of exactly the live takes, in this format."""
    stored = sum(segment.count for segment in manifest.segments)
    return (
        len(manifest.segments) > 1
        or stored != manifest.count
        or any(segment.checksum is None for segment in manifest.segments)
        or manifest.format_version != FORMAT_VERSION
    )
