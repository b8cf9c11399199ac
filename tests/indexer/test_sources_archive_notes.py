"""X archive long posts: note-tweet.js gives posts over 280 characters their whole text."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from indexer.errors import ParseError
from indexer.sources import read_takes

EPOCH_MS = 1288834974657
LONG = (
    "Compute thresholds are a blunt instrument for AI governance, and everyone drafting rules knows it. "
    "They are easy to measure and hard to game at first, which is why the EU AI Act and the US executive order "
    "both lean on them. But training compute tracks cost, not capability, and algorithmic progress erodes any fixed "
    "line within a year or two. So a threshold needs a review clause, evaluations beside it, and a sunset date."
)
assert len(LONG) > 300


def snowflake(moment: datetime, sequence: int = 0) -> str:
    return str(((int(moment.timestamp() * 1000) - EPOCH_MS) << 22) | sequence)


AT = datetime(2024, 3, 5, 14, 30, 0, tzinfo=timezone.utc)


def created_at(moment: datetime) -> str:
    return moment.strftime("%a %b %d %H:%M:%S +0000 %Y")


def tweet(id_str: str, text: str, moment: datetime = AT, **fields) -> dict:
    return {"tweet": {"id_str": id_str, "full_text": text, "created_at": created_at(moment), **fields}}


def note(text: str, moment: datetime = AT, note_id: str | None = None, urls=()) -> dict:
    return {
        "noteTweet": {
            "noteTweetId": note_id if note_id is not None else snowflake(moment, 7),
            "updatedAt": moment.isoformat().replace("+00:00", ".000Z"),
            "createdAt": moment.isoformat().replace("+00:00", ".000Z"),
            "lifecycle": {"value": "0", "name": "Unspecified"},
            "core": {"styletags": [], "urls": list(urls), "text": text, "mentions": [], "cashtags": [], "hashtags": []},
        }
    }


def cut(text: str) -> str:
    """What tweets.js holds for a long post: its start, an ellipsis, a link to the rest."""
    return text[:275] + "… https://t.co/AbCdEf1234"


def write_archive(folder, tweets: list[dict], notes: list[dict]):
    data = folder / "data"
    data.mkdir(parents=True)
    (data / "tweets.js").write_text("window.YTD.tweets.part0 = " + json.dumps(tweets, indent=2), encoding="utf-8")
    (data / "note-tweet.js").write_text("window.YTD.note_tweet.part0 = " + json.dumps(notes, indent=2), encoding="utf-8")
    account = [{"account": {"username": "policyfan", "accountDisplayName": "Policy Fan"}}]
    (data / "account.js").write_text("window.YTD.account.part0 = " + json.dumps(account), encoding="utf-8")
    return folder


def texts(folder) -> dict[str, str]:
    return {take.id: take.text for take in read_takes(folder)}


def test_a_long_post_gets_its_whole_text_with_links_expanded(tmp_path):
    with_link = LONG + " Details: https://t.co/Xy12"
    urls = [{"shortUrl": "https://t.co/Xy12", "expandedUrl": "https://example.com/thresholds", "displayUrl": "example.com/thresholds"}]
    folder = write_archive(tmp_path / "x", [tweet(snowflake(AT), cut(with_link))], [note(with_link, urls=urls)])
    assert texts(folder) == {snowflake(AT): LONG + " Details: https://example.com/thresholds"}
    # The same when the tweets file is given alone: note-tweet.js beside it is read.
    assert [take.text for take in read_takes(folder / "data" / "tweets.js")] == [LONG + " Details: https://example.com/thresholds"]


def test_a_short_tweet_that_starts_alike_is_left_alone(tmp_path):
    folder = write_archive(tmp_path / "x", [tweet(snowflake(AT), "Compute thresholds are a blunt")], [note(LONG)])
    assert texts(folder) == {snowflake(AT): "Compute thresholds are a blunt"}


def test_a_note_whose_tweet_was_deleted_adds_nothing(tmp_path):
    later = AT.replace(hour=16)
    folder = write_archive(tmp_path / "x", [tweet(snowflake(later), "another post entirely")], [note(LONG)])
    assert texts(folder) == {snowflake(later): "another post entirely"}


def test_same_start_far_apart_in_time_is_not_matched(tmp_path):
    # Reposted an hour later with the same opening: the note belongs to neither tweet.
    later = AT.replace(hour=15, minute=31)
    folder = write_archive(tmp_path / "x", [tweet(snowflake(later), cut(LONG))], [note(LONG)])
    assert texts(folder)[snowflake(later)] == cut(LONG)


def test_two_tweets_same_start_the_closer_one_gets_the_note(tmp_path):
    # A long post and, three seconds later, a copy cut the same way: only the
    # tweet made with the note (milliseconds apart) takes its text.
    first, second = snowflake(AT, 1), snowflake(AT.replace(second=3), 1)
    folder = write_archive(tmp_path / "x", [tweet(first, cut(LONG)), tweet(second, cut(LONG), AT.replace(second=3))], [note(LONG)])
    assert texts(folder) == {first: LONG, second: cut(LONG)}


def test_two_long_posts_in_one_second_each_get_their_own(tmp_path):
    other = LONG.replace("Compute thresholds", "Model registries", 1)
    first, second = snowflake(AT, 1), snowflake(AT, 2)
    notes = [note(LONG, note_id=snowflake(AT, 3)), note(other, note_id=snowflake(AT, 4))]
    folder = write_archive(tmp_path / "x", [tweet(first, cut(LONG)), tweet(second, cut(other))], notes)
    assert texts(folder) == {first: LONG, second: other}


def test_equally_close_notes_that_both_fit_are_not_guessed(tmp_path):
    # Two notes with the same time and the same opening (an edit, say), no ids
    # to tell them apart: the tweet keeps its own text rather than maybe the wrong one.
    edited = LONG.replace("a sunset date", "a sunset date, reviewed yearly")
    notes = [note(LONG, note_id=""), note(edited, note_id="")]
    folder = write_archive(tmp_path / "x", [tweet("1234567", cut(LONG))], notes)
    assert texts(folder) == {"1234567": cut(LONG)}


def test_a_reply_keeps_its_leading_mentions(tmp_path):
    folder = write_archive(
        tmp_path / "x",
        [tweet(snowflake(AT), "@other " + cut(LONG), in_reply_to_status_id_str="99", in_reply_to_screen_name="other")],
        [note(LONG)],
    )
    assert texts(folder) == {snowflake(AT): "@other " + LONG}


def test_malformed_note_tweet_file_names_the_line(tmp_path):
    folder = write_archive(tmp_path / "x", [tweet(snowflake(AT), "hi")], [])
    (folder / "data" / "note-tweet.js").write_text('window.YTD.note_tweet.part0 = [\n  {"noteTweet": {"core": {}}}\n]', encoding="utf-8")
    with pytest.raises(ParseError, match=r"note-tweet\.js:2: record 1: expected"):
        read_takes(folder)
