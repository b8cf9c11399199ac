"""Mastodon account archives: the zip of Settings > Import and export > Request your archive.

The archive (zip or unpacked folder) holds ``outbox.json``, an ActivityPub
``OrderedCollection`` of the owner's activities, and ``actor.json``, the
owner's profile. Takes are the ``Create`` activities whose object is a
``Note``; boosts (``Announce``) are skipped. So are followers-only posts and
direct messages unless ``include_private``: a post is public when its ``to``
or ``cc`` names the Public collection (``cc`` only: "unlisted", still public).

Replies to the owner's own notes (``inReplyTo``) continue their thread; a reply
to someone else starts one. The name and handle come from ``actor.json``;
without it the handle is read off ``attributedTo`` (``https://host/users/name``).

Content is HTML: it becomes text with the standard library's ``html.parser``.
A general HTML-to-text library is not needed here because Mastodon's own
sanitizer lets only a handful of tags through (p, br, a, span, and for
formatted posts del, pre, blockquote, code, b, strong, u, i, em, ul, ol, li),
and the one Mastodon-specific rule, links whose URL is split over
``<span class="invisible">`` parts for display, needs the text of every span
kept, which plain text extraction does. Markdown output (html2text,
markdownify) would add link syntax the take never had.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources.common import iso_date, slugify, tidy_text, with_at

PUBLIC = {"https://www.w3.org/ns/activitystreams#Public", "as:Public", "Public"}
_ACTIVITY_STREAMS = "https://www.w3.org/ns/activitystreams"
_USER_PATH = re.compile(r"/(?:users/|@)(?P<name>[^/]+)/?$")
_NOT_ID_CHARACTER = re.compile(r"[^A-Za-z0-9._~-]+")
# Past these sizes a file in the zip is not an archive's JSON: refuse rather than fill memory.
_MAX_JSON_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class Actor:
    """The archive owner, from ``actor.json``."""

    id: str | None
    handle: str | None
    author: str | None


@dataclass(frozen=True, slots=True)
class _Note:
    id: str
    uri: str
    text: str
    date: str | None
    published: str
    url: str | None
    in_reply_to: str | None
    public: bool


def looks_like_outbox(text: str) -> bool:
    """True if ``text`` starts like an ActivityPub outbox (JSON naming the ActivityStreams context)."""
    head = text[:4096].lstrip()
    return head.startswith("{") and _ACTIVITY_STREAMS in head and '"orderedItems"' in text[:1 << 20]


def parse(
    text: str, source: str, *, actor: Actor | None = None, include_private: bool = False, label: str | None = None
) -> list[Take]:
    """The takes of one ``outbox.json`` text; ``actor`` (from ``actor.json``) names the owner.

    ``source`` names the file in errors; ``label`` (default: ``source``) goes into ``Take.source``.
    """
    try:
        outbox = json.loads(text)
    except json.JSONDecodeError as error:
        raise ParseError(source, error.lineno, f"malformed JSON: {error.msg} (column {error.colno})") from None
    items = outbox.get("orderedItems") if isinstance(outbox, dict) else None
    if not isinstance(items, list):
        raise ParseError(source, None, "not a Mastodon outbox: expected an object with an 'orderedItems' list")
    notes: dict[str, _Note] = {}
    owner_ids: set[str] = set()
    for number, item in enumerate(items, start=1):
        fail = _failer(source, number, item)
        note = _read_item(item, fail)
        if note is None:
            continue
        if note.uri in notes:
            raise fail(f"the same note appears twice ({note.uri})")
        notes[note.uri] = note
        owner_ids.add(_owner_of(item, fail))
    if actor is None or actor.handle is None:
        # Without actor.json the handle comes from the owner's URL (one owner per archive).
        actor = Actor(None, _handle_from_url(sorted(owner_ids)[0]) if owner_ids else None, actor.author if actor else None)
    return _threaded(notes, actor, label or source, include_private)


def parse_actor(text: str, source: str) -> Actor:
    """The owner's name and ``@user@host`` handle from ``actor.json``."""
    try:
        actor = json.loads(text)
    except json.JSONDecodeError as error:
        raise ParseError(source, error.lineno, f"malformed JSON: {error.msg} (column {error.colno})") from None
    if not isinstance(actor, dict) or not isinstance(actor.get("preferredUsername"), str) or not isinstance(actor.get("id"), str):
        raise ParseError(source, None, "not a Mastodon actor: expected an object with 'id' and 'preferredUsername'")
    host = urlsplit(actor["id"]).hostname
    name = actor.get("name")
    return Actor(
        id=actor["id"],
        handle=with_at(f"{actor['preferredUsername']}@{host}" if host else actor["preferredUsername"]),
        author=name.strip() if isinstance(name, str) and name.strip() else None,
    )


