"""X/Twitter archives: ``data/tweets.js`` and ``data/tweets-partN.js``.

Each file is ``window.YTD.tweets.partN = [{"tweet": {...}}, ...]``. Self-reply
chains become threads (thread_id = id of the first tweet); retweets are skipped.

The owner's handle is not in the tweets themselves. It comes from
``data/account.js`` when available, else from a self-reply (its
``in_reply_to_screen_name`` is the owner), else it stays None and so does the url.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources.common import shown, text_problem, tidy_text, with_at

_PREFIX = re.compile(r"\s*window\.YTD\.(?P<kind>\w+)\.part\d+\s*=\s*")
_PART_FILE = re.compile(r"tweets?(?:-part(?P<part>\d+))?\.js")
_CREATED_AT = "%a %b %d %H:%M:%S %z %Y"  # "Wed Oct 10 20:19:24 +0000 2018"
_TWEET_KINDS = ("tweets", "tweet")  # older archives name the file tweet.js
_MISSING_END = "unexpected end of file: missing the closing ']'"
# Tweet ids are 64-bit snowflakes: 19 digits (20 leaves room, and int() stays cheap).
_MAX_ID_DIGITS = 20


@dataclass(frozen=True, slots=True)
class Account:
    """The archive owner, from ``data/account.js``."""

    handle: str | None
    author: str | None


@dataclass(frozen=True, slots=True)
class _Tweet:
    id: str
    text: str
    date: str | None
    reply_to: str | None
    reply_to_handle: str | None


def parse(text: str, source: str) -> list[Take]:
    """The takes of one tweets file (handle inferred from self-replies, if any)."""
    return parse_parts([(source, text)], source)


def parse_parts(parts: Sequence[tuple[str, str]], source: str, account: Account | None = None) -> list[Take]:
    """The takes of all tweets files of one archive, given as ``(file name, text)``.

    Parts are parsed together because a thread can cross from one part to the next.
    """
    tweets: dict[str, _Tweet] = {}
    for part_source, text in parts:
        kind, records = load_records(text, part_source)
        if kind not in _TWEET_KINDS:
            raise ParseError(
                part_source,
                1,
                f"this is the archive's {kind!r} data, not tweets: pass data/tweets.js or the archive folder",
            )
        for number, (line, record) in enumerate(records, start=1):
            tweet = _read_tweet(record, f"record {number}", part_source, line)
            if tweet is None:
                continue
            if tweet.id in tweets:
                raise ParseError(part_source, line, f"record {number}: duplicate tweet id {tweet.id}")
            tweets[tweet.id] = tweet

    account = account or Account(None, None)
    handle = account.handle or _owner_from_self_replies(tweets)
    # Snowflake ids grow with time and a reply is newer than its parent, so in id
    # order every parent's thread is known before its replies are reached.
    ordered = sorted(tweets.values(), key=lambda tweet: int(tweet.id))
    thread_of: dict[str, str] = {}
    threads: dict[str, list[_Tweet]] = {}
    for tweet in ordered:
        parent = tweet.reply_to
        thread_id = thread_of[parent] if parent in thread_of else tweet.id
        thread_of[tweet.id] = thread_id
        threads.setdefault(thread_id, []).append(tweet)

    takes = []
    for thread_id, thread in threads.items():
        for position, tweet in enumerate(thread, start=1):
            takes.append(
                Take(
                    id=tweet.id,
                    text=tweet.text,
                    author=account.author,
                    handle=handle,
                    date=tweet.date,
                    thread_id=thread_id,
                    position=position,
                    thread_size=len(thread),
                    url=f"https://x.com/{handle[1:]}/status/{tweet.id}" if handle else None,
                    source=source,
                )
            )
    return takes


def parse_account(text: str, source: str) -> Account:
    """The owner's handle and display name from ``data/account.js``."""
    _, records = load_records(text, source)
    expected = 'expected [{"account": {"username": ..., "accountDisplayName": ...}}]'
    if not records:
        raise ParseError(source, 1, f"no account record: {expected}")
    line, record = records[0]
    account = record.get("account") if isinstance(record, dict) else None
    account = account if isinstance(account, dict) else {}
    username, name = account.get("username"), account.get("accountDisplayName")
    if not isinstance(username, str) or not username.strip():
        raise ParseError(source, line, f"no 'username' in the account record: {expected}")
    for field_name, value in (("username", username), ("accountDisplayName", name if isinstance(name, str) else "")):
        if problem := text_problem(value, field_name):
            raise ParseError(source, line, problem)
    return Account(with_at(username), name.strip() if isinstance(name, str) and name.strip() else None)


def part_files(folder: Path) -> list[Path]:
    """The tweets files of an archive folder (or of its ``data`` folder), part 0 first."""
    data = folder / "data" if (folder / "data").is_dir() else folder
    found = [(int(match["part"] or 0), path) for path in data.iterdir() if (match := _PART_FILE.fullmatch(path.name))]
    return [path for _, path in sorted(found)]


