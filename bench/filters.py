"""Filtered vector search at 1M takes: author and date filters passing 0.1%, 10% and 50% of the takes.

The index is built directly, not through the writer (embedding a million
texts would take hours): the SQLite database from ``layout.SCHEMA`` with
synthetic rows (no FTS text: vector search does not read it), and the FAISS
index from ``ann.build_index`` over clustered synthetic unit vectors
(``bench.scale.synthetic``), served through the real ``EmbeddedGeneration``.

"before" is the previous code path, kept here: the author matched by LIKE
over every row, the day compared without an index, the passing rows read
from SQL on every query and handed to FAISS as an ``IDSelectorBatch`` at the
usual nprobe. "after" is the code as it is: the filter indexes, the passing
rows cached per generation and filter, exact search for selective filters,
a bitmap selector with enough IVF lists probed for broad ones.

Usage: python -m bench.filters [count] [queries]
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine, percentiles_ms
from bench.scale import DIM, queries_for, synthetic
from indexer import ann
from indexer.index import EmbeddedGeneration, reader
from indexer.index.layout import SCHEMA, connect, database_path
from indexer.index.manifest import Manifest
from indexer.index.snapshot import Snapshot
from indexer.search import FUSION_DEPTH
from indexer.storage import Filters

K = 10
# What the Ranker asks the store for when k is 10.
DEPTH = max(2 * K, FUSION_DEPTH)
DAYS = 1000
START = datetime.date(2020, 1, 1)
NEW_INDEXES = ("takes_author", "takes_handle", "takes_day")

FILTERS = {
    "author 0.1%": Filters(author="Ada Lovelace"),
    "author 10%": Filters(author="Grace Hopper"),
    "author 50%": Filters(author="Alan Turing"),
    "date 0.1%": Filters(since=str(START), until=str(START)),
    "date 10%": Filters(since=str(START), until=str(START + datetime.timedelta(days=DAYS // 10 - 1))),
    "date 50%": Filters(since=str(START), until=str(START + datetime.timedelta(days=DAYS // 2 - 1))),
}


def _schema_without_new_indexes() -> str:
    return "\n".join(line for line in SCHEMA.splitlines() if not any(name in line for name in NEW_INDEXES))


def build_database(index_dir: Path, count: int, seed: int = 0) -> None:
    """``count`` live takes of generation 1: 0.1%, 10% and 50% by three authors, the rest by 500 others; days spread evenly."""
    rng = np.random.default_rng(seed)
    share = rng.random(count)
    names = np.where(
        share < 0.001, "Ada Lovelace", np.where(share < 0.101, "Grace Hopper", np.where(share < 0.601, "Alan Turing", ""))
    )
    others = rng.integers(0, 500, count)
    days = rng.permutation(np.arange(count) % DAYS)
    index_dir.mkdir(parents=True, exist_ok=True)
    connection = connect(database_path(index_dir))
    connection.executescript(_schema_without_new_indexes())
    # A throwaway database: no fsync per commit (with it, 1M rows took over 25 minutes on a busy disk).
    connection.execute("PRAGMA synchronous = OFF")

    def rows():
        for number in range(count):
            name = names[number] or f"Writer {others[number]:03d}"
            handle = "@" + name.lower().replace(" ", "")
            day = (START + datetime.timedelta(days=int(days[number]))).isoformat()
            yield (
                number + 1, f"take-{number}", f"synthetic take {number}", name, handle, day + "T12:00:00Z",
                f"thread-{number // 8}", number % 8, 8, None, "bench", f"key-{number}", 1,
            )

    with connection:
        connection.executemany(
            "INSERT INTO takes (row_id, id, text, author, handle, date, thread_id, position, thread_size, url, source,"
            " text_key, added_generation) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows(),
        )
    connection.close()


def add_new_indexes(index_dir: Path) -> float:
    connection = connect(database_path(index_dir))
    started = time.perf_counter()
    connection.executescript(SCHEMA)
    connection.execute("ANALYZE")
    connection.commit()
    connection.close()
    return time.perf_counter() - started


# -- the previous code path ------------------------------------------------------


def _old_filter_sql(filters: Filters) -> tuple[str, tuple]:
    clauses, params = ["1"], []
    if filters.author:
        wanted = " ".join(filters.author.split()).lower()
        name = "lower(takes.author)"
        for separator in ",.;:()[]/|":
            name = f"replace({name}, '{separator}', ' ')"
        clauses.append(f"((' ' || {name} || ' ') LIKE ? ESCAPE '\\' OR lower(takes.handle) = ?)")
        params += [f"% {wanted} %", "@" + wanted.lstrip("@")]
    if filters.since:
        clauses.append("substr(takes.date, 1, 10) >= ?")
        params.append(filters.since)
    if filters.until:
        clauses.append("substr(takes.date, 1, 10) <= ?")
        params.append(filters.until)
    return " AND ".join(clauses), tuple(params)


def old_nearest(generation: EmbeddedGeneration, connection: sqlite3.Connection, vector: np.ndarray, filters: Filters):
    import faiss

    clause, params = _old_filter_sql(filters)
    rows = connection.execute(
        "SELECT rowid FROM takes WHERE takes.added_generation <= 1 AND (takes.removed_generation IS NULL"
        f" OR takes.removed_generation > 1) AND {clause}",
        params,
    )
    allowed = np.fromiter((row[0] for row in rows), dtype=np.int64)
    index = generation.faiss_index
    params = ann.search_parameters(generation.info.index_type, faiss.IDSelectorBatch(allowed))
    scores, ids = index.search(np.atleast_2d(vector).astype(np.float32), min(DEPTH, index.ntotal), params=params)
    return [(int(row_id), float(score)) for row_id, score in zip(ids[0], scores[0]) if row_id >= 0]


# -- measuring -------------------------------------------------------------------


def _time(search, queries: np.ndarray, wanted: int) -> dict:
    seconds, short = [], 0
    first = None
    for query in queries:
        started = time.perf_counter()
        found = search(query)
        elapsed = time.perf_counter() - started
        first = elapsed if first is None else first
        seconds.append(elapsed)
        short += len(found) < wanted
    p50, p99 = percentiles_ms(seconds[1:] or seconds)
    return {"first_ms": round(first * 1000, 1), "p50_ms": p50, "p99_ms": p99, "queries_short_of_depth": short, "queries": len(queries)}


def run(count: int = 1_000_000, query_count: int = 200, old_query_count: int = 6) -> dict:
    faiss_threads()
    with tempfile.TemporaryDirectory(prefix="takes-filters-") as folder:
        index_dir = Path(folder) / "index"
        started = time.perf_counter()
        build_database(index_dir, count)
        database_s = time.perf_counter() - started
        vectors = synthetic(count)
        index_type = ann.index_type_for(count)
        started = time.perf_counter()
        faiss_index = ann.build_index(index_type, DIM, vectors, np.arange(1, count + 1, dtype=np.int64))
        build_s = time.perf_counter() - started
        queries = queries_for(vectors, query_count)
        del vectors
        manifest = Manifest(model="synthetic", dim=DIM, count=count, generation=1, index_type=index_type)
        snapshot = Snapshot(manifest=manifest, faiss_index=faiss_index, loaded_at=time.time())
        connections = reader.ThreadConnections(index_dir)
        passing = {}
        connection = connections.get()
        for label, filters in FILTERS.items():
            clause, params = _old_filter_sql(filters)
            passing[label] = connection.execute(f"SELECT count(*) FROM takes WHERE {clause}", params).fetchone()[0]
        results = {"unfiltered": {}}
        before_generation = EmbeddedGeneration(snapshot, connections, index_dir)
        results["unfiltered"]["before"] = _time(lambda q: before_generation.nearest(q, DEPTH, Filters()), queries, DEPTH)
        for label, filters in FILTERS.items():
            results[label] = {
                "before": _time(
                    lambda q, f=filters: old_nearest(before_generation, connection, q, f),
                    queries[:old_query_count],
                    min(DEPTH, passing[label]),
                )
            }
        connections.close()
        indexes_s = add_new_indexes(index_dir)
        connections = reader.ThreadConnections(index_dir)
        after_generation = EmbeddedGeneration(snapshot, connections, index_dir)
        results["unfiltered"]["after"] = _time(lambda q: after_generation.nearest(q, DEPTH, Filters()), queries, DEPTH)
        for label, filters in FILTERS.items():
            results[label]["after"] = _time(
                lambda q, f=filters: after_generation.nearest(q, DEPTH, f), queries, min(DEPTH, passing[label])
            )
            results[label]["passing"] = passing[label]
        connections.close()
    return {
        "count": count,
        "index_type": index_type,
        "depth": DEPTH,
        "database_build_s": round(database_s, 1),
        "faiss_build_s": round(build_s, 1),
        "filter_indexes_s": round(indexes_s, 1),
        "results": results,
        "machine": machine(),
    }


def faiss_threads() -> None:
    # One OpenMP thread per search, as the Searcher sets for a request thread.
    import faiss

    faiss.omp_set_num_threads(1)


def main(argv: list[str]) -> None:
    count = int(argv[0]) if argv else 1_000_000
    query_count = int(argv[1]) if len(argv) > 1 else 200
    report = run(count, query_count)
    print(json.dumps(report, indent=2))
    print(f"\n{'filter':<13} {'passing':>8}  {'before p50/p99 ms':>18} {'first':>7}  {'after p50/p99 ms':>17} {'first':>7}  short before/after")
    for label, row in report["results"].items():
        before, after = row["before"], row["after"]
        print(
            f"{label:<13} {row.get('passing', count):>8}  {before['p50_ms']:>8.2f}/{before['p99_ms']:<8.2f} {before['first_ms']:>7}"
            f"  {after['p50_ms']:>8.2f}/{after['p99_ms']:<8.2f} {after['first_ms']:>7}"
            f"  {before['queries_short_of_depth']}/{before['queries']}, {after['queries_short_of_depth']}/{after['queries']}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
