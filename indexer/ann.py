"""Which FAISS index serves a generation: exact below a size, approximate above.

The manifest names the index type (``flat``, ``hnsw32``, ``ivf4096``); the
loader builds that type from the segment files. Ids are SQLite row ids and
``reconstruct`` (hybrid mode's cosine of lexical-only candidates) works by id:
flat and HNSW sit under an ``IndexIDMap2``; IVF keeps the ids in its own lists
with a hashtable direct map, which, unlike an id map over IVF, can also remove
vectors, so a removal does not mean training again. Inner product equals
cosine because vectors are L2-normalized.
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

_TYPE = re.compile(r"^(flat|hnsw(\d+)|ivf(\d+))$")


def index_type_for(count: int, threshold: int = DEFAULT_THRESHOLD) -> str:
    """``flat`` below the threshold; above it IVF with about 2*sqrt(count) lists (a power of two).

    At 1M takes that is ivf2048: nprobe 16 scans ~0.8% of the vectors.
    """
    if count < threshold:
        return "flat"
    lists = 2 ** max(6, round(math.log2(2 * math.sqrt(count))))
    return f"ivf{lists}"


def _parse(index_type: str) -> re.Match:
    match = _TYPE.match(index_type)
    if match is None:
        from indexer.errors import IndexCorrupt

        raise IndexCorrupt(f"unknown index type {index_type!r}: expected flat, hnswM or ivfN")
    return match


def build_index(index_type: str, dim: int, vectors: np.ndarray, ids: np.ndarray):
    """An index of ``index_type`` holding ``vectors`` under ``ids`` (see the module docstring)."""
    import faiss

    match = _parse(index_type)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
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
    # An IVF hashtable direct map accepts only an explicit id array.
    index.remove_ids(faiss.IDSelectorBatch(ids) if hasattr(index, "id_map") else faiss.IDSelectorArray(ids))


def mean_direction(index, dim: int) -> np.ndarray:
    """The unit mean of the vectors in an index built by ``build_index`` (zeros when empty).

    One pass over the stored vectors, in place (no copy of the index): about
    0.3 s at a million takes, once per generation.
    """
    import faiss

    total = np.zeros(dim, np.float64)
    if hasattr(index, "id_map"):
        inner = faiss.downcast_index(index.index)
        storage = faiss.downcast_index(inner.storage) if hasattr(inner, "storage") else inner
        if index.ntotal:
            total += faiss.rev_swig_ptr(storage.get_xb(), index.ntotal * dim).reshape(-1, dim).sum(axis=0, dtype=np.float64)
    else:
        # IVF-Flat keeps each vector's float32 bytes in its inverted list.
        lists = faiss.extract_index_ivf(index).invlists
        for number in range(lists.nlist):
            size = lists.list_size(number)
            if size:
                codes = faiss.rev_swig_ptr(lists.get_codes(number), size * lists.code_size)
                total += codes.view(np.float32).reshape(size, dim).sum(axis=0, dtype=np.float64)
    norm = np.linalg.norm(total)
    return (total / norm).astype(np.float32) if norm > 0 else np.zeros(dim, np.float32)


def search_parameters(index_type: str, selector=None):
    """FAISS search parameters for ``index_type``, restricted to ``selector`` if given."""
    import faiss

    match = _parse(index_type)
    if match.group(2):
        params = faiss.SearchParametersHNSW(efSearch=HNSW_EF_SEARCH)
    elif match.group(3):
        params = faiss.SearchParametersIVF(nprobe=IVF_NPROBE)
    elif selector is None:
        return None
    else:
        params = faiss.SearchParameters()
    if selector is not None:
        params.sel = selector
    return params


__all__ = ["DEFAULT_THRESHOLD", "build_index", "index_type_for", "search_parameters"]
