"""sentence-transformers on torch (fp32): the reference backend."""

from __future__ import annotations

import sys
from typing import Sequence

import numpy as np

from embeddings import resolve_model_path
from embeddings.base import EmbeddingError


def _load_sentence_transformer(name: str, **kwargs):
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as error:
        # Running the default model needs none of this; the torch extra brings it.
        raise EmbeddingError(
            f"{name!r} needs torch and sentence-transformers (the backend torch, another model, or deriving "
            f"an int8 model): pip install 'takes[torch]' ({error})"
        ) from None

    try:
        return SentenceTransformer(resolve_model_path(name), device="cpu", **kwargs)
    except (OSError, ValueError) as error:
        raise EmbeddingError(
            f"cannot load model {name!r}: give a local sentence-transformers folder or a model "
            f"already in the Hugging Face cache (this machine cannot download models) ({error})"
        ) from error


class SentenceTransformerEmbedder:
    """An :class:`~embeddings.base.Embedder` backed by ``SentenceTransformer``."""

    backend = "torch"

    def __init__(self, name: str, _model=None):
        self.name = name
        self._model = _model if _model is not None else _load_sentence_transformer(name)
        self.dim = int(self._model.get_embedding_dimension())
        # How many texts went through the model: lets tests and `takes add`
        # prove that cached or duplicate takes were not embedded again.
        self.texts_encoded = 0
        # How many texts went through the model for their token vectors alone.
        self.token_texts_encoded = 0

    def token_vectors(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Each text's unit-length token vectors, (tokens, dim): late interaction's input (indexer/ranking.py)."""
        # One text per call: no padding rows among the tokens.
        texts = list(texts)
        self.token_texts_encoded += len(texts)
        result = []
        for text in texts:
            tokens = self._model.encode([text], output_value="token_embeddings", convert_to_numpy=False)[0]
            matrix = np.asarray(tokens.cpu().numpy() if hasattr(tokens, "cpu") else tokens, dtype=np.float32)
            result.append(matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12))
        return result

    def encode_with_tokens(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One text's unit vector (dim,) and unit token vectors (tokens, dim), from one model pass."""
        output = self._model.encode([text], output_value=None, convert_to_numpy=False)[0]
        self.texts_encoded += 1

        def array(value) -> np.ndarray:
            return np.asarray(value.cpu().numpy() if hasattr(value, "cpu") else value, dtype=np.float32)

        vector, tokens = array(output["sentence_embedding"]), array(output["token_embeddings"])
        return (
            vector / max(float(np.linalg.norm(vector)), 1e-12),
            tokens / np.maximum(np.linalg.norm(tokens, axis=1, keepdims=True), 1e-12),
        )

    def encode_with_token_vectors(
        self, texts: Sequence[str], *, progress: bool = False, batch_size: int = 64
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """``encode(texts)`` and each text's unit token vectors, from the same batched model pass."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32), []
        import torch

        vectors = np.empty((len(texts), self.dim), dtype=np.float32)
        tokens: list = [None] * len(texts)
        # The model's own forward pass, as encode() runs it: encode(output_value=None)
        # fails on batches in this sentence-transformers (a string feature is
        # indexed per text). Longest first, as encode() batches, to pad little.
        order = sorted(range(len(texts)), key=lambda row: -len(texts[row]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            features = self._model.preprocess([texts[row] for row in rows])
            with torch.inference_mode():
                output = self._model(features)
            for position, row in enumerate(rows):
                vector = _array(output["sentence_embedding"][position])
                vectors[row] = vector / max(float(np.linalg.norm(vector)), 1e-12)
                # Batched texts are padded: keep the rows of real tokens only.
                kept = _array(output["token_embeddings"][position])[_array(output["attention_mask"][position]) > 0]
                tokens[row] = kept / np.maximum(np.linalg.norm(kept, axis=1, keepdims=True), 1e-12)
        self.texts_encoded += len(texts)
        return vectors, tokens

    def encode(self, texts: Sequence[str], *, progress: bool = False, batch_size: int = 64) -> np.ndarray:
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # sentence-transformers sorts by length for batching and restores the
        # input order itself; normalizing here makes inner product = cosine.
        vectors = self._model.encode(
            texts,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress and sys.stderr.isatty(),
        )
        self.texts_encoded += len(texts)
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _array(value) -> np.ndarray:
    return np.asarray(value.cpu().numpy() if hasattr(value, "cpu") else value, dtype=np.float32)
