"""Fetch Bluesky posts by link or by author from the public AppView API (no login).

Through the ``atproto`` client (the ``bluesky`` extra). A thread link
(``https://bsky.app/profile/<handle or did>/post/<rkey>``) gives that post's
self-reply thread: the author's posts above and below it that reply to their
own. An author gives their posts, newest first back to ``since``. Records go
through the same reading and threading as a repository export
(``indexer.sources.bluesky``), so a post fetched here and the same post from an
export have the same id and text, and adding both adds it once.

Requests are spaced by ``min_interval`` seconds (the public API's limit is far
higher; this keeps a long backfill polite), retried with backoff on network
errors, rate limiting (its ``Retry-After`` is honoured) and server errors.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from typing import Any

from indexer.errors import ParseError, TakesError
from indexer.models import Take
from indexer.sources import bluesky
from indexer.sources.common import iso_date

DEFAULT_API = "https://public.api.bsky.app"
_POST_LINK = re.compile(r"https://(?:www\.)?bsky\.app/profile/(?P<actor>[^/?#\s]+)/post/(?P<rkey>[A-Za-z0-9._~:-]+)/?(?:[?#].*)?")
_PAGE_SIZE = 100
# Server-side limits of getPostThread; a longer self-thread is cut there.
_THREAD_DEPTH = 1000
_RETRIABLE_STATUSES = {408, 409, 413, 429, 500, 502, 503, 504}
_RETRIES_WITHOUT_ANSWER = 2


def is_post_link(value: str) -> bool:
    """True for a bsky.app post link."""
    return _POST_LINK.fullmatch(value.strip()) is not None


class BlueskyFetcher:
    """A polite, retrying reader of the public Bluesky API."""

    def __init__(
        self,
        api_url: str = DEFAULT_API,
        *,
        min_interval: float = 0.5,
        retries: int = 4,
        backoff: float = 1.0,
        timeout: float = 30.0,
        progress: bool = False,
    ):
        try:
            from atproto import Client, Request
        except ImportError:
            raise TakesError(bluesky.INSTALL_HINT) from None
        self.api_url = api_url.rstrip("/")
        self._client = Client(self.api_url, request=Request(timeout=timeout))
        self._min_interval, self._retries, self._backoff, self._progress = min_interval, retries, backoff, progress
        self._last_request = float("-inf")

    def thread(self, link: str) -> list[Take]:
        """The self-reply thread that the post at ``link`` belongs to."""
        match = _POST_LINK.fullmatch(link.strip())
        if match is None:
            raise TakesError(f"{link}: not a Bluesky post link like https://bsky.app/profile/<handle>/post/<id>")
        did = self._did(match["actor"])
        uri = f"at://{did}/{bluesky.POST_COLLECTION}/{match['rkey']}"
        with self._bar(f"fetching {link}") as bar:
            response = self._call(
                lambda: self._client.app.bsky.feed.get_post_thread(
                    {"uri": uri, "depth": _THREAD_DEPTH, "parentHeight": _THREAD_DEPTH}
                ),
                not_found=f"{link}: no such post on Bluesky (deleted, or visible to signed-in users only)",
            )
            views = _thread_views(response.thread, link)
            bar.update(len(views))
        mine = [view for view in views if view.post.author.did == did]
        author = mine[0].post.author if mine else None
        takes = self._takes([view.post for view in mine], did, author, link)
        wanted = next((take.thread_id for take in takes if take.id.endswith(f"-{match['rkey']}")), None)
        return [take for take in takes if take.thread_id == wanted]

    def author_posts(self, actor: str, since: str | None = None) -> list[Take]:
        """An author's own posts (not reposts), threaded, from the newest back to ``since`` (an ISO date)."""
        if since is not None:
            try:
                since = iso_date(since)
            except ValueError:
                raise TakesError(f"--since {since!r} is not an ISO date like 2024-05-01") from None
        actor = actor.strip().lstrip("@")
        did = self._did(actor)
        posts, cursor, author = [], None, None
        with self._bar(f"fetching posts of @{actor}") as bar:
            while True:
                params = {"actor": did, "limit": _PAGE_SIZE, "filter": "posts_with_replies"}
                if cursor:
                    params["cursor"] = cursor
                page = self._call(
                    lambda params=params: self._client.app.bsky.feed.get_author_feed(params),
                    not_found=f"no Bluesky account {actor!r}",
                )
                reached_since = False
                for item in page.feed:
                    post = item.post
                    if item.reason is not None or post.author.did != did:
                        continue  # reposts and pins are listed by the author but made by someone else or earlier
                    day = _day_of(post)
                    if since is not None and day is not None and day < since:
                        reached_since = True
                        continue
                    author = author or post.author
                    posts.append(post)
                    bar.update(1)
                cursor = page.cursor
                if reached_since or not cursor or not page.feed:
                    break
        return self._takes(posts, did, author, f"bsky.app/profile/{actor}")

    def _takes(self, post_views: list[Any], did: str, author: Any, source: str) -> list[Take]:
        from atproto_client.models.utils import get_model_as_dict

        posts = []
        for view in post_views:
            parts = bluesky.split_at_uri(view.uri)
            if parts is None or parts[1] != bluesky.POST_COLLECTION:
                continue
            record = get_model_as_dict(view.record) if not isinstance(view.record, dict) else view.record
            fail = lambda problem, uri=view.uri: ParseError(source, None, f"post {uri}: {problem}")  # noqa: E731
            posts.append(bluesky.read_post(parts[2], record, fail))
        handle = getattr(author, "handle", None)
        name = getattr(author, "display_name", None)
        name = name.strip() if isinstance(name, str) and name.strip() else None
        return bluesky.thread_posts(posts, did, handle=handle, author=name, source=source)

    def _did(self, actor: str) -> str:
        if actor.startswith("did:"):
            return actor
        response = self._call(
            lambda: self._client.com.atproto.identity.resolve_handle({"handle": actor}),
            not_found=f"no Bluesky account {actor!r}",
        )
        return response.did

    def _call(self, request: Callable[[], Any], *, not_found: str) -> Any:
        """``request()``, spaced and retried; TakesError in one line when it cannot succeed."""
        from atproto_client import exceptions

        for attempt in range(self._retries + 1):
            wait = self._last_request + self._min_interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self._last_request = time.monotonic()
            try:
                return request()
            except exceptions.BadRequestError as error:
                # The AppView answers 400 for a post or handle it does not know.
                raise TakesError(f"{not_found} ({_detail(error)})") from None
            except exceptions.RequestErrorBase as error:
                status = error.response.status_code if error.response is not None else None
                if status is not None and status not in _RETRIABLE_STATUSES:
                    raise TakesError(f"the Bluesky API at {self.api_url} refused the request ({status}: {_detail(error)})") from None
                # No answer at all (offline, refused, no DNS) is rarely cured by waiting: give up sooner.
                if attempt == self._retries or (status is None and attempt == min(self._retries, _RETRIES_WITHOUT_ANSWER)):
                    if status is None:
                        cause = error.__cause__ or error
                        raise TakesError(
                            f"cannot reach the Bluesky API at {self.api_url} ({type(cause).__name__}: {cause}): "
                            "offline? (TAKES_BLUESKY_API sets the address)"
                        ) from None
                    raise TakesError(f"the Bluesky API at {self.api_url} kept failing ({status}: {_detail(error)}): try again later") from None
                retry_after = getattr(error, "retry_after", None)
                time.sleep(min(retry_after, 60.0) if isinstance(retry_after, (int, float)) else self._backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _bar(self, description: str):
        from tqdm import tqdm

        return tqdm(desc=description, unit=" posts", disable=not self._progress, file=sys.stderr, leave=False)


def _thread_views(thread: Any, link: str) -> list[Any]:
    """Every ThreadViewPost of a getPostThread answer: the parents above, then the replies below, depth first."""
    from atproto import models

    if not isinstance(thread, models.AppBskyFeedDefs.ThreadViewPost):
        raise TakesError(f"{link}: the post is not available (deleted, blocked, or for signed-in users only)")
    above = []
    parent = thread.parent
    while isinstance(parent, models.AppBskyFeedDefs.ThreadViewPost):
        above.append(parent)
        parent = parent.parent
    views, stack = [], [thread]
    while stack:
        view = stack.pop()
        views.append(view)
        stack.extend(reply for reply in reversed(view.replies or []) if isinstance(reply, models.AppBskyFeedDefs.ThreadViewPost))
    return [*reversed(above), *views]


def _day_of(post: Any) -> str | None:
    for value in (getattr(post.record, "created_at", None), post.indexed_at):
        try:
            return iso_date(value)
        except (TypeError, ValueError):
            continue
    return None


def _detail(error: Any) -> str:
    content = getattr(error.response, "content", None)
    message = getattr(content, "message", None) or getattr(content, "error", None)
    return str(message or (error.response.status_code if error.response is not None else error))
