"""Mastodon archives: zip, folder and outbox.json; visibility; threads; HTML to text; errors."""

from __future__ import annotations

import json
import zipfile

import pytest

from indexer.errors import ParseError
from indexer.sources import detect_format, mastodon, read_takes
from tests.mastodon_archive import FOLLOWERS, HOST, note, outbox, status_uri, write_folder, write_zip

EXPECTED_PUBLIC = ["1001", "1002", "1003", "1004", "1009"]


def local_ids(takes) -> list[str]:
    return [take.id.removeprefix(f"{HOST}-") for take in takes]


def test_zip_public_notes_threaded_with_the_actor(tmp_path):
    takes = read_takes(write_zip(tmp_path / "archive-20240601.zip"))
    assert local_ids(takes) == EXPECTED_PUBLIC
    first, second, third, other, unlisted = takes
    assert first.text == "Compute thresholds are a blunt tool & we should say so.\n\nA thread 🧵"
    assert (first.author, first.handle, first.date) == ("Policy Fan", "@policyfan@mastodon.example", "2024-05-01")
    assert first.url == f"https://{HOST}/@policyfan/1001" and first.source == "archive-20240601.zip"
    assert [(t.thread_id, t.position, t.thread_size) for t in (first, second, third)] == [(first.id, n, 3) for n in (1, 2, 3)]
    assert second.text == "They track training cost,\nnot capability."
    # Mastodon splits a long link over hidden spans for display: the text keeps the whole URL.
    assert third.text == "Still, see https://example.com/eu-ai-act/article-51 for the EU text."
    # A reply to someone else is its own thread; mentions and hashtags read as written.
    assert other.text == "@bob I disagree: #evals matter more."
    assert (other.thread_id, other.thread_size) == (other.id, 1)
    assert unlisted.text == "Unlisted, but still public."


def test_folder_and_outbox_json_read_the_same(tmp_path):
    folder = write_folder(tmp_path / "mastodon-archive")
    from_zip = read_takes(write_zip(tmp_path / "a.zip"))
    from_folder = read_takes(folder)
    from_outbox = read_takes(folder / "outbox.json")
    assert [t.to_dict() | {"source": ""} for t in from_folder] == [t.to_dict() | {"source": ""} for t in from_zip]
    assert [t.to_dict() | {"source": ""} for t in from_outbox] == [t.to_dict() | {"source": ""} for t in from_zip]
    assert {t.source for t in from_folder} == {"mastodon-archive"} and {t.source for t in from_outbox} == {"outbox.json"}
    assert detect_format((folder / "outbox.json").read_text(), "outbox.json") == "mastodon"


def test_private_posts_only_when_asked(tmp_path):
    path = write_zip(tmp_path / "a.zip")
    takes = read_takes(path, include_private=True)
    assert local_ids(takes) == ["1001", "1002", "1003", "1004", "1006", "1007", "1009"]
    # The boost and the media-only note are never takes.
    assert not any(take.id.endswith(("1005", "1008")) for take in takes)


def test_without_actor_json_the_handle_comes_from_the_notes(tmp_path):
    takes = read_takes(write_zip(tmp_path / "a.zip", with_actor=False))
    assert {(t.author, t.handle) for t in takes} == {(None, "@policyfan@mastodon.example")}


def test_a_note_published_before_its_parent_still_joins_by_reply():
    items = [note("2", "<p>second</p>", "2024-01-01T00:01:00Z", reply_to=status_uri("1")), note("1", "<p>first</p>", "2024-01-01T00:00:00Z")]
    takes = mastodon.parse(json.dumps(outbox(items)), "outbox.json")
    assert [(t.text, t.position, t.thread_id) for t in takes] == [("first", 1, f"{HOST}-1"), ("second", 2, f"{HOST}-1")]


def test_content_warning_leads_the_text():
    items = [note("1", "<p>the post</p>", "2024-01-01T00:00:00Z", summary="EU AI Act")]
    assert mastodon.parse(json.dumps(outbox(items)), "outbox.json")[0].text == "EU AI Act\n\nthe post"


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ("<p>a</p><p>b</p>", "a\n\nb"),
        ("<p>line<br>break</p>", "line\nbreak"),
        ('<p><a href="https://example.com/report.pdf">the report</a></p>', "the report (https://example.com/report.pdf)"),
        ("<ul><li>one</li><li>two</li></ul>", "- one\n- two"),
        ("<p>&lt;b&gt; is not bold &amp; fine</p>", "<b> is not bold & fine"),
        ("<p><br></p>", ""),
    ],
)
def test_html_to_text(html, text):
    assert mastodon.html_to_text(html) == text


