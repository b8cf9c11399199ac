"""Which FAISS index serves a generation: exact below a size, approximate above.

The manifest names the index type (``flat``, ``hnsw32``, ``ivf4096``,
``ivf8192sq8``); the loader builds that type from the segment files. Ids are SQLite row ids and
``reconstruct`` (hybrid mode's cosine of lexical-only candidates) works by id:
flat and HNSW sit under an ``IndexIDMap2``; IVF keeps the ids in its own lists
with a hashtable direct map, which, unlike an id map over IVF, can also remove
vectors, so a removal does not mean training again. Inner product equals
cosine because vectors are L2-normalized.

``ivfNsq8`` (above ``COMPRESSED_THRESHOLD`` takes) keeps one byte per
dimension in memory instead of four: its lists give ``RESCORED`` candidates,
whose exact inner products are then computed from the float32 vectors the
segment files already hold, read in place (``indexer.index.segments.SegmentVectors``),
so the scores that reach ranking are exact. It keeps no direct map (a
hashtable costs ~50 bytes a take): vectors are read by id from the segments.
"""

from __future__ import annotations

import math
import re

import numpy as np

# Below this many takes exact search costs well under a millisecond per query
# and there is nothing to tune; above it, an approximate index (docs/PERFORMANCE.md).
DEFAULT_THRESHOLD = 50_000
# IVF over HNSW, measured at 100k and 1M (docs/PERFORMANCE.md, "Scale"):
# HNSW searched faster at 100k but built 4-7x slower (a 1M build would take
# many minutes on two cores at every load) and needed a larger efSearch for
# recall 0.95; IVF trains in seconds to a few minutes and adds ids + lists only.
# Search-time breadth, chosen by measurement (docs/PERFORMANCE.md, "Scale"):
# recall@10 >= 0.95 at 1M synthetic takes (ivf2048, nprobe 16: 0.998).
HNSW_EF_SEARCH = 64
HNSW_EF_CONSTRUCTION = 40
IVF_NPROBE = 16
# Above this many takes the compressed type: IVF-Flat holds 1,544 bytes a take
# in memory (3 GB at 2M, 15 GB at 10M), IVF-SQ8 392 (docs/PERFORMANCE.md,
# "Compressed candidates"); below it the float lists fit and need no disk read.
COMPRESSED_THRESHOLD = 2_000_000
# Chosen on real int8 vectors and at 10M takes (docs/PERFORMANCE.md, "Compressed
# candidates", "Ten million takes"): the probe breadth (recall@10 0.966-0.986
# real, 0.970 at 10M; 32 scanned a third more codes for 0.97-0.99) and how
# many SQ8 candidates at least are re-scored exactly (the ranker asks for 50;
# 100 gave the same recall and twice the rows to read from the segments).
COMPRESSED_NPROBE = 24
RESCORED = 50

_TYPE = re.compile(r"^(flat|hnsw(\d+)|ivf(\d+)(sq8)?)$")


def index_type_for(count: int, threshold: int = DEFAULT_THRESHOLD, compressed_threshold: int = COMPRESSED_THRESHOLD) -> str:
    """``flat`` below the threshold; above it IVF with about 2*sqrt(count) lists (a power of two).

    At 1M takes that is ivf2048: nprobe 16 scans ~0.8% of the vectors. From
    ``compressed_threshold`` on the lists hold SQ8 codes (``ivf8192sq8`` at 10M).
    """
    if count < threshold:
        return "flat"
    lists = 2 ** max(6, round(math.log2(2 * math.sqrt(count))))
    return f"ivf{lists}sq8" if count >= compressed_threshold else f"ivf{lists}"


def is_compressed(index_type: str) -> bool:
    """Whether ``index_type`` holds codes, not vectors: its candidates are re-scored from the segments."""
    return _parse(index_type).group(4) is not None


def ivf_lists(index_type: str) -> int | None:
    """How many lists an ``ivfN`` or ``ivfNsq8`` type names; None for the others."""
    lists = _parse(index_type).group(3)
    return int(lists) if lists else None


def _parse(index_type: str) -> re.Match:
    match = _TYPE.match(index_type)
    if match is None:
        from indexer.errors import IndexCorrupt

        raise IndexCorrupt(f"unknown index type {index_type!r}: expected flat, hnswM, ivfN or ivfNsq8")
    return match


