"""Helpers shared by the source parsers: tidy text, URL-safe ids, limits, dates, records.

Text joining: inside one take, lines are kept as lines ("\\n") and a run of
blank lines becomes one paragraph break ("\\n\\n"). Bullets and link lines stay
readable when shown, the embedding model treats newlines as spaces so search
is unaffected, and "nothing rewritten" stays true: only whitespace changes.
"""

from __future__ import annotations

import base64
import hashlib
import json
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

# Limits on what one take may be, so a stray file or value fails with a named
# limit instead of a traceback deeper down (SQLite INTEGER stops at 2**63 - 1,
# Python refuses int/str conversions past 4,300 digits).
# X's longest posts (Premium) are 25,000 characters: every real post fits.
MAX_TAKE_CHARS = 25_000
# Positions and thread sizes: no real thread comes near a million posts.
MAX_POSITION = 1_000_000
# Ids are path segments in URLs and keys in SQLite; tweet ids have 19 digits.
MAX_ID_CHARS = 200
# Digits of a derived id's content digest (base32, 5 bits each): 60 bits keep
# a million takes under one slug collision-free with odds better than 1 in 2 million.
_DIGEST_CHARS = 12
_SHOWN_CHARS = 60
_SLUG_CHARS = 60


def tidy_text(text: str) -> str:
    """Collapse spaces inside lines, strip lines, keep one blank line between paragraphs."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [_INLINE_SPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_RUN.sub("\n\n", "\n".join(lines)).strip("\n")


def split_lines(text: str) -> list[str]:
    """Lines split on \\n, \\r\\n and \\r only.

    ``str.splitlines`` also splits on U+2028, U+0085, form feeds and more, which
    may stand unescaped inside a JSON string or a post.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def digest(*parts: str | int | None, length: int = _DIGEST_CHARS) -> str:
    """A short lower-case base32 digest of ``parts``: URL-safe, the same for the same parts."""
    # JSON keeps the parts apart (("ab", "c") differs from ("a", "bc")); ASCII
    # escapes let even a lone surrogate be hashed.
    data = json.dumps(parts).encode()
    return base64.b32encode(hashlib.sha256(data).digest()).decode().lower()[:length]


def shown(value: Any) -> str:
    """``repr(value)`` cut to a length that fits in a one-line error."""
    if isinstance(value, int) and value.bit_length() > 200:
        # repr of a huge int is slow, and refused past 4,300 digits.
        return f"a number of about {int(value.bit_length() * 0.30103):,} digits"
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else f"{text[:_SHOWN_CHARS - 5]}…{text[-4:]} ({len(text):,} characters)"


def text_problem(value: str, name: str = "text") -> str | None:
    """Why ``value`` cannot be stored as a take's ``name`` field, or None if it can."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        # Only JSON escapes ("\\ud800") can make one: decoded UTF-8 never holds a lone surrogate.
        return (
            f"'{name}' holds half of a surrogate pair ({value[error.start]!r} at character {error.start + 1}), "
            "which is not valid Unicode: escape both halves, or write the character itself"
        )
    if "\x00" in value:
        return f"'{name}' holds a NUL character (at character {value.index(chr(0)) + 1}): is this a binary file?"
    if name in ("text", "full_text") and len(value) > MAX_TAKE_CHARS:
        return f"a take of {len(value):,} characters is over the limit of {MAX_TAKE_CHARS:,} characters per take"
    return None


def slugify(value: str, fallback: str = "takes") -> str:
    """A lower-case URL-safe slug ("Jack Clark" -> "jack-clark"); ``fallback`` if nothing is left."""
    ascii_only = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_only.lower()).strip("-.")
    return slug or fallback


def source_slug(source: str) -> str:
    """Slug of a file name's stem, the readable start of ids derived for JSONL/CSV/plain text.

    Cut to a readable length: the digest that follows it, not the slug, keeps ids apart.
    """
    return slugify(PurePath(source).stem)[:_SLUG_CHARS].rstrip("-.") or "takes"


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
        if handle:
            base = handle.lstrip("@")
        elif author:
            # A name with no ASCII letters ("山田太郎") would slug to nothing, and
            # every such author would share one id: a digest keeps them apart.
            base = slugify(author, fallback="") or f"author-{digest(author, length=8)}"
        else:
            base = "unknown"
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

    ``text`` is required; a given ``id``/``thread_id`` is kept. Ids that are not
    given come from the content, never from the file name alone, so the same
    records always get the same ids and different takes never share one:

    - a record without ``thread_id`` is a thread of its own, named
      ``{file stem}-{digest of the record}``, and its take ``{thread_id}-{position}``;
    - a take in a given thread is ``{thread_id}-{position}-{digest of its text}``,
      because two files may well both call a thread "1".

    ``thread_size``, when absent, is what the file shows of the thread: the
    size another record of it declares, else its count of takes (or its highest
    position, if that is higher). Raises ParseError naming the record's line.
    """
    rows = _identified(records, source)
    return _built_takes(rows, _thread_sizes(rows), source)


