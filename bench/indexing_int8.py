"""int8 throughput with the weight products as stored (unsigned) against signed where this CPU makes them exact.

    .venv/bin/python -m bench.indexing_int8 --texts 1000 --rounds 3
    .venv/bin/python -m bench.indexing_int8 --texts 2000 --rounds 3 --baseline CHECKOUT

Two OnnxEmbedders of the shipped model in this process, one with
``signed_weights=False``, take turns over interleaved rounds (the shared
machine's speed drifts):

- indexing: ``encode`` over seed takes repeated and over generated varied
  takes (what `takes index` and `takes add` spend their time on: one text per
  model run, on the bulk worker threads); takes/s is wall clock, takes per
  CPU-second the process's CPU time;
- queries: one query at a time, CPU ms a query, over the dev and paraphrase
  queries.

Every vector and token vector of both is compared: the run stops if one bit
differs. On a CPU where signed products are not exact both embedders run the
file as stored and the bench says so.

With ``--baseline``, instead: ``takes index`` end to end (a JSONL file of
generated varied takes in threads of 5, into a fresh index folder, so every
text goes through the model), from this checkout and the other one
(``PYTHONPATH``) in turn; wall seconds from the command's start to its exit,
model load included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import REPO


def _queries() -> list[str]:
    queries = []
    for name in ("dev_queries.json", "paraphrase_queries.json"):
        queries += [item["query"] for item in json.loads((REPO / "tests" / "data" / name).read_text(encoding="utf-8"))["queries"]]
    return queries


def _write_takes(path: Path, count: int) -> None:
    from bench.take_texts import generate

    with path.open("w", encoding="utf-8") as file:
        for number, text in enumerate(generate(count, seed=5)):
            thread = number // 5
            take = {"id": f"bench-{number}", "text": text, "author": "Bench Author", "handle": "@bench",
                    "date": f"2024-{thread % 12 + 1:02d}-{thread % 28 + 1:02d}", "thread_id": f"bench-{thread}", "position": number % 5 + 1}
            file.write(json.dumps(take) + "\n")


def _revision(checkout: Path) -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True, check=True).stdout.strip()


def end_to_end(baseline: Path, count: int, rounds: int) -> None:
    """``takes index`` of ``count`` generated takes from ``baseline`` and from this checkout, in turn each round."""
    takes = Path(sys.executable).with_name("takes")
    checkouts = {f"{_revision(baseline)} (baseline)": baseline.resolve(), _revision(REPO): REPO}
    seconds: dict[str, list[float]] = {label: [] for label in checkouts}
    with tempfile.TemporaryDirectory(prefix="takes-index-bench-") as scratch:
        source = Path(scratch) / "takes.jsonl"
        _write_takes(source, count)
        for _ in range(rounds):
            for label, checkout in checkouts.items():
                index_dir = Path(scratch) / "index"
                shutil.rmtree(index_dir, ignore_errors=True)
                env = {**os.environ, "PYTHONPATH": str(checkout)}
                started = time.perf_counter()
                subprocess.run([str(takes), "index", str(source), "--index-dir", str(index_dir)], env=env, cwd=checkout,
                               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                seconds[label].append(time.perf_counter() - started)
                print(f"[indexing_int8] {label}: {seconds[label][-1]:.2f} s", file=sys.stderr, flush=True)
    (before, after) = seconds.values()
    print(f"| code | `takes index` of {count:,} generated takes, s (median) | takes/s | each round, s | this checkout's takes/s over the baseline's, each round |")
    print("| --- | ---: | ---: | --- | --- |")
    for label, values in seconds.items():
        ratios = ", ".join(f"{b / a:.2f}" for b, a in zip(before, after)) if values is after else ""
        print(f"| {label} | {statistics.median(values):.2f} | {count / statistics.median(values):.0f} | {', '.join(f'{v:.2f}' for v in values)} | {ratios} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.indexing_int8")
    parser.add_argument("--texts", type=int, default=1000, help="takes in each indexing corpus")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="time `takes index` end to end from this checkout and the other one instead")
    args = parser.parse_args(argv)
    if args.baseline is not None:
        end_to_end(args.baseline, args.texts, args.rounds)
        return
    from bench.indexing import texts as seed_texts
    from bench.take_texts import generate
    from embeddings import DEFAULT_MODEL
    from embeddings.onnx import OnnxEmbedder

    embedders = {"as stored": OnnxEmbedder(DEFAULT_MODEL, signed_weights=False), "signed": OnnxEmbedder(DEFAULT_MODEL)}
    if not embedders["signed"].signed_weights:
        print("signed products are not exact on this CPU (or the model has no unsigned weights): both run the file as stored")
    corpora = {"seed takes repeated": seed_texts(args.texts), "generated varied takes": generate(args.texts, seed=3)}
    queries = _queries()

    for texts in (*corpora.values(), queries):
        stored, stored_tokens = embedders["as stored"].encode_with_token_vectors(texts)
        signed, signed_tokens = embedders["signed"].encode_with_token_vectors(texts)
        if not np.array_equal(stored, signed) or not all(map(np.array_equal, stored_tokens, signed_tokens)):
            raise SystemExit("the signed weights changed a vector: not the same model")
    print(f"vectors and token vectors bit-identical over {sum(map(len, corpora.values())) + len(queries)} texts")

    results = {}
    for corpus, texts in corpora.items():
        rounds = {name: [] for name in embedders}
        for _ in range(args.rounds):
            for name, embedder in embedders.items():
                wall, cpu = time.perf_counter(), time.process_time()
                embedder.encode(texts)
                rounds[name].append((len(texts) / (time.perf_counter() - wall), len(texts) / (time.process_time() - cpu)))
        results[corpus] = rounds
    query_rounds = {name: [] for name in embedders}
    for _ in range(args.rounds):
        for name, embedder in embedders.items():
            cpu = time.process_time()
            for query in queries * 5:
                embedder.encode([query])
            query_rounds[name].append((time.process_time() - cpu) / (len(queries) * 5) * 1000)

    print("| texts | as stored takes/s | signed takes/s | as stored takes/CPU-s | signed takes/CPU-s | signed/stored wall (each round) | per CPU-s (each round) |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for corpus, rounds in results.items():
        before, after = rounds["as stored"], rounds["signed"]
        wall = [a[0] / b[0] for b, a in zip(before, after)]
        cpu = [a[1] / b[1] for b, a in zip(before, after)]
        print(
            f"| {corpus} ({len(corpora[corpus]):,}) | {statistics.median(v[0] for v in before):.1f} | {statistics.median(v[0] for v in after):.1f} "
            f"| {statistics.median(v[1] for v in before):.1f} | {statistics.median(v[1] for v in after):.1f} "
            f"| {', '.join(f'{r:.2f}' for r in wall)} | {', '.join(f'{r:.2f}' for r in cpu)} |"
        )
    before, after = query_rounds["as stored"], query_rounds["signed"]
    print(
        f"\nqueries ({len(queries)} x 5, one at a time): CPU ms a query as stored {statistics.median(before):.2f}, "
        f"signed {statistics.median(after):.2f}; signed/stored each round {', '.join(f'{a / b:.2f}' for b, a in zip(before, after))}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
