"""X/Twitter archives: tweets.js parts, self-reply threads, account.js, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexer.errors import ParseError
from indexer.sources import parse_text, read_takes


def tweet(id_str: str, text: str, created_at: str = "Wed Oct 10 20:19:24 +0000 2018", **fields) -> dict:
    return {"tweet": {"id_str": id_str, "full_text": text, "created_at": created_at, **fields}}


def tweets_js(records: list[dict], part: int = 0) -> str:
    # One record per line, as in real archives' pretty-printed files (roughly).
    body = ",\n".join("  " + json.dumps(record) for record in records)
    return f"window.YTD.tweets.part{part} = [\n{body}\n]"


def reply(id_str: str, text: str, to: str, screen_name: str, **fields) -> dict:
    return tweet(id_str, text, in_reply_to_status_id_str=to, in_reply_to_screen_name=screen_name, **fields)


@pytest.fixture
def archive_folder(tmp_path: Path) -> Path:
    data = tmp_path / "twitter-2024-01-01" / "data"
    data.mkdir(parents=True)
    (data / "tweets.js").write_text(
        tweets_js(
            [
                tweet("100", "Compute governance &amp; its limits", "Wed Oct 10 20:19:24 +0000 2018"),
                reply("200", "@other I disagree", "999", "other", created_at="Thu Oct 11 09:00:00 +0000 2018"),
                tweet("300", "RT @other: retweets are not takes"),
                tweet("400", "quoted retweet", retweeted_status={"id_str": "5"}),
            ]
        ),
        encoding="utf-8",
    )
    # The thread continues in the next part: parts are read together.
    (data / "tweets-part1.js").write_text(
        tweets_js(
            [
                reply("101", "Second  point,\n\n  with a  paragraph", "100", "policyfan"),
                reply("102", "Third point", "101", "policyfan", created_at="Sat Jan 05 01:02:03 +0000 2019"),
            ],
            part=1,
        ),
        encoding="utf-8",
    )
    account = [{"account": {"username": "policyfan", "accountDisplayName": "Policy Fan", "accountId": "42"}}]
    (data / "account.js").write_text(f"window.YTD.account.part0 = {json.dumps(account)}", encoding="utf-8")
    return tmp_path / "twitter-2024-01-01"


def test_archive_folder_reads_all_parts_and_threads_self_replies(archive_folder):
    takes = read_takes(archive_folder)
    assert [(t.id, t.thread_id, t.position, t.thread_size, t.date) for t in takes] == [
        ("100", "100", 1, 3, "2018-10-10"),
        ("101", "100", 2, 3, "2018-10-10"),
        ("102", "100", 3, 3, "2019-01-05"),
        ("200", "200", 1, 1, "2018-10-11"),
    ]
    assert takes[0].text == "Compute governance & its limits"
    assert takes[1].text == "Second point,\n\nwith a paragraph"
    assert {(t.author, t.handle, t.source) for t in takes} == {("Policy Fan", "@policyfan", "twitter-2024-01-01")}
    assert takes[2].url == "https://x.com/policyfan/status/102"
    assert read_takes(archive_folder) == takes


def test_tweets_file_uses_sibling_account(archive_folder):
    takes = read_takes(archive_folder / "data" / "tweets.js")
    assert [(t.id, t.thread_size, t.handle, t.author, t.source) for t in takes] == [
        ("100", 1, "@policyfan", "Policy Fan", "tweets.js"),
        ("200", 1, "@policyfan", "Policy Fan", "tweets.js"),
    ]


def test_handle_from_a_self_reply_when_there_is_no_account():
    text = tweets_js([tweet("7", "one"), reply("8", "two", "7", "solo_writer"), reply("9", "@x hi", "1", "x")])
    takes = parse_text(text, "tweets.js")
    assert [(t.id, t.thread_id, t.position, t.handle, t.author) for t in takes] == [
        ("7", "7", 1, "@solo_writer", None),
        ("8", "7", 2, "@solo_writer", None),
        ("9", "9", 1, "@solo_writer", None),
    ]
    assert takes[1].url == "https://x.com/solo_writer/status/8"


def test_unknown_handle_leaves_handle_and_url_empty():
    takes = parse_text(tweets_js([tweet("7", "one"), reply("9", "@x hi", "1", "x")]), "tweets.js")
    assert [(t.handle, t.url) for t in takes] == [(None, None), (None, None)]


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        (tweets_js([tweet("1", "a"), tweet("2", "b")]).replace('"b",', '"b"'), "tweets.js:3:", "malformed JSON"),
        (tweets_js([tweet("1", "a"), {"tweet": {"id_str": "2"}}]), "tweets.js:3:", "record 2: missing 'full_text'"),
        (tweets_js([{"tweet": {"full_text": "x"}}]), "tweets.js:2:", "record 1: missing 'id_str'"),
        (tweets_js([tweet("1", "a", created_at="yesterday")]), "tweets.js:2:", "'created_at' 'yesterday'"),
        (tweets_js([tweet("1/2", "a")]), "tweets.js:2:", "is not a tweet id"),
        (tweets_js([tweet("1", "a"), tweet("1", "b")]), "tweets.js:3:", "duplicate tweet id 1"),
        (tweets_js([tweet("1", "a")]).removesuffix("]"), "tweets.js:3:", "missing the closing ']'"),
        ('{"tweet": {}}', "tweets.js:1:", "window.YTD.tweets.part0"),
        ("window.YTD.account.part0 = []", "tweets.js:1:", "'account' data, not tweets"),
    ],
)
def test_malformed_archive(text, where, problem):
    with pytest.raises(ParseError) as caught:
        parse_text(text, "tweets.js", "archive")
    assert str(caught.value).startswith(where)
    assert problem in str(caught.value)


def test_error_in_a_folder_part_names_that_part(archive_folder):
    part = archive_folder / "data" / "tweets-part1.js"
    part.write_text(part.read_text(encoding="utf-8").replace('"full_text"', '"text"', 1), encoding="utf-8")
    with pytest.raises(ParseError, match=r"tweets-part1\.js:2: record 1: missing 'full_text'"):
        read_takes(archive_folder)


def test_bad_account_file_is_named(archive_folder):
    account = archive_folder / "data" / "account.js"
    account.write_text('window.YTD.account.part0 = [\n  {"account": {"accountId": "42"}}\n]', encoding="utf-8")
    with pytest.raises(ParseError, match=r"account\.js:2: no 'username' in the account record"):
        read_takes(archive_folder)


def test_folder_without_tweets_is_an_error(tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(ParseError, match="not an X archive folder"):
        read_takes(tmp_path)
