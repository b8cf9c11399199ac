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
