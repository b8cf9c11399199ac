"""Derive the int8 model that ships with takes from the shipped weights: ``python -m embeddings.ship``.

Run once per change of recipe (needs the ``torch`` extra: torch, optimum and
sentence-transformers export and quantize the model). The result replaces
``embeddings/shipped/<model>/`` atomically and is committed, so that running
takes on a new machine never needs torch. The build is deterministic: the
same versions make the same bytes.
"""

from __future__ import annotations

import sys

from embeddings import DEFAULT_MODEL
from embeddings.onnx import RECIPE, SHIPPED_MODELS, SHIPPED_QUANTIZATION, _assemble, _build, _slug


def main() -> int:
    target = SHIPPED_MODELS / _slug(DEFAULT_MODEL)
    target.parent.mkdir(parents=True, exist_ok=True)
    _assemble(target, lambda staging: _build(DEFAULT_MODEL, staging, SHIPPED_QUANTIZATION, shipped=True))
    # Package data ships every file of the folder: the lock is ours, not the model's.
    for leftover in target.parent.glob(".*.lock"):
        leftover.unlink()
    print(f"built {target} (recipe {RECIPE}, {SHIPPED_QUANTIZATION})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
