"""HTTP for function-calling bots: GET /search?format=context and GET /tool.json."""

from __future__ import annotations

import re



QUESTION = "what about compute governance"


def test_context_format_is_a_numbered_cited_text_block(client):
    json_body = client.get("/search", params={"q": QUESTION, "k": 10}).json()
    response = client.get("/search", params={"q": QUESTION, "k": 10, "format": "context"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert text.startswith(f"Takes retrieved for: {QUESTION}\n")
    headers = re.findall(r"^\[(\d+)\] (.+)$", text, flags=re.MULTILINE)
    assert [int(number) for number, _ in headers] == list(range(1, 11))
    for (_, cite), result in zip(headers, json_body["results"]):
        assert cite.startswith(f"{result['author']} ({result['handle']}), {result['date']}, thread {result['thread_id']} take {result['position']}")
        assert result["text"].splitlines()[0] in text
    assert "2023-06-25" in text
    post = client.post("/search", json={"q": QUESTION, "k": 10, "format": "context"})
    assert post.headers["content-type"].startswith("text/plain") and post.text == text


def test_context_format_with_no_matches_and_bad_format(client):
    empty = client.get("/search", params={"q": QUESTION, "author": "nobody", "format": "context"})
    assert empty.status_code == 200 and "No takes match." in empty.text
    bad = client.get("/search", params={"q": QUESTION, "format": "xml"})
    assert bad.status_code == 422 and "format" in bad.json()["detail"]
    # The default stays JSON.
    assert client.get("/search", params={"q": QUESTION, "k": 1}).headers["content-type"].startswith("application/json")


def test_tool_json_is_a_function_definition_the_search_accepts(client):
    import jsonschema

    tool = client.get("/tool.json").json()
    assert tool["type"] == "function"
    function = tool["function"]
    assert function["name"] == "search_takes"
    assert "AI-policy" in function["description"]
    parameters = function["parameters"]
    jsonschema.Draft202012Validator.check_schema(parameters)
    assert parameters["required"] == ["q"]
    assert parameters["properties"]["k"]["minimum"] == 1 and parameters["properties"]["k"]["maximum"] == 100
    validator = jsonschema.Draft202012Validator(parameters)

    # What a model would send, checked against the schema, then sent to GET /search as is.
    call = {"q": QUESTION, "k": 3, "author": "@jackclarkSF", "since": "2023-01-01", "until": "2023-12-31"}
    validator.validate(call)
    response = client.get("/search", params=call)
    assert response.status_code == 200, response.text
    assert all(r["date"] >= "2023-01-01" for r in response.json()["results"])

    assert not validator.is_valid({"q": QUESTION, "k": 0})
    assert not validator.is_valid({"q": QUESTION, "since": "last year"})
    assert not validator.is_valid({"k": 3})


def test_tool_json_describes_the_index_it_serves(client, embedder, tmp_path):
    from fastapi.testclient import TestClient

    from embeddings import DEFAULT_MODEL
    from indexer.models import Take
    from indexer.index.writer import IndexWriter
    from search_api.app import create_app
    from search_api.settings import Settings

    seed = client.get("/tool.json").json()["function"]["description"]
    assert "99 takes in 7 threads by Jack Clark (@jackclarkSF), dated 2022-07-01 to 2023-06-25" in seed

    other = [
        Take(f"ada-{n}", f"Liability rules for deployed agents, part {n}.", "Ada Example", "@ada", "2024-03-01",
             "ada-2024-03-01", n, 2, None, "ada.jsonl")
        for n in (1, 2)
    ] + [Take("bo-1", "Insurers will write the first rules.", "Bo Other", None, "2024-05-02", "bo-1", 1, 1, None, "bo.jsonl")]
    with IndexWriter(tmp_path / "index") as writer:
        writer.replace_all(other, embedder, model=DEFAULT_MODEL)
    with TestClient(create_app(Settings(index_dir=tmp_path / "index", reload_interval=0))) as other_client:
        description = other_client.get("/tool.json").json()["function"]["description"]
    assert "3 takes in 2 threads by Ada Example (@ada) and Bo Other, dated 2024-03-01 to 2024-05-02" in description
    assert "Jack Clark" not in description
