"""Headless Chromium for the browser tests (the page, the docs pages): one way to launch it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the browser tests skip (or fail in CI) below
    expect = sync_playwright = None

CHROMIUM = Path("/usr/bin/chromium")
# Headless, and quiet: no sync, updates or background fetches that would show up as foreign requests.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: the first search after start loads the model's kernels.
WAIT_MS = 30_000


def missing(what: str) -> None:
    # CI installs both (make test); there a skip would hide a page nobody tested.
    if os.environ.get("CI"):
        pytest.fail(f"{what}; `make test` installs it")
    pytest.skip(f"{what}; install it to run the browser tests")


def launch(playwright):
    """Headless Chromium with the quiet flags above, or a skip (a failure in CI) when it is missing."""
    if not CHROMIUM.exists():
        missing(f"no Chromium at {CHROMIUM}")
    expect.set_options(timeout=WAIT_MS)
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
