"""Loading one generation's vectors into FAISS, from scratch or by extending the one being served.

The manifest and the live row ids are read in one SQLite snapshot; the
segments they name are verified against their checksums (once per file per
process). A generation that only added segments or removed takes is built
from a copy of the served one, so the cost follows the size of the change;
a server start reuses a trained approximate index saved by an earlier load.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from indexer import ann
from indexer.errors import IndexCorrupt
from indexer.index.layout import REPAIR_HINT, damaged_database, database_path, live_row_array
from indexer.index.manifest import Manifest, open_index_database, read_manifest
from indexer.index.segments import (
    SegmentVectors,
    live_vectors,
    read_segment,
    read_trained_index,
    save_trained_index,
    verify_segment_checksum,
)

logger = logging.getLogger(__name__)

# Loads retried when a writer replaced the segments between reading the manifest and the files.
_ATTEMPTS = 3


@dataclass(frozen=True)
class Snapshot:
    """One generation's vectors in memory; never changes after loading."""

    manifest: Manifest
    faiss_index: object  # a faiss.Index (ann.build_index) holding the takes' vectors under their SQLite row ids
    loaded_at: float
    # The segments' float32 vectors, read in place: a compressed index's re-scoring source.
    full_vectors: SegmentVectors | None = None

    @property
    def generation(self) -> int:
        return self.manifest.generation


def load_snapshot(index_dir: Path, previous: Snapshot | None = None) -> Snapshot:
    """Load the current generation; with ``previous`` (the one served) build it from that when the change allows."""
    connection, _ = open_index_database(index_dir)
    try:
        for attempt in range(_ATTEMPTS):
            manifest, live = _read_generation(connection, index_dir)
            try:
                return snapshot_of(index_dir, manifest, live, previous)
            except IndexCorrupt:
                # A writer may have replaced the segments between our read of
                # the manifest and of the files: read the new manifest.
                if attempt == _ATTEMPTS - 1 or not _manifest_changed(connection, manifest):
                    raise
    finally:
        connection.close()
    raise AssertionError("unreachable")


def snapshot_of(index_dir: Path, manifest: Manifest, live: np.ndarray, previous: Snapshot | None = None) -> Snapshot:
    """``manifest``'s generation holding the takes of ``live``: from ``previous`` or the saved index if they fit, else from the segments."""
    reused = _reuse(index_dir, manifest, live, previous)
    if reused is not None:
        return reused
    return _load_from_segments(index_dir, manifest, live)


def _read_generation(connection: sqlite3.Connection, index_dir: Path) -> tuple[Manifest, np.ndarray]:
    """The committed manifest and its live row ids, read in one transaction (one SQLite snapshot)."""
    try:
        connection.execute("BEGIN")
        try:
            manifest = read_manifest(connection)
            live = live_row_array(connection, manifest.generation)
        finally:
            connection.execute("COMMIT")
    except sqlite3.DatabaseError as error:
        raise damaged_database(database_path(index_dir), error) from None
    if len(live) != manifest.count:
        raise IndexCorrupt(
            f"{index_dir}: the manifest counts {manifest.count} takes but the database holds "
            f"{len(live)} for generation {manifest.generation}: {REPAIR_HINT}"
        )
    return manifest, live


def _reuse(index_dir: Path, manifest: Manifest, live: np.ndarray, previous: Snapshot | None) -> Snapshot | None:
    """``manifest``'s generation built from ``previous`` or the saved trained index; None when neither fits."""
    # A trained approximate index saved by an earlier load stands in
    # for ``previous`` when there is none (a server start).
    base = previous
    if base is None and manifest.index_type != "flat":
        saved = read_trained_index(index_dir, manifest)
        if saved is not None:
            base = Snapshot(manifest=saved[0], faiss_index=saved[1], loaded_at=time.time())
    if base is None:
        return None
    try:
        # A served index is copied, never changed in place; a cached one is ours.
        index = extend(base, manifest, live, index_dir, copy=base is previous)
    except IndexCorrupt:
        return None
    if index is None or index.ntotal != manifest.count:
        return None
    if base is not previous:
        logger.info("reusing the trained %s index saved at generation %d", manifest.index_type, base.generation)
    return Snapshot(manifest=manifest, faiss_index=index, loaded_at=time.time(), full_vectors=_mapped(index_dir, manifest, live))