def test_wrong_json_names_the_line(tmp_path):
    path = tmp_path / "outbox.json"
    path.write_text('{"@context": "https://www.w3.org/ns/activitystreams",\n "orderedItems": [\n  {"type": "Create",}\n]}', encoding="utf-8")
    with pytest.raises(ParseError, match=r"outbox\.json:3: malformed JSON"):
        read_takes(path)


def test_not_an_outbox(tmp_path):
    path = tmp_path / "outbox.json"
    path.write_text('{"@context": "https://www.w3.org/ns/activitystreams", "type": "Person"}', encoding="utf-8")
    with pytest.raises(ParseError, match="not a Mastodon outbox"):
        read_takes(path, "mastodon")


def test_a_note_without_content_names_the_item():
    item = note("1", "x", "2024-01-01T00:00:00Z")
    del item["object"]["content"], item["object"]["contentMap"]
    with pytest.raises(ParseError, match=r"item 1 \(.*statuses/1/activity\): the note has no 'content'"):
        mastodon.parse(json.dumps(outbox([item])), "outbox.json")


def test_html_only_content_is_no_take():
    items = [note("1", '<p><img src="x.png"></p>', "2024-01-01T00:00:00Z"), note("2", "<p>words</p>", "2024-01-01T00:00:01Z")]
    assert [t.text for t in mastodon.parse(json.dumps(outbox(items)), "outbox.json")] == ["words"]


def test_missing_actor_in_activity_and_note_is_an_error():
    item = note("1", "<p>hi</p>", "2024-01-01T00:00:00Z")
    del item["actor"], item["object"]["attributedTo"]
    with pytest.raises(ParseError, match="cannot tell whose post it is"):
        mastodon.parse(json.dumps(outbox([item])), "outbox.json")


def test_malformed_actor_json(tmp_path):
    folder = write_folder(tmp_path / "archive")
    (folder / "actor.json").write_text('{"type": "Person"}', encoding="utf-8")
    with pytest.raises(ParseError, match=r"actor\.json: not a Mastodon actor"):
        read_takes(folder)


def test_zip_without_outbox_and_broken_zip(tmp_path):
    empty = tmp_path / "other.zip"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("data/tweets.js", "window.YTD.tweets.part0 = []")
    with pytest.raises(ParseError, match="no outbox.json in this zip"):
        read_takes(empty)
    broken = tmp_path / "broken.zip"
    broken.write_bytes(write_zip(tmp_path / "ok.zip").read_bytes()[:200])
    with pytest.raises(ParseError, match=r"broken\.zip: not a readable zip file"):
        read_takes(broken)


def test_a_bad_published_date_names_the_item():
    items = [note("1", "<p>hi</p>", "yesterday")]
    with pytest.raises(ParseError, match="'published' 'yesterday' is not an ISO timestamp"):
        mastodon.parse(json.dumps(outbox(items)), "outbox.json")


def test_followers_only_reply_does_not_break_the_public_thread():
    items = [
        note("1", "<p>public start</p>", "2024-01-01T00:00:00Z"),
        note("2", "<p>private middle</p>", "2024-01-01T00:01:00Z", reply_to=status_uri("1"), to=[FOLLOWERS], cc=[]),
        note("3", "<p>public end</p>", "2024-01-01T00:02:00Z", reply_to=status_uri("2")),
    ]
    takes = mastodon.parse(json.dumps(outbox(items)), "outbox.json")
    assert [(t.text, t.thread_id, t.position, t.thread_size) for t in takes] == [
        ("public start", f"{HOST}-1", 1, 2), ("public end", f"{HOST}-1", 2, 2),
    ]


def test_a_folder_without_outbox_as_mastodon(tmp_path):
    with pytest.raises(ParseError, match="not a Mastodon archive folder: no outbox.json"):
        read_takes(tmp_path, "mastodon")
