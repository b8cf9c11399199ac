"""Helpers shared by the source parsers: tidy text, URL-safe ids, dates, records.

Text joining: inside one take, lines are kept as lines ("\\n") and a run of
blank lines becomes one paragraph break ("\\n\\n"). Bullets and link lines stay
readable when shown, the embedding model treats newlines as spaces so search
is unaffected, and "nothing rewritten" stays true: only whitespace changes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime
from functools import partial
from pathlib import PurePath
from typing import Any

from indexer.errors import ParseError
from indexer.models import Take

# RFC 3986 "unreserved" characters: safe in a URL path without escaping.
# "_" is included because X handles use it (e.g. "Simeon_Cps-2023-06-25").
_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")
_NOT_SLUG = re.compile(r"[^a-z0-9._~-]+")
# Every whitespace character except the newline (spaces, tabs, NBSP, \r, ...).
_INLINE_SPACE = re.compile(r"[^\S\n]+")
_BLANK_RUN = re.compile(r"\n{3,}")

# Optional fields a JSONL/CSV record may carry besides the required "text".
RECORD_FIELDS = ("id", "text", "author", "handle", "date", "thread_id", "position", "thread_size", "url")


def tidy_text(text: str) -> str:
    """Collapse spaces inside lines, strip lines, keep one blank line between paragraphs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_INLINE_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip("\n")


def slugify(value: str, fallback: str = "takes") -> str:
    """A lower-case URL-safe slug ("Jack Clark" -> "jack-clark"); ``fallback`` if nothing is left."""
    ascii_only = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_only.lower()).strip("-.")
    return slug or fallback


def source_slug(source: str) -> str:
    """Slug of a file name's stem, the base of ids derived for JSONL/CSV/plain text."""
    return slugify(PurePath(source).stem)


def is_url_safe(value: str) -> bool:
    """True if ``value`` can sit in a URL path as is (and is not empty)."""
    return bool(_URL_SAFE.fullmatch(value))


def with_at(handle: str | None) -> str | None:
    """Normalize a handle to its "@name" form; None for an empty handle."""
    handle = (handle or "").strip().lstrip("@")
    return f"@{handle}" if handle else None


class ThreadIds:
    """Hands out ``"{base}-{date}"`` thread ids, suffixing "-2", "-3" on repeats in one file."""

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def assign(self, handle: str | None, author: str | None, day: str) -> str:
        base = handle.lstrip("@") if handle else slugify(author or "", fallback="unknown")
        thread_id = f"{base}-{day}"
        count = self._seen.get(thread_id, 0) + 1
        self._seen[thread_id] = count
        return thread_id if count == 1 else f"{thread_id}-{count}"


def iso_date(value: str) -> str:
    """The ISO date part of an ISO date or timestamp; ValueError if it is neither."""
    value = value.strip()
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        # fromisoformat in 3.11 also takes "2023-06-25T10:00:00Z" and offsets.
        return datetime.fromisoformat(value).date().isoformat()


def takes_from_records(records: Iterable[tuple[int, Mapping[str, Any]]], source: str) -> list[Take]:
    """Validate JSONL/CSV records (``(line, fields)`` pairs) and turn them into takes.

    ``text`` is required; a given ``id``/``thread_id`` is kept, otherwise ids are
    derived from the file stem and the record number, so re-parsing the same file
    yields the same ids. Raises ParseError naming the record's line.
    """
    stem = source_slug(source)
    next_position: dict[str, int] = {}
    line_of_id: dict[str, int] = {}
    takes = []
    for number, (line, record) in enumerate(records, start=1):
        fail = partial(ParseError, source, line)
        fields = _validated(record, fail)
        thread_id, position, thread_size = fields["thread_id"], fields["position"], fields["thread_size"]
        if thread_id is None:
            # Each record is its own thread; the record number keeps the id stable.
            thread_id, thread_size = f"{stem}-{number}", thread_size or 1
        if position is None:
            position = next_position.get(thread_id, 0) + 1
        next_position[thread_id] = position
        take_id = fields["id"] or f"{thread_id}-{position}"
        if take_id in line_of_id:
            raise fail(f"duplicate id {take_id!r} (first used on line {line_of_id[take_id]})")
        line_of_id[take_id] = line
        takes.append(
            Take(
                id=take_id,
                text=fields["text"],
                author=fields["author"],
                handle=with_at(fields["handle"]),
                date=fields["date"],
                thread_id=thread_id,
                position=position,
                thread_size=thread_size,
                url=fields["url"],
                source=source,
            )
        )
    return takes


def _validated(record: Mapping[str, Any], fail: Callable[[str], ParseError]) -> dict[str, Any]:
    """The record's known fields, checked and normalized; raises ``fail(problem)``."""
    fields = {name: _clean(record.get(name)) for name in RECORD_FIELDS}
    for name in ("id", "thread_id"):
        if isinstance(fields[name], int) and not isinstance(fields[name], bool):
            fields[name] = str(fields[name])  # numeric ids, e.g. tweet ids
    for name in ("id", "text", "author", "handle", "date", "thread_id", "url"):
        if fields[name] is not None and not isinstance(fields[name], str):
            raise fail(f"'{name}' must be a string, got {fields[name]!r}")
    fields["text"] = tidy_text(fields["text"] or "")
    if not fields["text"]:
        raise fail("missing or empty 'text'")
    for name in ("id", "thread_id"):
        if fields[name] is not None and not is_url_safe(fields[name]):
            raise fail(f"'{name}' {fields[name]!r} is not URL-safe: use only letters, digits and . _ ~ -")
    for name in ("position", "thread_size"):
        value = fields[name]
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = fields[name] = int(value)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise fail(f"'{name}' must be a positive integer, got {value!r}")
    if fields["date"] is not None:
        try:
            fields["date"] = iso_date(fields["date"])
        except ValueError:
            raise fail(f"'date' {fields['date']!r} is not an ISO date like 2023-06-25") from None
    return fields


def _clean(value: Any) -> Any:
    """Strip strings and treat empty values as absent (CSV cells are never None)."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value