def _mapped(index_dir: Path, manifest: Manifest, live: np.ndarray) -> SegmentVectors | None:
    """The segment vectors a compressed index re-scores from (None for the other types)."""
    if not ann.is_compressed(manifest.index_type):
        return None
    return SegmentVectors.open(index_dir, manifest.segments, live, manifest.dim)


def _load_compressed(index_dir: Path, manifest: Manifest, live: np.ndarray):
    """(index, mapped vectors) of a compressed type, built segment by segment from the segment files.

    Each segment is verified against its checksum first, as ``read_segment``
    does; the float32 vectors are never all in memory at once.
    """
    for segment in manifest.segments:
        verify_segment_checksum(index_dir, segment)
    mapped = SegmentVectors.open(index_dir, manifest.segments, live, manifest.dim)
    ids = np.sort(np.asarray(live, dtype=np.int64))
    try:
        sample = ann.training_sample(manifest.index_type, _RowView(mapped, ids))
        batches = ((mapped.gather(ids[start : start + _BATCH]), ids[start : start + _BATCH]) for start in range(0, len(ids), _BATCH))
        return ann.build_compressed(manifest.index_type, manifest.dim, sample, batches), mapped
    except KeyError as missing:
        raise IndexCorrupt(f"{index_dir}: take row {missing} of generation {manifest.generation} has no vector in its segments: {REPAIR_HINT}") from None


# Vectors added to a compressed index per call while loading (150 MB of float32).
_BATCH = 100_000


class _RowView:
    """Rows of segment vectors by position in ``ids``: what ``ann.training_sample`` indexes."""

    def __init__(self, mapped: SegmentVectors, ids: np.ndarray):
        self._mapped, self._ids = mapped, ids

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, rows):
        return self._mapped.gather(self._ids[rows])


def _load_from_segments(index_dir: Path, manifest: Manifest, live: np.ndarray) -> Snapshot:
    """Read every segment and build the index type the manifest names (training it if approximate)."""
    mapped = None
    if ann.is_compressed(manifest.index_type):
        index, mapped = _load_compressed(index_dir, manifest, live)
    else:
        ids, vectors = live_vectors(index_dir, manifest.segments, live, manifest.dim)
        # The manifest names the index type (exact, or approximate above
        # ann.threshold() takes); segments hold plain vectors either way.
        index = ann.build_index(manifest.index_type, manifest.dim, vectors, ids)
    if index.ntotal != manifest.count:
        raise IndexCorrupt(
            f"{index_dir}: generation {manifest.generation} has {manifest.count} takes but "
            f"{index.ntotal} vectors: {REPAIR_HINT}"
        )
    if manifest.index_type != "flat":
        save_trained_index(index_dir, manifest, index)
    return Snapshot(manifest=manifest, faiss_index=index, loaded_at=time.time(), full_vectors=mapped)


def extend(previous: Snapshot, manifest: Manifest, live: np.ndarray, index_dir: Path, *, copy: bool = True):
    """A copy of ``previous``'s index with the new segments added and removed takes dropped.

    None when the change is not of that shape (a rebuild, a new model, or a
    different index type): the caller then loads from scratch.
    """
    import faiss

    before = previous.manifest
    if not _extends(before, manifest):
        return None
    served_ids = ann.stored_ids(previous.faiss_index)
    removed = served_ids[~np.isin(served_ids, live)]
    # The served index is never changed in place: requests may be using it.
    index = faiss.clone_index(previous.faiss_index) if copy else previous.faiss_index
    if len(removed):
        try:
            ann.remove_ids(index, removed)
        except RuntimeError:
            return None  # this index type cannot remove: load from scratch
    old_files = {segment.file for segment in before.segments}
    for segment in manifest.segments:
        if segment.file in old_files:
            continue
        ids, vectors = read_segment(index_dir, segment, manifest.dim)
        keep = np.isin(ids, live)
        if keep.any():
            index.add_with_ids(np.ascontiguousarray(vectors[keep]), ids[keep])
    return index


def _extends(before: Manifest, manifest: Manifest) -> bool:
    """Whether ``manifest`` is ``before`` plus new segments (same model and index type, old segments unchanged)."""
    if (before.model, before.dim, before.index_type) != (manifest.model, manifest.dim, manifest.index_type):
        return False
    now = {segment.file: segment.checksum for segment in manifest.segments}
    # A segment file is rewritten only by a compact or repair (a new name then):
    # the same name with another checksum means the saved state is not this one.
    return all(segment.file in now and segment.checksum == now[segment.file] for segment in before.segments)


