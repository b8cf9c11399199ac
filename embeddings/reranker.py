"""A cross-encoder that re-scores (query, take) pairs: an optional second stage.

A cross-encoder reads the query and a take together, so it can weigh each
word of one against the other, which a single vector per text cannot; the
price is one transformer pass per candidate at query time, so it only
re-orders the first stage's top few dozen. No cross-encoder ships with the
project (none is installable from the package registries this project
uses), so re-ranking is off unless the user points at a model folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from embeddings.base import EmbeddingError

EXAMPLE = "a sentence-transformers CrossEncoder folder such as a local copy of cross-encoder/ms-marco-MiniLM-L-6-v2"


def check_cross_encoder_folder(path: Path) -> None:
    """Raise EmbeddingError unless ``path`` holds a one-score cross-encoder.

    sentence-transformers would load an embedding model as a cross-encoder
    too, with a freshly initialized (random) scoring head and only a
    warning, and re-rank by noise; this check turns that into an error.
    """
    if not path.is_dir():
        raise EmbeddingError(f"reranker {str(path)!r} is not a folder: give {EXAMPLE}")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except OSError:
        raise EmbeddingError(f"reranker {str(path)!r} has no config.json: give {EXAMPLE}") from None
    except ValueError as error:
        raise EmbeddingError(f"reranker {str(path)!r}: config.json is not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise EmbeddingError(f"reranker {str(path)!r}: config.json is not a JSON object")
    try:
        sentence_transformers_config = json.loads((path / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        sentence_transformers_config = {}
    model_type = sentence_transformers_config.get("model_type") if isinstance(sentence_transformers_config, dict) else None
    architectures = config.get("architectures") or []
    if model_type not in (None, "CrossEncoder") or not any(
        str(name).endswith("ForSequenceClassification") for name in architectures
    ):
        kind = model_type or ", ".join(map(str, architectures)) or "no architecture"
        raise EmbeddingError(
            f"reranker {str(path)!r} is not a cross-encoder (it is {kind}; an embedding model goes to --model): give {EXAMPLE}"
        )
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
    if labels != 1:
        raise EmbeddingError(
            f"reranker {str(path)!r} gives {labels} scores per pair (a classifier, e.g. NLI); "
            "a re-ranker gives one relevance score"
        )


class CrossEncoderReranker:
    """Relevance of takes to a query from a local sentence-transformers CrossEncoder."""

    def __init__(self, path: str | os.PathLike, *, batch_size: int = 32):
        self.path = Path(path)
        self.batch_size = batch_size
        check_cross_encoder_folder(self.path)
        from embeddings import stay_offline

        stay_offline()
        try:
            from sentence_transformers import CrossEncoder
        except ImportError as error:
            # The default install runs without torch; a cross-encoder needs it.
            raise EmbeddingError(
                f"reranker {str(self.path)!r} needs torch and sentence-transformers: pip install 'takes[torch]' ({error})"
            ) from None
        try:
            self._model = CrossEncoder(str(self.path), device="cpu", local_files_only=True)
        except (OSError, ValueError) as error:
            raise EmbeddingError(f"cannot load reranker {str(self.path)!r}: {error}") from error
        self.name = str(self.path)

    def score(self, query: str, texts: Sequence[str]) -> np.ndarray:
        """One float32 score per text, in input order; higher means more relevant."""
        if not isinstance(query, str):
            raise EmbeddingError(f"query must be a string, got {type(query).__name__}")
        texts = list(texts)
        if not texts:
            return np.zeros(0, dtype=np.float32)
        scores = self._model.predict(
            [(query, text) for text in texts],
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
        )
        return np.asarray(scores, dtype=np.float32).reshape(len(texts))
