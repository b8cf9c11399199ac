"""Whether a change to the search left its answers alone: every result and score of this checkout against another's.

    python -m bench.same_results --baseline CHECKOUT [--queries 200]

A speed change that is meant to leave the ranking as it is (the second
stage's bookkeeping, say) must give the same takes in the same order with the
same scores. This runs ``--queries`` bench queries in every mode at k 3, 10
and 40 on the int8 seed index, once with this checkout's code and once with
``CHECKOUT``'s (a subprocess with ``PYTHONPATH`` at it), and prints how many of
the searches differ and the first few that do. The exit status is 1 when any
does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.fixtures import bench_dir, build_seed_index, queries

MODES = ("hybrid", "dense", "lexical")
KS = (3, 10, 40)


def results(index_dir: Path, count: int) -> list[list]:
    """[query, mode, k, [(take id, score), ...]] for every search, in a fixed order."""
    from indexer.api import Takes

    takes = Takes(index_dir, threads=1).load()
    out = []
    try:
        for query in queries(count):
            for mode in MODES:
                for k in KS:
                    out.append([query, mode, k, [[result.take.id, result.score] for result in takes.search(query, k, mode=mode)]])
    finally:
        takes.close()
    return out


def of_checkout(checkout: Path, index_dir: Path, count: int) -> list[list]:
    """``results`` as ``checkout``'s code gives them (this module lent to it, so any checkout will do)."""
    # Here, not at the top: the lent copy imports only what every checkout has.
    from bench.common import run_in_checkout

    program = f"import json, sys; from takes_same_results import results; json.dump(results({str(index_dir)!r}, {count}), sys.stdout)"
    with tempfile.TemporaryDirectory() as lent:
        shutil.copy(__file__, Path(lent) / "takes_same_results.py")
        try:
            return json.loads(run_in_checkout(checkout, program, path=(Path(lent),)))
        except subprocess.CalledProcessError as error:
            raise SystemExit(f"the baseline's searches failed:\n{error.stderr.strip()}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the commit to compare with")
    parser.add_argument("--queries", type=int, default=200, help="bench queries, each searched in 3 modes at 3 k (default 200)")
    args = parser.parse_args(argv)
    index_dir = build_seed_index(bench_dir() / "seed-index-onnx", backend="onnx")
    ours, theirs = results(index_dir, args.queries), of_checkout(args.baseline, index_dir, args.queries)
    different = [(mine, base) for mine, base in zip(ours, theirs) if mine != base]
    print(f"{len(ours)} searches ({args.queries} queries x {len(MODES)} modes x k {', '.join(map(str, KS))}): {len(different)} differ")
    for mine, base in different[:5]:
        print(f"- {mine[0]!r} {mine[1]} k={mine[2]}:\n  here     {mine[3][:5]}\n  baseline {base[3][:5]}")
    sys.exit(1 if different else 0)


if __name__ == "__main__":
    main()