def _identified(records: Iterable[tuple[int, Mapping[str, Any]]], source: str) -> list[tuple[int, dict[str, Any], str, str, int]]:
    """Each record validated, with its take id, thread id and position (given, else derived: see takes_from_records)."""
    stem = source_slug(source)
    next_position: dict[str, int] = {}
    rows = []
    for line, record in records:
        fail = partial(ParseError, source, line)
        fields = _validated(record, fail)
        thread_id, position = fields["thread_id"], fields["position"]
        take_id = fields["id"]
        if thread_id is None:
            # Everything that tells two takes apart goes into the digest; the same
            # record twice is the same take (same id), which the index skips.
            record_digest = digest(*(fields[name] for name in ("text", "author", "handle", "date", "url", "position")))
            thread_id, position = f"{stem}-{record_digest}", position or 1
            take_id = take_id or f"{thread_id}-{position}"
        else:
            if position is None:
                position = next_position.get(thread_id, 0) + 1
            next_position[thread_id] = position
            take_id = take_id or f"{thread_id}-{position}-{digest(fields['text'], fields['author'], length=8)}"
        rows.append((line, fields, take_id, thread_id, position))
    return rows


def _built_takes(rows: list[tuple[int, dict[str, Any], str, str, int]], sizes: dict[str, int], source: str) -> list[Take]:
    """The takes of the identified ``rows``; ParseError when one id names two different takes."""
    first_of_id: dict[str, tuple[int, Take]] = {}
    takes = []
    for line, fields, take_id, thread_id, position in rows:
        thread_size = fields["thread_size"] or sizes[thread_id]
        take = Take(
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
        if take_id in first_of_id:
            first_line, first = first_of_id[take_id]
            # A repeated record is one take said twice; one id for two different takes loses one.
            if fields["id"] is not None or first != take:
                raise ParseError(source, line, f"duplicate id {take_id!r} (first used on line {first_line})")
        else:
            first_of_id[take_id] = (line, take)
        takes.append(take)
    return takes


def _thread_sizes(rows: list[tuple[int, dict[str, Any], str, str, int]]) -> dict[str, int]:
    """Each thread's size as the file shows it: declared, else counted (at least its highest position)."""
    declared: dict[str, int] = {}
    positions: dict[str, set[int]] = {}
    for _, fields, _, thread_id, position in rows:
        positions.setdefault(thread_id, set()).add(position)
        if fields["thread_size"] is not None:
            declared[thread_id] = max(declared.get(thread_id, 0), fields["thread_size"])
    return {
        thread_id: max(declared.get(thread_id) or len(seen), max(seen)) for thread_id, seen in positions.items()
    }


def _validated(record: Mapping[str, Any], fail: Callable[[str], ParseError]) -> dict[str, Any]:
    """The record's known fields, checked and normalized; raises ``fail(problem)``."""
    fields = {name: _clean(record.get(name)) for name in RECORD_FIELDS}
    for name in ("id", "thread_id"):
        if isinstance(fields[name], int) and not isinstance(fields[name], bool):
            # 700 bits is some 210 digits: over MAX_ID_CHARS, yet cheap to refuse before str().
            if fields[name].bit_length() > 700:
                raise fail(f"'{name}' is {shown(fields[name])}: at most {MAX_ID_CHARS} characters")
            fields[name] = str(fields[name])  # numeric ids, e.g. tweet ids
    for name in ("id", "text", "author", "handle", "date", "thread_id", "url"):
        if fields[name] is None:
            continue
        if not isinstance(fields[name], str):
            raise fail(f"'{name}' must be a string, got {shown(fields[name])}")
        if name == "text":
            fields[name] = tidy_text(fields[name])  # measured once tidied: spacing is not content
        if problem := text_problem(fields[name], name):
            raise fail(problem)
    if not fields["text"]:
        raise fail("missing or empty 'text'")
    for name in ("id", "thread_id"):
        value = fields[name]
        if value is not None and len(value) > MAX_ID_CHARS:
            raise fail(f"'{name}' has {len(value):,} characters: at most {MAX_ID_CHARS} are allowed")
        if value is not None and not is_url_safe(value):
            raise fail(f"'{name}' {shown(value)} is not URL-safe: use only letters, digits and . _ ~ -")
    for name in ("position", "thread_size"):
        value = given = fields[name]
        if isinstance(value, str) and value.isascii() and value.isdigit():
            # Capped first: int() refuses strings of over 4,300 digits with a ValueError.
            value = fields[name] = int(value) if len(value) <= len(str(MAX_POSITION)) else MAX_POSITION + 1
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise fail(f"'{name}' must be a positive integer, got {shown(value)}")
        if value is not None and value > MAX_POSITION:
            raise fail(f"'{name}' {shown(given)} is over the limit of {MAX_POSITION:,}")
    if fields["position"] and fields["thread_size"] and fields["position"] > fields["thread_size"]:
        raise fail(f"'position' {fields['position']} is past the end of the thread ('thread_size' {fields['thread_size']})")
    if fields["date"] is not None:
        try:
            fields["date"] = iso_date(fields["date"])
        except ValueError:
            raise fail(f"'date' {shown(fields['date'])} is not an ISO date like 2023-06-25") from None
    return fields


def _clean(value: Any) -> Any:
    """Strip strings and treat empty values as absent (CSV cells are never None)."""
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return value
