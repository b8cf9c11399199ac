"""Run `takes` in a process whose file writes fail the way a full disk fails them.

    python -m tests.failing_writes ENOSPC 'seg-.*\\.tmp$' add FILE...

Files opened for writing whose path matches the pattern accept the open and
raise ``OSError(ENOSPC)`` at the first write, as the kernel does when the
disk fills. Only the operating system's side is faked; every line of takes
runs as usual. SQLite's own writes are not affected (its C code does not go
through Python): the tests fill a small tmpfs for those.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import re
import sys


class _FailingFile:
    def __init__(self, handle, code: int):
        self._handle, self._code = handle, code

    def write(self, data):
        raise OSError(self._code, os.strerror(self._code), self._handle.name)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


def main() -> None:
    code, pattern, args = getattr(errno, sys.argv[1]), re.compile(sys.argv[2]), sys.argv[3:]
    real_open = builtins.open

    def failing_open(file, mode="r", *rest, **options):
        handle = real_open(file, mode, *rest, **options)
        if not isinstance(file, int) and any(flag in mode for flag in "wax+") and pattern.search(os.fspath(file)):
            return _FailingFile(handle, code)
        return handle

    builtins.open = io.open = failing_open
    from search_api.cli import main as takes

    sys.argv = ["takes", *args]
    takes()


if __name__ == "__main__":
    main()