def read_zip(path: Path, *, include_private: bool = False) -> list[Take]:
    """The takes of an archive zip, read in place (nothing is unpacked to disk)."""
    try:
        with zipfile.ZipFile(path) as archive:
            outbox, actor_info = _member(archive, "outbox.json"), _member(archive, "actor.json")
            if outbox is None:
                raise ParseError(path, None, "no outbox.json in this zip: is it a Mastodon archive? (unzip an X archive first)")
            actor = None
            if actor_info is not None:
                actor = parse_actor(_zip_text(archive, actor_info, path), f"{path}:{actor_info.filename}")
            text = _zip_text(archive, outbox, path)
    except zipfile.BadZipFile as error:
        raise ParseError(path, None, f"not a readable zip file ({error}): download the archive again") from None
    except OSError as error:
        raise ParseError(path, None, f"cannot read file: {error.strerror or error}") from None
    return parse(text, f"{path}:{outbox.filename}", actor=actor, include_private=include_private, label=path.name)


def html_to_text(html: str) -> str:
    """Plain text of a note's HTML: paragraphs apart, line breaks kept, every link's text kept."""
    converter = _TextOfHtml()
    converter.feed(html)
    converter.close()
    return tidy_text("".join(converter.pieces))


class _TextOfHtml(HTMLParser):
    _BLOCKS = {"p", "blockquote", "pre", "ul", "ol", "div", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._link: tuple[str, int, bool] | None = None  # (href, index of its first piece, is a mention/tag)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._BLOCKS:
            self.pieces.append("\n\n")
        elif tag == "br":
            self.pieces.append("\n")
        elif tag == "li":
            self.pieces.append("\n- ")
        elif tag == "a":
            values = dict(attrs)
            classes = (values.get("class") or "").split()
            self._link = (values.get("href") or "", len(self.pieces), "mention" in classes or "hashtag" in classes)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._BLOCKS:
            self.pieces.append("\n\n")
        elif tag == "a" and self._link is not None:
            href, first, is_tag = self._link
            shown = "".join(self.pieces[first:]).strip()
            bare = re.sub(r"^[a-z]+://", "", href)
            # A link written as other words keeps its URL next to them.
            if href and not is_tag and shown and shown not in (href, bare) and not href.startswith(shown) and not bare.startswith(shown.removesuffix("…")):
                self.pieces.append(f" ({href})")
            self._link = None

    def handle_data(self, data: str) -> None:
        self.pieces.append(data)


def _read_item(item: Any, fail: Callable[[str], ParseError]) -> _Note | None:
    """One validated note; None for what is not a take (boosts, other activities)."""
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        raise fail("expected an activity object with a 'type'")
    if item["type"] != "Create":
        return None  # Announce (a boost), Like, Follow...
    note = item.get("object")
    if not isinstance(note, dict):
        raise fail("a Create activity without its object: expected the note itself, not a link to it")
    if note.get("type") != "Note":
        return None  # polls (Question) and other objects
    uri = note.get("id")
    if not isinstance(uri, str) or not uri:
        raise fail("the note has no 'id'")
    content = note.get("content")
    if content is None and isinstance(note.get("contentMap"), dict):
        content = next(iter(note["contentMap"].values()), None)
    if not isinstance(content, str):
        raise fail("the note has no 'content'")
    text = html_to_text(content)
    summary = note.get("summary")
    if isinstance(summary, str) and summary.strip():
        # A content warning is the author's own words, and says what the post is about.
        text = f"{tidy_text(summary)}\n\n{text}".strip()
    published = note.get("published") or item.get("published")
    if not isinstance(published, str):
        raise fail("the note has no 'published' date")
    try:
        day = iso_date(published)
    except ValueError:
        raise fail(f"'published' {published!r} is not an ISO timestamp like 2024-05-01T09:00:00Z") from None
    url = note.get("url") if isinstance(note.get("url"), str) else uri
    reply_to = note.get("inReplyTo")
    return _Note(
        id=_take_id(uri),
        uri=uri,
        text=text,
        date=day,
        published=published,
        url=url,
        in_reply_to=reply_to if isinstance(reply_to, str) else None,
        public=_is_public(note, item),
    )


def _threaded(notes: dict[str, _Note], actor: Actor, source: str, include_private: bool) -> list[Take]:
    ordered = sorted(notes.values(), key=lambda note: (note.published, note.uri))
    thread_of: dict[str, str] = {}
    threads: dict[str, list[_Note]] = {}
    for note in ordered:
        # Parents are published before their replies, so they are placed first.
        thread_id = thread_of.get(note.in_reply_to or "", note.id)
        thread_of[note.uri] = thread_id
        threads.setdefault(thread_id, []).append(note)
    takes = []
    for thread_id, thread in threads.items():
        # Media-only and (unless asked for) private notes link a thread but are no take.
        thread = [note for note in thread if note.text and (note.public or include_private)]
        for position, note in enumerate(thread, start=1):
            takes.append(
                Take(
                    id=note.id,
                    text=note.text,
                    author=actor.author,
                    handle=actor.handle,
                    date=note.date,
                    thread_id=thread[0].id,
                    position=position,
                    thread_size=len(thread),
                    url=note.url,
                    source=source,
                )
            )
    return takes


def _is_public(note: dict, activity: dict) -> bool:
    audience = []
    for holder in (note, activity):
        for field in ("to", "cc"):
            value = holder.get(field)
            audience += value if isinstance(value, list) else [value]
    return any(isinstance(name, str) and name in PUBLIC for name in audience)


def _owner_of(item: dict, fail: Callable[[str], ParseError]) -> str:
    owner = item.get("actor") or item["object"].get("attributedTo")
    if not isinstance(owner, str) or not owner:
        raise fail("the activity has no 'actor' and the note no 'attributedTo': cannot tell whose post it is")
    return owner


def _handle_from_url(owner: str) -> str | None:
    parts = urlsplit(owner)
    match = _USER_PATH.search(parts.path)
    return with_at(f"{match['name']}@{parts.hostname}") if match and parts.hostname else None


def _take_id(uri: str) -> str:
    """``host-statusid`` ("mastodon.social-112233"): status ids are unique per server only."""
    parts = urlsplit(uri)
    last = parts.path.rstrip("/").rsplit("/", 1)[-1]
    local = _NOT_ID_CHARACTER.sub("-", last).strip("-") or slugify(parts.path)
    return f"{slugify(parts.hostname or 'mastodon')}-{local}"


def _failer(source: str, number: int, item: Any) -> Callable[[str], ParseError]:
    label = f"item {number}"
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        label += f" ({item['id']})"
    return lambda problem: ParseError(source, None, f"{label}: {problem}")


def _member(archive: zipfile.ZipFile, name: str) -> zipfile.ZipInfo | None:
    """The file ``name`` in the zip, shallowest first: some tools zip the folder itself."""
    found = [info for info in archive.infolist() if not info.is_dir() and PurePosixPath(info.filename).name == name]
    return min(found, key=lambda info: info.filename.count("/"), default=None)


def _zip_text(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> str:
    if info.file_size > _MAX_JSON_BYTES:
        raise ParseError(path, None, f"{info.filename} is {info.file_size} bytes: larger than any archive's JSON")
    try:
        return archive.read(info).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ParseError(f"{path}:{info.filename}", None, f"not UTF-8 text (offset {error.start})") from None
