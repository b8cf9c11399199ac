"""Filtered vector search: k results when k takes pass, in exact cosine order, whatever the index type."""

from __future__ import annotations

import time

import numpy as np
import pytest

from indexer import ann
from indexer.index import snapshot as snapshot_module
from indexer.index.manifest import Manifest
from indexer.index.snapshot import Snapshot, nearest

DIM = 32


def _snapshot(index_type: str, count: int = 20_000, seed: int = 0) -> tuple[Snapshot, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 40, count)] + 0.5 * rng.standard_normal((count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Row ids with gaps, as after removals.
    ids = np.arange(count, dtype=np.int64) * 3 + 7
    index = ann.build_index(index_type, DIM, vectors, ids)
    manifest = Manifest(model="test", dim=DIM, count=count, generation=1, index_type=index_type)
    return Snapshot(manifest=manifest, faiss_index=index, loaded_at=time.time()), vectors, ids


def _exact_order(vectors: np.ndarray, ids: np.ndarray, passing: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    positions = np.flatnonzero(np.isin(ids, passing))
    scores = vectors[positions] @ query
    order = np.lexsort((ids[positions], -scores))[:k]
    return ids[positions][order].tolist()


@pytest.mark.parametrize("index_type", ["flat", "ivf256", "hnsw16"])
def test_a_selective_filter_returns_k_takes_in_exact_cosine_order(index_type):
    found_snapshot, vectors, ids = _snapshot(index_type)
    rng = np.random.default_rng(1)
    # 0.1% of the takes pass: an IVF index probing its usual lists would see about one of them.
    passing = np.sort(rng.choice(ids, 20, replace=False))
    for query in vectors[rng.integers(0, len(vectors), 5)]:
        found = nearest(found_snapshot, query, 10, passing)
        assert [row_id for row_id, _ in found] == _exact_order(vectors, ids, passing, query, 10)
        expected_scores = np.sort(vectors[np.isin(ids, passing)] @ query)[::-1][:10]
        np.testing.assert_allclose([score for _, score in found], expected_scores, atol=1e-5)
    # Fewer passing than asked: all of them.
    assert len(nearest(found_snapshot, vectors[0], 10, passing[:3])) == 3


@pytest.mark.parametrize("index_type", ["flat", "ivf256"])
def test_a_broad_filter_searched_by_faiss_still_returns_k_passing_takes(index_type, monkeypatch):
    # Force the FAISS path for every filter, so a 2% filter goes through the selector.
    monkeypatch.setattr(snapshot_module, "EXACT_FILTER_LIMIT", 0)
    found_snapshot, vectors, ids = _snapshot(index_type)
    rng = np.random.default_rng(2)
    passing = np.sort(rng.choice(ids, 400, replace=False))
    allowed = set(passing.tolist())
    for query in vectors[rng.integers(0, len(vectors), 5)]:
        found = nearest(found_snapshot, query, 50, passing)
        assert len(found) == 50
        assert {row_id for row_id, _ in found} <= allowed
        scores = [score for _, score in found]
        assert scores == sorted(scores, reverse=True)
    if index_type == "flat":
        query = vectors[3]
        assert [row_id for row_id, _ in nearest(found_snapshot, query, 10, passing)] == _exact_order(
            vectors, ids, passing, query, 10
        )
