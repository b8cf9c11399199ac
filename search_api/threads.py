"""How many threads torch and FAISS may use in the server."""

from __future__ import annotations

import sys


def set_compute_threads(count: int) -> None:
    """Give torch and FAISS ``count`` threads each; 0 keeps their defaults.

    Call it after the model loads: torch is only touched if the backend
    imported it, so an ONNX server does not pay for importing torch.
    On two cores, two threads each showed intermittent stalls per query
    (OpenMP pools spinning against each other and the request threads); one
    each did not (docs/PERFORMANCE.md, "Thread settings").
    """
    if count <= 0:
        return
    import faiss

    faiss.omp_set_num_threads(count)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
