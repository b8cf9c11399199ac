"""How many threads torch and FAISS may use in the server."""

from __future__ import annotations

import os
import sys
from typing import Callable


def set_compute_threads(count: int) -> None:
    """Give torch and FAISS ``count`` threads each, in the calling thread; 0 keeps their defaults.

    Both run on OpenMP, whose thread count is a setting of the thread that
    calls ``omp_set_num_threads``: a thread started later (a request worker,
    the batching worker) starts from the default again, which is one OpenMP
    thread per core. So the server runs this in every thread that searches
    or encodes (``thread_limiter``), and ``OMP_NUM_THREADS`` covers the
    libraries that have not loaded yet.

    torch is only touched if the backend imported it, so an ONNX server does
    not pay for importing torch. On two cores, two threads each showed
    intermittent stalls per query (OpenMP pools spinning against each other
    and the request threads); one each did not (docs/PERFORMANCE.md, "Thread
    settings").
    """
    if count <= 0:
        return
    os.environ.setdefault("OMP_NUM_THREADS", str(count))
    import faiss

    faiss.omp_set_num_threads(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)


def thread_limiter(count: int) -> Callable[[], None] | None:
    """What to run once in each worker thread so it keeps to ``count`` threads; None for 0."""
    if count <= 0:
        return None
    return lambda: set_compute_threads(count)
