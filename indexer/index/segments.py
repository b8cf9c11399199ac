"""Vector segment files and the saved trained index: reading them verified, saving the trained one."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path

import numpy as np

from indexer import ann
from indexer.errors import IndexCorrupt
from indexer.fsutil import cached_checksum, checksum_file, fsync_dir
from indexer.index.layout import TRAINED_INDEX_NAME, unit_rows
from indexer.index.manifest import Manifest, Segment

logger = logging.getLogger(__name__)


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
    if len(vectors) and not unit_rows(vectors).all():
        raise _segment_damaged(path, "holds vectors that are not unit length (damaged on disk)")
    return ids, vectors


def verify_segment_checksum(index_dir: Path, segment: Segment) -> None:
    """IndexCorrupt when a segment file is unreadable or fails the checksum its generation recorded."""
    path = Path(index_dir) / segment.file
    try:
        if segment.checksum is not None and cached_checksum(path) != segment.checksum:
            raise _segment_damaged(path, f"does not match the checksum recorded by generation {segment.generation} (damaged on disk)")
    except OSError as error:
        raise IndexCorrupt(
            f"cannot read vector segment {path} ({error.strerror or error}): `takes repair` re-embeds its takes from the database"
        ) from None


# manifest of the generation it holds plus the checksum of the FAISS part) and
# that header's length (8 bytes): FAISS reads the file directly, ignoring what
# trails it, and the header is checked without reading the index.
_LENGTH_BYTES = 8


def trained_index_header(path: Path) -> tuple[dict, int]:
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
        header, faiss_bytes = trained_index_header(path)
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
        header, _ = trained_index_header(path)
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


def live_vectors(index_dir: Path, segments, live: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of the takes in ``live`` read from ``segments``, in segment order, each verified."""
    kept_ids, kept_vectors = [], []
    for segment in segments:
        ids, vectors = read_segment(index_dir, segment, dim)
        keep = np.isin(ids, live)
        if keep.any():
            kept_ids.append(ids[keep])
            kept_vectors.append(vectors[keep])
    if not kept_ids:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate(kept_ids), np.concatenate(kept_vectors)


def flat_index(dim: int, vectors: np.ndarray, ids: np.ndarray):
    """An exact inner-product index of ``vectors`` under ``ids``: what a segment file holds."""
    return ann.build_index("flat", dim, vectors, ids)


# -- segments as float32 vectors read in place (the ivfNsq8 re-scoring source) --

# A segment is FAISS's serialization of IndexIDMap2(IndexFlatIP): "IxM2" and
# an index header, "IxFI" and the same header, the float32 vectors as one
# block (preceded by their count), then the ids (preceded by theirs). The
# header is d (int32), ntotal (int64), two unused int64, is_trained (uint8),
# metric (int32). The vectors can thus be read in place: the segment file,
# written aside, fsynced, renamed and checksummed like every segment, is the
# full-vector file; no second copy is written.
_HEADER_BYTES = 4 + 8 + 8 + 8 + 1 + 4


def _segment_layout(path: Path) -> tuple[int, int, int]:
    """(dim, count, byte offset of the vectors) of a segment file; ValueError if it is not laid out as above."""
    with open(path, "rb") as handle:
        head = handle.read(2 * (4 + _HEADER_BYTES) + 8)
        size = handle.seek(0, os.SEEK_END)
        if len(head) < 2 * (4 + _HEADER_BYTES) + 8 or head[:4] != b"IxM2" or head[4 + _HEADER_BYTES : 8 + _HEADER_BYTES] != b"IxFI":
            raise ValueError("not an IndexIDMap2 over IndexFlatIP")
        inner = 8 + _HEADER_BYTES
        dim = int.from_bytes(head[inner : inner + 4], "little", signed=True)
        count = int.from_bytes(head[inner + 4 : inner + 12], "little", signed=True)
        metric = int.from_bytes(head[inner + 29 : inner + 33], "little", signed=True)
        floats = int.from_bytes(head[inner + 33 : inner + 41], "little")
        offset = inner + 41
        if metric != 0 or dim <= 0 or count < 0 or floats != dim * count:
            raise ValueError("unexpected flat index header")
        handle.seek(offset + 4 * floats)
        id_count = int.from_bytes(handle.read(8), "little")
    if id_count != count or size != offset + 4 * floats + 8 + 8 * count:
        raise ValueError("ids do not follow the vectors")
    return dim, count, offset


