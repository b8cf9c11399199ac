"""Stored token vectors (indexer/token_vectors.py): their size and the MaxSim error of int8 against float32.

For every judged query (dev and paraphrase sets) and every seed take, MaxSim
(``indexer.ranking.late_evidence``, with the corpus's mean direction, as
ranking runs it) over the take's float32 token vectors and over the stored
int8 ones; prints the largest and mean absolute difference, how often the
order of two takes for a query flips, and the bytes a take's value takes.

With ``--timing`` it also indexes the seed into a scratch folder and times,
over rounds, what late interaction spends to get every candidate's token
vectors: reading the stored ones of all 99 takes (one query, checksums,
int8 to float32) against computing them with the model.

Usage: python -m bench.token_vectors [--timing]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine
from embeddings import load_embedder
from indexer import SEED_CORPUS, ranking, token_vectors
from indexer.sources import read_takes
from indexer.storage import Filters
from tests.conftest import REPO

JUDGMENTS = (REPO / "tests" / "data" / "dev_queries.json", REPO / "tests" / "data" / "paraphrase_queries.json")


def main() -> None:
    embedder = load_embedder()
    texts = [take.text for take in read_takes(SEED_CORPUS)]
    vectors, exact = embedder.encode_with_token_vectors(texts)
    values = [token_vectors.encode(tokens, text) for tokens, text in zip(exact, texts)]
    rounded = [token_vectors.decode(value, text, embedder.dim) for value, text in zip(values, texts)]
    mean = vectors.mean(axis=0)
    mean /= np.linalg.norm(mean)
    queries = [item["query"] for path in JUDGMENTS for item in json.loads(path.read_text())["queries"]]
    differences, flips, pairs = [], 0, 0
    for query in queries:
        _, query_tokens = embedder.encode_with_tokens(query)
        full = ranking.late_evidence(query_tokens, exact, mean)
        quantized = ranking.late_evidence(query_tokens, rounded, mean)
        differences.append(np.abs(full - quantized))
        order = np.sign(full[:, None] - full[None, :])
        flips += int(np.sum((order * np.sign(quantized[:, None] - quantized[None, :])) < 0)) // 2
        pairs += len(texts) * (len(texts) - 1) // 2
    difference = np.concatenate(differences)
    lengths = [len(tokens) for tokens in exact]
    print(machine())
    print(f"{len(texts)} seed takes, {len(queries)} queries")
    print(f"tokens per take: mean {statistics.mean(lengths):.1f}, max {max(lengths)}")
    print(f"bytes per take: mean {statistics.mean(map(len, values)):.0f} ({embedder.dim} + 4 a token, + 4)")
    print(f"float32 for comparison: mean {statistics.mean(lengths) * embedder.dim * 4:.0f}")
    print(f"MaxSim |int8 - float32|: max {difference.max():.5f}, mean {difference.mean():.6f}")
    print(f"pairs of takes whose MaxSim order flips: {flips} of {pairs}")
    if "--timing" in sys.argv:
        timing(embedder, texts)


def timing(embedder, texts, rounds: int = 20) -> None:
    from embeddings import DEFAULT_MODEL
    from indexer.index import EmbeddedStore

    with tempfile.TemporaryDirectory() as folder:
        store = EmbeddedStore(Path(folder) / "index")
        with store.writer() as writer:
            writer.replace_all(read_takes(SEED_CORPUS), embedder, model=DEFAULT_MODEL)
        generation = store.load()
        row_ids = [row_id for row_id, _ in generation.nearest(np.ones(embedder.dim, np.float32), len(texts), Filters())]
        read, computed = [], []
        for _ in range(rounds):
            start = time.perf_counter()
            generation.token_vectors(row_ids)
            read.append(time.perf_counter() - start)
            start = time.perf_counter()
            embedder.token_vectors(texts)
            computed.append(time.perf_counter() - start)
        store.close()
    print(
        f"token vectors of {len(row_ids)} candidates, median of {rounds}: read stored {1000 * statistics.median(read):.1f} ms, "
        f"computed {1000 * statistics.median(computed):.0f} ms (load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
