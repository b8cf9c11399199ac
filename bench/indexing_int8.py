"""int8 indexing throughput before and after per-token activation scales, in one run (needs the recipe-3 model of branch speed-per-row).

    .venv/bin/python -m bench.indexing_int8

The recipe-2 model (one activation scale per batch tensor, so one text per
model run) comes from git (``--before``, default the last commit that shipped
it) into a scratch index folder; the current shipped model batches texts of
equal token count. Both run through OnnxEmbedder in this process, in
interleaved rounds (the shared machine's speed drifts); takes/s is wall
clock, takes per CPU-second is the process's CPU time, steadier when other
work shares the cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO

SHIPPED = "embeddings/shipped/all-MiniLM-L6-v2"


def _old_copy(commit: str, index_dir: Path) -> None:
    from embeddings import DEFAULT_MODEL
    from embeddings.onnx import model_cache_dir

    target = model_cache_dir(DEFAULT_MODEL, index_dir)
    shutil.copytree(REPO / SHIPPED, target)
    for relative in ("onnx/model_qint8_avx2.onnx", "takes-onnx.json"):
        blob = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{SHIPPED}/{relative}"], capture_output=True, check=True).stdout
        (target / relative).write_bytes(blob)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.indexing_int8")
    parser.add_argument("--before", default="76c0e44", help="a commit whose shipped model is recipe 2")
    parser.add_argument("--texts", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from bench.indexing import texts as seed_texts
    from bench.take_texts import generate
    from embeddings import DEFAULT_MODEL
    from embeddings.onnx import OnnxEmbedder

    scratch = Path(tempfile.mkdtemp(prefix="takes-int8-"))
    _old_copy(args.before, scratch / "before")
    embedders = {"before": OnnxEmbedder(DEFAULT_MODEL, cache_dir=scratch / "before"), "after": OnnxEmbedder(DEFAULT_MODEL, cache_dir=scratch / "after")}
    assert not embedders["before"]._runtime.per_row and embedders["after"]._runtime.per_row
    corpora = {"seed takes repeated": seed_texts(args.texts), "generated varied takes": generate(args.texts, seed=3)}
    results = {}
    for corpus, texts in corpora.items():
        for embedder in embedders.values():
            embedder.encode(texts[:64])
        rounds = {name: [] for name in embedders}
        for _ in range(args.rounds):
            for name, embedder in embedders.items():
                wall, cpu = time.perf_counter(), time.process_time()
                embedder.encode(texts)
                rounds[name].append((len(texts) / (time.perf_counter() - wall), len(texts) / (time.process_time() - cpu)))
        for name, values in rounds.items():
            results[(corpus, name)] = {
                "takes_per_s": statistics.median(value[0] for value in values),
                "takes_per_cpu_s": statistics.median(value[1] for value in values),
            }
        ratios = [after[0] / before[0] for before, after in zip(rounds["before"], rounds["after"])]
        cpu_ratios = [after[1] / before[1] for before, after in zip(rounds["before"], rounds["after"])]
        results[(corpus, "ratio")] = {"wall": ratios, "cpu": cpu_ratios}
    shutil.rmtree(scratch, ignore_errors=True)
    for key, value in results.items():
        print(key, json.dumps(value))


if __name__ == "__main__":
    main(sys.argv[1:])
