"""How many OpenMP threads FAISS and torch may use, per calling thread (not threads of posts)."""

from __future__ import annotations

import os
import sys


def limit_threads(count: int) -> None:
    """Give FAISS and torch ``count`` threads each, in the calling thread; 0 keeps their defaults.

    Both run on OpenMP, whose thread count is a setting of the thread that
    calls ``omp_set_num_threads``: a thread started later (a request worker,
    the batching worker) starts from the default again, one OpenMP thread per
    core. So a Searcher runs this once in every thread that searches, and
    ``OMP_NUM_THREADS`` covers the libraries that have not loaded yet.

    torch is only touched if something already imported it, so an ONNX
    process does not pay for importing torch.
    """
    if count <= 0:
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(count))
    import faiss

    faiss.omp_set_num_threads(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
