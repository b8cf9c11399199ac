"""In-process query latency (Takes.search, 300 queries per mode) and indexing throughput (1000 new takes, ONNX, no cache).

Run: ``PYTHONPATH=<checkout> .venv/bin/python bench/layering.py``, once per
checkout, alternating, in one sitting; it works on checkouts from before the
storage split (indexer/store.py) too, so a before/after comparison uses one
script.
"""
import json, statistics, sys, tempfile, time
from pathlib import Path

from bench.fixtures import bench_dir, build_seed_index, queries, seed_takes
from bench.common import percentiles_ms

try:
    from indexer.index import IndexWriter
except ImportError:  # a checkout from before the split
    from indexer.store import IndexWriter
try:
    from indexer.api import Takes
except ImportError:  # a checkout from before the front door moved
    from indexer.client import Takes
from embeddings import DEFAULT_MODEL, load_embedder

out = {}
index_dir = build_seed_index(bench_dir() / "seed-index")
takes = Takes(index_dir)
for mode in ("hybrid", "dense", "lexical"):
    for q in queries(30):
        takes.search(q, 10, mode=mode)
    lat = []
    for q in queries(300):
        t = time.perf_counter(); takes.search(q, 10, mode=mode); lat.append(time.perf_counter() - t)
    p50, p99 = percentiles_ms(lat)
    out[f"search {mode}"] = {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2)}
takes.close()
# Indexing: 3 rounds of replace_all of 1000 distinct takes into a fresh folder (no cache), onnx.
import dataclasses
seed = seed_takes()
embedder = load_embedder(DEFAULT_MODEL, "onnx", cache_dir=str(index_dir))
rates = []
for round_ in range(3):
    batch = [dataclasses.replace(seed[i % len(seed)], id=f"r{round_}-{i}", text=f"{seed[i % len(seed)].text} variant {round_} {i}") for i in range(1000)]
    with tempfile.TemporaryDirectory() as folder:
        t = time.perf_counter()
        with IndexWriter(folder) as writer:
            writer.replace_all(batch, embedder, model=DEFAULT_MODEL, backend="onnx")
        rates.append(len(batch) / (time.perf_counter() - t))
out["indexing onnx takes/s"] = {"median": round(statistics.median(rates), 1), "all": [round(r, 1) for r in rates]}
print(json.dumps(out))
