"""Thread Reader App unrolls, as copied from the page: one tweet per line.

A page is: a header ("<Name> Profile picture", then "<Mon D, YYYY> N tweets ...
Read on X"), the thread's tweets up to "• • •", page furniture, an optional
"More from @handle" section of previews (a date line, a few tweets, "Read N
tweets"), and a support section from "Did Thread Reader help you today?" on.
A file may hold several pages. Furniture is skipped by this structure (only
thread blocks are read), not by matching every furniture string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources.common import ThreadIds, tidy_text

_HEADER_SUFFIX = "Profile picture"
_DATE = r"(?P<date>(?P<month>[A-Z][a-z]{2,8})\.? (?P<day>\d{1,2})(?:st|nd|rd|th)?,? (?P<year>\d{4}))"
_DATE_LINE = re.compile(_DATE)  # fullmatch: a preview block starts with a bare date
_META_LINE = re.compile(rf"{_DATE}\W+(?P<count>\d[\d,]*) tweets?\b")  # match: the header's 2nd line
_MORE_FROM = re.compile(r"More from (?P<handle>@\w+)")
_READ_COUNT = re.compile(r"Read (?P<count>\d[\d,]*) tweets?")
_SEPARATOR = re.compile(r"•(?: ?•)+")  # "• • •" closes the unrolled thread
_NUMBER = re.compile(r"(?P<number>\d{1,3})/(?:\d{1,3})?(?=\s|$)")  # "1/", "2/12", "3/ "
_BULLET = re.compile(r"[-•*] ")
# A line that is only a (possibly truncated) link, e.g. "huggingface.co/bigscience/blo…".
_LINK = re.compile(r"(?:https?://)?(?:[\w-]+\.)+[A-Za-z]{2,}(?:[/?#]\S*)?")
_SUPPORT = "Did Thread Reader help you today?"
_MISSING = "Missing some Tweet in this thread?"
# Keyed by the first three letters, so "Sep", "Sept." and "September" all work.
_MONTHS = {name: number for number, name in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}

HEADER_HINT = (
    "expected a Thread Reader App header like '<Name> Profile picture' "
    "followed by '<Mon D, YYYY> N tweets ...'"
)


@dataclass
class _Tweet:
    line: int
    number: int | None  # the "3/" marker, if the tweet has one
    lines: list[str] = field(default_factory=list)


@dataclass
class _Thread:
    line: int
    date: str
    size: int | None
    tweets: list[_Tweet] = field(default_factory=list)


@dataclass
class _Page:
    author: str
    handle: str | None = None
    threads: list[_Thread] = field(default_factory=list)


def parse(text: str, source: str) -> list[Take]:
    """All tweets of every thread in the unroll; ParseError if it is not one."""
    lines = [tidy_text(line) for line in text.splitlines()]
    first = next((index for index, line in enumerate(lines) if line), None)
    if first is None:
        raise ParseError(source, None, f"empty file: {HEADER_HINT}")
    if not _header_at(lines, first):
        _raise_not_header(lines, first, source)
    pages = _read_pages(lines, first, source)
    thread_ids = ThreadIds()
    takes = []
    for page in pages:
        for thread in page.threads:
            thread_id = thread_ids.assign(page.handle, page.author, thread.date)
            for position, tweet in zip(_positions(thread.tweets), thread.tweets):
                takes.append(
                    Take(
                        id=f"{thread_id}-{position}",
                        text=tidy_text("\n".join(tweet.lines)),
                        author=page.author,
                        handle=page.handle,
                        date=thread.date,
                        thread_id=thread_id,
                        position=position,
                        thread_size=thread.size,
                        url=None,  # an unroll does not show the tweets' own URLs
                        source=source,
                    )
                )
    return takes


def _read_pages(lines: list[str], start: int, source: str) -> list[_Page]:
    """Walk the lines once, collecting threads page by page."""
    pages: list[_Page] = []
    thread: _Thread | None = None  # the thread (or preview block) being read
    state = "thread"  # thread | furniture | more | support
    previous_blank = False
    index = start
    while index < len(lines):
        line, number = lines[index], index + 1
        if _header_at(lines, index):
            meta_index = _next_non_blank(lines, index + 1)
            meta = _META_LINE.match(lines[meta_index])
            pages.append(_Page(author=line.removesuffix(_HEADER_SUFFIX).strip()))
            thread = _Thread(number, _iso(meta, meta_index + 1, source), _count(meta))
            pages[-1].threads.append(thread)
            state, previous_blank, index = "thread", False, meta_index + 1
            continue
        if line == _SUPPORT:
            state, thread = "support", None
        elif match := _MORE_FROM.fullmatch(line):
            pages[-1].handle = match["handle"]
            state, thread = "more", None
        elif state == "thread" and (_SEPARATOR.fullmatch(line) or line.startswith(_MISSING)):
            state, thread = "furniture", None
        elif state == "more" and (match := _DATE_LINE.fullmatch(line)):
            thread = _Thread(number, _iso(match, number, source), None)
            pages[-1].threads.append(thread)
        elif state == "more" and thread and (match := _READ_COUNT.fullmatch(line)):
            thread.size, thread = _count(match), None
        elif thread is not None:
            _add_line(thread, line, number, previous_blank)
        previous_blank = not line
        index += 1

    for page in pages:
        main = page.threads[0]
        if not main.tweets:
            raise ParseError(source, main.line, "the unroll has a header but no tweets after it")
        # A preview block with a date and no tweets has nothing to index.
        page.threads = [thread for thread in page.threads if thread.tweets]
    return pages


def _add_line(thread: _Thread, line: str, number: int, previous_blank: bool) -> None:
    """Add a line to the thread: it continues the current tweet or starts the next."""
    current = thread.tweets[-1] if thread.tweets else None
    if not line:
        if current is not None:
            current.lines.append("")  # tidy_text turns blank runs into one paragraph break
        return
    marker = _NUMBER.match(line)
    # "4/" right after "3/" starts a tweet even after a blank line.
    numbered_next = bool(marker and current and current.number and int(marker["number"]) == current.number + 1)
    if current is not None and not numbered_next and (previous_blank or _BULLET.match(line) or _LINK.fullmatch(line)):
        current.lines.append(line)
    else:
        thread.tweets.append(_Tweet(number, int(marker["number"]) if marker else None, [line]))


def _positions(tweets: list[_Tweet]) -> list[int]:
    """The tweets' own numbers when every one has one and they increase, else 1..n."""
    numbers = [tweet.number for tweet in tweets]
    if all(numbers) and all(a < b for a, b in zip(numbers, numbers[1:])):
        return numbers  # type: ignore[return-value]  # all() ruled out None
    return list(range(1, len(tweets) + 1))


