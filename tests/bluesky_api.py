"""A local stand-in for the public Bluesky AppView, for tests (127.0.0.1 only).

It serves the few XRPC queries that ``indexer.sources.bluesky_fetch`` makes,
answering with JSON built from the atproto library's own typed response
models, over the records of a ``tests.bluesky_car.Repository``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import libipld
from atproto import models
from atproto_client.models.utils import get_model_as_json, get_or_create

from tests.bluesky_car import Repository

HANDLE = "policyfan.bsky.social"
OTHER_HANDLE = "someone.bsky.social"


class FakeAppView:
    """The posts of one or more repositories, served as the AppView shows them."""

    def __init__(self, *repositories: Repository, handles: dict[str, str], names: dict[str, str] | None = None):
        self.handles = handles  # did -> handle
        self.names = names or {}
        self.posts: dict[str, tuple[str, dict]] = {}  # at:// uri -> (did, record)
        for repo in repositories:
            for key, record in repo.records.items():
                if key.startswith("app.bsky.feed.post/"):
                    self.posts[f"at://{repo.did}/{key}"] = (repo.did, _json_ready(record))
        self.reposts: list[tuple[str, str]] = []  # (did who reposted, uri)
        self.pinned: dict[str, str] = {}  # did -> uri
        self.fail_next = 0  # answer this many requests with 502 first
        self.requests: list[str] = []

    # -- the XRPC queries --------------------------------------------------

    def answer(self, method: str, params: dict[str, str]) -> tuple[int, str]:
        self.requests.append(method)
        if self.fail_next:
            self.fail_next -= 1
            return 502, json.dumps({"error": "UpstreamFailure", "message": "try again"})
        if method == "com.atproto.identity.resolveHandle":
            did = next((did for did, handle in self.handles.items() if handle == params.get("handle")), None)
            if did is None:
                return 400, json.dumps({"error": "InvalidRequest", "message": "Unable to resolve handle"})
            return 200, get_model_as_json(models.ComAtprotoIdentityResolveHandle.Response(did=did))
        if method == "app.bsky.feed.getPostThread":
            uri = params["uri"]
            if uri not in self.posts:
                return 400, json.dumps({"error": "NotFound", "message": f"Post not found: {uri}"})
            view = self._thread_view(uri, parents=True)
            return 200, get_model_as_json(models.AppBskyFeedGetPostThread.Response(thread=view))
        if method == "app.bsky.feed.getAuthorFeed":
            return 200, self._author_feed(params["actor"], int(params.get("limit", 50)), params.get("cursor"))
        return 501, json.dumps({"error": "MethodNotImplemented", "message": method})

    def _post_view(self, uri: str) -> models.AppBskyFeedDefs.PostView:
        did, record = self.posts[uri]
        author = models.AppBskyActorDefs.ProfileViewBasic(did=did, handle=self.handles[did], display_name=self.names.get(did))
        return models.AppBskyFeedDefs.PostView(
            uri=uri,
            cid=libipld.encode_cid(bytes([1, 0x71, 0x12, 0x20]) + bytes(32)),
            author=author,
            record=get_or_create(record, models.AppBskyFeedPost.Record),
            indexed_at=record["createdAt"],
        )

    def _thread_view(self, uri: str, parents: bool) -> models.AppBskyFeedDefs.ThreadViewPost:
        parent = None
        parent_uri = (self.posts[uri][1].get("reply") or {}).get("parent", {}).get("uri")
        if parents and parent_uri:
            parent = (
                self._thread_view(parent_uri, parents=True)
                if parent_uri in self.posts
                else models.AppBskyFeedDefs.NotFoundPost(uri=parent_uri, not_found=True)
            )
        children = [other for other, (_, record) in self.posts.items() if (record.get("reply") or {}).get("parent", {}).get("uri") == uri]
        replies = [self._thread_view(child, parents=False) for child in sorted(children)]
        view = models.AppBskyFeedDefs.ThreadViewPost(post=self._post_view(uri), parent=parent, replies=replies)
        return view

    def _author_feed(self, actor: str, limit: int, cursor: str | None) -> str:
        items = []
        if actor in self.pinned:
            items.append(models.AppBskyFeedDefs.FeedViewPost(post=self._post_view(self.pinned[actor]), reason=models.AppBskyFeedDefs.ReasonPin()))
        timeline = [(record["createdAt"], uri, None) for uri, (did, record) in self.posts.items() if did == actor]
        for reposter, uri in self.reposts:
            if reposter == actor:
                timeline.append(("2024-05-02T10:00:00.000Z", uri, reposter))
        timeline.sort(reverse=True)
        start = int(cursor or 0)
        for _, uri, reposter in timeline[start : start + limit]:
            reason = None
            if reposter:
                by = models.AppBskyActorDefs.ProfileViewBasic(did=reposter, handle=self.handles[reposter])
                reason = models.AppBskyFeedDefs.ReasonRepost(by=by, indexed_at="2024-05-02T10:00:00.000Z")
            items.append(models.AppBskyFeedDefs.FeedViewPost(post=self._post_view(uri), reason=reason))
        next_cursor = str(start + limit) if start + limit < len(timeline) else None
        return get_model_as_json(models.AppBskyFeedGetAuthorFeed.Response(feed=items, cursor=next_cursor))


@contextmanager
def serve(app_view: FakeAppView) -> Iterator[str]:
    """Serve ``app_view`` on 127.0.0.1 (a free port); yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server API)
            parts = urlsplit(self.path)
            method = parts.path.removeprefix("/xrpc/")
            params = {name: values[-1] for name, values in parse_qs(parts.query).items()}
            status, body = app_view.answer(method, params)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _json_ready(value):
    """A record as the API shows it: CIDs (bytes in DAG-CBOR) as their strings."""
    if isinstance(value, bytes):
        return libipld.encode_cid(value)
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return value
