"""Where one /search request spends its time: cProfile over the handler's work in-process.

The handler runs in a worker thread under TestClient/uvicorn, out of a
profiler's sight, so this profiles what the handler does (``respond``)
plus the response serialization FastAPI performs, on the calling thread.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats

from bench.fixtures import queries

BUCKETS = {
    "model (tokenize + forward pass)": ("sentence_transformers", "torch", "transformers", "tokenizers", "onnxruntime", "embeddings/onnx.py"),
    "FAISS search": ("faiss",),
    "SQLite (FTS5 + rows)": ("sqlite3", "indexer/store.py"),
    "JSON + pydantic response": ("json", "pydantic", "schemas.py", "encoders.py"),
}


def run(index_dir, count: int = 200) -> dict:
    from fastapi.encoders import jsonable_encoder

    from indexer.serving import Searcher
    from search_api.routers.search import respond
    from search_api.schemas import SearchParams, SearchResponse
    searcher = Searcher(index_dir, threads=1)

    def one(query: str) -> bytes:
        response = respond(searcher, SearchParams(q=query, k=10))
        # What FastAPI does with a response_model: validate, then encode to JSON.
        return json.dumps(jsonable_encoder(SearchResponse.model_validate(response))).encode()

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
