"""The embedded store: one index directory, SQLite + FTS5 for takes and text, FAISS over vector segment files.

This package is the only code that knows the directory's files and SQL
(``layout`` names them). ``EmbeddedStore`` implements ``indexer.storage.Store``;
its ``load`` returns an ``EmbeddedGeneration`` (``Generation``) and its
``writer`` an ``IndexWriter`` (``Writer``).

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
``takes-onnx.json``, each embedding-cache entry in its row, each take's
stored token vectors in their value (indexer/token_vectors.py). Loading verifies
them once per file per process (fsutil.cached_checksum); a segment that fails is
IndexCorrupt naming `takes repair`, a cache entry or trained index that fails
is discarded and rebuilt. Format 1 indexes (no checksums) still load; their
next generation, `takes compact` or `takes repair` writes checksummed files.

manifest.json trails the SQLite manifest by at most a crash: it is written
after the commit, so it may be older (the next writer rewrites it) but never
newer. Loading compares the two and reports anything else as IndexCorrupt.

Crash tests stop a writer at a named point: with ``TAKES_TEST_PAUSE_AT`` set to
one of ``PAUSE_POINTS``, the writer touches ``TAKES_TEST_PAUSE_FILE`` there and
sleeps, so the test can ``kill -9`` it at exactly that point
(``write_safety.PAUSE_POINTS``).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer import ann
from indexer.index import reader
from indexer.index.layout import database_path
from indexer.index.manifest import Manifest, open_index_database, read_manifest
from indexer.index.snapshot import AllowedRows, Snapshot, inner_products, load_snapshot, nearest, stored_vectors
from indexer.index.writer import IndexWriter, new_takes
from indexer.models import AuthorSummary, Take, ThreadSummary
from indexer.storage import Filters, lexical_retrieval

# Filters whose passing rows a generation keeps (each at most 8 bytes a row plus a bitmap of 1 bit a row).
_ALLOWED_CACHE_SIZE = 16

__all__ = ["EmbeddedGeneration", "EmbeddedStore", "EmbeddedTakes", "IndexWriter", "Manifest", "Snapshot", "load_snapshot"]


class EmbeddedTakes:
    """The takes of one generation of an index directory, read through SQLite (``TakeLookup``); no vectors loaded.

    Safe to share between threads (each thread reads through its own connection).
    """

    def __init__(self, manifest: Manifest, connections: reader.ThreadConnections, index_dir: Path):
        self.manifest = manifest
        self.index_dir = Path(index_dir)
        self._connections = connections
        # Takes holding each query word: the idf of lexical evidence, asked again and again.
        self._document_counts: dict[str, int] = {}

    @property
    def info(self) -> Manifest:
        return self.manifest

    @property
    def generation(self) -> int:
        return self.manifest.generation

    def _connection(self):
        return self._connections.get()

    # -- TakeLookup -----------------------------------------------------------

    def takes(self, row_ids: Sequence[int]) -> dict[int, Take]:
        return reader.takes_by_row(self._connection(), row_ids)

    def token_vectors(self, row_ids: Sequence[int]) -> dict[int, np.ndarray]:
        return reader.token_vectors(self._connection(), row_ids, self.manifest.dim, str(self.index_dir))

    def stored_token_values(self, row_ids: Sequence[int]) -> dict[int, bytes]:
        """The stored token vectors of these takes as stored (``takes copy`` moves them as they are)."""
        return {row_id: value for row_id, _, value in reader.token_rows(self._connection(), row_ids)}

    def take(self, take_id: str) -> Take:
        return reader.take(self._connection(), self.generation, take_id)

    def thread(self, thread_id: str) -> list[Take]:
        return reader.thread(self._connection(), self.generation, thread_id)

    def neighbours(self, take: Take, size: int) -> tuple[tuple[Take, ...], tuple[Take, ...]]:
        return reader.neighbours(self._connection(), self.generation, take, size)

    def lexical(self, terms: Sequence[str], depth: int, filters: Filters) -> list[tuple[int, float]]:
        retrieval = lexical_retrieval(terms, self.document_counts(terms), self.info.count)
        return reader.lexical(self._connection(), self.generation, terms, depth, filters, retrieval)

    def document_counts(self, terms: Sequence[str]) -> list[int]:
        counts = []
        for term in terms:
            count = self._document_counts.get(term)
            if count is None:
                count = reader.document_count(self._connection(), term)
                if len(self._document_counts) > 10_000:
                    self._document_counts.clear()
                self._document_counts[term] = count
            counts.append(count)
        return counts

    def authors(self) -> list[AuthorSummary]:
        return reader.authors(self._connection(), self.generation)

    def threads(self, filters: Filters) -> list[ThreadSummary]:
        return reader.threads(self._connection(), self.generation, filters)

    def texts(self, limit: int) -> list[str]:
        return reader.texts(self._connection(), self.generation, limit)

    def stats(self) -> dict:
        return reader.index_stats(self.index_dir, self._connection(), self.manifest)


class EmbeddedGeneration(EmbeddedTakes):
    """One loaded generation: its takes through SQLite, its vectors in FAISS (``Generation``); never changes."""

    def __init__(self, snapshot: Snapshot, connections: reader.ThreadConnections, index_dir: Path, previous: EmbeddedGeneration | None = None):
        super().__init__(snapshot.manifest, connections, index_dir)
        self.snapshot = snapshot
        self._mean: np.ndarray | None = None
        # The float64 sum the mean is of; ``previous`` lends its own when this
        # generation only added segments to it.
        self._vector_sum: np.ndarray | None = None
        # Kept only while it has a sum to lend (then it holds no previous of its own).
        self._previous = previous if previous is not None and previous._vector_sum is not None else None
        self._mean_lock = threading.Lock()
        self._allowed_cache: OrderedDict[tuple, AllowedRows] = OrderedDict()
        self._allowed_lock = threading.Lock()

    @property
    def faiss_index(self):
        return self.snapshot.faiss_index

    # -- VectorSearch ---------------------------------------------------------

    def nearest(self, vector: np.ndarray, depth: int, filters: Filters) -> list[tuple[int, float]]:
        allowed = self._allowed(filters)
        if allowed is not None and len(allowed) == 0:
            return []
        return nearest(self.snapshot, vector, depth, allowed)

    def _allowed(self, filters: Filters) -> AllowedRows | None:
        """The rows passing ``filters``, from a small LRU: a generation never changes, so neither do they.

        Finding half of a million takes in SQL costs far more than the search
        itself; the same filter over and over (a user paging, a dashboard) pays it once.
        """
        if not filters.restricts_rows():
            return None
        key = (filters.author, filters.handle, filters.thread_id, filters.since, filters.until)
        with self._allowed_lock:
            cached = self._allowed_cache.get(key)
            if cached is not None:
                self._allowed_cache.move_to_end(key)
                return cached
        allowed = AllowedRows(reader.allowed_rows(self._connection(), self.generation, filters))
        with self._allowed_lock:
            self._allowed_cache[key] = allowed
            while len(self._allowed_cache) > _ALLOWED_CACHE_SIZE:
                self._allowed_cache.popitem(last=False)
        return allowed

    def inner_products(self, vector: np.ndarray, row_ids: Sequence[int]) -> dict[int, float]:
        return inner_products(self.snapshot, vector, row_ids)

    def vectors(self, row_ids: Sequence[int]) -> np.ndarray:
        """The float32 vectors of ``row_ids``, in that order, whatever the index type (a compressed one keeps them in the segments)."""
        if not len(row_ids):
            return np.zeros((0, self.manifest.dim), np.float32)
        return stored_vectors(self.snapshot, np.asarray(row_ids, dtype=np.int64))

    def mean_direction(self) -> np.ndarray:
        """The unit mean of the generation's vectors, computed once (about 0.3 s at a million takes; a few ms after an add)."""
        with self._mean_lock:
            if self._mean is None:
                previous, self._previous = self._previous, None  # not kept: a chain of generations would stay in memory
                total = self._sum_after_add(previous) if previous is not None else None
                if total is None:
                    total = ann.vector_sum(self.snapshot.faiss_index, self.manifest.dim)
                self._vector_sum = total
                self._mean = ann.unit(total)
            return self._mean

    def _sum_after_add(self, previous: EmbeddedGeneration) -> np.ndarray | None:
        """``previous``'s sum plus the vectors of the segments this generation added; None unless it only added.

        Only added means: the same model and index type, every old segment
        still there, and the count grown by exactly the new segments' rows (a
        row is never live again once removed, so nothing was removed and every
        new row is live). Equal to a full pass up to float64 rounding.
        """
        from indexer.index.segments import read_segment

        known, before, now = previous._vector_sum, previous.manifest, self.manifest
        if known is None or ann.is_compressed(now.index_type):
            return None
        if (before.model, before.dim, before.index_type) != (now.model, now.dim, now.index_type):
            return None
        segments = {(segment.file, segment.checksum) for segment in now.segments}
        if any((segment.file, segment.checksum) not in segments for segment in before.segments):
            return None
        old_files = {segment.file for segment in before.segments}
        added = [segment for segment in now.segments if segment.file not in old_files]
        if before.count + sum(segment.count for segment in added) != now.count or now.count != self.snapshot.faiss_index.ntotal:
            return None
        total = known.copy()
        for segment in added:
            # Verified and read when the snapshot was extended: in the page cache now.
            _, vectors = read_segment(self.index_dir, segment, now.dim)
            total += vectors.sum(axis=0, dtype=np.float64)
        return total


