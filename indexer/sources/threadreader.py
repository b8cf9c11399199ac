"""Thread Reader App unrolls, as copied from the page: one tweet per line.

A page is: a header ("<Name> Profile picture", then "<Mon D, YYYY> N tweets ...
Read on X"), the thread's tweets up to "• • •", page furniture, an optional
"More from @handle" section of previews (a date line, a few tweets, "Read N
tweets"), and a support section from "Did Thread Reader help you today?" on.
A file may hold several pages, and page furniture before the first header.
Furniture is skipped by this structure (only thread blocks are read), not by
matching every furniture string. Copies differ: the "• • •" separator may be
missing (the thread then ends at its own "Read N tweets" footer, the author's
"Keep Current with" box or a repeated avatar), and the handle may stand in the
header ("Name @handle Profile picture", an "@handle" line under the name, or
before the date) or only in a "More from @handle" section.

Scraping leftovers are tidied by rule (see ``_clean``): a link's text glued to
the word before it, an aside emptied by a removed link, a trailing "Image"
placeholder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources.common import MAX_POSITION, ThreadIds, shown, split_lines, text_problem, tidy_text

_HEADER_SUFFIX = "Profile picture"
_HANDLE = r"@[A-Za-z0-9_]{1,15}"  # X's rule for screen names
# "Jack Clark Profile picture", "Jack Clark @jackclarkSF Profile picture", "Jack Clark (@jackclarkSF) ..."
_AVATAR = re.compile(rf"(?P<author>.*?)(?:\s+\(?(?P<handle>{_HANDLE})\)?)?\s*{_HEADER_SUFFIX}")
# Lines a copy may show between the avatar and the date: the name, the handle, or both.
_NAME_LINE = re.compile(rf"(?P<author>[^@]*?)\s*\(?(?P<handle>{_HANDLE})?\)?")
_NAME_LINES = 3
# Navigation lines that may precede the first header: few and short (detection sees 5 lines).
_NAV_LINES = 4
_NAV_CHARS = 40
_DATE = r"(?P<date>(?P<month>[A-Z][a-z]{2,8})\.? (?P<day>\d{1,2})(?:st|nd|rd|th)?,? (?P<year>\d{4}))"
_DATE_LINE = re.compile(_DATE)  # fullmatch: a preview block starts with a bare date
# match: the header's date line, "Aug 6, 2022 • 81 tweets • 13 min read", maybe after the handle.
_META_LINE = re.compile(rf"(?:(?P<handle>{_HANDLE})\W+)?{_DATE}\W+(?P<count>\d[\d,]*) tweets?\b")
_MORE_FROM = re.compile(r"More from (?P<handle>@\w+)")
_KEEP_CURRENT = "Keep Current with "  # the author box that follows an unrolled thread
_READ_COUNT = re.compile(r"Read (?P<count>\d[\d,]*) tweets?")
_SEPARATOR = re.compile(r"•(?: ?•)+")  # "• • •" closes the unrolled thread
_NUMBER = re.compile(r"(?P<number>\d{1,3})/(?:\d{1,3})?(?=\s|$)")  # "1/", "2/12", "3/ "
_BULLET = re.compile(r"[-•*] ")
# A line that is only a (possibly truncated) link, e.g. "huggingface.co/bigscience/blo…".
_LINK = re.compile(r"(?:https?://)?(?:[\w-]+\.)+[A-Za-z]{2,}(?:[/?#]\S*)?")
_SUPPORT = "Did Thread Reader help you today?"
_MISSING = "Missing some Tweet in this thread?"
# Leftovers of links and images the copy lost (see _clean).
_GLUED_LINK = re.compile(r"\b(?P<word>etc|e\.g|i\.e)\.?(?=[a-z0-9][a-z0-9-]{2,}(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b)", re.I)
_EMPTIED_ASIDE = re.compile(r" ?\((?:e\.g|eg|i\.e|ie|cf|see|via)\.?,?\s*\)(?=(?P<word>\w)?)", re.I)
_IMAGE_PLACEHOLDER = re.compile(r"(?<=[.!?)\]\"'…:])(?: Image)+$", re.M)
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


@dataclass(frozen=True)
class _Header:
    author: str
    handle: str | None
    meta: re.Match
    meta_index: int


def looks_like_unroll(first_lines: list[str]) -> bool:
    """True if one of a file's first non-blank lines is an unroll's avatar line."""
    return any(line.endswith(_HEADER_SUFFIX) for line in first_lines)


def parse(text: str, source: str) -> list[Take]:
    """All tweets of every thread in the unroll; ParseError if it is not one."""
    lines = [tidy_text(line) for line in split_lines(text)]
    first = next((index for index, line in enumerate(lines) if line), None)
    if first is None:
        raise ParseError(source, None, f"empty file: {HEADER_HINT}")
    start = _first_header(lines, first)
    if start is None:
        _raise_not_header(lines, first, source)
    pages = _read_pages(lines, start, source)
    thread_ids = ThreadIds()
    takes = []
    for page in pages:
        for thread in page.threads:
            thread_id = thread_ids.assign(page.handle, page.author, thread.date)
            positions = _positions(thread.tweets)
            # The size the page declares, but never less than the tweets it shows.
            size = max(thread.size or 0, len(thread.tweets), max(positions))
            for position, tweet in zip(positions, thread.tweets):
                text = _clean(tidy_text("\n".join(tweet.lines)))
                if problem := text_problem(text):
                    raise ParseError(source, tweet.line, problem)
                takes.append(
                    Take(
                        id=f"{thread_id}-{position}",
                        text=text,
                        author=page.author,
                        handle=page.handle,
                        date=thread.date,
                        thread_id=thread_id,
                        position=position,
                        thread_size=size,
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
        header = _read_header(lines, index)
        if header is not None:
            pages.append(_Page(author=header.author, handle=header.handle))
            meta_number = header.meta_index + 1
            thread = _Thread(number, _iso(header.meta, meta_number, source), _count(header.meta, meta_number, source))
            pages[-1].threads.append(thread)
            state, previous_blank, index = "thread", False, header.meta_index + 1
            continue
        if line == _SUPPORT:
            state, thread = "support", None
        elif match := _MORE_FROM.fullmatch(line):
            pages[-1].handle = pages[-1].handle or match["handle"]
            state, thread = "more", None
        elif state == "thread" and _ends_thread(line, pages[-1]):
            state, thread = "furniture", None
        elif state == "more" and (match := _DATE_LINE.fullmatch(line)):
            thread = _Thread(number, _iso(match, number, source), None)
            pages[-1].threads.append(thread)
        elif state == "more" and thread and (match := _READ_COUNT.fullmatch(line)):
            thread.size, thread = _count(match, number, source), None
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


def _ends_thread(line: str, page: _Page) -> bool:
    """Whether ``line`` is the furniture that follows the unrolled thread.

    "• • •" usually; without it, the thread's own "Read N tweets" footer, the
    author box ("Keep Current with <Name>") or the author's avatar repeated.
    """
    return bool(
        _SEPARATOR.fullmatch(line)
        or line.startswith(_MISSING)
        or _READ_COUNT.fullmatch(line)
        or line == f"{_KEEP_CURRENT}{page.author}"
        or ((avatar := _AVATAR.fullmatch(line)) and avatar["author"] == page.author)
    )


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


def _clean(text: str) -> str:
    """The tweet without the leftovers of what the copy lost, by rule.

    - A link's text glued to an abbreviation before it ("etctogether.xyz"
      was "etc" and the link "together.xyz"): the two are set apart.
    - An aside whose link was removed, left as "(e.g )": dropped.
    - "Image" after the end of a sentence, where an image stood: dropped.
    """
    text = _GLUED_LINK.sub(lambda match: f"{match[0]} ", text)
    text = _EMPTIED_ASIDE.sub(lambda match: " " if match["word"] else "", text)
    return _IMAGE_PLACEHOLDER.sub("", text)


def _positions(tweets: list[_Tweet]) -> list[int]:
    """The tweets' own numbers when every one has one and they increase, else 1..n."""
    numbers = [tweet.number for tweet in tweets]
    if all(numbers) and all(a < b for a, b in zip(numbers, numbers[1:])):
        return numbers  # type: ignore[return-value]  # all() ruled out None
    return list(range(1, len(tweets) + 1))


