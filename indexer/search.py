"""Read side of an index: load a generation, answer queries, follow new generations."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from embeddings import Embedder, load_embedder
from indexer.errors import IndexCorrupt, InvalidQuery, TakeNotFound
from indexer.models import TAKE_FIELDS, SearchResult, Take
from indexer.store import (
    DATABASE_NAME,
    Manifest,
    connect,
    database_path,
    iter_live_rows,
    normalize_model_name,
    open_index_database,
    read_manifest,
    read_segment,
    take_from_row,
)

MAX_QUERY_CHARS = 1000
MAX_K = 100
DEFAULT_K = 10

_COLUMNS = ", ".join(TAKE_FIELDS)


def validate_query(query: str, k: int) -> str:
    """Return the stripped query, or raise InvalidQuery naming the limit broken."""
    if not isinstance(query, str) or not query.strip():
        raise InvalidQuery("query must not be empty or only whitespace")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"query is {len(query)} characters; the limit is {MAX_QUERY_CHARS}")
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise InvalidQuery(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    return query.strip()


@dataclass(frozen=True)
class Snapshot:
    """One generation of the index, loaded into memory; never changes after loading."""

    manifest: Manifest
    vectors: object  # faiss.Index with SQLite row ids
    loaded_at: float

    @property
    def generation(self) -> int:
        return self.manifest.generation


def load_snapshot(index_dir: Path) -> Snapshot:
    """Load the current generation: the manifest and live row ids read in one SQLite snapshot."""
    import faiss

    connection, _ = open_index_database(index_dir)
    try:
        for attempt in range(3):
            connection.execute("BEGIN")
            try:
                manifest = read_manifest(connection)
                live = np.fromiter(iter_live_rows(connection, manifest.generation), dtype=np.int64)
            finally:
                connection.execute("COMMIT")
            if len(live) != manifest.count:
                raise IndexCorrupt(
                    f"{index_dir}: the manifest counts {manifest.count} takes but the database holds "
                    f"{len(live)} for generation {manifest.generation}"
                )
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(manifest.dim))
            try:
                for segment in manifest.segments:
                    ids, vectors = read_segment(index_dir, segment)
                    keep = np.isin(ids, live)
                    if keep.any():
                        index.add_with_ids(np.ascontiguousarray(vectors[keep]), ids[keep])
            except IndexCorrupt:
                # A writer may have replaced the segments between our read of
                # the manifest and of the files: read the new manifest.
                if attempt == 2 or not _manifest_changed(connection, manifest):
                    raise
                continue
            if index.ntotal != manifest.count:
                raise IndexCorrupt(
                    f"{index_dir}: generation {manifest.generation} has {manifest.count} takes but "
                    f"{index.ntotal} vectors: rebuild with `takes rebuild`"
                )
            return Snapshot(manifest=manifest, vectors=index, loaded_at=time.time())
    finally:
        connection.close()
    raise AssertionError("unreachable")


def _manifest_changed(connection, manifest: Manifest) -> bool:
    current = read_manifest(connection)
    return current is not None and current.generation != manifest.generation


class Searcher:
    """Answers queries over one index directory; safe to share between threads.

    The model loads once. ``refresh()`` swaps in a newer generation if a writer
    committed one; requests in flight keep the snapshot they started with.
    """

    def __init__(
        self,
        index_dir: Path | str,
        *,
        model: str | None = None,
        backend: str = "torch",
        embedder: Embedder | None = None,
    ):
        self.index_dir = Path(index_dir)
        self.backend = backend
        self._snapshot = load_snapshot(self.index_dir)
        manifest = self._snapshot.manifest
        # Fail on a mismatch before paying for a model load.
        manifest.check_model(model)
        self._requested_model = model
        self._embedder = embedder or load_embedder(model or manifest.model, backend, cache_dir=str(self.index_dir))
        manifest.check_model(self._embedder.name, self._embedder.dim)
        self._local = threading.local()
        self._refresh_lock = threading.Lock()
        self._last_check = time.monotonic()
        self._data_version = None

    # -- state ----------------------------------------------------------------

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def manifest(self) -> Manifest:
        return self._snapshot.manifest

    def _connection(self):
        """One read-only SQLite connection per thread, opened once."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = connect(database_path(self.index_dir), readonly=True)
            self._local.connection = connection
        return connection

    def current_generation(self) -> int:
        """The generation committed on disk now (cheap: one indexed read)."""
        manifest = read_manifest(self._connection())
        return manifest.generation if manifest else 0

    def refresh(self) -> bool:
        """Load a newer generation if there is one; returns True when it swapped."""
        with self._refresh_lock:
            if self.current_generation() == self._snapshot.generation:
                return False
            snapshot = load_snapshot(self.index_dir)
            embedder = self._embedder
            if normalize_model_name(embedder.name) != snapshot.manifest.model:
                if self._requested_model is not None:
                    # The user pinned a model; keep serving what matches it.
                    snapshot.manifest.check_model(self._requested_model)
                embedder = load_embedder(snapshot.manifest.model, self.backend, cache_dir=str(self.index_dir))
            snapshot.manifest.check_model(embedder.name, embedder.dim)
            # Reference assignment is atomic: a request sees one snapshot or the other.
            self._embedder, self._snapshot = embedder, snapshot
            return True

    # -- queries ----------------------------------------------------------------

    def encode_query(self, query: str) -> np.ndarray:
        return self._embedder.encode([query])

    def search(self, query: str, k: int = DEFAULT_K) -> list[SearchResult]:
        """The ``k`` takes nearest in meaning to ``query``, best first."""
        query = validate_query(query, k)
        snapshot = self._snapshot
        vector = self.encode_query(query)
        return self.search_vector(vector, k, snapshot=snapshot)

    def search_vector(self, vector: np.ndarray, k: int, *, snapshot: Snapshot | None = None) -> list[SearchResult]:
        snapshot = snapshot or self._snapshot
        if snapshot.vectors.ntotal == 0:
            return []
        scores, ids = snapshot.vectors.search(np.atleast_2d(vector).astype(np.float32), min(k, snapshot.vectors.ntotal))
        hits = [(int(row_id), float(score)) for row_id, score in zip(ids[0], scores[0]) if row_id >= 0]
        takes = self.takes_by_row([row_id for row_id, _ in hits])
        return [SearchResult(takes[row_id], score) for row_id, score in hits if row_id in takes]

    def takes_by_row(self, row_ids: Sequence[int]) -> dict[int, Take]:
        if not row_ids:
            return {}
        placeholders = ",".join("?" * len(row_ids))
        rows = self._connection().execute(
            f"SELECT rowid, {_COLUMNS} FROM takes WHERE rowid IN ({placeholders})", list(row_ids)
        )
        return {row[0]: take_from_row(row[1:]) for row in rows}

    def _visible(self) -> tuple[str, tuple[int, int]]:
        generation = self._snapshot.generation
        return (
            "added_generation <= ? AND (removed_generation IS NULL OR removed_generation > ?)",
            (generation, generation),
        )

    def get_take(self, take_id: str) -> Take:
        clause, params = self._visible()
        row = self._connection().execute(f"SELECT {_COLUMNS} FROM takes WHERE id = ? AND {clause}", (take_id, *params)).fetchone()
        if row is None:
            raise TakeNotFound(f"no take with id {take_id!r}")
        return take_from_row(row)

    def get_thread(self, thread_id: str) -> list[Take]:
        clause, params = self._visible()
        rows = self._connection().execute(
            f"SELECT {_COLUMNS} FROM takes WHERE thread_id = ? AND {clause} ORDER BY position, rowid",
            (thread_id, *params),
        ).fetchall()
        if not rows:
            raise TakeNotFound(f"no thread with id {thread_id!r}")
        return [take_from_row(row) for row in rows]

    def stats(self) -> dict:
        manifest = self._snapshot.manifest
        clause, params = self._visible()
        threads = self._connection().execute(
            f"SELECT count(DISTINCT thread_id) FROM takes WHERE {clause}", params
        ).fetchone()[0]
        return {
            "takes": manifest.count,
            "threads": threads,
            "model": manifest.model,
            "dim": manifest.dim,
            "index_bytes": index_bytes(self.index_dir),
            "index_type": manifest.index_type,
            "generation": manifest.generation,
            "backend": self.backend,
        }

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def index_bytes(index_dir: Path) -> int:
    """Bytes on disk of the index proper (database and vector segments, not the embedding cache)."""
    total = 0
    for path in Path(index_dir).rglob("*"):
        if path.is_file() and (path.name.startswith(DATABASE_NAME) or path.suffix == ".faiss"):
            total += path.stat().st_size
    return total


__all__ = ["DEFAULT_K", "MAX_K", "MAX_QUERY_CHARS", "Searcher", "Snapshot", "load_snapshot", "validate_query"]
