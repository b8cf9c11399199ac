"""Input formats: detect what a file is and parse it into takes.

One module per format, each with ``parse(text, source) -> list[Take]`` that
returns every take of the file or raises ParseError (never a partial list).
``source`` is only a name: ids a parser derives come from the content (plus
the name's slug, for readability), never from the name or path alone, so files
of one name in two folders never share ids, and a moved file keeps its own.
Only the standard library is imported here, so importing stays instant.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources import archive, bluesky, csv_rows, jsonl, mastodon, plaintext, threadreader
from indexer.sources.common import split_lines

FORMATS = ("threadreader", "archive", "jsonl", "csv", "text", "bluesky", "mastodon")

_PARSERS: dict[str, Callable[[str, str], list[Take]]] = {
    "threadreader": threadreader.parse,
    "archive": archive.parse,
    "jsonl": jsonl.parse,
    "csv": csv_rows.parse,
    "text": plaintext.parse,
    "mastodon": mastodon.parse,
}
# Formats read from bytes or from several files: only read_takes (a path) can read them.
_FILE_ONLY_FORMATS = {"bluesky": "a Bluesky export (.car) is binary"}
_ZIP_MAGIC = b"PK\x03\x04"
_READ_ON = re.compile(r"\bRead on (?:X|Twitter)$")
_SNIFF_LINES = 5
# Detection reads the start only: a 10 MB one-line file is judged as fast as a short one.
_SNIFF_CHARS = 65_536

__all__ = ["FORMATS", "detect_format", "parse_text", "read_takes"]


def detect_format(text: str, source: str) -> str:
    """The format of ``text``, judged from its first lines (plain text when nothing else fits).

    Raises ParseError when nothing fits and the text does not read as takes
    either (binary, a single word, no letters), rather than index it as text.
    """
    text = text.removeprefix("\ufeff")
    first_lines = [line.strip() for line in split_lines(text[:_SNIFF_CHARS])[:200] if line.strip()][:_SNIFF_LINES]
    if not first_lines:
        raise ParseError(source, None, f"empty file: nothing to parse as any of {', '.join(FORMATS)}")
    if first_lines[0].startswith("window.YTD."):
        return "archive"
    if threadreader.looks_like_unroll(first_lines) or any(_READ_ON.search(line) for line in first_lines):
        return "threadreader"
    if mastodon.looks_like_outbox(text):
        return "mastodon"
    # One "{" line is enough: a JSONL file with a broken later line must fail
    # loudly in the JSONL parser rather than be indexed as plain text.
    if first_lines[0].startswith("{"):
        return "jsonl"
    # A header-like first line makes it CSV even without a 'text' column, so
    # the CSV parser can say which column is missing instead of one odd take.
    if csv_rows.header_of(text) is not None:
        return "csv"
    if reason := plaintext.unlike_takes(text):
        raise ParseError(
            source,
            None,
            f"not recognized as any input format, and it does not read as plain-text takes: {reason}; "
            f"pass --format ({', '.join(FORMATS)}) to say what it is",
        )
    return "text"


def parse_text(text: str, source: str, format: str | None = None) -> list[Take]:
    """Every take in ``text``; ``source`` (a file name) goes into errors and ``Take.source``."""
    text = text.removeprefix("\ufeff")
    if format is None:
        format = detect_format(text, source)
    elif format in _FILE_ONLY_FORMATS:
        raise ParseError(source, None, f"{_FILE_ONLY_FORMATS[format]}: read it from its file")
    elif format not in _PARSERS:
        raise ParseError(source, None, f"unknown format {format!r}: expected one of {', '.join(FORMATS)}")
    return _PARSERS[format](text, source)


def read_takes(path: Path | str, format: str | None = None, *, include_private: bool = False) -> list[Take]:
    """Every take in the file at ``path``, or in an X archive folder (all tweets parts).

    Also a Bluesky export (``.car``) and a Mastodon archive (zip, folder or its
    ``outbox.json``), whose followers-only posts and direct messages are read
    only with ``include_private``. ``Take.source`` is the file's (or folder's)
    name; errors name the path as given.
    """
    path = Path(path)
    exported = _read_export(path, format, include_private)
    if exported is not None:
        return exported
    if path.is_dir():
        if format not in (None, "archive"):
            raise ParseError(path, None, f"is a folder: only an X archive folder can be read, not format {format!r}")
        return _read_archive_folder(path)
    text = _read_text(path)
    format = format or detect_format(text, str(path))
    if format == "archive":
        # Errors name the tweets file by its path; takes carry its name.
        return archive.parse_parts(
            [(str(path), text)], path.name, _read_account(path.parent / "account.js"), _read_note_tweets(path.parent)
        )
    try:
        return parse_text(text, path.name, format)
    except ParseError as error:
        # Parsers know only the file name; the path as given is what a user can act on.
        raise ParseError(path, error.line, error.problem) from None


def _read_archive_folder(folder: Path) -> list[Take]:
    try:
        files = archive.part_files(folder)
    except OSError as error:
        raise ParseError(folder, None, f"cannot list folder: {error.strerror or error}") from None
    if not files:
        raise ParseError(folder, None, "not an X archive folder: no data/tweets.js or data/tweets-partN.js")
    account = _read_account(files[0].parent / "account.js")
    # Each part keeps its own path in errors; every take is labeled with the folder's name.
    parts = [(str(file), _read_text(file)) for file in files]
    return archive.parse_parts(parts, folder.resolve().name, account, _read_note_tweets(files[0].parent))


def _read_account(account_file: Path) -> archive.Account | None:
    """The owner from ``account.js`` next to the tweets files, if there is one."""
    if not account_file.is_file():
        return None
    return archive.parse_account(_read_text(account_file), str(account_file))


def _read_note_tweets(data_folder: Path) -> list[archive.NoteTweet]:
    """The long posts from ``note-tweet.js`` next to the tweets files, if any."""
    notes = []
    for file in archive.note_files(data_folder):
        notes.extend(archive.parse_note_tweets(_read_text(file), str(file)))
    return notes


def _read_text(path: Path) -> str:
    """The file's text (UTF-8, a leading BOM dropped); ParseError naming the problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ParseError(path, None, "file not found") from None
    except OSError as error:
        raise ParseError(path, None, f"cannot read file: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ParseError(
            path, line, f"not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}): save it as UTF-8"
        ) from None