class SegmentVectors:
    """The float32 vectors of a generation's segments, read in place by row id.

    Rows are read with ``pread`` from the segment files, not through a memory
    map: a mapped page fault maps its 64 KB neighbourhood into the process
    (fault-around), so 100 random rows a query grew the resident set by about
    2.8 GB over 1,000 queries at 2M takes; read rows leave nothing resident
    but the page cache, which the kernel shares and reclaims.
    """

    def __init__(self, files: list, offsets: list[int], counts: list[int], dim: int, ids: list[np.ndarray], live: np.ndarray):
        self._files, self._offsets, self.dim = files, offsets, dim
        self._starts = np.cumsum([0] + list(counts))
        total = int(self._starts[-1])
        largest = max([int(part.max()) for part in ids if len(part)] + [int(live.max()) if len(live) else 0, 0])
        self._position = np.full(largest + 1, -1, dtype=np.int32 if total < 2**31 else np.int64)
        for start, part in zip(self._starts[:-1], ids):
            # A later segment's copy of an id wins (a repair re-embeds into a new segment).
            self._position[part] = np.arange(start, start + len(part), dtype=self._position.dtype)
        # Rows no longer live (removed takes in older segments) are never found.
        alive = np.zeros(largest + 1, dtype=bool)
        alive[live] = True
        self._position[~alive] = -1

    @classmethod
    def open(cls, index_dir: Path, segments, live: np.ndarray, dim: int) -> "SegmentVectors":
        """Open every segment of a generation; IndexCorrupt when one is not a readable flat segment of ``dim``.

        The layout is checked here (cheap); checksums are checked when the
        segments are read to build the index and by `takes check`.
        """
        files, offsets, counts, ids = [], [], [], []
        for segment in segments:
            path = Path(index_dir) / segment.file
            try:
                file_dim, count, offset = _segment_layout(path)
            except FileNotFoundError:
                raise IndexCorrupt(f"vector segment {path} is missing: `takes repair` re-embeds its takes from the database") from None
            except (OSError, ValueError) as error:
                raise _segment_damaged(path, f"cannot be read in place ({error})") from None
            if file_dim != dim or count != segment.count:
                raise _segment_damaged(path, f"holds {count} {file_dim}-dimensional vectors, the manifest says {segment.count} of {dim}")
            if count == 0:
                continue
            handle = open(path, "rb")
            handle.seek(offset + 4 * count * dim + 8)
            ids.append(np.frombuffer(handle.read(8 * count), dtype=np.int64))
            files.append(handle)
            offsets.append(offset)
            counts.append(count)
        return cls(files, offsets, counts, dim, ids, np.asarray(live, dtype=np.int64))

    def gather(self, row_ids) -> np.ndarray:
        """The vectors of ``row_ids`` (float32, in that order); KeyError naming a row id that is not live here."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        out = np.empty((len(row_ids), self.dim), np.float32)
        if not len(row_ids):
            return out
        inside = (row_ids >= 0) & (row_ids < len(self._position))
        positions = np.full(len(row_ids), -1, np.int64)
        positions[inside] = self._position[row_ids[inside]]
        if (positions < 0).any():
            raise KeyError(int(row_ids[np.argmax(positions < 0)]))
        owner = np.searchsorted(self._starts, positions, side="right") - 1
        row_bytes = 4 * self.dim
        view = memoryview(out).cast("B")
        # One read per run of consecutive rows (a load reads whole segments; a query's candidates are scattered).
        breaks = np.flatnonzero((np.diff(positions) != 1) | (np.diff(owner) != 0)) + 1
        runs = []  # (segment number, byte offset in its file, first row, row after the last)
        for first, stop in zip([0, *breaks.tolist()], [*breaks.tolist(), len(positions)]):
            number = int(owner[first])
            runs.append((number, self._offsets[number] + (int(positions[first]) - int(self._starts[number])) * row_bytes, first, stop))
        if len(runs) > 1:
            # Every scattered run asked of the kernel first (WILLNEED starts its
            # read and returns), then read in turn: pages not yet cached come
            # from the disk together, not one wait each. At 10M takes, with the
            # segments' pages evicted, a query's 100 re-scored rows took a p50
            # of 23.9 ms read one by one and 5.6 ms prefetched; on cached pages
            # a call costs about 1 us (docs/PERFORMANCE.md, "Ten million takes").
            for number, offset, first, stop in runs:
                os.posix_fadvise(self._files[number].fileno(), offset, (stop - first) * row_bytes, os.POSIX_FADV_WILLNEED)
        for number, offset, first, stop in runs:
            read = os.preadv(self._files[number].fileno(), [view[first * row_bytes : stop * row_bytes]], offset)
            if read != (stop - first) * row_bytes:
                raise IndexCorrupt(f"vector segment {self._files[number].name} is shorter than its header says: `takes repair` re-embeds its takes")
        return out
