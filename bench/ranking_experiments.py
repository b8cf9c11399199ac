"""Cross-validated comparison of ranking methods (docs/QUALITY.md, "Ranking").

Run: ``.venv/bin/python -m bench.ranking_experiments [--backend onnx|torch]``.

Every method sees the same candidates the product fuses (the union of the
dense and lexical top 50 of the bundled seed) and the same features, and is
scored with the product's own eval. Methods with parameters are fitted on
four of five query folds and scored on the fifth, over several shuffles; no
score below is of a query its parameters were fitted on.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings import DEFAULT_MODEL, load_embedder
from indexer import SEED_CORPUS
from indexer.evaluation import Judged, fold, load_judgments, score_ranking
from indexer.index.reader import fts_match
from indexer.search import query_terms, STOPWORDS
from indexer.sources import read_takes

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
DEPTH = 50


@dataclass
class Query:
    judged: Judged
    set: str  # dev | own | offtopic
    candidates: np.ndarray  # take indexes
    features: dict[str, np.ndarray]  # name -> value per candidate
    grades: np.ndarray  # judged grade per candidate (0 when unjudged)


def load_queries():
    sets = [("dev", load_judgments(DATA / "dev_queries.json")), ("own", load_judgments(DATA / "paraphrase_queries.json"))]
    offtopic = json.loads((DATA / "offtopic_queries.json").read_text())["queries"]
    sets.append(("offtopic", [Judged(query, {}) for query in offtopic]))
    return sets


def build(backend: str):
    takes = read_takes(SEED_CORPUS)
    embedder = load_embedder(DEFAULT_MODEL, backend)
    vectors = embedder.encode([t.text for t in takes])
    database = sqlite3.connect(":memory:")
    database.execute("CREATE VIRTUAL TABLE f USING fts5(text, tokenize='porter unicode61 remove_diacritics 2')")
    database.executemany("INSERT INTO f(rowid, text) VALUES (?, ?)", enumerate(t.text for t in takes))
    total = len(takes)
    folded = [fold(t.text) for t in takes]
    # Neighbours in the thread, for thread-aware features.
    by_thread: dict[str, list[int]] = {}
    for index, take in enumerate(takes):
        by_thread.setdefault(take.thread_id, []).append(index)
    neighbours = {}
    for members in by_thread.values():
        members.sort(key=lambda i: takes[i].position)
        for place, index in enumerate(members):
            neighbours[index] = [members[j] for j in (place - 1, place + 1) if 0 <= j < len(members)]
    lengths = np.array([len(t.text.split()) for t in takes], dtype=float)
    # Sentence vectors: a take's best sentence, for queries that match one point of it.
    sentence_of = []
    sentences = []
    for index, take in enumerate(takes):
        parts = [part for part in re.split(r"(?<=[.!?])\s+|\n+", take.text) if len(part.split()) >= 3] or [take.text]
        sentences.extend(parts)
        sentence_of.extend([index] * len(parts))
    sentence_vectors = embedder.encode(sentences)
    sentence_of = np.array(sentence_of)

    def idf(term: str) -> float:
        count = database.execute("SELECT count(*) FROM f WHERE f MATCH ?", (f'"{term}"',)).fetchone()[0]
        return max(math.log((total - count + 0.5) / (count + 0.5)), 1e-6)

    queries = []
    for name, judged_set in load_queries():
        for judged in judged_set:
            query_vector = embedder.encode([judged.query])[0]
            cosine = vectors @ query_vector
            words = re.findall(r"\w+", judged.query)
            content = " ".join(w for w in words if w.casefold() not in STOPWORDS) or judged.query
            content_cos = vectors @ embedder.encode([content])[0]
            sentence_cos = np.full(total, -1.0)
            np.maximum.at(sentence_cos, sentence_of, sentence_vectors @ query_vector)
            top = np.argsort(-cosine)[:3]
            feedback = query_vector + 0.5 * vectors[top].mean(axis=0)
            prf_cos = vectors @ (feedback / np.linalg.norm(feedback))
            dense = list(np.argsort(-cosine)[:DEPTH])
            match = fts_match(query_terms(judged.query))
            bm25 = np.zeros(total)
            lexical = []
            idf_sum = 0.0
            if match is not None:
                for row, score in database.execute(
                    "SELECT rowid, -bm25(f) FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT ?", (match, DEPTH)
                ):
                    bm25[row] = score
                    lexical.append(row)
                idf_sum = sum(idf(term.strip('"')) for term in match.split(" OR "))
            candidates = np.array(sorted(set(dense) | set(lexical)))
            grades = np.zeros(len(candidates))
            for position, index in enumerate(candidates):
                for key, grade in judged.relevant.items():
                    if key in folded[index]:
                        grades[position] = max(grades[position], grade)
            best_bm25 = bm25.max() if bm25.max() > 0 else 1.0
            neighbour_cos = np.array([max((cosine[j] for j in neighbours[i]), default=0.0) for i in candidates])
            features = {
                "cos": cosine[candidates],
                "content_cos": content_cos[candidates],
                "sentence_cos": sentence_cos[candidates],
                "prf_cos": prf_cos[candidates],
                "bm25_rel": bm25[candidates] / best_bm25,
                "bm25_idf": bm25[candidates] / idf_sum if idf_sum else np.zeros(len(candidates)),
                "bm25_raw": bm25[candidates],
                "neighbour_cos": neighbour_cos,
                "short": (lengths[candidates] < 25).astype(float),
                "cos_gap": cosine[candidates] - cosine.max(),
                "dense_rank": np.array([dense.index(i) if i in dense else DEPTH for i in candidates], dtype=float),
                "lexical_rank": np.array([lexical.index(i) if i in lexical else DEPTH for i in candidates], dtype=float),
            }
            queries.append(Query(judged, name, candidates, features, grades))
    return takes, queries


def ndcg(query: Query, scores: np.ndarray, takes) -> float:
    order = query.candidates[np.argsort(-scores, kind="stable")]
    return score_ranking(query.judged, [takes[i].text for i in order[:10]]).ndcg


# -- methods: each is fit(train queries) -> score(query) -> per-candidate scores


def fixed(function):
    return lambda train, takes: function


def blend(weight):
    return lambda q: weight * q.features["cos"] + (1 - weight) * q.features["bm25_rel"]


def rrf(dense_weight, k=60):
    return lambda q: dense_weight / (k + q.features["dense_rank"]) + (1 - dense_weight) / (k + q.features["lexical_rank"])


def zscore_fusion(weight):
    def score(q):
        cos, bm = q.features["cos"], q.features["bm25_raw"]
        z = lambda x: (x - x.mean()) / (x.std() + 1e-9)
        return weight * z(cos) + (1 - weight) * z(bm)

    return score


def grid(factory, values):
    """Choose the value with the best mean nDCG on the training queries."""

    def fit(train, takes):
        best = max(values, key=lambda v: np.mean([ndcg(q, factory(v)(q), takes) for q in train if q.judged.relevant]))
        return factory(best)

    return fit


def design(q: Query, names) -> np.ndarray:
    columns = []
    for name in names:
        if "*" in name:
            left, right = name.split("*")
            columns.append(q.features[left] * q.features[right])
        else:
            columns.append(q.features[name])
    return np.column_stack(columns)


def logistic(names, target="any", c=1.0):
    from sklearn.linear_model import LogisticRegression

    def fit(train, takes):
        x = np.vstack([design(q, names) for q in train])
        grades = np.concatenate([q.grades for q in train])
        y = (grades >= (2 if target == "answer" else 1)).astype(int)
        weights = np.where(grades == 2, 2.0, 1.0)
        model = LogisticRegression(C=c, max_iter=2000).fit(x, y, sample_weight=weights)
        return lambda q: model.predict_proba(design(q, names))[:, 1]

    fit.names = names
    return fit


def cross_validate(method, queries, takes, folds=5, repeats=4):
    judged = [q for q in queries if q.judged.relevant]
    offtopic = [q for q in queries if not q.judged.relevant]
    per_query: dict[str, list[float]] = {}
    for repeat in range(repeats):
        order = np.random.default_rng(repeat).permutation(len(judged))
        for number in range(folds):
            test = [judged[i] for i in order[number::folds]]
            train = [judged[i] for i in order if i not in set(order[number::folds])] + offtopic
            scorer = method(train, takes)
            for q in test:
                per_query.setdefault(q.judged.query, []).append(ndcg(q, scorer(q), takes))
    return {query: float(np.mean(values)) for query, values in per_query.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="onnx")
    args = parser.parse_args()
    takes, queries = build(args.backend)
    sets = {q.judged.query: q.set for q in queries}
    methods = {
        "dense": fixed(lambda q: q.features["cos"]),
        "lexical": fixed(lambda q: q.features["bm25_raw"] + 1e-3 * q.features["cos"]),
        "blend 0.9 (before)": fixed(blend(0.9)),
        "blend, weight by CV": grid(blend, [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95]),
        "RRF k=60, weight by CV": grid(rrf, [0.3, 0.5, 0.6, 0.7, 0.8]),
        "z-score fusion, weight by CV": grid(zscore_fusion, [0.5, 0.6, 0.7, 0.8, 0.9]),
        "logistic cos+bm25_idf": logistic(["cos", "bm25_idf"]),
        "logistic cos+bm25_idf+cos*bm25_idf": logistic(["cos", "bm25_idf", "cos*bm25_idf"]),
        "logistic cos+bm25_idf+neighbour": logistic(["cos", "bm25_idf", "neighbour_cos"]),
        "logistic cos+bm25_idf+neighbour*short": logistic(["cos", "bm25_idf", "neighbour_cos*short"]),
        "logistic cos+bm25_idf+cos_gap": logistic(["cos", "bm25_idf", "cos_gap"]),
        "logistic cos+bm25_rel": logistic(["cos", "bm25_rel"]),
        "content_cos": fixed(lambda q: q.features["content_cos"]),
        "mean(cos, content_cos)": fixed(lambda q: q.features["cos"] + q.features["content_cos"]),
        "sentence_cos": fixed(lambda q: q.features["sentence_cos"]),
        "max(cos, sentence_cos)": fixed(lambda q: np.maximum(q.features["cos"], q.features["sentence_cos"])),
        "prf_cos": fixed(lambda q: q.features["prf_cos"]),
        "logistic cos+content+sentence+bm25_idf": logistic(["cos", "content_cos", "sentence_cos", "bm25_idf"]),
        "logistic cos+content+sentence+prf+bm25_idf": logistic(["cos", "content_cos", "sentence_cos", "prf_cos", "bm25_idf"]),
        "logistic cos+content+bm25_idf": logistic(["cos", "content_cos", "bm25_idf"]),
    }
    baseline = None
    print(f"{'method':<42} {'all':>6} {'dev':>6} {'own':>6}  worst drop vs before (dev)")
    for name, method in methods.items():
        scores = cross_validate(method, queries, takes)
        if name.startswith("blend 0.9"):
            baseline = scores
        by_set = {s: np.mean([v for k, v in scores.items() if sets[k] == s]) for s in ("dev", "own")}
        drop = ""
        if baseline is not None:
            worst = min(((scores[k] - baseline[k]), k) for k in scores if sets[k] == "dev")
            drop = f"{worst[0]:+.3f} {worst[1][:40]}"
        print(f"{name:<42} {np.mean(list(scores.values())):6.3f} {by_set['dev']:6.3f} {by_set['own']:6.3f}  {drop}")


if __name__ == "__main__":
    main()


def per_query_report(backend="onnx"):
    takes, queries = build(backend)
    for q in queries:
        if not q.judged.relevant:
            continue
        d = ndcg(q, q.features["cos"], takes)
        b = ndcg(q, blend(0.9)(q), takes)
        print(f"{q.set:4} {d:.3f} {b:.3f} {q.judged.query[:70]}")
