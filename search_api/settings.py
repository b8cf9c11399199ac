"""Configuration read from the environment (``TAKES_*``), shared by the CLI and the server."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_INDEX_DIR = Path("data/index")


class Settings(BaseSettings):
    """Every setting has a ``TAKES_`` environment variable: ``index_dir`` is ``TAKES_INDEX_DIR``."""

    model_config = SettingsConfigDict(env_prefix="TAKES_", extra="ignore")

    index_dir: Path = DEFAULT_INDEX_DIR
    # None: use whichever model built the index.
    model: str | None = None
    # None: the backend that embedded the index.
    backend: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    # Threads for torch and FAISS each; one measured best on two cores
    # (docs/PERFORMANCE.md, "Thread settings"). 0 leaves the libraries' defaults.
    threads: int = 1
    # Encode queries that arrive together in one model call (search_api/batching.py).
    query_batching: bool = True
    # How often the server looks for a new generation written by `takes add`.
    reload_interval: float = 1.0
    # POST/DELETE /takes are refused unless this is set; clients send it as a bearer token.
    admin_token: str | None = None
    # Largest request body the write routes read.
    max_body_bytes: int = 5_000_000