def _manifest_changed(connection, manifest: Manifest) -> bool:
    current = read_manifest(connection)
    return current is not None and current.generation != manifest.generation


# -- vector search over a loaded snapshot ----------------------------------------


# A filter passing at most this many takes of an HNSW index is searched
# exactly over just their vectors; above it FAISS searches restricted to them.
EXACT_FILTER_LIMIT = 20_000
# IVF and flat indexes choose by cost instead. Exact search gathers every
# passing vector by id (``reconstruct_batch``: a hash lookup and a 1.5 kB
# copy, about 1.2 us each, several times that once they leave the CPU's
# caches); the restricted search tests every id of the lists it probes (a
# flat index: every id) against the bitmap, about 15 ns each, and scores
# only the passing ones. Exact search is chosen while gathering costs no
# more than those tests, a gathered vector counting as this many tested ids
# (docs/PERFORMANCE.md, "Filters at 1M takes"): up to ~3,000 passing takes
# of 1M and ~1,000 of 100k are searched exactly, in a few milliseconds.
_GATHER_COST = 80
# An IVF search restricted to a filter probes enough lists to meet this many
# times the depth asked among the passing takes, and probes four times more
# while fewer than the depth come back. 16: of the exact top 50 among 2k-20k
# passing takes of 100k synthetic ones it finds 0.93-0.99 (4 found 0.77-0.96).
_IVF_OVERFETCH = 16


class AllowedRows:
    """The row ids a filter lets through, with the bitmap a FAISS selector reads (built once, kept with the rows)."""

    def __init__(self, rows: np.ndarray):
        self.rows = np.ascontiguousarray(rows, dtype=np.int64)
        self._bitmap: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def selector(self):
        """A ``faiss.IDSelectorBitmap`` over the rows: one bit test per candidate (IDSelectorBatch hashes)."""
        import faiss

        if self._bitmap is None:
            size = int(self.rows.max()) + 1 if len(self.rows) else 1
            bits = np.zeros(size, dtype=bool)
            bits[self.rows] = True
            self._bitmap = np.packbits(bits, bitorder="little")
        selector = faiss.IDSelectorBitmap(len(self._bitmap), faiss.swig_ptr(self._bitmap))
        selector.referenced_bitmap = self._bitmap  # FAISS does not copy the bitmap: keep it alive with the selector
        return selector


def nearest(snapshot: Snapshot, vector: np.ndarray, depth: int, allowed: AllowedRows | np.ndarray | None = None) -> list[tuple[int, float]]:
    """The ``depth`` stored vectors nearest ``vector`` (among ``allowed`` row ids if given), best first.

    With a filter, ``min(depth, len(allowed))`` results come back whatever the
    index type: exactly over the passing vectors when they are few, else
    FAISS restricted to them (an IVF index probing more lists as needed).
    """
    index = snapshot.faiss_index
    if index.ntotal == 0:
        return []
    query = np.atleast_2d(vector).astype(np.float32)
    if allowed is None:
        params = ann.search_parameters(snapshot.manifest.index_type)
        wanted = min(depth, index.ntotal)
        if snapshot.full_vectors is None:
            return _search(index, query, wanted, params)
        return _rescored(snapshot, query, _search(index, query, min(max(depth, ann.RESCORED), index.ntotal), params), wanted)
    if not isinstance(allowed, AllowedRows):
        allowed = AllowedRows(allowed)
    if _exact_is_cheaper(snapshot, depth, allowed):
        return _exact(snapshot, query, depth, allowed.rows)
    wanted = min(depth, len(allowed))
    if snapshot.full_vectors is None:
        return _restricted(snapshot, query, wanted, allowed)
    return _rescored(snapshot, query, _restricted(snapshot, query, min(max(depth, ann.RESCORED), len(allowed)), allowed), wanted)


def _search(index, query: np.ndarray, depth: int, params) -> list[tuple[int, float]]:
    scores, ids = index.search(query, depth, params=params)
    return [(int(row_id), float(score)) for row_id, score in zip(ids[0], scores[0]) if row_id >= 0]