def _read_export(path: Path, format: str | None, include_private: bool) -> list[Take] | None:
    """The takes of a Bluesky or Mastodon export at ``path``; None when it is neither."""
    if format not in (None, "bluesky", "mastodon"):
        return None
    if path.is_dir():
        if format == "bluesky" or not (path / "outbox.json").is_file():
            if format == "mastodon":
                raise ParseError(path, None, "not a Mastodon archive folder: no outbox.json in it")
            return None
        outbox, actor_file = path / "outbox.json", path / "actor.json"
        actor = mastodon.parse_actor(_read_text(actor_file), str(actor_file)) if actor_file.is_file() else None
        return mastodon.parse(_read_text(outbox), str(outbox), actor=actor, include_private=include_private, label=path.resolve().name)
    if not path.is_file():
        return None
    try:
        with path.open("rb") as file:
            head = file.read(64)
    except OSError as error:
        raise ParseError(path, None, f"cannot read file: {error.strerror or error}") from None
    if head.startswith(_ZIP_MAGIC) and format in (None, "mastodon"):
        return mastodon.read_zip(path, include_private=include_private)
    if format == "bluesky" or (format is None and bluesky.looks_like_car(head)):
        try:
            data = path.read_bytes()
        except OSError as error:
            raise ParseError(path, None, f"cannot read file: {error.strerror or error}") from None
        return bluesky.parse(data, str(path), label=path.name)
    if format == "mastodon" or (format is None and path.suffix.lower() == ".json"):
        text = _read_text(path)
        if format is None and not mastodon.looks_like_outbox(text):
            return None
        actor_file = path.parent / "actor.json"
        actor = mastodon.parse_actor(_read_text(actor_file), str(actor_file)) if actor_file.is_file() else None
        return mastodon.parse(text, str(path), actor=actor, include_private=include_private, label=path.name)
    return None
