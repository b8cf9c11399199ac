"""CSV with a header row naming the columns; a "text" column is required.

The delimiter is whichever of comma, semicolon, tab or bar splits the header
into column names (spreadsheets in many locales save with ";").
Named csv_rows so it does not shadow the standard library's ``csv``.
"""

from __future__ import annotations

import csv
import io
import re

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources.common import shown, takes_from_records

_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "bar"}
_COLUMN_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# Enough of the file to read the header and the first row, even a long quoted one.
_HEAD_CHARS = 65_536


def header_of(text: str) -> tuple[str, list[str]] | None:
    """The delimiter and column names if the first line reads as a CSV header, else None.

    A header is column names only (``text``, ``thread_id``...). Without a
    ``text`` column the next row must have as many fields, so prose such as
    "yes,no" is not taken for a header.
    """
    head = text[:_HEAD_CHARS]
    for delimiter in _DELIMITERS:
        rows = csv.reader(io.StringIO(head, newline=""), delimiter=delimiter)
        try:
            names = [name.strip().lower() for name in next(rows, [])]
            if not names or not all(_COLUMN_NAME.fullmatch(name) for name in names):
                continue
            if "text" in names:
                return delimiter, names
            second = next(rows, None)
        except csv.Error:
            continue
        if len(names) >= 2 and (second is None or len(second) == len(names)):
            return delimiter, names
    return None


def parse(text: str, source: str) -> list[Take]:
    """One take per row; errors name the physical line where the row starts."""
    delimiter = (header_of(text) or (",", []))[0]
    # strict: a stray quote is an error, not a silently merged cell.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records = []
    start = 1
    try:
        header = [name.strip().lower() for name in next(reader, [])]
        if "text" not in header:
            found = ", ".join(shown(name) for name in header[:10]) or "none"
            if len(header) > 10:
                found += f", … ({len(header)} in all)"
            raise ParseError(
                source,
                1,
                f"expected a header row with a 'text' column, found columns: {found}: name the column that "
                "holds the takes 'text' (or pass --format text to index the file as plain text)",
            )
        while True:
            # A quoted cell may span lines, so the row starts right after the last one read.
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                raise ParseError(
                    source,
                    start,
                    f"expected {len(header)} fields ({', '.join(header)}), found {len(row)}: "
                    f"quote fields that contain the {_DELIMITER_NAMES[delimiter]} delimiter",
                )
            records.append((start, dict(zip(header, row))))
    except csv.Error as error:
        raise ParseError(source, start, f"malformed CSV: {error}") from None
    if not records:
        raise ParseError(source, None, "no rows after the header")
    return takes_from_records(records, source)
