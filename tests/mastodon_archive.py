"""Build Mastodon account archives (outbox.json, actor.json, the zip) for tests.

The shapes follow what Mastodon's export writes: an ActivityPub
OrderedCollection of Create/Announce activities with the notes embedded.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

HOST = "mastodon.example"
ACTOR = f"https://{HOST}/users/policyfan"
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
FOLLOWERS = f"{ACTOR}/followers"


def note(status_id: str, content: str, published: str, *, reply_to: str | None = None, to=None, cc=None, **fields) -> dict:
    uri = f"{ACTOR}/statuses/{status_id}"
    to = [PUBLIC] if to is None else to
    cc = [FOLLOWERS] if cc is None else cc
    return {
        "id": f"{uri}/activity",
        "type": "Create",
        "actor": ACTOR,
        "published": published,
        "to": to,
        "cc": cc,
        "object": {
            "id": uri,
            "type": "Note",
            "summary": None,
            "inReplyTo": reply_to,
            "published": published,
            "url": f"https://{HOST}/@policyfan/{status_id}",
            "attributedTo": ACTOR,
            "to": to,
            "cc": cc,
            "sensitive": False,
            "content": content,
            "contentMap": {"en": content},
            "attachment": [],
            "tag": [],
            **fields,
        },
    }


def status_uri(status_id: str) -> str:
    return f"{ACTOR}/statuses/{status_id}"


def boost(status_id: str, of: str) -> dict:
    return {"id": f"{ACTOR}/statuses/{status_id}/activity", "type": "Announce", "actor": ACTOR,
            "published": "2024-05-02T10:00:00Z", "to": [PUBLIC], "cc": [FOLLOWERS], "object": of}


def outbox(items: list[dict]) -> dict:
    return {"@context": "https://www.w3.org/ns/activitystreams", "id": "outbox.json", "type": "OrderedCollection",
            "totalItems": len(items), "orderedItems": items}


def actor() -> dict:
    return {"@context": ["https://www.w3.org/ns/activitystreams"], "id": ACTOR, "type": "Person",
            "preferredUsername": "policyfan", "name": "Policy Fan", "url": f"https://{HOST}/@policyfan"}


def sample_items() -> list[dict]:
    """A thread of three, a reply to someone else, a boost, a followers-only post, a DM, media only."""
    link = ('<a href="https://example.com/eu-ai-act/article-51" rel="nofollow noopener" target="_blank">'
            '<span class="invisible">https://</span><span class="ellipsis">example.com/eu-ai-act/artic</span>'
            '<span class="invisible">le-51</span></a>')
    return [
        note("1001", "<p>Compute thresholds are a blunt tool &amp; we should say so.</p><p>A thread 🧵</p>", "2024-05-01T09:00:00Z"),
        note("1002", "<p>They track training cost,<br>not capability.</p>", "2024-05-01T09:01:00Z", reply_to=status_uri("1001")),
        note("1003", f"<p>Still, see {link} for the EU text.</p>", "2024-05-01T09:02:00Z", reply_to=status_uri("1002")),
        note("1004", '<p><span class="h-card"><a href="https://other.example/@bob" class="u-url mention">@<span>bob</span></a></span>'
             ' I disagree: <a href="https://other.example/tags/evals" class="mention hashtag" rel="tag">#<span>evals</span></a> matter more.</p>',
             "2024-05-03T12:00:00Z", reply_to="https://other.example/users/bob/statuses/77"),
        boost("1005", "https://other.example/users/bob/statuses/78"),
        note("1006", "<p>Only my followers see this.</p>", "2024-05-04T08:00:00Z", to=[FOLLOWERS], cc=[]),
        note("1007", "<p>@bob a direct message</p>", "2024-05-04T09:00:00Z", to=["https://other.example/users/bob"], cc=[]),
        note("1008", "<p></p>", "2024-05-05T09:00:00Z"),
        note("1009", "<p>Unlisted, but still public.</p>", "2024-05-06T09:00:00Z", to=[FOLLOWERS], cc=[PUBLIC]),
    ]


def write_folder(folder: Path, items: list[dict] | None = None, *, with_actor: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "outbox.json").write_text(json.dumps(outbox(sample_items() if items is None else items)), encoding="utf-8")
    if with_actor:
        (folder / "actor.json").write_text(json.dumps(actor()), encoding="utf-8")
    return folder


def write_zip(path: Path, items: list[dict] | None = None, *, with_actor: bool = True) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("outbox.json", json.dumps(outbox(sample_items() if items is None else items)))
        if with_actor:
            archive.writestr("actor.json", json.dumps(actor()))
        archive.writestr("likes.json", json.dumps({"orderedItems": []}))
        archive.writestr("media_attachments/files/000/avatar.png", b"\x89PNG")
    return path
