"""The eval's arithmetic, checked against numbers worked out by hand."""

from __future__ import annotations

import json

import pytest

from indexer.errors import ParseError
from indexer.evaluation import Judged, fold, load_judgments, mean, score_ranking

ALPHA = "Alpha take about compute governance and chips, long enough to key on."
BETA = "Beta take, about export controls on accelerators for training runs!"
OTHER = "Something unrelated entirely, about back spasms."


def judged() -> Judged:
    return Judged("q", {fold(ALPHA)[:50]: 2, fold(BETA)[:50]: 1})


def test_ndcg_recall_mrr_by_hand():
    # ranks: OTHER 1, ALPHA 2 (gain 3), BETA 3 (gain 1)
    # DCG  = 3/log2(3) + 1/log2(4) = 1.892789 + 0.5 = 2.392789
    # IDCG = 3/log2(2) + 1/log2(3) = 3 + 0.630930 = 3.630930
    score = score_ranking(judged(), [OTHER, ALPHA, BETA])
    assert score.ndcg == pytest.approx(2.392789 / 3.630930, abs=1e-6)
    assert score.recall == 1.0
    assert score.reciprocal_rank == 0.5


def test_a_judged_take_earns_its_gain_once_at_its_best_rank():
    once = score_ranking(judged(), [ALPHA, ALPHA, ALPHA])
    assert once.ndcg == pytest.approx(3 / 3.630930, abs=1e-6)
    assert once.recall == 0.5 and once.reciprocal_rank == 1.0


def test_only_the_top_ten_count_and_grade_one_gives_no_mrr():
    late = score_ranking(judged(), [OTHER] * 10 + [ALPHA])
    assert late.ndcg == 0 and late.recall == 0 and late.reciprocal_rank == 0
    related_only = score_ranking(judged(), [BETA])
    assert related_only.reciprocal_rank == 0 and related_only.recall == 0.5


def test_matching_ignores_case_and_punctuation():
    assert score_ranking(judged(), [ALPHA.upper().replace(",", " ;")]).reciprocal_rank == 1.0


def test_mean_over_queries():
    scores = [score_ranking(judged(), [ALPHA, BETA]), score_ranking(judged(), [OTHER])]
    assert mean(scores)["ndcg@10"] == pytest.approx(0.5)
    assert mean(scores)["mrr"] == pytest.approx(0.5)


def test_bad_judgments_file_names_the_problem(tmp_path):
    path = tmp_path / "j.json"
    path.write_text('{"queries": [{"query": 1}]}')
    with pytest.raises(ParseError, match="j.json.*query #1"):
        load_judgments(path)
    path.write_text("{not json")
    with pytest.raises(ParseError, match="j.json:1"):
        load_judgments(path)
    path.write_text(json.dumps({"queries": [{"query": "q", "relevant": {ALPHA: 2}}]}))
    assert load_judgments(path)[0].relevant == {fold(ALPHA)[:50]: 2}
