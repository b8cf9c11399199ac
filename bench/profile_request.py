"""Where one /search request spends its time: cProfile over the handler's work in-process.

The handler runs in a worker thread under TestClient/uvicorn, out of a
profiler's sight, so this profiles what the handler does on the calling
thread: validating the parameters and ``respond`` (search and the JSON body,
which the route writes itself). What the server adds around it (HTTP, the
thread hand-off) is the difference between bench.concurrency's server CPU
per request and this.
"""

from __future__ import annotations

import cProfile
import io
import pstats

from bench.fixtures import queries

BUCKETS = {
    "model (tokenize + forward pass)": ("sentence_transformers", "torch", "transformers", "tokenizers", "onnxruntime", "embeddings/onnx.py"),
    "FAISS search": ("faiss",),
    "SQLite (FTS5 + rows)": ("sqlite3", "indexer/store.py"),
    "JSON + pydantic (parameters, response body)": ("json", "pydantic", "schemas.py", "encoders.py", "models.py:to_dict"),
}


def run(index_dir, count: int = 200) -> dict:
    from indexer.api import Takes
    from search_api.routers.search import respond
    from search_api.schemas import SearchParams

    searcher = Takes(index_dir, threads=1).load()

    def one(query: str) -> bytes:
        return respond(searcher, SearchParams.model_validate({"q": query, "k": "10"})).body

    for query in queries(20):
        one(query)
    profiler = cProfile.Profile()
    profiler.enable()
    for query in queries(count):
        one(query)
    profiler.disable()
    searcher.close()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = 0.0
    rest = "rest (search logic, fusion, Python glue)"
    buckets = {name: 0.0 for name in BUCKETS} | {rest: 0.0}
    for (filename, _, function), (_, _, self_time, _, _) in stats.stats.items():
        total += self_time
        where = f"{filename}:{function}"
        for name, markers in BUCKETS.items():
            if any(marker in where for marker in markers):
                buckets[name] += self_time
                break
        else:
            buckets[rest] += self_time
    return {"requests": count, "per_request_ms": total / count * 1000, "share": {name: seconds / total for name, seconds in buckets.items()}}