def load_records(text: str, source: str) -> tuple[str, list[tuple[int, Any]]]:
    """The kind ("tweets", "account", ...) and the records of a ``window.YTD`` file.

    Records are decoded one by one so each error can name the line it is on.
    """
    match = _PREFIX.match(text)
    if match is None:
        raise ParseError(source, 1, "expected an X archive file starting 'window.YTD.tweets.part0 = ['")
    decoder = json.JSONDecoder()
    index = _skip_space(text, match.end())
    if text[index : index + 1] != "[":
        raise ParseError(source, _line_of(text, index), "expected '[' after 'window.YTD... ='")
    index = _skip_space(text, index + 1)
    records: list[tuple[int, Any]] = []
    # Lines are counted incrementally: archives hold tens of thousands of records.
    line, counted = 1, 0
    while text[index : index + 1] != "]":
        if index >= len(text):
            raise ParseError(source, _line_of(text, index), _MISSING_END)
        try:
            record, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as error:
            # raw_decode works on the whole text, so lineno is the file's own line.
            raise ParseError(source, error.lineno, f"malformed JSON: {error.msg} (column {error.colno})") from None
        except RecursionError:
            raise ParseError(source, _line_of(text, index), "malformed JSON: nested too deeply") from None
        except ValueError:
            # Python refuses to convert integers of over 4,300 digits.
            raise ParseError(source, _line_of(text, index), "malformed JSON: a number has more than 4,300 digits") from None
        line, counted = line + text.count("\n", counted, index), index
        records.append((line, record))
        index = _skip_space(text, end)
        if text[index : index + 1] == ",":
            index = _skip_space(text, index + 1)
        elif text[index : index + 1] != "]":
            problem = _MISSING_END if index >= len(text) else "malformed JSON: expected ',' or ']' after a record"
            raise ParseError(source, _line_of(text, index), problem)
    if text[index + 1 :].strip() not in ("", ";"):
        raise ParseError(source, _line_of(text, index + 1), "unexpected text after the closing ']'")
    return match["kind"], records


def _read_tweet(record: Any, label: str, source: str, line: int) -> _Tweet | None:
    """One validated tweet; None for a retweet."""
    tweet = record.get("tweet", record) if isinstance(record, dict) else None
    if not isinstance(tweet, dict):
        raise ParseError(source, line, f"{label}: expected an object like {{\"tweet\": {{...}}}}")
    for name in ("id_str", "full_text"):
        if not isinstance(tweet.get(name), str) or not tweet[name].strip():
            raise ParseError(source, line, f"{label}: missing '{name}'")
    if not tweet["id_str"].isascii() or not tweet["id_str"].isdigit() or len(tweet["id_str"]) > _MAX_ID_DIGITS:
        raise ParseError(
            source, line, f"{label}: 'id_str' {shown(tweet['id_str'])} is not a tweet id (up to {_MAX_ID_DIGITS} digits)"
        )
    for name in ("in_reply_to_status_id_str", "in_reply_to_screen_name"):
        if tweet.get(name) is not None and not isinstance(tweet[name], str):
            raise ParseError(source, line, f"{label}: '{name}' must be a string, got {shown(tweet[name])}")
    if "retweeted_status" in tweet or tweet["full_text"].startswith("RT @"):
        return None
    day = None
    if tweet.get("created_at"):
        try:
            day = datetime.strptime(tweet["created_at"], _CREATED_AT).date().isoformat()
        except (TypeError, ValueError):
            raise ParseError(
                source,
                line,
                f"{label}: 'created_at' {tweet['created_at']!r} is not like 'Wed Oct 10 20:19:24 +0000 2018'",
            ) from None
    # Unescaping &amp; and friends is tidying: the archive stores tweets HTML-escaped.
    text = tidy_text(html.unescape(tweet["full_text"]))
    for name, value in (("full_text", text), ("in_reply_to_screen_name", tweet.get("in_reply_to_screen_name") or "")):
        if problem := text_problem(value, name):
            raise ParseError(source, line, f"{label}: {problem}")
    return _Tweet(
        id=tweet["id_str"],
        text=text,
        date=day,
        reply_to=tweet.get("in_reply_to_status_id_str") or None,
        reply_to_handle=tweet.get("in_reply_to_screen_name") or None,
    )


def _owner_from_self_replies(tweets: dict[str, _Tweet]) -> str | None:
    """The owner's handle, read off a reply to one of the archive's own tweets."""
    for tweet in tweets.values():
        if tweet.reply_to in tweets and tweet.reply_to_handle:
            return with_at(tweet.reply_to_handle)
    return None


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index].isspace():
        index += 1
    return index


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1
