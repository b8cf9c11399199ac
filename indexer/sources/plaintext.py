"""Plain text: one take per paragraph, the file one thread."""

from __future__ import annotations

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources.common import digest, shown, source_slug, split_lines, text_problem, tidy_text

# Share of characters that may be neither printable nor whitespace before a
# file counts as binary; control characters are rare in real text.
_MAX_UNPRINTABLE = 0.05
_SAMPLE_CHARS = 65_536


def parse(text: str, source: str) -> list[Take]:
    """Paragraphs (separated by blank lines) in order; ParseError for an empty file.

    The thread id is the file stem's slug plus a digest of the file's text, so
    two files of the same name never share ids, and the same text always gets
    the same ones (adding a file twice adds nothing).
    """
    paragraphs = _paragraphs(text)
    if not paragraphs:
        raise ParseError(source, None, "empty file: expected paragraphs of text separated by blank lines")
    for line, paragraph in paragraphs:
        if problem := text_problem(paragraph):
            raise ParseError(source, line, problem)
    # Hashing the tidied text keeps ids stable when only spacing or line ends change.
    thread_id = f"{source_slug(source)}-{digest(*(paragraph for _, paragraph in paragraphs))}"
    return [
        Take(
            id=f"{thread_id}-{position}",
            text=paragraph,
            author=None,
            handle=None,
            date=None,
            thread_id=thread_id,
            position=position,
            # The file is the whole thread, so its size is known exactly.
            thread_size=len(paragraphs),
            url=None,
            source=source,
        )
        for position, (_, paragraph) in enumerate(paragraphs, start=1)
    ]


def unlike_takes(text: str) -> str | None:
    """Why ``text`` does not read as takes (binary, one word, no letters), or None if it may."""
    sample = text[:_SAMPLE_CHARS]
    if "\x00" in sample:
        return "it holds NUL bytes (a binary file, or text not saved as UTF-8)"
    unprintable = sum(1 for char in sample if not char.isprintable() and not char.isspace())
    if unprintable > _MAX_UNPRINTABLE * len(sample):
        return f"{unprintable:,} of its first {len(sample):,} characters are control characters (a binary file?)"
    if not any(char.isalpha() for char in sample):
        return "it has no letters"
    words = text.split(maxsplit=1)
    if len(words) == 1:
        return f"it is a single word, {shown(words[0])}"
    return None


def _paragraphs(text: str) -> list[tuple[int, str]]:
    """``(first line number, tidied paragraph)`` for each run of non-blank lines."""
    paragraphs: list[tuple[int, str]] = []
    lines: list[str] = []
    start = 0
    # One sentinel blank line closes the last paragraph.
    for number, line in enumerate([*split_lines(text), ""], start=1):
        if line.strip():
            start = start if lines else number
            lines.append(line)
        elif lines:
            paragraphs.append((start, tidy_text("\n".join(lines))))
            lines = []
    return paragraphs
