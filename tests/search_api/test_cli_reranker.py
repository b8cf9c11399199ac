"""`takes search --reranker PATH`: the cross-encoder second stage from the command line.

No trained cross-encoder is installable here (tests/embeddings/test_reranker.py
says why), so the working path uses a real CrossEncoder built from the
shipped MiniLM layers with a seeded, untrained head: it proves the option
loads a model folder and re-scores, not that the order is good.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from embeddings import resolve_model_path
from search_api.cli import cli



def search(*args):
    return CliRunner().invoke(cli, ["search", *[str(arg) for arg in args]])


def test_a_cross_encoder_re_scores_the_results_on_the_0_to_1_scale(seed_index, seeded_cross_encoder):
    result = search("what about compute governance", "-k", "5", "--json", "--index-dir", seed_index, "--reranker", seeded_cross_encoder)
    assert result.exit_code == 0, result.output
    scores = [item["score"] for item in json.loads(result.output)["results"]]
    assert len(scores) == 5
    assert all(0 <= score <= 1 for score in scores)
    assert scores == sorted(scores, reverse=True)


def test_an_embedding_model_given_as_reranker_is_a_one_line_error(seed_index):
    model_folder = resolve_model_path("all-MiniLM-L6-v2")
    result = search("compute", "--index-dir", seed_index, "--reranker", model_folder)
    assert result.exit_code != 0
    assert "is not a cross-encoder" in result.output and "--model" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_missing_reranker_folder_is_a_one_line_error(seed_index, tmp_path):
    result = search("compute", "--index-dir", seed_index, "--reranker", tmp_path / "nowhere")
    assert result.exit_code != 0
    assert "is not a folder" in result.output and "Traceback" not in result.output
