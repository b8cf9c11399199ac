"""The ``takes`` command line.

One module per group of commands (reading, writing, serving), each command a
few lines over one ``Takes`` call (indexer/api.py). Options fall back to
``TAKES_*`` environment variables with ``Settings``' defaults. Heavy imports
(torch, FAISS, FastAPI) happen inside commands, so ``takes --help`` is
instant. User errors print one line and exit non-zero; no tracebacks.
"""

from __future__ import annotations

from search_api.cli import reading, serving, writing  # noqa: F401 - each registers its commands
from search_api.cli.options import cli, show_environment_variables

__all__ = ["cli", "main"]

show_environment_variables(cli)


def main() -> None:
    cli(prog_name="takes")