def _read_header(lines: list[str], index: int) -> _Header | None:
    """The header at ``index``: the avatar line, maybe name and handle lines, then the date-and-count line."""
    avatar = _AVATAR.fullmatch(lines[index])
    if avatar is None:
        return None
    author, handle = avatar["author"].strip(), avatar["handle"]
    meta_index = _next_non_blank(lines, index + 1)
    for _ in range(_NAME_LINES):
        if meta_index >= len(lines) or _META_LINE.match(lines[meta_index]):
            break
        name = _NAME_LINE.fullmatch(lines[meta_index])
        # Only the author's own name, or a bare handle, may stand between avatar and date.
        if name is None or name["author"] not in ("", author) or not (name["handle"] or name["author"]):
            return None
        handle = handle or name["handle"]
        meta_index = _next_non_blank(lines, meta_index + 1)
    if meta_index >= len(lines) or not (meta := _META_LINE.match(lines[meta_index])):
        return None
    return _Header(author, handle or meta["handle"], meta, meta_index)


def _first_header(lines: list[str], first: int) -> int | None:
    """Where the first page's header is: at ``first``, or after a few short navigation lines.

    Navigation copied from above an unroll ("Thread Reader", "Share this page!")
    is furniture; anything longer might be a take, and is an error rather than
    dropped unseen.
    """
    skipped = 0
    for index in range(first, len(lines)):
        if not lines[index]:
            continue
        if _header_at(lines, index):
            return index
        skipped += 1
        if skipped > _NAV_LINES or len(lines[index]) > _NAV_CHARS:
            return None
    return None


def _header_at(lines: list[str], index: int) -> bool:
    return _read_header(lines, index) is not None


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


def _count(match: re.Match, line: int, source: str) -> int:
    """The tweet count of a matched "81 tweets", bounded."""
    digits = match["count"].replace(",", "")
    # Length first: int() refuses strings of over 4,300 digits.
    if len(digits) > len(str(MAX_POSITION)) or int(digits) > MAX_POSITION:
        raise ParseError(
            source, line, f"a thread of {shown(match['count'])} tweets is over the limit of {MAX_POSITION:,} tweets"
        )
    return int(digits)