def _rescored(snapshot: Snapshot, query: np.ndarray, candidates: list[tuple[int, float]], depth: int) -> list[tuple[int, float]]:
    """The best ``depth`` of a compressed index's candidates by their exact inner products (full vectors)."""
    return _exact(snapshot, query, depth, np.fromiter((row_id for row_id, _ in candidates), np.int64, len(candidates)))


def stored_vectors(snapshot: Snapshot, rows: np.ndarray) -> np.ndarray:
    """The float32 vectors of ``rows``: from the segment files of a compressed index, else by id inside FAISS."""
    if snapshot.full_vectors is not None:
        return snapshot.full_vectors.gather(rows)
    return snapshot.faiss_index.reconstruct_batch(rows)


def _exact(snapshot: Snapshot, query: np.ndarray, depth: int, rows: np.ndarray) -> list[tuple[int, float]]:
    """Exact inner products with the vectors of ``rows``, best ``depth``."""
    if len(rows) == 0:
        return []
    vectors = stored_vectors(snapshot, rows)
    scores = vectors @ query[0]
    if depth < len(rows):
        top = np.argpartition(-scores, depth - 1)[:depth]
        # argpartition picks any of the takes tied at the last place (the
        # same vector twice): keep them all, so the row id decides below.
        top = np.flatnonzero(scores >= scores[top].min())
    else:
        top = np.arange(len(rows))
    # Ties break by row id so the order is the same on every call.
    top = top[np.lexsort((rows[top], -scores[top]))][:depth]
    return [(int(rows[position]), float(scores[position])) for position in top]


def _exact_is_cheaper(snapshot: Snapshot, depth: int, allowed: AllowedRows) -> bool:
    """Whether exact search over ``allowed`` costs less than FAISS restricted to them (see ``_GATHER_COST``)."""
    if len(allowed) <= depth:
        return True
    index = snapshot.faiss_index
    if snapshot.manifest.index_type == "flat":
        # Its restricted search is exact too: it tests every id.
        return len(allowed) * _GATHER_COST <= index.ntotal
    if ann.ivf_lists(snapshot.manifest.index_type) is None:
        return len(allowed) <= EXACT_FILTER_LIMIT
    lists = _faiss_lists(index)
    probes = min(lists, max(_default_nprobe(snapshot), math.ceil(_IVF_OVERFETCH * depth * lists / len(allowed))))
    return len(allowed) * _GATHER_COST <= probes * index.ntotal / lists


def _restricted(snapshot: Snapshot, query: np.ndarray, wanted: int, allowed: AllowedRows) -> list[tuple[int, float]]:
    """FAISS search restricted to ``allowed``; an IVF index probes more lists until ``wanted`` come back."""
    import faiss

    index = snapshot.faiss_index
    params = ann.search_parameters(snapshot.manifest.index_type, allowed.selector())
    if snapshot.manifest.index_type == "flat":
        # Exhaustive: a few more than asked, so takes tied at the last place break by row id as in ``_exact``.
        found = _search(index, query, min(2 * wanted, len(allowed)), params)
        return sorted(found, key=lambda pair: (-pair[1], pair[0]))[:wanted]
    if not isinstance(params, faiss.SearchParametersIVF):
        return _search(index, query, wanted, params)
    lists = _faiss_lists(index)
    # The probed lists hold about nprobe/nlist of the passing takes.
    probes = max(params.nprobe, math.ceil(_IVF_OVERFETCH * wanted * lists / len(allowed)))
    while True:
        params.nprobe = min(probes, lists)
        found = _search(index, query, wanted, params)
        if len(found) >= wanted or params.nprobe == lists:
            return found
        probes *= 4


def _faiss_lists(index) -> int:
    import faiss

    return faiss.extract_index_ivf(index).nlist


def _default_nprobe(snapshot: Snapshot) -> int:
    return ann.search_parameters(snapshot.manifest.index_type).nprobe


def inner_products(snapshot: Snapshot, vector: np.ndarray, row_ids: Sequence[int]) -> dict[int, float]:
    """``vector``'s inner product with the stored vectors of ``row_ids`` (cosine: vectors are unit length)."""
    if not row_ids:
        return {}
    if snapshot.full_vectors is not None:
        stored = snapshot.full_vectors.gather(np.asarray(row_ids, dtype=np.int64))
    else:
        stored = np.vstack([snapshot.faiss_index.reconstruct(int(row_id)) for row_id in row_ids])
    return dict(zip(row_ids, (stored @ np.ravel(vector)).tolist()))
