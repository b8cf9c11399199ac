"""The FastAPI application: built by ``create_app`` so tests and the CLI share one path."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.middleware.trustedhost import TrustedHostMiddleware

from embeddings import EmbeddingError
from indexer.errors import (
    DiskFull,
    IndexCorrupt,
    IndexReadOnly,
    IndexWriteFailed,
    IndexLocked,
    IndexNotFound,
    InvalidQuery,
    ModelMismatch,
    ParseError,
    TakeNotFound,
    TakesError,
)
from indexer.search import Searcher
from indexer.threads import limit_threads
from search_api.routers import admin, health, listing, page, search, takes, tools
from search_api.batching import QueryBatcher
from search_api.errors import bounded_errors, describe_validation_errors, storage_failure, without_paths
from search_api.limits import RequestGuard
from search_api.settings import Settings, is_loopback
from search_api.writes import RETRY_AFTER_SECONDS, WriteQueue, WriterBusy

log = logging.getLogger("takes")

_STATUS = {
    InvalidQuery: 422,
    ParseError: 422,
    TakeNotFound: 404,
    IndexNotFound: 503,
    IndexCorrupt: 503,
    ModelMismatch: 409,
    IndexLocked: 409,
    WriterBusy: 429,
    DiskFull: 507,
    IndexWriteFailed: 503,
    IndexReadOnly: 503,
}


def _status_for(error: Exception) -> int:
    for kind, status in _STATUS.items():
        if isinstance(error, kind):
            return status
    return 400


def _watch_generations(app: FastAPI, stop: threading.Event) -> None:
    """Swap in generations written by other processes (`takes add`) without a restart."""
    searcher: Searcher = app.state.searcher
    while not stop.wait(app.state.settings.reload_interval):
        try:
            if searcher.refresh():
                log.info("serving generation %d (%d takes)", searcher.snapshot.generation, searcher.manifest.count)
        except (TakesError, EmbeddingError) as error:
            # Keep serving the generation we have; say why the new one was refused.
            log.warning("not switching to the new index generation: %s", error)


def second_stage_reranker(path):
    """The cross-encoder a Searcher re-scores with, or None when none is configured."""
    if path is None:
        return None
    from embeddings.reranker import CrossEncoderReranker

    return CrossEncoderReranker(path)


def create_app(settings: Settings | None = None, searcher: Searcher | None = None) -> FastAPI:
    """Build the app; pass ``searcher`` to reuse a loaded model (tests, embedding)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load the model and index once, before the first request.
        # Before the model loads: OMP_NUM_THREADS reaches libraries not loaded yet.
        limit_threads(settings.threads)
        app.state.searcher = searcher or Searcher(
            settings.index_dir,
            model=settings.model,
            backend=settings.backend,
            threads=settings.threads,
            reranker=second_stage_reranker(settings.reranker),
            late_interaction=settings.late_interaction,
        )
        served = app.state.searcher
        previous_encoder = served.query_encoder
        batcher = None
        if settings.query_batching:
            # Reads served.embedder at each batch, so a reload's new model is used.
            batcher = QueryBatcher(lambda texts: served.embedder.encode(texts), on_start=lambda: limit_threads(served.threads))
            served.query_encoder = batcher
        app.state.query_batcher = batcher
        app.state.write_queue = WriteQueue(settings.max_queued_writes)
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_generations, args=(app, stop), name="takes-reload", daemon=True)
        if settings.reload_interval > 0:
            watcher.start()
        try:
            # MCP over streamable HTTP shares this app's Searcher: no second model load.
            async with mcp_endpoint.running() if mcp_endpoint else contextlib.nullcontext():
                yield
        finally:
            stop.set()
            app.state.write_queue.close()
            if batcher is not None:
                served.query_encoder = previous_encoder
                batcher.close()

    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from this
    # server (the assets ship in the fastapi-offline package), not from a CDN.
    app = FastAPIOffline(
        title="takes",
        summary="Semantic search over AI-policy takes.",
        description=(
            "Ask a question in plain words and get back the takes (short posts in threads) "
            "that answer it, with who said it, when, and where in the thread."
        ),
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings

    def reply(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        # Clients never learn where the server keeps its index.
        return JSONResponse(status_code=status, content={"detail": without_paths(message, settings.index_dir)}, headers=headers)

    @app.exception_handler(TakesError)
    async def takes_error(request: Request, error: TakesError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if isinstance(error, WriterBusy) else None
        return reply(_status_for(error), str(error), headers)

    @app.exception_handler(EmbeddingError)
    async def embedding_error(request: Request, error: EmbeddingError) -> JSONResponse:
        # The model failed, not the request: try again once the server is repaired.
        return reply(503, str(error))

    @app.exception_handler(OSError)
    @app.exception_handler(sqlite3.Error)
    async def storage_error(request: Request, error: Exception) -> JSONResponse:
        log.warning("%s %s failed: %s", request.method, request.url.path, error)
        return reply(*storage_failure(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        # One readable sentence first (it names the parameter and the limit),
        # then FastAPI's structured list for programs, each rejected input cut short.
        errors = error.errors()
        return JSONResponse(status_code=422, content={"detail": describe_validation_errors(errors), "errors": bounded_errors(errors)})

    for router in (search.router, takes.router, listing.router, health.router, admin.router, tools.router, page.router):
        app.include_router(router)
    mcp_endpoint = _mcp_endpoint(app, settings)
    if mcp_endpoint is not None:
        app.add_route("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)
    @app.middleware("http")
    async def documentation_stays_local(request: Request, call_next):
        response = await call_next(request)
        if request.url.path in DOCUMENTATION_PAGES:
            # The ReDoc bundle links its own logo from a CDN; the browser must not even ask.
            response.headers["Content-Security-Policy"] = DOCUMENTATION_POLICY
        return response

    # Outermost last: an unknown Host is refused before its body is read.
    app.add_middleware(RequestGuard, settings=settings)
    if not is_loopback(settings.host):
        # Beyond loopback a browser page on any site could reach the server
        # through DNS rebinding; only the names it is meant to be reached by pass.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.hosts())
    return app


DOCUMENTATION_PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")
# Swagger UI and ReDoc start from an inline script; ReDoc searches in a blob: worker.
DOCUMENTATION_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def _mcp_endpoint(app: FastAPI, settings: Settings):
    """The /mcp endpoint, or None when the optional `mcp` package is not installed."""
    try:
        from search_api.mcp_server import HttpEndpoint, build_server
    except ImportError as error:
        log.info("MCP over HTTP is off (%s): pip install 'takes[mcp]'", error)
        return None
    return HttpEndpoint(build_server(lambda: app.state.searcher), hosts=settings.hosts())
