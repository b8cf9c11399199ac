"""Bluesky repository exports: the ``.car`` file of Settings > Export my data.

The same file comes from ``com.atproto.sync.getRepo``. It is a CAR v1 archive
of DAG-CBOR blocks (decoded by ``libipld``, from the ``bluesky`` extra): the
first root is the signed commit, whose ``data`` is the root of the repository's
Merkle Search Tree (MST). Walking the tree in order maps each record key
(``app.bsky.feed.post/<rkey>``) to its record. Only posts are takes: reposts,
likes, follows and the rest live under other collections and are never read.

Threads are rebuilt from ``reply.parent``: a reply to one of the owner's own
posts continues that post's thread; a reply to someone else starts a thread.
When the parent was deleted, the reply joins the thread of its ``reply.root``
if that is the owner's and still there, else the replies to the same missing
post share a thread of their own.

The export names the owner by DID only; the handle is not in it, so ``handle``
stays None and URLs use the DID (bsky.app resolves those). The display name
comes from the profile record, when there is one. The commit's signature is
not checked: that needs the owner's DID document, i.e. the network.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources.common import iso_date, tidy_text, with_at

POST_COLLECTION = "app.bsky.feed.post"
PROFILE_KEY = "app.bsky.actor.profile/self"
_LINK_FACET = "app.bsky.richtext.facet#link"
_AT_URI = re.compile(r"at://(?P<did>[^/]+)/(?P<collection>[^/]+)/(?P<rkey>[^/?#]+)")
_NOT_ID_CHARACTER = re.compile(r"[^A-Za-z0-9._~-]+")
_LATEST = datetime.max.replace(tzinfo=timezone.utc)
INSTALL_HINT = "reading Bluesky needs the atproto packages: pip install 'takes[bluesky]'"


@dataclass(frozen=True, slots=True)
class Post:
    """One post record, as both the export and the public API give it."""

    rkey: str
    text: str
    created_at: str | None
    parent: tuple[str, str] | None  # (did, rkey) of reply.parent
    root: tuple[str, str] | None  # (did, rkey) of reply.root


def looks_like_car(data: bytes) -> bool:
    """True if ``data`` starts like a CAR v1 file (a small DAG-CBOR header with roots and version)."""
    # The header is a varint length and then {"roots": [...], "version": 1}:
    # a key name sits in its first bytes (either one: a truncated file is still a CAR, to report as such).
    head = data[:64]
    return bool(head) and 0 < head[0] < 0x80 and (b"eroots" in head or b"gversion" in head)


def parse(data: bytes, source: str, *, label: str | None = None) -> list[Take]:
    """Every post of a repository export, threaded; ParseError if the file is not a whole repository.

    ``source`` names the file in errors; ``label`` (default: ``source``) goes into ``Take.source``.
    """
    try:
        import libipld
    except ImportError:
        raise ParseError(source, None, INSTALL_HINT) from None
    try:
        header, blocks = libipld.decode_car(data)
    except (ValueError, RecursionError) as error:
        raise ParseError(source, None, f"not a readable CAR file ({error}): the file may be cut short, export the repository again") from None
    roots = header.get("roots") if isinstance(header, dict) else None
    if not isinstance(roots, list) or not roots or not isinstance(roots[0], bytes):
        raise ParseError(source, None, "CAR header has no root: not a repository export")
    commit = blocks.get(roots[0])
    if not isinstance(commit, dict) or not isinstance(commit.get("did"), str) or not isinstance(commit.get("data"), bytes):
        problem = "the commit block is missing" if commit is None else "the root block is not a repository commit"
        raise ParseError(source, None, f"{problem} (no 'did' and 'data'): is this a Bluesky repository export?")
    owner = commit["did"]
    records = walk_tree(blocks, commit["data"], lambda problem: ParseError(source, None, problem))

    author = None
    profile = records.get(PROFILE_KEY)
    if profile is not None:
        profile = _block(blocks, profile, PROFILE_KEY, source)
        name = profile.get("displayName") if isinstance(profile, dict) else None
        author = name.strip() if isinstance(name, str) and name.strip() else None
    prefix = POST_COLLECTION + "/"
    posts = []
    for key, cid in records.items():
        if key.startswith(prefix):
            record = _block(blocks, cid, key, source)
            posts.append(read_post(key[len(prefix):], record, lambda problem, key=key: ParseError(source, None, f"record {key}: {problem}")))
    return thread_posts(posts, owner, handle=None, author=author, source=label or source)


def walk_tree(blocks: Mapping[bytes, Any], root: bytes, fail: Callable[[str], ParseError]) -> dict[str, bytes]:
    """Record key -> record CID for every entry of the MST rooted at ``root``, in key order.

    A node is ``{"l": left subtree | None, "e": [{"p": shared prefix length,
    "k": key suffix, "v": record, "t": right subtree | None}, ...]}``; each key
    is the previous key of the same node cut to ``p`` bytes plus ``k``.
    """
    records: dict[str, bytes] = {}
    # An explicit stack, in-order: a crafted file cannot exhaust the recursion limit.
    stack: list[tuple[str, Any]] = [("node", root)]
    seen: set[bytes] = set()
    while stack:
        kind, item = stack.pop()
        if kind == "key":
            key, cid = item
            records[key] = cid
            continue
        if item in seen:
            raise fail("the repository tree links back to itself: the file is corrupt")
        seen.add(item)
        node = blocks.get(item)
        if node is None:
            raise fail("a block of the repository tree is missing: the CAR file is incomplete (truncated download?)")
        if not isinstance(node, dict) or not isinstance(node.get("e"), list) or not _is_link(node.get("l")):
            raise fail("a block of the repository tree is not an MST node (no 'e' entries list)")
        ordered: list[tuple[str, Any]] = []
        if node.get("l") is not None:
            ordered.append(("node", node["l"]))
        previous = b""
        for entry in node["e"]:
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("p"), int)
                and 0 <= entry["p"] <= len(previous)
                and isinstance(entry.get("k"), bytes)
                and isinstance(entry.get("v"), bytes)
                and _is_link(entry.get("t"))
            ):
                raise fail("an MST entry is malformed (expected p, k, v, t)")
            key_bytes = previous[: entry["p"]] + entry["k"]
            try:
                key = key_bytes.decode("utf-8")
            except UnicodeDecodeError:
                raise fail(f"an MST key is not UTF-8 ({key_bytes[:40]!r})") from None
            previous = key_bytes
            ordered.append(("key", (key, entry["v"])))
            if entry.get("t") is not None:
                ordered.append(("node", entry["t"]))
        stack.extend(reversed(ordered))
    return records


def read_post(rkey: str, record: Any, fail: Callable[[str], ParseError]) -> Post:
    """One validated post record (links in the text shown whole)."""
    if not isinstance(record, dict):
        raise fail("not a post record (expected a map)")
    text = record.get("text", "")
    if not isinstance(text, str):
        raise fail(f"'text' must be a string, got {type(text).__name__}")
    created_at = record.get("createdAt")
    if created_at is not None and not isinstance(created_at, str):
        raise fail(f"'createdAt' must be a string, got {type(created_at).__name__}")
    reply = record.get("reply")
    parent = root = None
    if reply is not None:
        if not isinstance(reply, dict):
            raise fail("'reply' must be a map with 'root' and 'parent'")
        parent, root = _reply_target(reply.get("parent"), "parent", fail), _reply_target(reply.get("root"), "root", fail)
    return Post(rkey=rkey, text=tidy_text(expand_links(text, record.get("facets"))), created_at=created_at, parent=parent, root=root)


def expand_links(text: str, facets: Any) -> str:
    """``text`` with each link facet shown as its full URL.

    The apps shorten a long link in ``text`` ("example.com/a/very/lo...") and
    keep the URL in a facet; facet offsets count UTF-8 bytes, not characters.
    """
    if not isinstance(facets, list):
        return text
    data = text.encode("utf-8")
    links = []
    for facet in facets:
        index = facet.get("index") if isinstance(facet, dict) else None
        features = facet.get("features") if isinstance(facet, dict) else None
        if not isinstance(index, dict) or not isinstance(features, list):
            continue
        start, end = index.get("byteStart"), index.get("byteEnd")
        uri = next(
            (f.get("uri") for f in features if isinstance(f, dict) and f.get("$type") == _LINK_FACET and isinstance(f.get("uri"), str)),
            None,
        )
        if uri and isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(data):
            links.append((start, end, uri))
    pieces, position = [], 0
    for start, end, uri in sorted(links):
        if start < position:
            continue  # overlapping facets: keep the first
        shown = data[start:end].decode("utf-8", "replace")
        pieces += [data[position:start].decode("utf-8", "replace"), link_text(shown, uri)]
        position = end
    pieces.append(data[position:].decode("utf-8", "replace"))
    return "".join(pieces)


def link_text(shown: str, uri: str) -> str:
    """How a link reads as plain text: the URL itself when ``shown`` is a shortened URL, else both."""
    bare = re.sub(r"^[a-z]+://", "", uri)
    stem = shown.removesuffix("...").removesuffix("…")
    if shown == uri or (stem and (uri.startswith(stem) or bare.startswith(stem))):
        return uri
    return f"{shown} ({uri})"


def thread_posts(posts: list[Post], owner: str, *, handle: str | None, author: str | None, source: str) -> list[Take]:
    """Takes from one account's posts, grouped into self-reply threads in time order."""
    by_rkey = {post.rkey: post for post in posts}

    def anchor(post: Post) -> tuple[str, str]:
        """What the post's thread hangs from: its first present post, or the missing post it answers."""
        seen = {post.rkey}
        while post.parent is not None and post.parent[0] == owner:
            parent = by_rkey.get(post.parent[1])
            if parent is None:
                # Deleted parent: go on from the thread's root when it is still there, else the gap anchors it.
                root = by_rkey.get(post.root[1]) if post.root is not None and post.root[0] == owner else None
                if root is None or root.rkey in seen:
                    return ("missing", post.parent[1])
                parent = root
            if parent.rkey in seen:
                break  # a reply loop (crafted data): stop where it closes
            seen.add(parent.rkey)
            post = parent
        return ("post", post.rkey)

    threads: dict[tuple[str, str], list[Post]] = {}
    for post in posts:
        threads.setdefault(anchor(post), []).append(post)
    ordered = sorted(
        (sorted(thread, key=_time_order) for thread in threads.values()), key=lambda thread: _time_order(thread[0])
    )
    takes = []
    base = f"bsky-{_NOT_ID_CHARACTER.sub('-', owner.rsplit(':', 1)[-1]).strip('-')}"
    profile = (handle or "").lstrip("@") or owner
    for thread in ordered:
        # Image-only posts have no text: they hold a thread together but are no take.
        thread = [post for post in thread if post.text]
        for position, post in enumerate(thread, start=1):
            takes.append(
                Take(
                    id=f"{base}-{post.rkey}",
                    text=post.text,
                    author=author,
                    handle=with_at(handle),
                    date=_day(post.created_at),
                    thread_id=f"{base}-{thread[0].rkey}",
                    position=position,
                    thread_size=len(thread),
                    url=f"https://bsky.app/profile/{profile}/post/{post.rkey}",
                    source=source,
                )
            )
    return takes


