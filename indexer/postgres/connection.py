"""Reaching the database: URLs (and keeping their password out of messages), and its errors as one line."""

from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

from indexer.errors import IndexLocked, IndexNotFound, IndexReadOnly, IndexWriteFailed, TakesError


class DatabaseUnavailable(IndexWriteFailed):
    """The database could not be reached or refused the work; nothing was changed."""


class DatabaseEmpty(IndexNotFound):
    """No corpus has been written to the database yet."""

    def __init__(self, location: str):
        self.index_dir = Path(".")
        self.location = location
        TakesError.__init__(
            self,
            f"no corpus in {location}: build one with `takes index --database-url ...` "
            f"(or `takes copy --from DIR --to {location}`)",
        )


# -- secrets --------------------------------------------------------------------


def password(url: str) -> str | None:
    """The password a database URL or conninfo string carries, if any."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        return conninfo_to_dict(url).get("password") or None
    except Exception:
        match = re.search(r"://[^/@:]*:([^@/]*)@", url)
        return urllib.parse.unquote(match.group(1)) if match and match.group(1) else None


def redact(url: str) -> str:
    """``url`` without its password (kept as ``***``), for messages, logs and /stats."""
    if "://" in url:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            credentials, host = netloc.rsplit("@", 1)
            if ":" in credentials:
                credentials = credentials.split(":", 1)[0] + (":***" if credentials.split(":", 1)[1] else "")
            netloc = f"{credentials}@{host}"
        query = re.sub(r"(?i)(^|&)password=[^&]*", r"\1password=***", parts.query)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
    return re.sub(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", url)


def is_database_url(value: str | os.PathLike | None) -> bool:
    return isinstance(value, str) and value.startswith(("postgresql://", "postgres://"))


def database_error(error: Exception, doing: str, location: str, text: str) -> TakesError:
    """The one-line error for a database failure met while ``doing`` something (``text``: its scrubbed message)."""
    import psycopg

    if isinstance(error, psycopg.errors.InsufficientPrivilege) and doing in ("read", "search", "read the corpus in"):
        return DatabaseUnavailable(
            f"{location}: the database role may not {doing} the takes tables ({text}): "
            f"grant it SELECT on them (docs/DEPLOY.md, \"A read-only role\")"
        )
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return IndexReadOnly(
            f"{location}: the database role may not {doing} ({text}); searching works, changes need a role "
            f"with write grants (docs/DEPLOY.md)"
        )
    if isinstance(error, psycopg.errors.ReadOnlySqlTransaction):
        return IndexReadOnly(
            f"{location} is a read-only replica ({text}); searching works, changes go to the primary's URL"
        )
    if isinstance(error, psycopg.errors.LockNotAvailable):
        return IndexLocked(f"{location} is being written by another writer ({text}); try again when it finishes")
    return DatabaseUnavailable(f"cannot {doing} {location} ({text}); nothing was changed")
