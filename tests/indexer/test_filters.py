"""Filtered vector search: k results when k takes pass, in exact cosine order, whatever the index type."""

from __future__ import annotations

import re
import sqlite3
import time

import numpy as np
import pytest

from indexer import ann
from indexer.index import reader
from indexer.index import snapshot as snapshot_module
from indexer.index.layout import SCHEMA
from indexer.index.manifest import Manifest
from indexer.index.snapshot import Snapshot, nearest
from indexer.storage import Filters, name_words_sql

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


def _assert_k_passing_best_first(found_snapshot, vectors, passing, rng, queries=5, depth=50):
    """Searches near a few stored vectors return ``depth`` takes, all passing the filter, best first."""
    allowed = set(passing.tolist())
    for query in vectors[rng.integers(0, len(vectors), queries)]:
        found = nearest(found_snapshot, query, depth, passing)
        assert len(found) == depth
        assert {row_id for row_id, _ in found} <= allowed
        scores = [score for _, score in found]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("index_type", ["flat", "ivf256"])
def test_a_broad_filter_searched_by_faiss_still_returns_k_passing_takes(index_type, monkeypatch):
    # Force the FAISS path for every filter, so a 2% filter goes through the selector.
    monkeypatch.setattr(snapshot_module, "EXACT_FILTER_LIMIT", 0)
    monkeypatch.setattr(snapshot_module, "_GATHER_COST", 10**6)
    found_snapshot, vectors, ids = _snapshot(index_type)
    rng = np.random.default_rng(2)
    passing = np.sort(rng.choice(ids, 400, replace=False))
    _assert_k_passing_best_first(found_snapshot, vectors, passing, rng)
    if index_type == "flat":
        query = vectors[3]
        assert [row_id for row_id, _ in nearest(found_snapshot, query, 10, passing)] == _exact_order(
            vectors, ids, passing, query, 10
        )


def test_an_ivf_index_searches_few_passing_takes_exactly_and_many_through_faiss(monkeypatch):
    found_snapshot, vectors, ids = _snapshot("ivf256")
    rng = np.random.default_rng(3)
    paths = []
    for name in ("_exact", "_restricted"):
        original = getattr(snapshot_module, name)
        monkeypatch.setattr(snapshot_module, name, lambda *args, _name=name, _original=original: paths.append(_name) or _original(*args))
    # 20k takes in 256 lists: exact while gathering the passing vectors costs
    # less than testing the ids of the lists a restricted search would probe.
    for count, path in ((150, "_exact"), (1_500, "_restricted")):
        passing = np.sort(rng.choice(ids, count, replace=False))
        query = vectors[rng.integers(0, len(vectors))]
        paths.clear()
        found = nearest(found_snapshot, query, 50, passing)
        assert paths == [path]
        assert len(found) == 50 and {row_id for row_id, _ in found} <= set(passing.tolist())
        if path == "_exact":
            assert [row_id for row_id, _ in found] == _exact_order(vectors, ids, passing, query, 50)


def test_takes_tied_at_the_last_place_break_by_row_id_on_the_exact_path(monkeypatch):
    monkeypatch.setattr(snapshot_module, "_GATHER_COST", 0)  # exact search for any filter
    rng = np.random.default_rng(4)
    count = 4_000
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    # Ten takes with the same vector, the nearest to the query, spread over the rows: five fit in the top 5.
    vectors[::400] = vectors[0]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(count, dtype=np.int64) + 1
    index = ann.build_index("ivf64", DIM, vectors, ids)
    found_snapshot = Snapshot(
        manifest=Manifest(model="test", dim=DIM, count=count, generation=1, index_type="ivf64"), faiss_index=index, loaded_at=0.0
    )
    found = nearest(found_snapshot, vectors[0], 5, ids)
    assert [row_id for row_id, _ in found] == [1, 401, 801, 1201, 1601]


@pytest.mark.parametrize("index_type", ["flat", "ivf256"])
def test_filters_just_above_the_exact_limit_still_return_k_passing_takes(index_type, monkeypatch):
    monkeypatch.setattr(snapshot_module, "EXACT_FILTER_LIMIT", 2_000)
    monkeypatch.setattr(snapshot_module, "_GATHER_COST", 10**6)
    found_snapshot, vectors, ids = _snapshot(index_type)
    rng = np.random.default_rng(5)
    passing = np.sort(rng.choice(ids, 2_001, replace=False))
    _assert_k_passing_best_first(found_snapshot, vectors, passing, rng)


AUTHORS = ["Jack Clark", "Clark, Jack", "jack.clark", "Ada_Lovelace", "Ada Lovelace", "100% Human", None, "Grace Hopper", "Zed"]


def _authors_database(path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.executescript(SCHEMA)
    rows = [
        (f"take-{number}", "text", author, "@" + (author or "nobody").lower().replace(" ", "")[:8], f"thread-{number}", number, "test", f"key-{number}")
        for number, author in enumerate(AUTHORS * 30)
    ]
    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO takes (id, text, author, handle, thread_id, position, source, text_key, added_generation) VALUES (?,?,?,?,?,?,?,?,1)",
        rows,
    )
    # One removed take: not of generation 1's visible rows.
    connection.execute("UPDATE takes SET removed_generation = 1 WHERE id = 'take-0'")
    connection.execute("COMMIT")
    return connection


@pytest.mark.parametrize("author", ["clark", "Jack Clark", "@jackclar", "ada lovelace", "ada_lovelace", "100%", "%", "zed", "nobody"])
def test_the_author_filter_finds_the_takes_a_like_over_every_row_finds(tmp_path, author):
    connection = _authors_database(tmp_path / "takes.sqlite")
    pattern, handle = Filters(author=author).author_match()
    expected = [
        row[0]
        for row in connection.execute(
            f"""SELECT rowid FROM takes WHERE added_generation <= 1 AND (removed_generation IS NULL OR removed_generation > 1)
                AND ((' ' || {name_words_sql('author')} || ' ') LIKE ? ESCAPE '\\' OR lower(handle) = ?) ORDER BY rowid""",
            (pattern, handle),
        )
    ]
    assert sorted(reader.allowed_rows(connection, 1, Filters(author=author)).tolist()) == expected


def test_the_author_filter_reads_no_table_or_index_from_end_to_end(tmp_path):
    # Its names come from one seek per distinct author, its takes from the
    # author and handle indexes: the first filtered query no longer grows with the takes.
    connection = _authors_database(tmp_path / "takes.sqlite")
    clause, params = reader._visible_and(1, Filters(author="clark"))
    plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN SELECT rowid FROM takes WHERE {clause}", params)]
    assert not [step for step in plan if re.match(r"SCAN takes\b", step)], plan
