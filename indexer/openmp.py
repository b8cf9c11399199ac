"""How many threads FAISS, torch and numpy's BLAS may use, per calling thread (not threads of posts)."""

from __future__ import annotations

import os
import sys
import threading

_blas_lock = threading.Lock()
_blas_threads: int | None = None


def limit_threads(count: int) -> None:
    """Give FAISS, torch and numpy's BLAS ``count`` threads each, in the calling thread; 0 keeps their defaults.

    FAISS and torch run on OpenMP, whose thread count is a setting of the
    thread that calls ``omp_set_num_threads``: a thread started later (a
    request worker, the batching worker) starts from the default again, one
    OpenMP thread per core. So a Searcher runs this once in every thread that
    searches, and ``OMP_NUM_THREADS`` covers the libraries that have not
    loaded yet.

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
    _limit_blas(count)


def _limit_blas(count: int) -> None:
    """numpy's OpenBLAS pool, which is the process's and sized when numpy loads.

    A program that imported numpy before takes (most that embed it) has one
    BLAS thread per core, set before ``OMP_NUM_THREADS`` was: the MaxSim's
    products of a search were split over them, and the idle worker then spun.
    With the dev queries on 2 cores a search cost 5.7 ms of CPU that way,
    against 3.0 with one thread, for the same latency (docs/PERFORMANCE.md,
    "numpy's BLAS threads").
    """
    global _blas_threads
    with _blas_lock:
        if _blas_threads == count:
            return
        from threadpoolctl import threadpool_limits

        threadpool_limits(count, user_api="blas")
        _blas_threads = count
