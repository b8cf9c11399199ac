"""The HTTP API, built with create_app over the real seed index."""

from __future__ import annotations

import pytest

from indexer.models import TAKE_FIELDS


def test_search_returns_takes_with_exactly_the_take_fields_and_score(client):
    response = client.get("/search", params={"q": "what about compute governance", "k": 10})
    assert response.status_code == 200
    body = response.json()
    assert body["query"] == "what about compute governance" and body["k"] == 10
    assert isinstance(body["took_ms"], float)
    assert len(body["results"]) == 10
    for result in body["results"]:
        assert set(result) == {*TAKE_FIELDS, "score", "match"}
        assert 0 <= result["score"] <= 1
    assert any(
        r["date"] == "2023-06-25" and ("means of production" in r["text"] or "go after compute" in r["text"])
        for r in body["results"]
    )


def test_post_search_matches_get(client):
    get = client.get("/search", params={"q": "guillotines", "k": 3}).json()
    post = client.post("/search", json={"q": "guillotines", "k": 3}).json()
    assert [r["id"] for r in get["results"]] == [r["id"] for r in post["results"]]


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"q": ""}, "at least 1 character"),
        ({"q": "   "}, "empty"),
        ({"q": "x" * 1001}, "1000"),
        ({"q": "ok", "k": 0}, "greater than or equal to 1"),
        ({"q": "ok", "k": 101}, "less than or equal to 100"),
        ({"q": "ok", "k": "ten"}, "k"),
        ({}, "q"),
    ],
)
def test_bad_search_parameters_get_422_naming_the_limit(client, params, needle):
    response = client.get("/search", params=params)
    assert response.status_code == 422
    assert needle in response.json()["detail"]


def test_post_search_validation(client):
    response = client.post("/search", json={"q": "ok", "k": 500})
    assert response.status_code == 422 and "100" in response.json()["detail"]


def test_take_and_thread_lookup(client, seed_takes):
    first = seed_takes[0]
    assert client.get(f"/takes/{first.id}").json()["text"] == "One like = one spicy take about AI policy."
    thread = client.get(f"/threads/{first.thread_id}").json()
    assert thread["thread_id"] == first.thread_id
    assert [t["position"] for t in thread["takes"]] == list(range(1, 82))
    assert client.get("/takes/nope").status_code == 404
    assert "nope" in client.get("/threads/nope").json()["detail"]


def test_health_and_stats(client, seed_takes):
    assert client.get("/health").status_code == 200
    stats = client.get("/stats").json()
    assert {"takes", "threads", "model", "dim", "index_bytes"} <= set(stats)
    assert stats["takes"] == len(seed_takes) and stats["threads"] == 7


def test_openapi_describes_every_result_field(client):
    schema = client.get("/openapi.json").json()
    result = schema["components"]["schemas"]["ResultOut"]["properties"]
    assert all(result[name].get("description") for name in (*TAKE_FIELDS, "score"))


def test_filters_context_and_grouping_over_http(client):
    body = client.get(
        "/search", params={"q": "AI policy", "k": 10, "since": "2023-01-01", "context": 1, "group_by_thread": "true"}
    ).json()
    assert body["mode"] == "hybrid"
    assert len(body["results"]) == 9 and all(r["date"] >= "2023-01-01" for r in body["results"])
    assert all(set(r["context"]) == {"before", "after"} for r in body["results"])
    threads = body["threads"]
    assert {t["thread_id"] for t in threads} == {r["thread_id"] for r in body["results"]}
    for thread in threads:
        assert [t["position"] for t in thread["takes"]] == sorted(t["position"] for t in thread["takes"])
    plain = client.get("/search", params={"q": "AI policy"}).json()
    assert plain["threads"] is None and "context" not in plain["results"][0]


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_fts_syntax_in_queries_never_500(client, mode):
    for q in ['"unbalanced', "NEAR(a b)", "a AND OR NOT", "x:*", "🙂", "((("]:
        assert client.get("/search", params={"q": q, "mode": mode}).status_code == 200


def test_bad_filters_get_422(client):
    for params, needle in [({"since": "2023-13-01"}, "since"), ({"mode": "fuzzy"}, "mode"), ({"context": 11}, "context")]:
        response = client.get("/search", params={"q": "ok", **params})
        assert response.status_code == 422 and needle in response.json()["detail"]


def test_stats_is_the_same_object_as_the_cli(client, seed_index):
    import json

    from click.testing import CliRunner

    from search_api.cli import cli

    result = CliRunner().invoke(cli, ["stats", "--json", "--index-dir", str(seed_index)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == client.get("/stats").json()


@pytest.mark.parametrize(
    "params",
    [
        {"q": "what about compute governance", "k": 10},
        {"q": "guillotines", "k": 5, "mode": "dense"},
        {"q": "export controls on chips", "k": 4, "mode": "lexical"},
        {"q": "open source and safety", "k": 3, "context": 2, "group_by_thread": "true"},
        {"q": "nothing matches zzzqqq", "k": 2, "min_score": 0.99},
    ],
)
def test_search_body_is_what_the_response_model_would_send(client, params):
    """/search writes its JSON itself: the same fields, order and values as SearchResponse serializes."""
    import json

    from search_api.schemas import SearchResponse

    response = client.get("/search", params=params)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    sent = json.loads(response.content)
    modelled = json.loads(SearchResponse.model_validate(sent).model_dump_json())
    # json.dumps of the parsed objects compares key order as well as values.
    assert json.dumps(sent) == json.dumps(modelled)
