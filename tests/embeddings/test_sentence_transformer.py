"""The torch backend: the reference every other backend is compared with."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings import DEFAULT_MODEL, EmbeddingError, load_embedder
from embeddings.base import Embedder
from embeddings.sentence_transformer import SentenceTransformerEmbedder

TEXTS = [
    "Most AI policy work is reactive: governments are years behind the technology.",
    "Compute is the real lever for regulating frontier models.",
    "Open-source models make export controls on weights hard to enforce.",
]


def test_the_torch_backend_is_sentence_transformers_fp32(torch_embedder, embedder):
    assert embedder.backend == "onnx"  # the default; torch is chosen by name
    assert isinstance(torch_embedder, SentenceTransformerEmbedder)
    assert isinstance(torch_embedder, Embedder)
    assert (torch_embedder.name, torch_embedder.backend, torch_embedder.dim) == (DEFAULT_MODEL, "torch", 384)


def test_vectors_are_unit_float32_rows(torch_embedder):
    vectors = torch_embedder.encode(TEXTS)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    assert vectors.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_similar_texts_score_higher_than_unrelated_ones(torch_embedder):
    query, related, unrelated = torch_embedder.encode(
        ["regulating AI through compute", TEXTS[1], "a recipe for sourdough bread"]
    )
    assert query @ related > query @ unrelated + 0.2


def test_texts_encoded_counts_texts_not_calls(torch_embedder):
    before = torch_embedder.texts_encoded
    torch_embedder.encode(TEXTS)
    torch_embedder.encode(TEXTS[:1])
    torch_embedder.encode([])
    assert torch_embedder.texts_encoded == before + 4


def test_empty_input_gives_zero_rows(torch_embedder):
    vectors = torch_embedder.encode([])
    assert vectors.shape == (0, torch_embedder.dim)
    assert vectors.dtype == np.float32


def test_a_missing_model_path_is_a_clean_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(EmbeddingError, match="cannot load model") as caught:
        SentenceTransformerEmbedder(str(missing))
    assert str(missing) in str(caught.value)


def test_an_unknown_backend_names_the_choices():
    with pytest.raises(EmbeddingError, match="torch, onnx"):
        load_embedder(backend="tensorflow")
