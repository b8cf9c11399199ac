"""Inputs every benchmark shares: the seed takes, an index of them, and queries."""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.common import REPO

DEV_JUDGMENTS = REPO / "tests" / "data" / "dev_queries.json"

# Questions a reader of AI-policy threads might ask; the dev queries are added when present.
EXTRA_QUERIES = [
    "what about compute governance",
    "guillotines",
    "should AI labs publish their models",
    "export controls on chips",
    "who measures AI capabilities",
    "regulation of frontier models",
    "open source and safety",
    "government should build evaluation capacity",
    "how fast is AI progressing",
    "AI and national security",
    "China and AI policy",
    "the role of academia in AI research",
    "monitoring AI systems after deployment",
    "what policymakers misunderstand about AI",
    "costs of training large models",
    "benchmarks are saturating",
    "AI and the labour market",
    "who should pay for public compute",
    "licensing AI developers",
    "audits of AI systems",
]


def queries(count: int) -> list[str]:
    """``count`` queries, cycling through the dev queries and the list above."""
    pool = list(EXTRA_QUERIES)
    if DEV_JUDGMENTS.exists():
        pool += [item["query"] for item in json.loads(DEV_JUDGMENTS.read_text())["queries"]]
    return [pool[index % len(pool)] for index in range(count)]


def seed_takes():
    from indexer import SEED_CORPUS
    from indexer.sources import read_takes

    return read_takes(SEED_CORPUS)


def build_seed_index(index_dir: Path, backend: str = "torch") -> Path:
    """An index of the seed corpus in ``index_dir`` (built once, reused by later runs)."""
    from embeddings import DEFAULT_MODEL, load_embedder
    from indexer.index.writer import IndexWriter

    import shutil

    index_dir = Path(index_dir)
    manifest = index_dir / "manifest.json"
    if manifest.exists():
        if json.loads(manifest.read_text()).get("backend", "torch") == backend:
            return index_dir
        shutil.rmtree(index_dir)  # left by an older version with another backend
    index_dir.mkdir(parents=True, exist_ok=True)
    embedder = load_embedder(DEFAULT_MODEL, backend, cache_dir=str(index_dir))
    with IndexWriter(index_dir) as writer:
        writer.replace_all(seed_takes(), embedder, model=DEFAULT_MODEL, backend=backend)
    return index_dir


def bench_dir() -> Path:
    path = Path(os.environ.get("TAKES_BENCH_DIR", "/tmp/takes-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path
