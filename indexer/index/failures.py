"""Failures of the embedded store's database that reach the front ends: what they are and what they mean.

A damaged page read mid-query or a full disk met by SQLite surfaces as a
``sqlite3`` exception outside the store's own checks. The front ends (HTTP
API, CLI) turn these into one line without knowing SQLite: they catch
``DATABASE_ERRORS`` and ask ``database_disk_full`` / ``database_damaged``. The PostgreSQL store turns its driver's
failures into ``TakesError``s itself (``PostgresStore.unavailable``).
"""

from __future__ import annotations

import sqlite3

DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,)


def database_disk_full(error: BaseException) -> bool:
    """Whether a DATABASE_ERRORS failure says the disk is full."""
    return isinstance(error, sqlite3.OperationalError) and "full" in str(error)


def database_damaged(error: BaseException) -> bool:
    """Whether a DATABASE_ERRORS failure is the database refusing what it read (not a misuse of the driver)."""
    return isinstance(error, sqlite3.DatabaseError)
