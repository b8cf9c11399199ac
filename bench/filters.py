"""Filtered vector search at 1M takes: author and date filters passing 0.1%, 10% and 50% of the takes.

The index is built directly, not through the writer (embedding a million
texts would take hours): the SQLite database from ``layout.SCHEMA`` with
synthetic rows and their FTS5 index, and the FAISS index from
``ann.build_index`` over clustered synthetic unit vectors
(``bench.scale.synthetic``), served through the real ``EmbeddedGeneration``.
Both are built once under /work/bench-data/filters-COUNT (``TAKES_BENCH_DATA``
moves it) and reused while the code that makes them is unchanged.

The figures are the code as it is: p50/p99 after the first query, which
also pays the filter's SQL, and the recall of the top DEPTH (and of its
first K) against the exact ones among the passing takes (FAISS probing every list). ``--old`` adds six queries through the path
before the filter indexes, kept here: the author matched by LIKE over every
row, the passing rows read from SQL on every query and handed to FAISS as an
``IDSelectorBatch`` at the usual nprobe.

``--real-recall`` instead measures recall only, with random filters over the
80k real vectors bench.scale_compressed embedded (synthetic vectors beyond a
query's own topic are near ties, which makes their recall at depth 50 a
lottery at 1-10% filters).

Usage: python -m bench.filters [count] [queries] [--old] | --real-recall
"""

from __future__ import annotations

import datetime
import hashlib
import inspect
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import machine, percentiles_ms
from bench.scale import DIM, queries_for, synthetic
from indexer import ann
from indexer.index import EmbeddedGeneration, reader
from indexer.index.layout import SCHEMA, database_path
from indexer.index.manifest import Manifest
from indexer.index.snapshot import Snapshot
from indexer.search import FUSION_DEPTH
from indexer.storage import Filters

K = 10
# What the Ranker asks the store for when k is 10.
DEPTH = max(2 * K, FUSION_DEPTH)
DAYS = 1000
# Queries whose results are compared with the exact top DEPTH among the passing takes.
RECALL_QUERIES = 20
START = datetime.date(2020, 1, 1)
CORPUS_CACHE = Path(os.environ.get("TAKES_BENCH_DATA", "/work/bench-data")) / "filters"

