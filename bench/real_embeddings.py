"""The bench's generated takes embedded by the real model, with their stored token vectors, kept on disk.

`python -m bench.real_embeddings N` embeds ``bench.postgres.synthetic_takes(N)``
with the shipped int8 model the way the writers do (`indexer.token_vectors.embed`:
one text per run, the pooled vector and the stored token vectors from the same
pass) and keeps them in chunks under TAKES_BENCH_DATA/embeddings-N, so an
interrupted run resumes where it stopped and the corpora built from them
(`bench.postgres.ScaleCorpora`) rank with late interaction, as the product does.
Run it at low priority: it is all model time (about 5 ms a take on one core).
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

CHUNK = 2_000


def folder_for(count: int) -> Path:
    return Path(os.environ.get("TAKES_BENCH_DATA", "/work/bench-data")) / f"embeddings-{count}"


def _chunk_path(folder: Path, number: int) -> Path:
    return folder / f"chunk-{number:04d}.pickle"


def _texts(count: int) -> list[str]:
    from bench.postgres import synthetic_takes

    return [take.text for take in synthetic_takes(count)]


def embed(count: int, texts: list[str] | None = None) -> Path:
    """Embed what is missing of the ``count`` takes' chunks (``texts``: theirs, when at hand); the folder holding them."""
    from embeddings import load_embedder
    from indexer import token_vectors

    folder = folder_for(count)
    folder.mkdir(parents=True, exist_ok=True)
    texts = _texts(count) if texts is None else texts
    embedder = None
    started = time.perf_counter()
    done = 0
    for number, start in enumerate(range(0, count, CHUNK)):
        path = _chunk_path(folder, number)
        if path.exists():
            continue
        embedder = embedder or load_embedder()
        chunk = texts[start : start + CHUNK]
        vectors, values = token_vectors.embed(embedder, chunk, store=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(pickle.dumps({"texts": chunk, "vectors": vectors, "token_values": values}, protocol=5))
        partial.replace(path)
        done += len(chunk)
        rate = done / (time.perf_counter() - started)
        print(f"{start + len(chunk):,} of {count:,} takes embedded ({rate:.0f}/s)", file=sys.stderr, flush=True)
    return folder


def load(count: int) -> tuple[np.ndarray, list[bytes | None]]:
    """The ``count`` takes' vectors and stored token vectors, in take order; embeds what is missing first."""
    texts = _texts(count)
    folder = embed(count, texts)
    vectors, values = [], []
    for number, start in enumerate(range(0, count, CHUNK)):
        chunk = pickle.loads(_chunk_path(folder, number).read_bytes())
        if chunk["texts"] != texts[start : start + CHUNK]:
            raise SystemExit(f"{_chunk_path(folder, number)} holds other texts than bench.postgres.synthetic_takes now makes: delete {folder}")
        vectors.append(chunk["vectors"])
        values.extend(chunk["token_values"])
    return np.concatenate(vectors).astype(np.float32), values


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=100_000)
    embed(parser.parse_args(argv).count)


if __name__ == "__main__":
    main()
