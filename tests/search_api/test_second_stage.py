"""The server's second stages: late interaction on from Settings (TAKES_LATE_INTERACTION), a bad reranker one line."""

from __future__ import annotations

from fastapi.testclient import TestClient

from search_api.app import create_app
from search_api.settings import Settings
from tests.cli_process import run_takes


def test_late_interaction_from_settings_reaches_the_served_search(seed_index, monkeypatch):
    monkeypatch.setenv("TAKES_LATE_INTERACTION", "1")
    settings = Settings(index_dir=seed_index, reload_interval=0)
    assert settings.late_interaction
    with TestClient(create_app(settings)) as client:
        assert client.app.state.takes.searcher.late_interaction
        body = client.get("/search", params={"q": "what about compute governance", "k": 3}).json()
    assert "go after compute in the wrong ways" in body["results"][0]["text"]
    assert body["strong_matches"] >= 1


def test_a_reranker_that_is_not_a_cross_encoder_is_one_line(seed_index, tmp_path):
    result = run_takes(seed_index, "search", "compute", "--reranker", tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
