"""Fetching Bluesky threads and authors through the atproto client, from a local AppView."""

from __future__ import annotations

import socket

import pytest

from indexer.errors import TakesError
from indexer.sources import bluesky
from indexer.sources.bluesky_fetch import BlueskyFetcher, is_post_link
from tests.bluesky_api import HANDLE, OTHER_HANDLE, FakeAppView, serve
from tests.bluesky_car import OTHER, OWNER, Repository, sample_repository

BASE = "bsky-policyfan7xq2ldkjw3"


@pytest.fixture
def app_view():
    mine = sample_repository()
    theirs = Repository(OTHER)
    theirs.post("3kotherpost1a", "Evals are the real lever.", "2024-05-03T11:00:00.000Z")
    # Someone else answers inside the thread, and the author answers them: not part of the self-thread.
    comment = theirs.post("3kcomment001a", "What about open weights?", "2024-05-01T09:05:00.000Z",
                          parent=mine.uri("3kthread0002a"), root=mine.uri("3kthread0001a"))
    mine.post("3kanswer0001a", "Open weights are a separate question.", "2024-05-01T09:10:00.000Z",
              parent=comment, root=mine.uri("3kthread0001a"))
    view = FakeAppView(mine, theirs, handles={OWNER: HANDLE, OTHER: OTHER_HANDLE}, names={OWNER: "Policy Fan"})
    view.reposts.append((OWNER, theirs.uri("3kotherpost1a")))
    view.pinned[OWNER] = mine.uri("3kreplyother1a")
    return view


def fetcher(url: str, **options) -> BlueskyFetcher:
    return BlueskyFetcher(url, min_interval=0, backoff=0.01, **options)


def test_post_links():
    assert is_post_link("https://bsky.app/profile/policyfan.bsky.social/post/3kthread0002a")
    assert is_post_link(f"https://bsky.app/profile/{OWNER}/post/3kthread0002a")
    assert not is_post_link("https://bsky.app/profile/policyfan.bsky.social")
    assert not is_post_link("notes.txt")


def test_a_link_to_the_middle_fetches_the_whole_self_thread(app_view):
    with serve(app_view) as url:
        takes = fetcher(url).thread(f"https://bsky.app/profile/{HANDLE}/post/3kthread0002a")
    assert [take.id.removeprefix(BASE + "-") for take in takes] == ["3kthread0001a", "3kthread0002a", "3kthread0003a"]
    assert [(take.position, take.thread_size) for take in takes] == [(1, 3), (2, 3), (3, 3)]
    first = takes[0]
    assert (first.author, first.handle, first.date) == ("Policy Fan", f"@{HANDLE}", "2024-05-01")
    assert first.url == f"https://bsky.app/profile/{HANDLE}/post/3kthread0001a"
    assert takes[2].text == "Still, better than nothing 🧵🇪🇺 see https://example.com/eu-ai-act/article-51"
    assert app_view.requests == ["com.atproto.identity.resolveHandle", "app.bsky.feed.getPostThread"]


def test_fetched_posts_match_the_export(app_view):
    """Same ids and texts as the repository export, so adding both adds each post once."""
    with serve(app_view) as url:
        fetched = fetcher(url).thread(f"https://bsky.app/profile/{OWNER}/post/3kthread0001a")
    exported = {take.id: take for take in bluesky.parse(sample_repository().car(), "repo.car")}
    assert all(exported[take.id].text == take.text and exported[take.id].thread_id == take.thread_id for take in fetched)


def test_author_posts_since_a_date_skip_reposts_and_pins(app_view):
    with serve(app_view) as url:
        takes = fetcher(url).author_posts("@" + HANDLE, since="2024-05-03")
    assert [take.text for take in takes] == [
        "I disagree: evals matter more than FLOP.",
        "Part two of a thread whose start I deleted.",
        "Part three.",
    ]
    assert {take.source for take in takes} == {f"bsky.app/profile/{HANDLE}"}


def test_author_posts_page_through_the_feed(app_view):
    with serve(app_view) as url:
        client = fetcher(url)
        client_takes = client.author_posts(HANDLE)
    assert len(client_takes) == 8  # every text post of the account, the answer to a comment included
    assert app_view.requests.count("app.bsky.feed.getAuthorFeed") == 1
    repo = Repository()
    for number in range(230):
        repo.post(f"3kp{number:09d}a", f"post {number}", f"2024-06-01T00:{number // 60:02d}:{number % 60:02d}.000Z")
    big = FakeAppView(repo, handles={OWNER: HANDLE})
    with serve(big) as url:
        takes = fetcher(url).author_posts(HANDLE)
    assert sorted(take.text for take in takes) == sorted(f"post {number}" for number in range(230))
    assert big.requests.count("app.bsky.feed.getAuthorFeed") == 3


def test_server_errors_are_retried(app_view):
    app_view.fail_next = 2
    with serve(app_view) as url:
        takes = fetcher(url).thread(f"https://bsky.app/profile/{OWNER}/post/3kthread0001a")
    assert len(takes) == 3 and app_view.requests.count("app.bsky.feed.getPostThread") == 3


def test_server_that_keeps_failing_is_one_line(app_view):
    app_view.fail_next = 100
    with serve(app_view) as url, pytest.raises(TakesError, match=r"kept failing \(502: try again\): try again later"):
        fetcher(url, retries=2).thread(f"https://bsky.app/profile/{OWNER}/post/3kthread0001a")


def test_unknown_post_and_handle(app_view):
    with serve(app_view) as url:
        with pytest.raises(TakesError, match=r"3knosuchpost1: no such post on Bluesky"):
            fetcher(url).thread(f"https://bsky.app/profile/{OWNER}/post/3knosuchpost1")
        with pytest.raises(TakesError, match=r"no Bluesky account 'nobody.bsky.social'"):
            fetcher(url).author_posts("nobody.bsky.social")


def test_offline_is_one_clear_line():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port now: the connection is refused, as when offline.
    with pytest.raises(TakesError) as caught:
        fetcher(f"http://127.0.0.1:{port}", retries=1).thread(f"https://bsky.app/profile/{OWNER}/post/3kthread0001a")
    message = str(caught.value)
    assert message.startswith(f"cannot reach the Bluesky API at http://127.0.0.1:{port}") and "offline?" in message
    assert "\n" not in message


def test_bad_since_date():
    with pytest.raises(TakesError, match="--since 'last week' is not an ISO date"):
        fetcher("http://127.0.0.1:9").author_posts(HANDLE, since="last week")