def build_index(index_type: str, dim: int, vectors: np.ndarray, ids: np.ndarray):
    """An index of ``index_type`` holding ``vectors`` under ``ids`` (see the module docstring)."""
    import faiss

    match = _parse(index_type)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if match.group(4):
        return build_compressed(index_type, dim, training_sample(index_type, vectors), [(vectors, ids)])
    if match.group(2):
        inner = faiss.IndexHNSWFlat(dim, int(match.group(2)), faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        inner.hnsw.efSearch = HNSW_EF_SEARCH
    elif match.group(3):
        nlist = min(int(match.group(3)), max(1, len(vectors) // 39))
        inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        if len(vectors):
            # k-means on a sample with few iterations: 40 points per list and
            # 10 rounds place the centroids well enough (recall is measured)
            # and keep a 1M build to a minute or two on two cores.
            inner.cp.niter = 10
            inner.cp.max_points_per_centroid = 40
            inner.cp.min_points_per_centroid = 20
            sample = vectors[np.random.default_rng(0).permutation(len(vectors))[: nlist * 40]]
            inner.train(sample)
        inner.nprobe = IVF_NPROBE
        inner.set_direct_map_type(faiss.DirectMap.Hashtable)
        if len(vectors):
            inner.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
        return inner
    else:
        inner = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(inner)
    if len(vectors):
        index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
    return index


def training_sample(index_type: str, vectors) -> np.ndarray:
    """The rows of ``vectors`` (an array or memory map) an IVF index of ``index_type`` trains on: 40 per list, seeded."""
    nlist = int(_parse(index_type).group(3))
    count = len(vectors)
    if count <= nlist * 40:
        rows = np.arange(count)
    else:
        rows = np.sort(np.random.default_rng(0).choice(count, nlist * 40, replace=False))
    return np.ascontiguousarray(vectors[rows], dtype=np.float32)


def build_compressed(index_type: str, dim: int, sample: np.ndarray, batches):
    """An ``ivfNsq8`` index trained on ``sample``, holding each (vectors, ids) of ``batches`` in turn.

    Batches let a load add ten million vectors from memory-mapped segments
    without ever holding them all as float32.
    """
    import faiss

    nlist = min(int(_parse(index_type).group(3)), max(1, len(sample) // 39))
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim), dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.cp.niter = 10
    index.cp.max_points_per_centroid = 40
    index.cp.min_points_per_centroid = 20
    if len(sample):
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.nprobe = COMPRESSED_NPROBE
    for vectors, ids in batches:
        if len(ids):
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
    return index


def stored_ids(index) -> np.ndarray:
    """The ids an index built by ``build_index`` holds."""
    import faiss

    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    lists = faiss.extract_index_ivf(index).invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(number), lists.list_size(number)).copy()
        for number in range(lists.nlist)
        if lists.list_size(number)
    ]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def remove_ids(index, ids: np.ndarray) -> None:
    """Drop ``ids`` from an index built by ``build_index``; RuntimeError if its type cannot."""
    import faiss

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    # An IVF hashtable direct map accepts only an explicit id array; IVF
    # without a direct map (ivfNsq8) scans its lists, testing each id in a hash set.
    keyed = hasattr(index, "id_map") or faiss.extract_index_ivf(index).direct_map.type == faiss.DirectMap.NoMap
    index.remove_ids(faiss.IDSelectorBatch(ids) if keyed else faiss.IDSelectorArray(ids))


def mean_direction(index, dim: int) -> np.ndarray:
    """The unit mean of the vectors in an index built by ``build_index`` (zeros when empty).

    One pass over the stored vectors, in place (no copy of the index): about
    0.3 s at a million takes, once per generation.
    """
    return unit(vector_sum(index, dim))


def unit(total: np.ndarray) -> np.ndarray:
    """``total`` scaled to unit length, as float32 (zeros stay zeros)."""
    norm = np.linalg.norm(total)
    return (total / norm).astype(np.float32) if norm > 0 else np.zeros(len(total), np.float32)


def vector_sum(index, dim: int) -> np.ndarray:
    """The float64 sum of the vectors in an index built by ``build_index`` (for ``ivfNsq8``: its centroids weighted by list size)."""
    import faiss

    total = np.zeros(dim, np.float64)
    if hasattr(index, "id_map"):
        inner = faiss.downcast_index(index.index)
        storage = faiss.downcast_index(inner.storage) if hasattr(inner, "storage") else inner
        if index.ntotal:
            total += faiss.rev_swig_ptr(storage.get_xb(), index.ntotal * dim).reshape(-1, dim).sum(axis=0, dtype=np.float64)
    elif isinstance(faiss.downcast_index(index), faiss.IndexIVFScalarQuantizer):
        # SQ8 codes are not vectors: each list's centroid weighted by its size
        # (k-means puts a centroid at the mean of its members) is close enough
        # for centring; reading 15 GB of segments at every load is not.
        ivf = faiss.extract_index_ivf(index)
        centroids = ivf.quantizer.reconstruct_n(0, ivf.nlist).astype(np.float64)
        sizes = np.array([ivf.invlists.list_size(number) for number in range(ivf.nlist)], dtype=np.float64)
        total += sizes @ centroids
    else:
        # IVF-Flat keeps each vector's float32 bytes in its inverted list.
        lists = faiss.extract_index_ivf(index).invlists
        for number in range(lists.nlist):
            size = lists.list_size(number)
            if size:
                codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size)
                total += codes.view(np.float32).reshape(size, dim).sum(axis=0, dtype=np.float64)
    return total


def search_parameters(index_type: str, selector=None):
    """FAISS search parameters for ``index_type``, restricted to ``selector`` if given."""
    import faiss

    match = _parse(index_type)
    if match.group(2):
        params = faiss.SearchParametersHNSW(efSearch=HNSW_EF_SEARCH)
    elif match.group(3):
        params = faiss.SearchParametersIVF(nprobe=COMPRESSED_NPROBE if match.group(4) else IVF_NPROBE)
    elif selector is None:
        return None
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return params


__all__ = ["COMPRESSED_THRESHOLD", "DEFAULT_THRESHOLD", "build_index", "index_type_for", "is_compressed", "search_parameters"]
