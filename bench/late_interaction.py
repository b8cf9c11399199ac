"""Late interaction (ColBERT-style MaxSim) over MiniLM token embeddings as a re-scorer of the dense top 50.

Run: ``python -m bench.late_interaction [--judgments FILE] [--index-dir DIR] [--first-stage dense|hybrid]``.

The first stage is the product's dense search with the default model
(``Searcher(...).search(mode="dense")``, the index's own backend), or its
hybrid search with ``--first-stage hybrid``. Each
candidate is then re-scored by MaxSim with the same model's token vectors
(sentence-transformers, torch, ``output_value="token_embeddings"``): for
every query token, its best cosine with any token of the take, averaged
over the query's tokens (so the score lies in [-1, 1] like a cosine). The
blend is ``weight * first-stage score + (1 - weight) * maxsim`` (the first
stage's score is the product's: a cosine, or the calibrated relevance once
the fusion gives one).

The blend weight (and whether the [CLS]/[SEP] tokens take part) is chosen by
5-fold cross-validation over the queries: fitted on four folds, scored on the
fifth, never on the queries it was fitted on. The folds are drawn again for
several seeds so that the figure does not rest on one split.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import numpy as np

from bench.common import machine
from bench.fixtures import DEV_JUDGMENTS, bench_dir, build_seed_index, seed_takes
from embeddings import DEFAULT_BACKEND, DEFAULT_MODEL
from search_api.settings import Settings
from embeddings.sentence_transformer import _load_sentence_transformer
from indexer.evaluation import Judged, load_judgments, score_ranking
from indexer.serving import Searcher
from indexer.openmp import limit_threads

DEPTH = 50
FOLDS = 5
SPLIT_SEEDS = range(10)
WEIGHTS = tuple(round(0.1 * step, 1) for step in range(11))  # 1.0 = dense alone, 0.0 = MaxSim alone
VARIANTS = ("all tokens", "no [CLS]/[SEP]")


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def token_vectors(model, texts: list[str], variant: str) -> list[np.ndarray]:
    """Unit-length token vectors per text (padding already dropped by sentence-transformers)."""
    tokens = model.encode(texts, output_value="token_embeddings", convert_to_numpy=True, show_progress_bar=False, batch_size=32)
    vectors = [np.asarray(t, dtype=np.float32) for t in tokens]
    if variant == "no [CLS]/[SEP]":
        vectors = [v[1:-1] if len(v) > 2 else v for v in vectors]
    return [unit_rows(v) for v in vectors]


def maxsim(query_tokens: np.ndarray, candidates: list[np.ndarray]) -> np.ndarray:
    """MaxSim of the query with each candidate: one matrix product over all their tokens."""
    stacked = np.vstack(candidates)
    starts = np.cumsum([0] + [len(tokens) for tokens in candidates[:-1]])
    similarities = query_tokens @ stacked.T  # (query tokens, all candidate tokens)
    return np.maximum.reduceat(similarities, starts, axis=1).mean(axis=0)


def ranked_texts(candidates: list[tuple[str, float, float]], weight: float) -> list[str]:
    """Candidates (text, first-stage score, maxsim) ordered by the blend, best first."""
    return [text for text, cosine, late in sorted(candidates, key=lambda c: -(weight * c[1] + (1 - weight) * c[2]))]


def folds_of(count: int, seed: int) -> list[list[int]]:
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return [order[start::FOLDS] for start in range(FOLDS)]


def cross_validated(ndcg: dict[tuple[str, float], list[float]], count: int, seed: int) -> tuple[float, list[float], list[tuple[str, float]]]:
    """Mean held-out nDCG@10, per-query held-out scores, and the setting each fold chose.

    Ties go to the setting nearest dense alone (the larger weight), then to the first variant.
    """
    held_out = [0.0] * count
    chosen = []
    settings = sorted(ndcg, key=lambda s: (-s[1], VARIANTS.index(s[0])))
    for fold in folds_of(count, seed):
        training = [i for i in range(count) if i not in fold]
        best = max(settings, key=lambda s: round(sum(ndcg[s][i] for i in training), 9))
        chosen.append(best)
        for i in fold:
            held_out[i] = ndcg[best][i]
    return sum(held_out) / count, held_out, chosen


def run(judgments: list[Judged], index_dir: Path, first_stage_mode: str = "dense") -> dict:
    """Score every (variant, weight) on every query, and the cross-validated blend."""
    searcher = Searcher(index_dir)
    model = _load_sentence_transformer(DEFAULT_MODEL)
    limit_threads(Settings().threads)
    # numpy's BLAS too: its second thread only waits for a core on a shared machine.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    takes = [take.text for take in seed_takes()]
    started = time.perf_counter()
    take_tokens = {variant: dict(zip(takes, token_vectors(model, takes, variant))) for variant in VARIANTS}
    index_seconds = time.perf_counter() - started
    token_counts = [len(v) for v in take_tokens["all tokens"].values()]

    first_stage = {}
    for judged in judgments:
        results = searcher.search(judged.query, k=DEPTH, mode=first_stage_mode)
        first_stage[judged.query] = [(r.take.text, float(r.score)) for r in results]

    ndcg: dict[tuple[str, float], list[float]] = {}
    query_encode_ms, maxsim_ms = [], []
    for variant in VARIANTS:
        for weight in WEIGHTS:
            ndcg[(variant, weight)] = []
        for judged in judgments:
            begun = time.process_time()
            query_tokens = token_vectors(model, [judged.query], variant)[0]
            encoded = time.process_time()
            stage = first_stage[judged.query]
            late = maxsim(query_tokens, [take_tokens[variant][text] for text, _ in stage])
            candidates = [(text, cosine, float(score)) for (text, cosine), score in zip(stage, late)]
            done = time.process_time()
            if variant == VARIANTS[0]:
                query_encode_ms.append((encoded - begun) * 1000)
                maxsim_ms.append((done - encoded) * 1000)
            for weight in WEIGHTS:
                ndcg[(variant, weight)].append(score_ranking(judged, ranked_texts(candidates, weight)).ndcg)
    searcher.close()

    count = len(judgments)
    runs = [cross_validated(ndcg, count, seed) for seed in SPLIT_SEEDS]
    return {
        "machine": machine(),
        "queries": [j.query for j in judgments],
        "ndcg": ndcg,
        "cv_means": [mean for mean, _, _ in runs],
        "cv_first_split": runs[0],
        "takes": len(takes),
        "take_tokens_mean": statistics.mean(token_counts),
        "take_tokens_encode_s": index_seconds / len(VARIANTS),
        "query_encode_ms_p50": statistics.median(query_encode_ms),
        "maxsim_ms_p50": statistics.median(maxsim_ms),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.late_interaction", description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=Path, default=DEV_JUDGMENTS)
    parser.add_argument("--index-dir", type=Path, help="an index of the seed (default: built once under the bench folder)")
    parser.add_argument("--first-stage", choices=("dense", "hybrid"), default="dense", help="the search whose top 50 is re-scored")
    arguments = parser.parse_args(argv)
    index_dir = arguments.index_dir or build_seed_index(bench_dir() / f"late-{DEFAULT_BACKEND}", backend=DEFAULT_BACKEND)
    judgments = load_judgments(arguments.judgments)
    result = run(judgments, index_dir, arguments.first_stage)
    ndcg = result["ndcg"]

    def average(values):
        return sum(values) / len(values)

    print(f"{len(judgments)} queries, first stage: {arguments.first_stage} top {DEPTH} of {index_dir}")
    print(f"{'weight on cosine':>16s}  " + "  ".join(f"{variant:>15s}" for variant in VARIANTS) + "   (mean nDCG@10 on all queries: in-sample)")
    for weight in WEIGHTS:
        print(f"{weight:16.1f}  " + "  ".join(f"{average(ndcg[(variant, weight)]):15.3f}" for variant in VARIANTS))
    dense = ndcg[(VARIANTS[0], 1.0)]  # weight 1 keeps the first stage's own order
    cv_mean, held_out, chosen = result["cv_first_split"]
    means = result["cv_means"]
    print(f"{arguments.first_stage} alone: {average(dense):.3f}")
    for variant in VARIANTS:
        print(f"MaxSim alone ({variant}): {average(ndcg[(variant, 0.0)]):.3f}")
    print(f"blend, 5-fold cross-validated: {cv_mean:.3f} on split seed 0 (chosen per fold: {chosen});")
    print(f"  over {len(means)} splits: mean {statistics.mean(means):.3f}, min {min(means):.3f}, max {max(means):.3f}")
    print(f"per query ({arguments.first_stage}, MaxSim all tokens, cross-validated blend split 0):")
    for i, query in enumerate(result["queries"]):
        print(f"  {query[:60]:60s} {dense[i]:.3f} {ndcg[(VARIANTS[0], 0.0)][i]:.3f} {held_out[i]:.3f}")
    worst = min(held_out[i] - dense[i] for i in range(len(dense)))
    print(f"largest per-query loss of the cross-validated blend against {arguments.first_stage} alone: {worst:+.3f}")
    print(
        f"cost: takes average {result['take_tokens_mean']:.1f} tokens "
        f"({result['take_tokens_mean'] * 384 * 4 / 1024:.1f} KiB of float32 per take to store); "
        f"CPU time: query token encode (torch) median {result['query_encode_ms_p50']:.1f} ms, "
        f"MaxSim over {DEPTH} candidates median {result['maxsim_ms_p50']:.2f} ms; "
        f"encoding the {result['takes']} seed takes' tokens {result['take_tokens_encode_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
