"""JSON Lines: one object per line with at least a "text" field."""

from __future__ import annotations

import json
from typing import Any

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources.common import RECORD_FIELDS, split_lines, takes_from_records


def parse(text: str, source: str) -> list[Take]:
    """One take per non-blank line; ParseError naming the first bad line."""
    records: list[tuple[int, dict[str, Any]]] = []
    # Lines end at \n only: U+2028 and U+0085 may stand unescaped inside a JSON string.
    for line_number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        record = loads(line, source, line_number)
        if not isinstance(record, dict):
            raise ParseError(source, line_number, f"expected a JSON object with fields {', '.join(RECORD_FIELDS)}")
        records.append((line_number, record))
    if not records:
        raise ParseError(source, None, "no records: expected one JSON object per line, each with a 'text' field")
    return takes_from_records(records, source)


def loads(text: str, source: str, line: int | None = None) -> Any:
    """``json.loads`` whose every failure is a ParseError naming ``line`` (or the line in ``text``)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = line if line is not None else error.lineno
        raise ParseError(source, where, f"malformed JSON: {error.msg} (column {error.colno})") from None
    except RecursionError:
        raise ParseError(source, line, "malformed JSON: nested too deeply (lists or objects inside each other)") from None
    except ValueError:
        # Python refuses to convert integers of over 4,300 digits (CVE-2020-10735).
        raise ParseError(source, line, "malformed JSON: a number has more than 4,300 digits") from None


def parse_records(records: Any, source: str) -> list[Take]:
    """Takes from already-decoded JSON (a list of objects, as in an HTTP body); errors name the item number."""
    if not isinstance(records, list) or not records:
        raise ParseError(source, None, "expected a non-empty JSON list of objects, each with a 'text' field")
    numbered: list[tuple[int, dict[str, Any]]] = []
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise ParseError(source, None, f"item {number}: expected a JSON object with fields {', '.join(RECORD_FIELDS)}")
        numbered.append((number, record))
    try:
        return takes_from_records(numbered, source)
    except ParseError as error:
        # takes_from_records names a line; in a JSON list that is the item number.
        raise ParseError(source, None, f"item {error.line}: {error.problem}") from None
