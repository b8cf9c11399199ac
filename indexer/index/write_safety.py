"""What keeps a write safe: the writer lock, crash-test pause points, OS and SQLite failures as one line."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import time
from pathlib import Path

from indexer.errors import DiskFull, IndexLocked, IndexReadOnly, IndexWriteFailed, TakesError
from indexer.index.layout import damaged_database, database_path

# Where a crash test may stop a writer (see pause_point), in the order reached.
PAUSE_POINTS = ("before-transaction", "before-segment", "after-segment", "after-commit", "after-mirror")


def _nearly_full(index_dir: Path) -> bool:
    """Whether the index's file system has (almost) no space left: SQLite reports that as an I/O error at times."""
    try:
        status = os.statvfs(index_dir)
    except OSError:
        return False
    return status.f_bavail * status.f_frsize < (1 << 20)


def write_error(index_dir: Path, error: BaseException, generation: int | None) -> TakesError | None:
    """The one-line error for an OS or SQLite failure met while writing, or None to let it through."""
    kept = "nothing was changed" + (f" (the index still holds generation {generation})" if generation else "")
    if isinstance(error, sqlite3.Error):
        message = str(error)
        if "full" in message or ("I/O" in message and _nearly_full(index_dir)):
            return DiskFull(f"{index_dir}: the disk is full (no space left on the device); {kept}: free some space and run the command again")
        if "readonly" in message or "read-only" in message:
            return IndexReadOnly(f"{index_dir} is read-only ({message}); {kept}: searching works, changes need write access")
        if "locked" in message or "busy" in message:
            return IndexLocked(f"{index_dir} is being written by another writer ({message}); {kept}: try again when it finishes")
        if "I/O" in message:
            return IndexWriteFailed(f"{index_dir}: the disk failed a write ({message}); {kept}")
        if isinstance(error, sqlite3.DatabaseError) and ("malformed" in message or "not a database" in message):
            return damaged_database(database_path(index_dir), error)
        return None
    if isinstance(error, OSError):
        where = error.filename or index_dir
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return DiskFull(f"cannot write {where}: the disk is full (no space left on the device); {kept}: free some space and run the command again")
        if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return IndexReadOnly(f"cannot write {where} ({error.strerror}); {kept}: searching works, changes need write access")
        if error.errno == errno.EIO:
            return IndexWriteFailed(f"cannot write {where} (input/output error); {kept}")
    return None


@contextlib.contextmanager
def translated(index_dir: Path, generation: int | None):
    """Turn OS and SQLite write failures into one-line TakesErrors (see write_error)."""
    try:
        yield
    except (OSError, sqlite3.Error) as error:
        translated = write_error(index_dir, error, generation)
        if translated is None:
            raise
        raise translated from None


def pause_point(name: str) -> None:
    """Crash-test hook: stop here when TAKES_TEST_PAUSE_AT names this point (see PAUSE_POINTS)."""
    if os.environ.get("TAKES_TEST_PAUSE_AT") != name:
        return
    if marker := os.environ.get("TAKES_TEST_PAUSE_FILE"):
        Path(marker).write_text(str(os.getpid()))
    # Long enough for the test to kill us; if it does not, the write carries
    # on, sooner if the test creates TAKES_TEST_RESUME_FILE.
    deadline = time.monotonic() + float(os.environ.get("TAKES_TEST_PAUSE_SECONDS", "60"))
    resume = os.environ.get("TAKES_TEST_RESUME_FILE")
    while time.monotonic() < deadline and not (resume and Path(resume).exists()):
        time.sleep(0.05)


def acquire_lock(path: Path, timeout: float):
    """Take the writer lock, waiting up to ``timeout`` seconds for another writer."""
    handle = open(path, "a+")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise IndexLocked(
                    f"{path.parent} is being written by another writer ({holder}); waited {timeout:g}s: "
                    f"try again when it finishes, or wait longer with --lock-timeout"
                ) from None
            time.sleep(0.1)
    # Naming the holder is a courtesy: on a full disk the lock must still be held, not leaked.
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
    except OSError:
        pass
    return handle


def release_lock(handle) -> None:
    """Let the next writer in (the handle ``acquire_lock`` returned)."""
    fcntl.flock(handle, fcntl.LOCK_UN)
    # A pid the full disk would not take may still sit in the buffer.
    with contextlib.suppress(OSError):
        handle.close()
