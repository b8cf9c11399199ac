"""Loading a large index: training IVF from the segments, or reusing the trained index saved by the last load.

    .venv/bin/python -m bench.cold_load [SIZES]      # default 100000,1000000

Each size is a synthetic index (generated takes, random unit vectors, written
through IndexWriter like bench.add_latency's) above the approximate-search
threshold. ``load_snapshot`` is what a server start, `takes search` and the
Python API do first. Three rounds each: without the saved file (train, fill,
save), then with it (read, no training). Medians. Then 20 takes are removed
and the index loaded again: the saved index drops them, still no training.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 3


def run(sizes=(100_000, 1_000_000)) -> list[dict]:
    from bench.add_latency import build_index
    from indexer.index.snapshot import load_snapshot
    from indexer.index.layout import TRAINED_INDEX_NAME as ANN_CACHE

    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="takes-cold-load-") as workdir:
            index_dir = Path(workdir) / "index"
            build_seconds = build_index(index_dir, size)
            full, cached = [], []
            for _ in range(ROUNDS):
                (index_dir / ANN_CACHE).unlink(missing_ok=True)
                started = time.perf_counter()
                snapshot = load_snapshot(index_dir)
                full.append(time.perf_counter() - started)
                del snapshot
                started = time.perf_counter()
                snapshot = load_snapshot(index_dir)
                cached.append(time.perf_counter() - started)
                index_type = snapshot.manifest.index_type
                del snapshot
            from indexer.index.writer import IndexWriter

            with IndexWriter(index_dir) as writer:
                writer.remove([f"synthetic-{thread}-1" for thread in range(20)])
            started = time.perf_counter()
            snapshot = load_snapshot(index_dir)
            after_removal = time.perf_counter() - started
            assert snapshot.manifest.count == size - 20
            del snapshot
            row = {
                "takes": size,
                "index_type": index_type,
                "write_s": build_seconds,
                "train_load_s": statistics.median(full),
                "cached_load_s": statistics.median(cached),
                "after_removal_s": after_removal,
                "cache_mib": (index_dir / ANN_CACHE).stat().st_size / 2**20,
            }
            rows.append(row)
            print(f"  {row}", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    sizes = tuple(int(size) for size in sys.argv[1].split(",")) if len(sys.argv) > 1 else (100_000, 1_000_000)
    rows = run(sizes)
    print("| takes | index | load, training IVF (and saving it) | load, reusing the saved index | load after removing 20 takes | saved file |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['takes']:,} | {row['index_type']} | {row['train_load_s']:.2f} s | {row['cached_load_s']:.2f} s | "
            f"{row['after_removal_s']:.2f} s | {row['cache_mib']:.0f} MiB |"
        )


if __name__ == "__main__":
    main()
