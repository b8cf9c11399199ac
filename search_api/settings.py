"""Configuration read from the environment (``TAKES_*``), shared by the CLI and the server."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from indexer.errors import TakesError

if TYPE_CHECKING:
    from indexer.api import Takes
    from indexer.serving import Searcher

DEFAULT_INDEX_DIR = Path("data/index")
ENV_PREFIX = "TAKES_"
# Host names that always reach a loopback-bound server from the same machine.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class SettingsError(TakesError):
    """A ``TAKES_*`` variable (or a setting passed in code) holds a value the server cannot use."""


def env_name(field: str) -> str:
    return f"{ENV_PREFIX}{field.upper()}"


def is_loopback(host: str) -> bool:
    """True when binding ``host`` accepts connections from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Every setting has a ``TAKES_`` environment variable: ``index_dir`` is ``TAKES_INDEX_DIR``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    index_dir: Path = DEFAULT_INDEX_DIR
    # postgresql://... selects the shared store (indexer/postgres) instead of
    # index_dir's files. Secret: the URL may hold a password, never shown.
    database_url: SecretStr | None = None
    # None: use whichever model built the index.
    model: str | None = None
    # None: the backend that embedded the index.
    backend: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Threads for torch and FAISS each; one measured best on two cores
    # (docs/PERFORMANCE.md, "Thread settings"). 0 leaves the libraries' defaults.
    threads: int = Field(1, ge=0)
    # Take count from which a new generation is searched approximately; None: 50,000 (indexer/ann.py).
    ann_threshold: int | None = Field(None, ge=0)
    # Encode queries that arrive together in one model call (indexer/query_batching.py).
    query_batching: bool = True
    # A local cross-encoder folder re-scoring the top takes, off by default; late
    # interaction with the index's own model, part of the default ranking (docs/QUALITY.md).
    reranker: Path | None = None
    late_interaction: bool = True
    # Writers keep each take's token vectors (about 390 bytes a token, 21 kB a
    # seed take) so late interaction reads them instead of running the model
    # per candidate; off (TAKES_STORE_TOKENS=0) they are computed at query time.
    store_tokens: bool = True
    # How often the server looks for a new generation written by `takes add`:
    # a look is one tiny read (the manifest row, or the corpus row), so a
    # take added elsewhere is served a fraction of a second after its commit.
    reload_interval: float = Field(0.2, ge=0, allow_inf_nan=False)
    # POST/DELETE /takes are refused unless this is set; clients send it as a bearer token.
    admin_token: str | None = None
    # A file holding the admin token, so it need not sit in the environment or on a command line.
    admin_token_file: Path | None = None
    # Largest request body the write routes read.
    max_body_bytes: int = Field(5_000_000, gt=0)
    # Largest body of every other request (POST /search, /mcp): a query is at most a few kB.
    max_query_bytes: int = Field(65_536, gt=0)
    # Host headers accepted besides the loopback names, comma-separated ("search.example.org,10.0.0.5").
    # Binding beyond loopback refuses every other Host on every route (DNS rebinding).
    allowed_hosts: Annotated[list[str], NoDecode] = []
    # Open connections a server process keeps (per worker); past it the longest-idle ones are closed first.
    max_connections: int = Field(500, ge=1)
    # Seconds a client has to send a request's headers (a new or a kept-alive connection).
    header_timeout: float = Field(10.0, gt=0, allow_inf_nan=False)
    # Seconds an idle kept-alive connection stays open between requests.
    keep_alive_timeout: float = Field(5.0, gt=0, allow_inf_nan=False)
    # Seconds a write over HTTP waits for another writer (`takes add`) before answering 409.
    lock_timeout: float = Field(30.0, ge=0, allow_inf_nan=False)
    # Writes waiting for the single writer thread; past it POST/DELETE /takes answer 429.
    # Per worker process, like max_connections: N workers keep up to N times as many.
    max_queued_writes: int = Field(16, ge=1)
    # Server processes sharing the port (search_api/workers.py); each loads its own model and index.
    workers: int = Field(1, ge=1, le=64)
    # With two or more workers and a core for each, hold every worker to its
    # own core (search_api/workers.py, worker_cores); off, the kernel moves them.
    pin_workers: bool = True
    # Searches a server process runs at once; the rest wait their turn in
    # arrival order (search_api/app.py, search_limiter). Two lets one query's model
    # run overlap another's Python; more only contend for the interpreter
    # lock and lengthen the slowest answers (docs/PERFORMANCE.md).
    search_threads: int = Field(2, ge=1, le=64)

    def __init__(self, **values):
        # One line naming the variable instead of pydantic's multi-line report.
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise SettingsError(describe_settings_error(error)) from None

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value):
        if isinstance(value, str):
            return [host.strip() for host in value.split(",") if host.strip()]
        return value

    @model_validator(mode="after")
    def _read_token_file(self):
        if self.admin_token is None and self.admin_token_file is not None:
            try:
                self.admin_token = read_token_file(self.admin_token_file)
            except SettingsError as error:
                raise ValueError(str(error)) from None
        return self

    def hosts(self) -> list[str]:
        """Host names the server answers to: loopback, the bound address (unless a wildcard) and ``allowed_hosts``."""
        names = list(LOOPBACK_HOSTS)
        if self.host not in ("0.0.0.0", "::", "", *names):
            names.append(self.host)
        return names + [host for host in self.allowed_hosts if host not in names]


def read_token_file(path: Path) -> str:
    """The admin token kept in ``path`` (surrounding whitespace dropped)."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise SettingsError(f"TAKES_ADMIN_TOKEN_FILE: cannot read {path}: {reason}") from None
    if not token:
        raise SettingsError(f"TAKES_ADMIN_TOKEN_FILE: {path} is empty: write the admin token in it")
    return token


def describe_settings_error(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        message = item["msg"].removeprefix("Value error, ")
        if field:
            shown = repr(item["input"]) if isinstance(item["input"], (str, int, float)) else ""
            value = f"={shown[:60]}" if shown else ""
            problems.append(f"{env_name(field)}{value}: {message}")
        else:
            problems.append(message)
    return "; ".join(problems)


def open_takes(
    settings: Settings,
    *,
    searcher: Searcher | None = None,
    batch_queries: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Takes:
    """The library's front door configured by ``settings``: how every interface reaches the index.

    Nothing loads here; the model loads on first use (or ``Takes.load()``).
    """
    from indexer.api import Takes

    store = None
    if settings.database_url is not None and settings.database_url.get_secret_value():
        from indexer.postgres import PostgresStore

        store = PostgresStore(settings.database_url.get_secret_value(), store_token_vectors=settings.store_tokens)
    return Takes(
        settings.index_dir if store is None else None,
        store=store,
        model=settings.model,
        backend=settings.backend,
        reranker=settings.reranker,
        late_interaction=settings.late_interaction,
        threads=settings.threads,
        batch_queries=batch_queries,
        lock_timeout=settings.lock_timeout,
        ann_threshold=settings.ann_threshold,
        store_token_vectors=settings.store_tokens,
        notify=notify,
        searcher=searcher,
    )
