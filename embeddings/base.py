"""The one thing the rest of the project knows about a model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:
    # Annotations only: importing the error classes must stay cheap.
    import numpy as np

# Threads each compute library (ONNX Runtime, torch, FAISS) may use for one
# calling thread. On the shared 2-core reference machine one intra-op thread
# gave a third of ONNX Runtime's single-query latency of two (median 2.0
# against 6.9 ms, p99 2.3 against 21.6 ms). FAISS at two OpenMP threads made
# no difference on an idle machine, but with the other core busy (a test run
# beside it) a 99-take search took about 5 ms instead of 0.01 ms, its second
# thread waiting for a core, and in the server the spare thread's spinning
# cost each request about 3 ms of CPU. Concurrency on two cores comes from
# several requests at once, not from intra-op threads.
DEFAULT_THREADS = 1


class ProjectError(Exception):
    """Base of every failure of this project that a person can act on.

    Defined here, at the bottom of the import order, so that the model's
    errors (``EmbeddingError``) and the index's (``indexer.errors.TakesError``)
    share one root: a front end that handles ``ProjectError`` misses none.
    """


class EmbeddingError(ProjectError):
    """A model could not be created or used; the message says what to do."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length float32 vectors.

    ``encode`` returns an array of shape ``(len(texts), dim)``, L2-normalized,
    so that inner product equals cosine similarity.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray: ...
