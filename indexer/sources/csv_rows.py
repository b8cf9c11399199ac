"""CSV with a header row naming the columns; a "text" column is required.

Named csv_rows so it does not shadow the standard library's ``csv``.
"""

from __future__ import annotations

import csv
import io

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources.common import takes_from_records


def parse(text: str, source: str) -> list[Take]:
    """One take per row; errors name the physical line where the row starts."""
    # strict: a stray quote is an error, not a silently merged cell.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records = []
    start = 1
    try:
        header = [name.strip().lower() for name in next(reader, [])]
        if "text" not in header:
            found = ", ".join(repr(name) for name in header) or "none"
            raise ParseError(source, 1, f"expected a header row with a 'text' column, found columns: {found}")
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
                    "quote fields that contain commas",
                )
            records.append((start, dict(zip(header, row))))
    except csv.Error as error:
        raise ParseError(source, start, f"malformed CSV: {error}") from None
    if not records:
        raise ParseError(source, None, "no rows after the header")
    return takes_from_records(records, source)
