"""Commands that serve the index: the HTTP API (`serve`) and MCP on stdio (`mcp`)."""

from __future__ import annotations

from pathlib import Path

import click

from search_api.cli.options import (
    backend_option,
    cli,
    database_url_setting,
    default,
    index_dir_option,
    late_interaction_option,
    model_option,
    reranker_option,
    user_errors,
)


def _bind(host: str, port: int):
    """A listening socket, bound before anything claims to be serving: a busy port is one clear line."""
    import socket

    from indexer.errors import TakesError

    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        reason = error.strerror or str(error)
        raise TakesError(
            f"cannot listen on {host}:{port}: {reason} (another server on that port? choose another with --port or TAKES_PORT)"
        ) from None
    return listener


@cli.command()
@click.option(
    "--host",
    envvar="TAKES_HOST",
    default=default("host"),
    show_default=True,
    help="Address to listen on. Beyond loopback (0.0.0.0), only the Host names in "
    "TAKES_ALLOWED_HOSTS are answered; put a reverse proxy in front for anything public.",
)
@click.option(
    "--port",
    envvar="TAKES_PORT",
    type=click.IntRange(1, 65535),
    default=default("port"),
    show_default=True,
    help="TCP port to listen on, 1-65535.",
)
@index_dir_option
@model_option
@backend_option
@click.option(
    "--token-file",
    envvar="TAKES_ADMIN_TOKEN_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File holding the admin token that enables POST/DELETE /takes (or set "
    "TAKES_ADMIN_TOKEN). Never put the token itself on a command line.",
)
@reranker_option
@late_interaction_option
@click.option(
    "--workers",
    envvar="TAKES_WORKERS",
    type=click.IntRange(1, 64),
    default=default("workers"),
    show_default=True,
    help="Server processes sharing the port, each with its own model and index in memory "
    "(about one per core; with a core for each, each stays on its own: TAKES_PIN_WORKERS; "
    "docs/PERFORMANCE.md, \"Concurrent clients\").",
)
@user_errors
def serve(host, port, index_dir, model, backend, token_file, reranker, late_interaction, workers):
    """Serve the HTTP API, the search page and MCP (docs at /docs).

    Limits and timeouts come from the environment: TAKES_MAX_CONNECTIONS,
    TAKES_HEADER_TIMEOUT, TAKES_KEEP_ALIVE_TIMEOUT, TAKES_MAX_BODY_BYTES,
    TAKES_MAX_QUERY_BYTES, TAKES_MAX_QUEUED_WRITES, TAKES_LOCK_TIMEOUT and
    TAKES_ALLOWED_HOSTS (search_api/settings.py says what each does).
    With several workers, TAKES_MAX_CONNECTIONS and TAKES_MAX_QUEUED_WRITES
    hold per worker.
    """
    from search_api.settings import Settings, is_loopback

    overrides = {"admin_token_file": token_file} if token_file is not None else {}
    settings = Settings(
        index_dir=index_dir,
        model=model,
        backend=backend,
        host=host,
        port=port,
        reranker=reranker,
        late_interaction=late_interaction,
        workers=workers,
        **database_url_setting(),
        **overrides,
    )
    listener = _bind(host, port)
    if settings.workers == 1:
        # Load before serving, so a missing index is one clear line.
        served = _load(settings)
        count, serve_forever, where = served.count, lambda: _run_uvicorn(settings, served, listener), ""
    else:
        count, supervisor = _start_workers(settings, listener)
        serve_forever, where = supervisor.wait, f" in {settings.workers} worker processes"
        if supervisor.cores is not None:
            where += f", each on its own core ({', '.join(map(str, supervisor.cores))})"
    click.echo(f"serving {count} takes from {_location(settings)} on http://{host}:{port}{where}", err=True)
    if not is_loopback(host):
        click.echo(f"answering only Host {', '.join(settings.hosts())} (add names with TAKES_ALLOWED_HOSTS)", err=True)
    serve_forever()


def _location(settings) -> str:
    """Where the served corpus lives, for the start-up line: the folder, or the database URL without its password."""
    if settings.database_url is not None and settings.database_url.get_secret_value():
        from indexer.postgres.connection import redact

        return redact(settings.database_url.get_secret_value())
    return str(settings.index_dir)


def _load(settings):
    from search_api.settings import open_takes

    return open_takes(settings, batch_queries=settings.query_batching).load()


def _run_uvicorn(settings, served, listener, shares=None) -> None:
    """``shares``: (ConnectionCounts, this worker's slot) when several workers share ``listener``."""
    import uvicorn

    from search_api.app import create_app
    from search_api.limits import guarded_protocol
    from search_api.workers import share_accepts

    config = uvicorn.Config(
        create_app(settings, served),
        log_level="warning",
        http=guarded_protocol(settings),
        timeout_keep_alive=settings.keep_alive_timeout,
    )
    # Several workers on one socket take new connections in turn.
    server_class = share_accepts(uvicorn.Server, *shares) if shares is not None else uvicorn.Server
    server_class(config).run(sockets=[listener])


def _start_workers(settings, listener):
    """Fork ``settings.workers`` servers on ``listener``; (takes served, the started ``Supervisor``)."""
    from indexer.errors import IndexNotFound
    from search_api.settings import open_takes
    from search_api.workers import ConnectionCounts, Supervisor

    # Checked here, before any fork: a missing index is one line, not one per worker.
    takes = open_takes(settings)
    if not takes.exists():
        raise IndexNotFound(settings.index_dir)
    # Connections queue in the backlog while the workers load.
    listener.listen(2048)

    counts = ConnectionCounts(settings.workers)

    def run_worker(ready, slot) -> None:
        served = _load(settings)
        ready()
        _run_uvicorn(settings, served, listener, shares=(counts, slot))

    supervisor = Supervisor(settings.workers, run_worker, pin=settings.pin_workers)
    supervisor.start()
    return takes.count, supervisor


@cli.command()
@index_dir_option
@model_option
@backend_option
@user_errors
def mcp(index_dir, model, backend):
    """Serve the search as MCP tools on stdin/stdout (for Claude Desktop and other MCP clients).

    Stdout carries only the protocol; logs go to stderr. Runs offline.
    """
    try:
        from search_api.mcp_server import run_stdio
    except ImportError as error:
        raise click.ClickException(f"the MCP server needs the `mcp` package ({error}): pip install 'takes[mcp]'") from None
    from search_api.settings import Settings, open_takes

    # A client may start us in any folder: resolve the index before anything else.
    settings = Settings(index_dir=index_dir.resolve(), model=model, backend=backend, **database_url_setting())
    run_stdio(open_takes(settings, notify=lambda line: click.echo(line, err=True)), reload_interval=settings.reload_interval)
