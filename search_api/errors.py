"""What HTTP and MCP clients are told when a request fails: one line, bounded, without server paths."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

# Enough to see what was wrong; a 10 MB input is never echoed back whole.
MAX_DETAIL_CHARS = 1000
MAX_ECHOED_CHARS = 100
MAX_LISTED_ERRORS = 10

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


# Where FastAPI found a parameter: the first part of its error locations.
_HTTP_SOURCES = ("query", "body", "path", "header", "cookie")


def describe_validation_errors(errors: list[dict], *, http: bool = True) -> str:
    """pydantic's errors as one sentence: ``k: Input should be less than or equal to 100; ...``.

    The same text for a 422 from the HTTP API and a tool error from MCP
    (``http=False``: there the location is the argument name alone).
    """
    problems = []
    for item in errors[:MAX_LISTED_ERRORS]:
        loc = list(item["loc"])
        if http and loc and loc[0] in _HTTP_SOURCES:
            loc = loc[1:]
        where = ".".join(_bounded_text(str(part), 60) for part in loc)
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    if len(errors) > MAX_LISTED_ERRORS:
        problems.append(f"and {len(errors) - MAX_LISTED_ERRORS} more problems")
    return _bounded_text("; ".join(problems), MAX_DETAIL_CHARS)


def bounded_errors(errors: list[dict]) -> list[dict]:
    """The structured list for programs, with each rejected ``input`` cut short and JSON-safe."""
    bounded = []
    for item in errors[:MAX_LISTED_ERRORS]:
        entry = {key: value for key, value in item.items() if key not in ("input", "ctx", "url")}
        entry["loc"] = [part if isinstance(part, int) else _bounded_text(str(part), 60) for part in item["loc"]]
        if "input" in item:
            entry["input"] = _bounded_input(item["input"])
        if "ctx" in item:
            entry["ctx"] = {key: _bounded_input(value) for key, value in item["ctx"].items()}
        bounded.append(entry)
    return bounded


def _bounded_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _bounded_input(value):
    if value is None or isinstance(value, bool) or (isinstance(value, int) and abs(value) < 10**18):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, str):
        return _bounded_text(value.encode("utf-8", "backslashreplace").decode("utf-8"), MAX_ECHOED_CHARS)
    try:
        text = json.dumps(value, default=str, ensure_ascii=True)
    except (TypeError, ValueError, RecursionError):
        text = repr(value)
    return _bounded_text(text, MAX_ECHOED_CHARS)


def without_paths(message: str, index_dir: Path) -> str:
    """``message`` with the server's index directory (and home) replaced by names that reveal nothing."""
    for path in sorted({str(index_dir.resolve()), str(index_dir.absolute()), str(index_dir)}, key=len, reverse=True):
        if path not in (".", ""):
            message = message.replace(path, "<index>")
    home = os.path.expanduser("~")
    if home not in ("/", "~"):
        message = message.replace(home, "~")
    return message


def storage_failure(error: Exception) -> tuple[int, str]:
    """(status, message) for a failure of the server's disk or database (OSError, indexer.index.failures.DATABASE_ERRORS): 507 when it is full, else 503."""
    from indexer.index.failures import database_disk_full

    if isinstance(error, OSError):
        if error.errno in _DISK_FULL:
            return 507, "the server's disk is full: nothing was written and the index is unchanged; free space and retry"
        reason = error.strerror or type(error).__name__
        return 503, f"the server could not read or write its index ({reason}); the index is unchanged"
    if database_disk_full(error):
        return 507, "the server's disk is full: nothing was written and the index is unchanged; free space and retry"
    return 503, f"the server's database failed ({error}); the index is unchanged"
