"""/docs and /redoc render in a real browser with every request staying on this host (no CDN)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.cli_process import serving

from tests.search_api.browser import expect






@pytest.fixture(scope="module")
def server(seed_index, tmp_path_factory):
    with serving(seed_index, log=tmp_path_factory.mktemp("docs") / "serve.log") as (url, _process):
        yield url


def visit(browser, url: str):
    """A fresh page that records every request that leaves the browser; requests off this host are refused, as offline.

    A request the page's Content-Security-Policy blocks never leaves the
    browser (ReDoc's bundle always tries its logo from a CDN; the server's
    policy stops it), so it is not counted as leaving.
    """
    context = browser.new_context()
    page = context.new_page()
    requested: list[str] = []
    blocked: set[str] = set()
    page.on("request", lambda request: requested.append(request.url))
    # Chromium reports a request its Content-Security-Policy refused as failed with "csp".
    page.on("requestfailed", lambda request: blocked.add(request.url) if request.failure == "csp" else None)
    origin = urlsplit(url)
    # Offline: anything not to this server fails, so a CDN asset cannot hide behind a cache.
    context.route(
        lambda address: urlsplit(address).hostname != origin.hostname,
        lambda route: route.abort("internetdisconnected"),
    )
    return context, page, _Requests(requested, blocked)


class _Requests(list):
    def __init__(self, requested, blocked):
        super().__init__()
        self.requested, self.blocked = requested, blocked

    def left_the_browser(self) -> list[str]:
        return [address for address in self.requested if address not in self.blocked]


def assert_stayed_local(requests) -> None:
    sent = requests.left_the_browser()
    assert sent
    foreign = [address for address in sent if urlsplit(address).hostname != "127.0.0.1"]
    assert not foreign, (foreign, sorted(requests.blocked))


def test_swagger_ui_renders_the_search_operation_offline(browser, server):
    context, page, requested = visit(browser, server)
    try:
        page.goto(f"{server}/docs")
        expect(page.locator(".opblock-summary-path", has_text="/search").first).to_be_visible()
        expect(page.locator(".opblock-get .opblock-summary-path[data-path='/search']")).to_be_visible()
        assert_stayed_local(requested)
        assert any(address.endswith("/openapi.json") for address in requested.requested)
    finally:
        context.close()


def test_redoc_renders_the_search_operation_offline(browser, server):
    context, page, requested = visit(browser, server)
    try:
        page.goto(f"{server}/redoc")
        expect(page.locator("h2", has_text="Takes that answer a question").first).to_be_visible()
        assert_stayed_local(requested)
    finally:
        context.close()