def _header_at(lines: list[str], index: int) -> bool:
    """A header is "<Name> Profile picture" followed by the date-and-count line."""
    if not lines[index].endswith(_HEADER_SUFFIX):
        return False
    meta_index = _next_non_blank(lines, index + 1)
    return meta_index < len(lines) and _META_LINE.match(lines[meta_index]) is not None


def _raise_not_header(lines: list[str], index: int, source: str) -> None:
    if lines[index].endswith(_HEADER_SUFFIX):
        meta_index = _next_non_blank(lines, index + 1)
        raise ParseError(
            source, meta_index + 1, "expected '<Mon D, YYYY> N tweets ...' after the Profile picture header"
        )
    raise ParseError(source, index + 1, HEADER_HINT)


def _next_non_blank(lines: list[str], index: int) -> int:
    while index < len(lines) and not lines[index]:
        index += 1
    return index


def _iso(match: re.Match, line: int, source: str) -> str:
    """ISO date of a matched "Aug 6, 2022"."""
    try:
        month = _MONTHS[match["month"][:3].lower()]
        return date(int(match["year"]), month, int(match["day"])).isoformat()
    except (KeyError, ValueError):
        raise ParseError(source, line, f"not a valid date: {match['date']!r}") from None


def _count(match: re.Match) -> int:
    return int(match["count"].replace(",", ""))
