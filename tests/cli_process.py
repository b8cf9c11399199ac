"""Running `takes` as a separate process, the way a user or a cron job does.

Tests that need a second process (a writer racing a reader, a crash, a live
server) use these; everything else drives the CLI in-process with CliRunner.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import httpx

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def takes_command(*args) -> list[str]:
    return [sys.executable, "-m", "search_api.cli", *(str(arg) for arg in args)]


def takes_env(index_dir: Path, **extra: str) -> dict[str, str]:
    """The parent's environment without its TAKES_* settings, pointed at ``index_dir``, offline."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("TAKES_")}
    env.update(TAKES_INDEX_DIR=str(index_dir), HF_HUB_OFFLINE="1", **{name: str(value) for name, value in extra.items()})
    return env


def run_takes(index_dir: Path, *args, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        takes_command(*args), env=takes_env(index_dir, **env), cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the test run dies without cleaning up (Linux)."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_takes(index_dir: Path, *args, log: Path, open_files: int | None = None, **env: str) -> subprocess.Popen:
    """Start `takes ...` in the background; its stdout and stderr go to ``log`` (a pipe could fill and block it).

    ``open_files`` caps the child's file descriptors (RLIMIT_NOFILE), for tests of running out of them.
    """

    def prepare() -> None:
        _die_with_parent()
        if open_files is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with open(log, "wb") as handle:
        return subprocess.Popen(
            takes_command(*args),
            env=takes_env(index_dir, **env),
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            preexec_fn=prepare,
        )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(index_dir: Path, log: Path, *, open_files: int | None = None, **env: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`takes serve` on a free loopback port; yields (base URL, process) once /health answers, kills it after."""
    port = free_port()
    process = start_takes(index_dir, "serve", "--host", "127.0.0.1", "--port", port, log=log, open_files=open_files, **env)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"takes serve exited with {process.returncode}: {log.read_text()}")
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=90, what="takes serve to answer /health", interval=0.2)
        yield url, process
    finally:
        stop(process)