def split_at_uri(uri: str) -> tuple[str, str, str] | None:
    """``(did, collection, rkey)`` of an ``at://`` URI, or None."""
    match = _AT_URI.fullmatch(uri)
    return (match["did"], match["collection"], match["rkey"]) if match else None


def _reply_target(reference: Any, name: str, fail: Callable[[str], ParseError]) -> tuple[str, str] | None:
    uri = reference.get("uri") if isinstance(reference, dict) else None
    if not isinstance(uri, str):
        raise fail(f"'reply.{name}' has no 'uri'")
    parts = split_at_uri(uri)
    if parts is None:
        raise fail(f"'reply.{name}.uri' {uri!r} is not an at:// URI")
    did, collection, rkey = parts
    return (did, rkey) if collection == POST_COLLECTION else None


def _block(blocks: Mapping[bytes, Any], cid: bytes, key: str, source: str) -> Any:
    if cid not in blocks:
        raise ParseError(source, None, f"record {key}: its block is missing: the CAR file is incomplete (truncated download?)")
    return blocks[cid]


def _is_link(value: Any) -> bool:
    return value is None or isinstance(value, bytes)


def _time_order(post: Post) -> tuple[datetime, str]:
    # Record keys (TIDs) are time-ordered too: they break ties and order undated posts.
    try:
        moment = datetime.fromisoformat(post.created_at) if post.created_at else _LATEST
    except ValueError:
        moment = _LATEST
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment, post.rkey


def _day(created_at: str | None) -> str | None:
    if not created_at:
        return None
    try:
        return iso_date(created_at)
    except ValueError:
        return None
