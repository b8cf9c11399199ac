"""Reproduce the fusion and thread-context comparisons in docs/QUALITY.md.

Run: ``.venv/bin/python -m bench.quality_experiments [JUDGMENTS]``. Everything
happens in memory on the bundled seed: each variant embeds or fuses the same
takes and is scored with the product's own eval.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

import numpy as np

from embeddings import load_embedder
from indexer import SEED_CORPUS
from indexer.evaluation import evaluate, load_judgments, mean
from indexer.index.reader import fts_match
from indexer.search import query_terms
from indexer.sources import read_takes

DEFAULT_JUDGMENTS = Path(__file__).resolve().parents[1] / "tests" / "data" / "dev_queries.json"
DEPTH = 50


def main() -> None:
    judgments = load_judgments(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_JUDGMENTS)
    takes = read_takes(SEED_CORPUS)
    embedder = load_embedder()
    own = embedder.encode([t.text for t in takes])
    queries = {j.query: embedder.encode([j.query])[0] for j in judgments}

    database = sqlite3.connect(":memory:")
    database.execute("CREATE VIRTUAL TABLE f USING fts5(text, tokenize='porter unicode61 remove_diacritics 2')")
    database.executemany("INSERT INTO f(rowid, text) VALUES (?, ?)", enumerate(t.text for t in takes))

    def lexical(query: str) -> list[tuple[int, float]]:
        match = fts_match(query_terms(query))
        if match is None:
            return []
        return database.execute(
            "SELECT rowid, -bm25(f) FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT ?", (match, DEPTH)
        ).fetchall()

    def ranked(vectors: np.ndarray, fusion):
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

        def search(query: str, k: int) -> list[str]:
            cosine = vectors @ queries[query]
            dense = [(int(i), float(cosine[i])) for i in np.argsort(-cosine)[:DEPTH]]
            order = fusion(dense, lexical(query), cosine)
            return [takes[i].text for i in order[:k]]

        return round(mean(evaluate(judgments, search))["ndcg@10"], 3)

    def blend(weight):
        def fuse(dense, words, cosine):
            best = max((s for _, s in words), default=0.0) or 1.0
            bm25 = dict(words)
            candidates = {i for i, _ in dense} | set(bm25)
            score = {i: weight * cosine[i] + (1 - weight) * bm25.get(i, 0.0) / best for i in candidates}
            return sorted(score, key=score.get, reverse=True)

        return fuse

    def rrf(constant, dense_weight=0.5):
        def fuse(dense, words, cosine):
            score: dict[int, float] = {}
            for weight, ranking in ((dense_weight, dense), (1 - dense_weight, words)):
                for rank, (i, _) in enumerate(ranking, start=1):
                    score[i] = score.get(i, 0.0) + 2 * weight / (constant + rank)
            return sorted(score, key=score.get, reverse=True)

        return fuse

    print("fusion (own-text vectors)            nDCG@10")
    print(f"  dense only                          {ranked(own, blend(1.0))}")
    for constant in (60, 10):
        print(f"  RRF k={constant:<3}                         {ranked(own, rrf(constant))}")
    print(f"  weighted RRF (0.8 dense)            {ranked(own, rrf(60, 0.8))}")
    for weight in (0.5, 0.6, 0.7, 0.8, 0.9):
        print(f"  blend dense weight {weight}              {ranked(own, blend(weight))}")

    by_thread: dict[str, list[int]] = {}
    for i, take in enumerate(takes):
        by_thread.setdefault(take.thread_id, []).append(i)
    previous = [by_thread[t.thread_id][max(0, by_thread[t.thread_id].index(i) - 1)] for i, t in enumerate(takes)]
    opener = [by_thread[t.thread_id][0] for t in takes]
    with_previous = embedder.encode(
        [f"{takes[p].text}\n{t.text}" if p != i else t.text for i, (t, p) in enumerate(zip(takes, previous))]
    )
    with_opener = embedder.encode(
        [f"{takes[o].text}\n{t.text}" if o != i else t.text for i, (t, o) in enumerate(zip(takes, opener))]
    )
    print("\nthread context                       dense   hybrid")
    for name, vectors in (
        ("take alone", own),
        ("previous take + take", with_previous),
        ("opening take + take", with_opener),
        ("take + 0.3 x previous vector", own + 0.3 * own[previous]),
    ):
        print(f"  {name:<34} {ranked(vectors, blend(1.0)):<7} {ranked(vectors, blend(0.9))}")


if __name__ == "__main__":
    main()
