"""Re-rank the dense top 30/50 with a cross-encoder: dev nDCG@10 before and after, and its cost.

Run: ``python -m bench.rerank_experiment CROSS_ENCODER_FOLDER [--judgments FILE]``.
The first stage is the product's own dense search (``Searcher(...).search(mode="dense")``)
with the default model over the bundled seed; the cross-encoder then orders the
top ``depth`` by its score alone.

No trained cross-encoder is installable here, so ``--seeded-stand-in`` builds one
from the shipped MiniLM layers with a seeded, untrained scoring head. Its
quality figures mean nothing; its latency is that of
cross-encoder/ms-marco-MiniLM-L-6-v2, which has the same architecture
(6 layers, 384 wide), so it prices the re-ranking step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import machine
from bench.fixtures import DEV_JUDGMENTS, bench_dir, build_seed_index
from embeddings import DEFAULT_BACKEND, resolve_model_path
from search_api.settings import Settings
from embeddings.reranker import CrossEncoderReranker
from indexer.evaluation import load_judgments, mean, score_ranking
from indexer.serving import Searcher
from indexer.openmp import limit_threads

DEPTHS = (30, 50)


def seeded_stand_in(folder: Path) -> Path:
    """A MiniLM-L6 cross-encoder with an untrained head: prices the step, judges nothing."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    CrossEncoder(resolve_model_path("all-MiniLM-L6-v2"), num_labels=1, device="cpu").save(str(folder))
    return folder


def run(reranker_path: Path, judgments_path: Path, index_dir: Path, repeats: int) -> dict:
    judgments = load_judgments(judgments_path)
    searcher = Searcher(index_dir)
    reranker = CrossEncoderReranker(reranker_path)
    limit_threads(Settings().threads)  # torch is loaded now: one thread, as the product runs
    depth = max(DEPTHS)
    first_stage = {j.query: [r.take.text for r in searcher.search(j.query, k=depth, mode="dense")] for j in judgments}
    rows = {"dense": [score_ranking(j, first_stage[j.query]) for j in judgments]}
    seconds = {cut: [] for cut in DEPTHS}
    # CPU seconds too: on shared cores the wall clock also counts waiting for a core.
    cpu_seconds = {cut: [] for cut in DEPTHS}
    for cut in DEPTHS:
        reranked = []
        for judged in judgments:
            texts = first_stage[judged.query][:cut]
            for _ in range(repeats):
                started, cpu_started = time.perf_counter(), time.process_time()
                scores = reranker.score(judged.query, texts)
                seconds[cut].append(time.perf_counter() - started)
                cpu_seconds[cut].append(time.process_time() - cpu_started)
            order = sorted(range(len(texts)), key=lambda i: -float(scores[i]))
            reranked.append(score_ranking(judged, [texts[i] for i in order]))
        rows[f"cross-encoder top {cut}"] = reranked
    searcher.close()
    return {
        "machine": machine(),
        "queries": len(judgments),
        "means": {name: {key: round(value, 3) for key, value in mean(scores).items()} for name, scores in rows.items()},
        "per_query_ndcg": {name: [round(s.ndcg, 3) for s in scores] for name, scores in rows.items()},
        "rerank_ms_p50": {cut: round(statistics.median(values) * 1000, 1) for cut, values in seconds.items()},
        "rerank_cpu_ms_p50": {cut: round(statistics.median(values) * 1000, 1) for cut, values in cpu_seconds.items()},
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rerank_experiment", description=__doc__.splitlines()[0])
    parser.add_argument("reranker", nargs="?", help="a local sentence-transformers CrossEncoder folder")
    parser.add_argument("--seeded-stand-in", action="store_true", help="price the step with an untrained MiniLM-L6 cross-encoder")
    parser.add_argument("--judgments", type=Path, default=DEV_JUDGMENTS)
    parser.add_argument("--index-dir", type=Path, help="an index of the seed (default: built once under the bench folder)")
    parser.add_argument("--repeats", type=int, default=3, help="timed re-rankings per query and depth")
    arguments = parser.parse_args(argv)
    if bool(arguments.reranker) == arguments.seeded_stand_in:
        parser.error("give a cross-encoder folder or --seeded-stand-in (one of them)")
    index_dir = arguments.index_dir or build_seed_index(bench_dir() / f"rerank-{DEFAULT_BACKEND}", backend=DEFAULT_BACKEND)
    with tempfile.TemporaryDirectory() as scratch:
        path = seeded_stand_in(Path(scratch)) if arguments.seeded_stand_in else Path(arguments.reranker)
        result = run(path, arguments.judgments, index_dir, arguments.repeats)
    if arguments.seeded_stand_in:
        print("seeded stand-in: the nDCG figures below are those of an untrained head; only the latency counts")
    print(f"{result['queries']} queries")
    print(f"{'ranking':28s} {'nDCG@10':>8s} {'recall@10':>10s} {'MRR':>6s}")
    for name, values in result["means"].items():
        print(f"{name:28s} {values['ndcg@10']:8.3f} {values['recall@10']:10.3f} {values['mrr']:6.3f}")
    for cut, milliseconds in result["rerank_ms_p50"].items():
        cpu = result["rerank_cpu_ms_p50"][cut]
        print(f"re-ranking {cut} takes: median {milliseconds} ms per query wall clock, {cpu} ms CPU (one thread)")


if __name__ == "__main__":
    main()