FILTERS = {
    "author 0.1%": Filters(author="Ada Lovelace"),
    "author 10%": Filters(author="Grace Hopper"),
    "author 50%": Filters(author="Alan Turing"),
    "date 0.1%": Filters(since=str(START), until=str(START)),
    "date 1%": Filters(since=str(START), until=str(START + datetime.timedelta(days=DAYS // 100 - 1))),
    "date 10%": Filters(since=str(START), until=str(START + datetime.timedelta(days=DAYS // 10 - 1))),
    "date 50%": Filters(since=str(START), until=str(START + datetime.timedelta(days=DAYS // 2 - 1))),
}


def build_database(index_dir: Path, count: int, seed: int = 0) -> None:
    """``count`` live takes of generation 1: 0.1%, 10% and 50% by three authors, the rest by 500 others; days spread evenly.

    Built in bulk: the rows into the bare table in one transaction with no
    journal or fsync and a large page cache, then the indexes and the FTS5
    index made over them in one pass each (inserting under the indexes,
    with SQLite's default 2 MB cache, took over 25 minutes at 1M).
    """
    rng = np.random.default_rng(seed)
    share = rng.random(count)
    names = np.where(
        share < 0.001, "Ada Lovelace", np.where(share < 0.101, "Grace Hopper", np.where(share < 0.601, "Alan Turing", ""))
    )
    others = rng.integers(0, 500, count)
    days = rng.permutation(np.arange(count) % DAYS)
    index_dir.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(database_path(index_dir), isolation_level=None)
    for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -1000000", "temp_store = MEMORY"):
        connection.execute(f"PRAGMA {pragma}")
    table = SCHEMA[SCHEMA.index("CREATE TABLE IF NOT EXISTS takes") :]
    connection.executescript(table[: table.index("\n);") + 3])

    def rows():
        for number in range(count):
            name = names[number] or f"Writer {others[number]:03d}"
            handle = "@" + name.lower().replace(" ", "")
            day = (START + datetime.timedelta(days=int(days[number]))).isoformat()
            yield (
                number + 1, f"take-{number}", f"synthetic take {number} about {name.lower()}", name, handle,
                day + "T12:00:00Z", f"thread-{number // 8}", number % 8, 8, None, "bench", f"key-{number}", 1,
            )

    connection.execute("BEGIN")
    connection.executemany(
        "INSERT INTO takes (row_id, id, text, author, handle, date, thread_id, position, thread_size, url, source,"
        " text_key, added_generation) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        rows(),
    )
    connection.execute("COMMIT")
    connection.executescript(SCHEMA)
    connection.execute("INSERT INTO takes_fts(takes_fts) VALUES ('rebuild')")
    connection.execute("ANALYZE")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.close()


def _recipe(count: int) -> str:
    """What a cached corpus was built from: its size and the code that makes its rows, vectors and index."""
    digest = hashlib.sha256(str(count).encode())
    for source in (build_database, synthetic, ann.build_index, ann.index_type_for):
        digest.update(inspect.getsource(source).encode())
    digest.update(SCHEMA.encode())
    return digest.hexdigest()[:16]


class FilterCorpus:
    """The ``count``-take database, FAISS index and queries, built once under CORPUS_CACHE and reused while the recipe holds.

    A run only reads it (read-only connections, an index read from its file).
    """

    def __init__(self, count: int, folder: Path = CORPUS_CACHE):
        self.count = count
        self.folder = folder.with_name(f"{folder.name}-{count}")
        self.index_dir = self.folder / "index"
        self.recipe_file = self.folder / "recipe.json"

    def open(self, query_count: int) -> dict:
        """Build the corpus if missing or stale; what the build took."""
        recipe = _recipe(self.count)
        built = json.loads(self.recipe_file.read_text()) if self.recipe_file.exists() else {}
        if built.get("recipe") == recipe and built.get("queries", 0) >= query_count:
            return built
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        import faiss

        started = time.perf_counter()
        build_database(self.index_dir, self.count)
        database_s = time.perf_counter() - started
        vectors = synthetic(self.count)
        index_type = ann.index_type_for(self.count)
        started = time.perf_counter()
        index = ann.build_index(index_type, DIM, vectors, np.arange(1, self.count + 1, dtype=np.int64))
        faiss_s = time.perf_counter() - started
        faiss.write_index(index, str(self.folder / "vectors.faiss"))
        np.save(self.folder / "queries.npy", queries_for(vectors, max(query_count, 200)))
        built = {
            "recipe": recipe, "takes": self.count, "index_type": index_type, "queries": max(query_count, 200),
            "database_build_s": round(database_s, 1), "faiss_build_s": round(faiss_s, 1),
        }
        self.recipe_file.write_text(json.dumps(built))
        return built

    def snapshot(self, index_type: str) -> Snapshot:
        import faiss

        index = faiss.read_index(str(self.folder / "vectors.faiss"))
        if hasattr(index, "nprobe"):
            index.nprobe = ann.IVF_NPROBE
        manifest = Manifest(model="synthetic", dim=DIM, count=self.count, generation=1, index_type=index_type)
        return Snapshot(manifest=manifest, faiss_index=index, loaded_at=time.time())

    def queries(self, query_count: int) -> np.ndarray:
        return np.load(self.folder / "queries.npy")[:query_count]


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


def recall(generation: EmbeddedGeneration, queries: np.ndarray, filters: Filters) -> dict:
    """Share of the exact top DEPTH (and top K) among the passing takes that ``nearest`` returns, FAISS probing every list for the exact ones."""
    import faiss

    index = generation.faiss_index
    rows = generation._allowed(filters)
    params = ann.search_parameters(generation.info.index_type, rows.selector() if rows is not None else None)
    if isinstance(params, faiss.SearchParametersIVF):
        params.nprobe = faiss.extract_index_ivf(index).nlist
    at_depth, at_k = [], []
    for query in queries:
        _, exact = index.search(query[None, :].astype(np.float32), DEPTH, params=params)
        truth = [int(row_id) for row_id in exact[0] if row_id >= 0]
        got = [row_id for row_id, _ in generation.nearest(query, DEPTH, filters)]
        at_depth.append(len(set(truth) & set(got)) / max(1, len(truth)))
        at_k.append(len(set(truth[:K]) & set(got[:K])) / max(1, len(truth[:K])))
    return {"depth": round(float(np.mean(at_depth)), 3), "k": round(float(np.mean(at_k)), 3)}


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


def run(count: int = 1_000_000, query_count: int = 200, old_query_count: int = 0) -> dict:
    """Time every filter through the current code (and, with ``old_query_count``, the previous LIKE path)."""
    faiss_threads()
    corpus = FilterCorpus(count)
    built = corpus.open(query_count)
    index_type = built["index_type"]
    started = time.perf_counter()
    snapshot = corpus.snapshot(index_type)
    load_s = time.perf_counter() - started
    queries = corpus.queries(query_count)
    connections = reader.ThreadConnections(corpus.index_dir)
    connection = connections.get()
    passing = {}
    for label, filters in FILTERS.items():
        clause, params = _old_filter_sql(filters)
        passing[label] = connection.execute(f"SELECT count(*) FROM takes WHERE {clause}", params).fetchone()[0]
    generation = EmbeddedGeneration(snapshot, connections, corpus.index_dir)
    results = {"unfiltered": {"after": _time(lambda q: generation.nearest(q, DEPTH, Filters()), queries, DEPTH)}}
    results["unfiltered"]["recall"] = recall(generation, queries[:RECALL_QUERIES], Filters())
    for label, filters in FILTERS.items():
        row = results[label] = {"passing": passing[label]}
        if old_query_count:
            row["before"] = _time(
                lambda q, f=filters: old_nearest(generation, connection, q, f), queries[:old_query_count], min(DEPTH, passing[label])
            )
        row["after"] = _time(lambda q, f=filters: generation.nearest(q, DEPTH, f), queries, min(DEPTH, passing[label]))
        row["recall"] = recall(generation, queries[:RECALL_QUERIES], filters)
    connections.close()
    return {
        "count": count,
        "index_type": index_type,
        "depth": DEPTH,
        "build": built,
        "index_load_s": round(load_s, 1),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "results": results,
        "machine": machine(),
    }


def real_recall(shares=(0.001, 0.01, 0.02, 0.05, 0.1, 0.5), query_count: int = 40) -> list[dict]:
    """Recall of filtered search on the real int8-model vectors of bench.scale_compressed (random filters of each share)."""
    from bench.scale_compressed import DATA
    from indexer.index.snapshot import AllowedRows, _exact_is_cheaper, nearest

    import faiss

    faiss_threads()
    vectors = np.concatenate([np.load(part) for part in sorted((DATA / "real-chunks").glob("[0-9]*[0-9].npy"))]).astype(np.float32)
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    index_type = ann.index_type_for(len(vectors))
    index = ann.build_index(index_type, DIM, vectors, ids)
    manifest = Manifest(model="real", dim=DIM, count=len(vectors), generation=1, index_type=index_type)
    snapshot = Snapshot(manifest=manifest, faiss_index=index, loaded_at=time.time())
    rng = np.random.default_rng(0)
    queries = vectors[rng.integers(0, len(vectors), query_count)] + 0.02 * rng.standard_normal((query_count, DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    lists = faiss.extract_index_ivf(index).nlist
    rows_out = []
    for share in (None, *shares):
        allowed = None if share is None else AllowedRows(np.sort(rng.choice(ids, int(len(ids) * share), replace=False)))
        params = ann.search_parameters(index_type, allowed.selector() if allowed is not None else None)
        params.nprobe = lists
        at_depth, at_k = [], []
        for query in queries:
            truth = [int(row_id) for row_id in index.search(query[None, :], DEPTH, params=params)[1][0]]
            got = [row_id for row_id, _ in nearest(snapshot, query, DEPTH, allowed)]
            at_depth.append(len(set(truth) & set(got)) / DEPTH)
            at_k.append(len(set(truth[:K]) & set(got[:K])) / K)
        path = "unfiltered" if allowed is None else "exact" if _exact_is_cheaper(snapshot, DEPTH, allowed) else "restricted"
        rows_out.append({
            "takes": len(ids), "index_type": index_type, "share": share, "passing": len(allowed) if allowed is not None else len(ids),
            "path": path, "recall_at_depth": round(float(np.mean(at_depth)), 3), "recall_at_k": round(float(np.mean(at_k)), 3),
        })
    return rows_out


def faiss_threads() -> None:
    # One OpenMP thread per search, as the Searcher sets for a request thread.
    import faiss

    faiss.omp_set_num_threads(1)


def main(argv: list[str]) -> None:
    if "--real-recall" in argv:
        for row in real_recall():
            print(json.dumps(row))
        return
    old = "--old" in argv
    argv = [arg for arg in argv if arg != "--old"]
    count = int(argv[0]) if argv else 1_000_000
    query_count = int(argv[1]) if len(argv) > 1 else 200
    report = run(count, query_count, 6 if old else 0)
    print(json.dumps(report, indent=2))
    print(f"\n{'filter':<13} {'passing':>8}  {'before p50/p99 ms':>18} {'first':>7}  {'p50/p99 ms':>17} {'first':>7}  short before/now")
    for label, row in report["results"].items():
        before, after = row.get("before"), row["after"]
        before_text = f"{before['p50_ms']:>8.2f}/{before['p99_ms']:<8.2f} {before['first_ms']:>7}" if before else f"{'-':>26}"
        short = f"{before['queries_short_of_depth']}/{before['queries']}, " if before else ""
        print(
            f"{label:<13} {row.get('passing', count):>8}  {before_text}"
            f"  {after['p50_ms']:>8.2f}/{after['p99_ms']:<8.2f} {after['first_ms']:>7}"
            f"  {short}{after['queries_short_of_depth']}/{after['queries']}  recall@{report['depth']} {row['recall']['depth']} @{K} {row['recall']['k']}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
