"""The search page, driven in a real browser (Chromium through Playwright) against a live `takes serve`."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from indexer.models import Take
from search_api.app import create_app
from search_api.settings import Settings

from tests.search_api.browser import expect

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
STATIC = REPO / "search_api" / "static"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
QUERY = "what about compute governance"


def is_compute_take(result: dict) -> bool:
    return result["date"] == "2023-06-25" and (
        "means of production" in result["text"] or "go after compute" in result["text"]
    )


# ---- the page's files, without a browser ------------------------------------------------


@pytest.fixture(scope="module")
def client(seed_index, searcher):
    with TestClient(create_app(Settings(index_dir=seed_index, reload_interval=0), searcher)) as client:
        yield client


def test_the_page_and_its_files_are_served_with_a_same_origin_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/static/index.html").status_code == 404
    assert client.get("/static/..%2Frouters%2Fpage.py").status_code == 404
    # The API is still where it was.
    assert client.get("/search", params={"q": "compute"}).json()["results"]
    assert "/" not in client.get("/openapi.json").json()["paths"]


def test_a_shared_link_is_rendered_on_the_server_with_its_first_results(client):
    page = client.get("/", params={"q": QUERY})
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    api = client.get("/search", params={"q": QUERY, "k": 10}).json()["results"]
    rendered = re.findall(r'<li class="result[^"]*" data-id="([^"]+)"', page.text)
    assert rendered == [result["id"] for result in api]
    assert f"<title>{QUERY} - takes</title>" in page.text
    # Link previews read these.
    preview = re.search(r'<meta property="og:description" content="([^"]*)">', page.text).group(1)
    assert preview.startswith("Jack Clark: ") and len(preview) > 40
    assert f'value="{QUERY}"' in page.text and "<mark>compute</mark>" in page.text
    # The script starts from the same response instead of searching again.
    assert '<script type="application/json" id="initial-results">{"params": {"q": "' in page.text
    # Without a query: the intro, no results, no embedded response.
    empty = client.get("/").text
    assert '<section id="intro" class="intro">' in empty and '<li class="result' not in empty
    assert '<script type="application/json" id="initial-results"></script>' in empty


def test_a_bad_shared_link_still_renders_the_page(client):
    for params in ({"q": "compute " * 126}, {"q": QUERY, "since": "yesterday"}):
        page = client.get("/", params=params)
        assert page.status_code == 200 and '<li class="result' not in page.text and "<form" in page.text


def test_the_page_suggests_the_indexed_authors_and_skips_function_and_common_words(client):
    page = client.get("/").text
    options = re.findall(r'<option value="([^"]+)">', page)
    assert options == ["Jack Clark", "@jackclarkSF"]
    skipped = set(re.search(r'data-stopwords="([^"]*)"', page).group(1).split())
    # The search's own function-word list, plus words in most takes of this corpus.
    from indexer.search import STOPWORDS

    assert STOPWORDS <= skipped and {"ai", "policy"} <= skipped
    assert not {"compute", "governance", "regulation", "think"} & skipped


def test_hostile_text_is_escaped_in_the_server_rendered_page(embedder, tmp_path):
    from embeddings import DEFAULT_MODEL
    from indexer.index.writer import IndexWriter

    with IndexWriter(tmp_path / "index") as writer:
        writer.replace_all(HOSTILE, embedder, model=DEFAULT_MODEL)
    with TestClient(create_app(Settings(index_dir=tmp_path / "index", reload_interval=0))) as hostile:
        injected = hostile.get("/", params={"q": "compute", "author": '"><script>x</script>'}).text
        page = hostile.get("/", params={"q": "compute"}).text
    assert "<script>x" not in injected and "&quot;&gt;&lt;script&gt;x" in injected
    assert "<img" not in page and "<script>window" not in page and "<b>" not in page
    assert "&lt;img src=x" in page and 'href="https://example.org/mallory/1"' in page
    assert "javascript:" not in page.split('id="initial-results"')[0]


def test_the_page_files_load_nothing_from_elsewhere_and_never_parse_text_as_html():
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://|@import|url\(", text), f"{name} refers to another host"
    script = (STATIC / "app.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", script)


# ---- a live server and a browser ---------------------------------------------------------





def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_serving(index_dir: Path, log: Path) -> tuple[str, subprocess.Popen]:
    """Start `takes serve` on a free loopback port; returns its origin and process."""
    port = free_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("TAKES_")}
    env["HF_HUB_OFFLINE"] = "1"
    command = [sys.executable, "-m", "search_api.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--index-dir", str(index_dir)]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, env=env, cwd=REPO, stdout=output, stderr=subprocess.STDOUT)
    return f"http://127.0.0.1:{port}", process


def wait_for_health(origin: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"takes serve exited with {process.returncode}: {log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{origin}/health", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"takes serve did not answer /health within {timeout} s: {log.read_text()}")
        time.sleep(0.2)


HOSTILE = [
    Take(
        id="mallory-1", text='<img src=x onerror="window.pwned=1"> compute is <b>the</b> lever',
        author="Mallory <script>window.pwned=2</script>", handle="@mallory", date="2024-01-02",
        thread_id="mallory", position=1, thread_size=2, url="https://example.org/mallory/1", source="hostile.jsonl",
    ),
    Take(
        id="mallory-2", text="compute again, with a javascript link", author="Mallory", handle="@mallory",
        date="2024-01-02", thread_id="mallory", position=2, thread_size=2, url="javascript:window.pwned=3",
        source="hostile.jsonl",
    ),
]


@pytest.fixture(scope="module")
def servers(browser, seed_index, embedder, tmp_path_factory) -> dict[str, str]:
    """Two live servers, started side by side: the seed index, and an index of hostile takes."""
    from embeddings import DEFAULT_MODEL
    from indexer.index.writer import IndexWriter

    hostile_index = tmp_path_factory.mktemp("hostile-index")
    with IndexWriter(hostile_index) as writer:
        writer.replace_all(HOSTILE, embedder, model=DEFAULT_MODEL)
    logs = tmp_path_factory.mktemp("page-servers")
    started = {name: (*start_serving(index_dir, logs / f"{name}.log"), logs / f"{name}.log")
               for name, index_dir in (("seed", seed_index), ("hostile", hostile_index))}
    try:
        for origin, process, log in started.values():
            wait_for_health(origin, process, log)
        yield {name: origin for name, (origin, _, _) in started.items()}
    finally:
        for _, process, _ in started.values():
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(servers) -> str:
    return servers["seed"]


@dataclass
class Visit:
    """A fresh browser tab on the server, recording every request it makes."""

    page: object
    origin: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, path: str = "/"):
        self.page.goto(self.origin + path)
        return self.page

    def search_by_typing(self, query: str) -> list[dict]:
        page = self.open("/")
        assert page.evaluate("document.activeElement.id") == "q", "the search box has focus on load"
        page.keyboard.type(query)
        return self.results_for(query)

    def results_for(self, query: str) -> list[dict]:
        # The title changes once the results of exactly this query are on screen.
        expect(self.page).to_have_title(f"{query} - takes")
        return results(self.page)


def results(page) -> list[dict]:
    return page.locator("#results > li.result").evaluate_all(
        """items => items.map(item => ({
            id: item.dataset.id,
            date: item.dataset.date,
            thread_id: item.dataset.thread,
            text: item.querySelector('.take-text').textContent,
            position: item.querySelector('.position').textContent,
        }))"""
    )


def new_visit(browser, origin: str, viewport: dict) -> tuple[object, Visit]:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    visit = Visit(page, origin)
    page.on("request", lambda request: visit.requests.append(request.url))
    page.on("pageerror", lambda error: visit.errors.append(str(error)))
    return context, visit


def check_same_origin(visit: Visit) -> None:
    assert visit.requests, "the page made no requests at all"
    foreign = [url for url in visit.requests if not url.startswith(visit.origin + "/")]
    assert not foreign, f"the page reached beyond {visit.origin}: {foreign}"
    assert not visit.errors, f"the page's script failed: {visit.errors}"


@pytest.fixture
def visit(browser, server):
    context, visit = new_visit(browser, server, DESKTOP)
    yield visit
    context.close()
    check_same_origin(visit)


def test_typing_a_question_shows_the_compute_take_with_count_time_and_highlights(visit):
    shown = visit.search_by_typing(QUERY)
    page = visit.page

    assert any(is_compute_take(result) for result in shown[:10]), shown[:10]
    compute = next(result for result in shown if is_compute_take(result))
    item = page.locator(f'li.result[data-id="{compute["id"]}"]')
    expect(item.locator("time")).to_have_text("Jun 25, 2023")
    expect(item.locator(".author")).to_have_text("Jack Clark")
    expect(item.locator(".handle")).to_have_text("@jackclarkSF")
    assert re.fullmatch(r"\d+/22", compute["position"])
    expect(item.locator(".relevance-score")).to_have_text(re.compile(r"^\d\.\d\d$"))
    marked = {text.lower() for text in page.locator("#results mark").all_text_contents()}
    assert "compute" in marked and "what" not in marked and "about" not in marked
    expect(page.locator("#status")).to_have_text(re.compile(rf"^{len(shown)} takes in (\d+(\.\d)? ms|under 1 ms)$"))
    assert parse_qs(urlsplit(page.url).query)["q"] == [QUERY]
    expect(item.locator(".source")).to_have_text("jackclark_ai_policy.txt")
    # Results without a `match` field count as strong: no note, nothing greyed.
    expect(page.locator("#weak-note")).to_be_hidden()
    expect(page.locator("#results > li.weak")).to_have_count(0)


def test_filler_words_are_not_highlighted(visit):
    visit.search_by_typing("what do you think about AI regulation")
    marked = {text.lower() for text in visit.page.locator("#results mark").all_text_contents()}
    assert marked and not marked & {"ai", "what", "do", "you", "about"}, marked
    assert any(word.startswith("regulat") for word in marked), marked


def test_a_shared_link_shows_its_results_without_javascript(browser, server):
    context = browser.new_context(viewport=DESKTOP, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{server}/?" + str(httpx.QueryParams({"q": QUERY})))
        items = page.locator("#results > li.result")
        expect(items).to_have_count(10)
        expect(items.first.locator(".take-text")).to_be_visible()
        expect(page.locator("#q")).to_have_value(QUERY)
        assert page.title() == f"{QUERY} - takes"
    finally:
        context.close()


def test_a_shared_link_opens_with_the_servers_results_without_searching_again(visit):
    page = visit.open("/?" + str(httpx.QueryParams({"q": QUERY})))
    shown = visit.results_for(QUERY)
    assert len(shown) == 10
    # The results work as if searched here: a click opens the take in its thread.
    page.locator("#results .take-text").first.click()
    expect(page.locator("#results .context-take.current")).to_have_count(1)
    assert not [url for url in visit.requests if "/search?" in url], visit.requests


def test_when_no_match_is_strong_the_page_says_so_and_greys_the_results(visit):
    def all_weak(route):
        response = route.fetch()
        body = response.json()
        for result in body["results"]:
            result["match"] = "weak"
        route.fulfill(response=response, json=body)

    visit.page.route(re.compile(r"/search\?"), all_weak)
    shown = visit.search_by_typing("zebra migration patterns")
    page = visit.page
    expect(page.locator("#weak-note")).to_have_text("No strong matches; the closest takes are:")
    expect(page.locator("#results > li.weak")).to_have_count(len(shown))
    # A strong result anywhere: no note.
    page.unroute(re.compile(r"/search\?"))
    visit.page.locator("#q").fill(QUERY)
    visit.results_for(QUERY)
    expect(page.locator("#weak-note")).to_be_hidden()


def test_the_authors_are_offered_as_suggestions(visit):
    page = visit.open("/")
    assert page.locator("#author").get_attribute("list") == "authors"
    assert page.locator("#authors option").evaluate_all("options => options.map(o => o.value)") == ["Jack Clark", "@jackclarkSF"]
    page.fill("#author", "Clark")
    page.locator("#q").fill(QUERY)
    assert visit.results_for(QUERY)


def test_a_shared_url_reproduces_the_same_results(browser, server, visit):
    typed = visit.search_by_typing(QUERY)
    shared_url = visit.page.url

    context, second = new_visit(browser, server, DESKTOP)
    try:
        second.page.goto(shared_url)
        assert second.results_for(QUERY) == typed
        expect(second.page.locator("#q")).to_have_value(QUERY)
    finally:
        context.close()
    check_same_origin(second)


def test_enter_on_a_result_opens_its_neighbours_and_the_whole_thread_in_order(visit):
    shown = visit.search_by_typing(QUERY)
    page = visit.page
    # A take with two neighbours on each side, so the context is complete.
    chosen = next(r for r in shown if 3 <= int(r["position"].split("/")[0]) <= int(r["position"].split("/")[1]) - 2)
    thread = httpx.get(f"{visit.origin}/threads/{chosen['thread_id']}").json()["takes"]
    at = [take["id"] for take in thread].index(chosen["id"])

    button = page.locator(f'li.result[data-id="{chosen["id"]}"] .take-text')
    button.focus()
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-expanded", "true")
    context = page.locator(f'li.result[data-id="{chosen["id"]}"] .context-take')
    expect(context).to_have_count(5)
    assert context.evaluate_all("items => items.map(item => item.dataset.id)") == [take["id"] for take in thread[at - 2 : at + 3]]
    expect(context.nth(2)).to_have_attribute("aria-current", "true")
    expect(context.nth(0)).to_contain_text(thread[at - 2]["text"][:40])

    # Enter again closes it.
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")

    page.locator(f'li.result[data-id="{chosen["id"]}"] .context-note a').click()
    takes = page.locator("#thread-takes > li")
    expect(takes).to_have_count(len(thread))
    assert takes.evaluate_all("items => items.map(item => item.dataset.id)") == [take["id"] for take in thread]
    target = page.locator(f'#thread-takes > li[data-id="{chosen["id"]}"]')
    expect(target).to_have_class(re.compile(r"\btarget\b"))
    expect(target).to_be_focused()
    assert parse_qs(urlsplit(page.url).query)["thread"] == [chosen["thread_id"]]

    page.locator("#thread-back").click()
    assert visit.results_for(QUERY) == shown


def test_slash_brings_the_focus_back_and_results_are_reachable_by_tab(visit):
    visit.search_by_typing(QUERY)
    page = visit.page
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('take-text')"):
            break
    else:
        pytest.fail("Tab never reached a result")
    page.keyboard.press("/")
    expect(page.locator("#q")).to_be_focused()
    expect(page.locator("#q")).to_have_value(QUERY)
    labelled = page.evaluate("[...document.querySelectorAll('input')].every(input => input.labels.length > 0)")
    assert labelled, "every input has a label"


def test_an_over_long_query_shows_the_servers_message(visit):
    query = "compute " * 126  # 1008 characters
    detail = httpx.get(f"{visit.origin}/search", params={"q": query}).json()["detail"]
    assert "1000" in detail

    page = visit.open("/?" + str(httpx.QueryParams({"q": query})))
    error = page.locator("#error")
    expect(error).to_be_visible()
    expect(error).to_contain_text(detail)
    expect(page.locator("#results > li")).to_have_count(0)


def test_filters_are_sent_to_the_server_and_an_empty_result_says_so(visit):
    visit.search_by_typing(QUERY)
    page = visit.page

    with page.expect_response(lambda response: "/search?" in response.url and "since=2023-01-01" in response.url):
        page.fill("#since", "2023-01-01")
    expect(page).to_have_url(re.compile(r"since=2023-01-01"))
    expect(page.locator("#results > li.result[data-date^='2022']")).to_have_count(0)
    dates = [result["date"] for result in results(page)]
    assert dates and all(date >= "2023-01-01" for date in dates), dates

    page.fill("#author", "nobody by this name")
    expect(page.locator("#status")).to_have_text(re.compile(r"^No takes match"))
    expect(page.locator("#results > li")).to_have_count(0)


def test_a_server_that_cannot_be_reached_is_a_readable_error(visit):
    visit.open("/")
    visit.page.route(re.compile(r"/search\?"), lambda route: route.abort("connectionrefused"))
    visit.page.keyboard.type(QUERY)
    expect(visit.page.locator("#error")).to_contain_text("Can't reach the server")


def test_screenshots_of_a_real_search_at_desktop_and_phone_widths(browser, server):
    ARTIFACTS.mkdir(exist_ok=True)
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context, visit = new_visit(browser, server, viewport)
        try:
            shown = visit.search_by_typing(QUERY)
            assert shown
            page = visit.page
            # Phone width: nothing sticks out sideways.
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            # The clear button has its own place beside the query, never on top of it.
            box, clear = page.locator("#q").bounding_box(), page.locator("#clear-query").bounding_box()
            assert clear and clear["x"] >= box["x"] + box["width"], (box, clear)
            page.locator("#q").blur()
            page.screenshot(path=str(ARTIFACTS / f"page-{name}.png"))
            page.locator("#results .take-text").first.click()
            expect(page.locator("#results .context-take.current")).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / f"page-{name}-open.png"))
        finally:
            context.close()
        check_same_origin(visit)
        assert (ARTIFACTS / f"page-{name}.png").stat().st_size > 10_000


# ---- hostile data ---------------------------------------------------------------------------


def test_take_text_is_shown_as_text_and_only_web_links_become_links(browser, servers):
    context, visit = new_visit(browser, servers["hostile"], DESKTOP)
    try:
        visit.search_by_typing("compute")
        page = visit.page
        first = page.locator('li.result[data-id="mallory-1"]')
        expect(first.locator(".take-text")).to_have_text(HOSTILE[0].text)
        expect(first.locator(".author")).to_have_text(HOSTILE[0].author)
        assert page.locator("#results img, #results script, #results b").count() == 0
        expect(first.locator('a[href="https://example.org/mallory/1"]')).to_have_attribute("rel", "noopener noreferrer")
        second = page.locator('li.result[data-id="mallory-2"]')
        expect(second.locator("a")).to_have_count(1)  # the thread link only
        assert page.evaluate("window.pwned") is None
    finally:
        context.close()
    check_same_origin(visit)