class EmbeddedStore:
    """An index directory as a ``Store``: generations loaded from it, a writer for the next."""

    def __init__(
        self,
        index_dir: Path | str,
        *,
        ann_threshold: int = ann.DEFAULT_THRESHOLD,
        store_token_vectors: bool = True,
        compressed_threshold: int = ann.COMPRESSED_THRESHOLD,
    ):
        self.index_dir = Path(index_dir)
        self.ann_threshold = ann_threshold
        self.compressed_threshold = compressed_threshold
        # Whether writers keep each new take's token vectors (indexer/token_vectors.py).
        self.store_token_vectors = store_token_vectors
        self.location = str(self.index_dir)
        self._connections = reader.ThreadConnections(self.index_dir)

    def exists(self) -> bool:
        return database_path(self.index_dir).exists()

    def current_generation(self) -> int:
        """The generation committed now (one indexed read); 0 when there is no index yet."""
        if not self.exists():
            return 0
        manifest = read_manifest(self._connections.get())
        return manifest.generation if manifest else 0

    def committed_info(self) -> Manifest | None:
        """What the committed generation is, without loading it; None when there is no index yet."""
        if not self.exists():
            return None
        connection, manifest = open_index_database(self.index_dir)
        connection.close()
        return manifest

    def lookup(self) -> EmbeddedTakes:
        """The committed generation's takes without loading its vectors (listing, stats); IndexNotFound when none."""
        connection, manifest = open_index_database(self.index_dir)
        connection.close()
        return EmbeddedTakes(manifest, self._connections, self.index_dir)

    def load(self, previous: EmbeddedGeneration | None = None) -> EmbeddedGeneration:
        snapshot = load_snapshot(self.index_dir, previous.snapshot if previous is not None else None)
        return EmbeddedGeneration(snapshot, self._connections, self.index_dir, previous)

    def writer(self, *, lock_timeout: float = 30.0) -> IndexWriter:
        return IndexWriter(
            self.index_dir,
            lock_timeout=lock_timeout,
            ann_threshold=self.ann_threshold,
            store_token_vectors=self.store_token_vectors,
            compressed_threshold=self.compressed_threshold,
        )

    def new_takes(self, takes: Sequence[Take]) -> list[Take]:
        """Which of ``takes`` an add would store, without the writer lock (a dry run)."""
        return new_takes(self.index_dir, takes)

    def close(self) -> None:
        self._connections.close()
