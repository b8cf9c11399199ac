"""Plain text: one take per paragraph, the whole file one thread."""

from __future__ import annotations

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources.common import source_slug, tidy_text


def parse(text: str, source: str) -> list[Take]:
    """Paragraphs (separated by blank lines) in order; ParseError for an empty file."""
    # tidy_text leaves exactly one blank line between paragraphs and none at the ends.
    tidied = tidy_text(text)
    paragraphs = tidied.split("\n\n") if tidied else []
    if not paragraphs:
        raise ParseError(source, None, "empty file: expected paragraphs of text separated by blank lines")
    thread_id = source_slug(source)
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
        for position, paragraph in enumerate(paragraphs, start=1)
    ]
