"""An API client over the shared seed index, for the tests that only read."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from search_api.app import create_app
from search_api.settings import Settings


@pytest.fixture(scope="module")
def client(seed_index, searcher):
    settings = Settings(index_dir=seed_index, reload_interval=0)
    with TestClient(create_app(settings, searcher)) as client:
        yield client



@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (tests/search_api/browser.py), shared by the page's and the docs pages' tests."""
    from tests.search_api.browser import launch, missing, sync_playwright

    if sync_playwright is None:
        missing("the playwright package is not installed")
    with sync_playwright() as playwright:
        launched = launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def run():
    """Invoke the `takes` CLI in-process, with ``env`` added to the environment."""
    from click.testing import CliRunner

    from search_api.cli import cli

    runner = CliRunner()

    def invoke(*args, **env):
        return runner.invoke(cli, [str(arg) for arg in args], env={k: str(v) for k, v in env.items()})

    return invoke
