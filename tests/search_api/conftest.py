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
