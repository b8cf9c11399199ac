"""The one thing the rest of the project knows about a model."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


class EmbeddingError(Exception):
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
