"""Writing over HTTP: POST /takes and DELETE /takes/{id}, their auth, limits and errors."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from indexer.index.snapshot import load_snapshot
from indexer.serving import Searcher
from search_api.app import create_app
from search_api.settings import Settings
from tests.samples import UNROLL

TOKEN = "test-token-5c1f"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORDS = [
    {"id": "kite-1", "text": "Kite strings are a fine metaphor for AI liability: slack until the wind picks up.", "author": "Ravi Menon", "date": "2024-05-01"},
    {"id": "kite-2", "text": "Insurers, not regulators, will end up writing the first real rules for deployed AI agents.", "author": "Ravi Menon", "date": "2024-05-01"},
]


def make_client(index_dir, embedder, **settings) -> TestClient:
    settings = Settings(index_dir=index_dir, reload_interval=0, **settings)
    return TestClient(create_app(settings, Searcher(index_dir, embedder=embedder)))


@pytest.fixture
def client(index_copy, embedder):
    with make_client(index_copy, embedder, admin_token=TOKEN) as client:
        yield client


def test_writes_are_refused_with_instructions_when_no_token_is_configured(index_copy, embedder):
    with make_client(index_copy, embedder) as client:
        for response in (
            client.post("/takes", json=RECORDS, headers=AUTH),
            client.delete("/takes/jackclarkSF-2022-08-06-1", headers=AUTH),
        ):
            assert response.status_code == 403
            assert "set TAKES_ADMIN_TOKEN" in response.json()["detail"]
            assert "bearer token" in response.json()["detail"]
    assert load_snapshot(index_copy).manifest.count == 99


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
        ({"Authorization": "Bearer wrong-token"}, 403),
        ({"Authorization": f"Bearer {TOKEN}x"}, 403),
    ],
)
def test_a_missing_or_wrong_token_is_refused(client, index_copy, headers, status):
    response = client.post("/takes", json=RECORDS, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["WWW-Authenticate"] == "Bearer"
    else:
        assert "wrong bearer token" in response.json()["detail"]
    assert client.delete("/takes/jackclarkSF-2022-08-06-1", headers=headers).status_code == status
    assert load_snapshot(index_copy).manifest.count == 99


def test_posted_takes_are_searchable_at_once_using_the_servers_model(client, embedder):
    generation = client.get("/health").json()["generation"]
    encoded = embedder.texts_encoded
    response = client.post("/takes", json=RECORDS, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.json() == {"added": 2, "skipped": 0, "generation": generation + 1, "ids": ["kite-1", "kite-2"]}
    # The server's own model embedded them: no second model was loaded.
    assert embedder.texts_encoded - encoded == 2

    assert client.get("/takes/kite-2").json()["author"] == "Ravi Menon"
    assert client.get("/health").json()["generation"] == generation + 1
    results = client.get("/search", params={"q": "who will write the rules for AI agents", "k": 3}).json()["results"]
    assert results[0]["id"] == "kite-2"

    encoded = embedder.texts_encoded
    again = client.post("/takes", json=RECORDS, headers=AUTH).json()
    assert again == {"added": 0, "skipped": 2, "generation": generation + 1, "ids": []}
    assert embedder.texts_encoded == encoded


def test_records_without_ids_get_ids_from_the_body_so_a_resend_adds_nothing(client):
    body = [{"text": "Open weights make AI audits cheaper for everyone."}]
    first = client.post("/takes", json=body, headers=AUTH).json()
    assert first["added"] == 1
    assert client.get(f"/takes/{first['ids'][0]}").json()["text"] == body[0]["text"]
    assert client.post("/takes", json=body, headers=AUTH).json()["added"] == 0
    other = client.post("/takes", json=[{"text": "A different take, from a different body."}], headers=AUTH).json()
    assert other["added"] == 1 and other["ids"] != first["ids"]


@pytest.mark.parametrize(
    ("params", "content_type"),
    [({"format": "threadreader"}, "text/plain"), ({}, "text/plain; charset=utf-8"), ({"format": "threadreader"}, "application/json")],
)
def test_a_raw_unroll_is_parsed_by_format_or_detected(client, params, content_type):
    response = client.post("/takes", params=params, content=UNROLL.encode(), headers={**AUTH, "Content-Type": content_type})
    assert response.status_code == 200, response.text
    assert response.json()["ids"] == [f"dana-okafor-2024-03-03-{position}" for position in (1, 2, 3)]
    thread = client.get("/threads/dana-okafor-2024-03-03").json()
    assert [take["position"] for take in thread["takes"]] == [1, 2, 3]


def test_delete_removes_a_take_from_lookups_and_search(client):
    client.post("/takes", json=RECORDS, headers=AUTH)
    query = {"q": "who will write the rules for AI agents", "k": 5}
    assert "kite-2" in [r["id"] for r in client.get("/search", params=query).json()["results"]]
    response = client.delete("/takes/kite-2", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"removed": 1, "generation": client.get("/health").json()["generation"]}
    assert client.get("/takes/kite-2").status_code == 404
    assert "kite-2" not in [r["id"] for r in client.get("/search", params=query).json()["results"]]
    missing = client.delete("/takes/kite-2", headers=AUTH)
    assert missing.status_code == 404 and "kite-2" in missing.json()["detail"]


def test_bodies_over_the_limit_get_413_naming_it(index_copy, embedder):
    with make_client(index_copy, embedder, admin_token=TOKEN, max_body_bytes=1000) as client:
        declared = client.post("/takes", content=b"x" * 1001, headers={**AUTH, "Content-Type": "text/plain"})
        assert declared.status_code == 413 and "1000 bytes" in declared.json()["detail"]
        # Chunked: no Content-Length, so the size is counted as the body arrives.
        streamed = client.post("/takes", content=iter([b"x" * 600, b"x" * 600]), headers={**AUTH, "Content-Type": "text/plain"})
        assert "content-length" not in {name.lower() for name in streamed.request.headers}
        assert streamed.status_code == 413 and "1000 bytes" in streamed.json()["detail"]
        # Under the limit goes through.
        assert client.post("/takes", json=RECORDS, headers=AUTH).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"content": b'[{"text": "ok"}, {"text": ', "headers": {"Content-Type": "application/json"}}, "malformed JSON"),
        ({"json": [{"text": "ok"}, {"author": "no text"}]}, "item 2: missing or empty 'text'"),
        ({"json": [{"text": "ok", "id": "has a space"}]}, "item 1: 'id' 'has a space' is not URL-safe"),
        ({"json": {"text": "not a list"}}, "JSON list"),
        ({"json": []}, "JSON list"),
        ({"content": UNROLL.replace("Mar 3, 2024", "Feb 30, 2024").encode(), "params": {"format": "threadreader"}}, ":2: not a valid date"),
        ({"content": b'{"text": "fine"}\n{"text": \n', "params": {"format": "jsonl"}}, ":2: malformed JSON"),
        ({"content": UNROLL.encode(), "params": {"format": "docx"}}, "threadreader"),
        ({"content": b"\xff\xfe not utf-8", "headers": {"Content-Type": "text/plain"}}, "not UTF-8"),
        ({"json": [{"text": "ok", "position": 10**20}]}, "item 1: 'position' 100000000000000000000 is over the limit of 1,000,000"),
        ({"content": b"[" * 100_000, "headers": {"Content-Type": "application/json"}}, "nested too deeply"),
        ({"content": b'[{"text": "ok", "n": ' + b"1" * 4301 + b"}]", "headers": {"Content-Type": "application/json"}}, "4,300 digits"),
        ({"content": b'[{"text": "\\ud800"}]', "headers": {"Content-Type": "application/json"}}, "surrogate"),
        ({"content": b"vm\n", "headers": {"Content-Type": "text/plain"}}, "a single word"),
    ],
)
def test_bad_bodies_get_422_naming_the_problem_and_add_nothing(client, index_copy, kwargs, needle):
    kwargs = {**kwargs, "headers": {**AUTH, **kwargs.get("headers", {})}}
    response = client.post("/takes", **kwargs)
    assert response.status_code == 422, response.text
    assert needle in response.json()["detail"]
    assert load_snapshot(index_copy).manifest.count == 99


def test_write_routes_are_documented(client):
    schema = client.get("/openapi.json").json()
    post, delete = schema["paths"]["/takes"]["post"], schema["paths"]["/takes/{take_id}"]["delete"]
    for operation in (post, delete):
        assert operation["summary"] and "TAKES_ADMIN_TOKEN" in operation["description"]
        assert {"401", "403"} <= set(operation["responses"])
    assert {"application/json", "text/plain"} <= set(post["requestBody"]["content"])
    assert {"413", "422"} <= set(post["responses"])
    assert any(parameter["name"] == "format" for parameter in post["parameters"])
    assert "bearer" in str(schema["components"]["securitySchemes"]).lower()
    assert client.get("/docs").status_code == 200
