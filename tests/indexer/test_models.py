"""The records every layer shares: field names and order."""

from __future__ import annotations

from dataclasses import asdict

from indexer.models import TAKE_FIELDS, SearchResult, Take


def test_a_take_serializes_every_field_in_order(seed_takes):
    for take in seed_takes[:5] + [Take("x", "text", None, None, None, "t", 1, None, None, "inline")]:
        data = take.to_dict()
        assert tuple(data) == TAKE_FIELDS
        assert data == asdict(take)


def test_a_result_adds_score_match_and_context_after_the_take_fields(seed_takes):
    result = SearchResult(seed_takes[1], 0.61234567, ((seed_takes[0],), (seed_takes[2],)))
    data = result.to_dict()
    assert tuple(data) == (*TAKE_FIELDS, "score", "match", "context")
    assert data["score"] == 0.612346 and data["match"] == "strong"
    assert data["context"] == {"before": [seed_takes[0].to_dict()], "after": [seed_takes[2].to_dict()]}
