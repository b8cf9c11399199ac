"""TAKES_SEARCH_THREADS: how many searches a server process runs at once, on every route that searches.

The searches are the real ones over the seed index; ``Spy`` only counts the
calls that are inside ``Takes.search`` at the same moment, and passes each
call on unchanged.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient

from search_api.app import create_app
from search_api.settings import Settings

QUERIES = ["what about compute governance", "export controls on chips", "who measures AI capabilities", "open source and safety"]
GUARD_SECONDS = 60


class Spy:
    """Wraps a ``Takes.search``: the most calls in it at once; optionally holds each at a barrier first."""

    def __init__(self, search, barrier: threading.Barrier | None = None):
        self.search, self.barrier = search, barrier
        self.lock = threading.Lock()
        self.inside = self.most = self.calls = 0

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.inside += 1
            self.calls += 1
            self.most = max(self.most, self.inside)
        try:
            if self.barrier is not None:
                self.barrier.wait(GUARD_SECONDS)
            return self.search(*args, **kwargs)
        finally:
            with self.lock:
                self.inside -= 1


@pytest.fixture
def app_with(seed_index, searcher):
    """A client of an app allowing ``threads`` searches at once, and the spy on its searches."""

    with contextlib.ExitStack() as clients:

        def build(threads: int, barrier: threading.Barrier | None = None) -> tuple[TestClient, Spy]:
            app = create_app(Settings(index_dir=seed_index, reload_interval=0, search_threads=threads), searcher)
            # The app's own Takes (over the shared searcher): the spy goes no further.
            served = app.state.takes
            served.search = spy = Spy(served.search, barrier)
            return clients.enter_context(TestClient(app)), spy

        yield build


def _requests(client: TestClient) -> list:
    """Every way in that searches: the GET fast path, POST /search, the page, and /mcp's tool (in the app's loop)."""
    mcp = next(route.endpoint.server for route in client.app.routes if getattr(route, "path", None) == "/mcp")
    calls = []
    for query in QUERIES:
        calls.append(lambda query=query: client.get("/search", params={"q": query}).status_code)
        calls.append(lambda query=query: client.post("/search", json={"q": query, "k": 5}).status_code)
        calls.append(lambda query=query: client.get("/", params={"q": query}).status_code)
        calls.append(lambda query=query: 200 if client.portal.call(mcp.call_tool, "search_takes", {"query": query}) else None)
    return calls


def test_one_search_thread_runs_one_search_at_a_time_on_every_route(app_with):
    client, spy = app_with(1)
    calls = _requests(client)
    with ThreadPoolExecutor(len(calls)) as pool:
        statuses = list(pool.map(lambda call: call(), calls))
    assert statuses == [200] * len(calls)
    assert spy.calls == len(calls)
    assert spy.most == 1


def test_searches_run_side_by_side_up_to_the_setting(app_with):
    # Three searches must be inside at once to pass the barrier: with fewer
    # slots the barrier times out and the searches fail.
    client, spy = app_with(3, threading.Barrier(3))
    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(lambda query: client.get("/search", params={"q": query}), QUERIES[:3] * 2))
    assert [response.status_code for response in responses] == [200] * 6
    assert spy.most == 3


def test_queued_searches_answer_the_same_as_one_at_a_time(app_with):
    client, _spy = app_with(1)
    alone = [client.get("/search", params={"q": query}).json()["results"] for query in QUERIES]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda query: client.get("/search", params={"q": query}).json()["results"], QUERIES * 2))
    ids = lambda results: [result["id"] for result in results]  # noqa: E731
    assert [ids(results) for results in together] == [ids(results) for results in alone * 2]
