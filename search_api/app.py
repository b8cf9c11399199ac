"""The FastAPI application: built by ``create_app`` so tests and the CLI share one path."""

from __future__ import annotations

import contextlib
import logging
import os
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.middleware.trustedhost import TrustedHostMiddleware

from embeddings import EmbeddingError, ProjectError
from indexer.api import Takes
from indexer.index.failures import DATABASE_ERRORS
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
)
from search_api.routers import admin, health, listing, page, search, takes, tools
from search_api.errors import bounded_errors, describe_validation_errors, storage_failure, without_paths
from search_api.limits import RequestGuard
from search_api.settings import Settings, is_loopback, open_takes
from search_api.writes import RETRY_AFTER_SECONDS, WriteQueue, WriterBusy

if TYPE_CHECKING:
    from indexer.serving import Searcher

log = logging.getLogger("takes")

# Every project error is the user's or the server's state, never a 500.
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
    # The model failed, not the request: try again once the server is repaired.
    EmbeddingError: 503,
}


def _status_for(error: Exception) -> int:
    for kind, status in _STATUS.items():
        if isinstance(error, kind):
            return status
    return 400


def _serving(settings: Settings, served: Takes, mcp_endpoint):
    """The app's lifespan: load once before the first request, follow new generations, stop cleanly."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        served.load()
        app.state.write_queue = WriteQueue(settings.max_queued_writes)
        follower = served.follow(settings.reload_interval)
        try:
            # MCP over streamable HTTP shares this app's Takes: no second model load.
            async with mcp_endpoint.running() if mcp_endpoint else contextlib.nullcontext():
                yield
        finally:
            follower.stop()
            app.state.write_queue.close()
            served.stop_batching()

    return lifespan


def create_app(settings: Settings | None = None, served: Takes | Searcher | None = None) -> FastAPI:
    """Build the app; pass ``served`` (a Takes, or a loaded Searcher) to reuse a loaded model (tests, embedding)."""
    settings = settings or Settings()
    # Cheap: nothing loads until the lifespan starts.
    served = served if isinstance(served, Takes) else open_takes(settings, searcher=served, batch_queries=settings.query_batching)
    search_limiter = anyio.CapacityLimiter(settings.search_threads)
    mcp_endpoint = _mcp_endpoint(served, settings, search_limiter)
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
        lifespan=_serving(settings, served, mcp_endpoint),
    )
    app.state.settings = settings
    app.state.takes = served
    # Every search (the routes, the fast path, the page, MCP over HTTP) takes a slot here.
    app.state.search_limiter = search_limiter

    _add_error_handlers(app, settings)
    for router in (search.router, takes.router, listing.router, health.router, admin.router, tools.router, page.router):
        app.include_router(router)
    if mcp_endpoint is not None:
        app.add_route("/mcp", mcp_endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False)

    app.add_middleware(search.SearchFastPath, served=served, limiter=search_limiter)
    app.add_middleware(ResponseHeaders)
    # Outermost last: an unknown Host is refused before its body is read.
    app.add_middleware(RequestGuard, settings=settings)
    if not is_loopback(settings.host):
        # Beyond loopback a browser page on any site could reach the server
        # through DNS rebinding; only the names it is meant to be reached by pass.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.hosts())
    return app


def _add_error_handlers(app: FastAPI, settings: Settings) -> None:
    """Every project error, storage failure and invalid request becomes a status and one line, never a 500."""

    def reply(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        # Clients never learn where the server keeps its index.
        return JSONResponse(status_code=status, content={"detail": without_paths(message, settings.index_dir)}, headers=headers)

    @app.exception_handler(ProjectError)
    async def project_error(request: Request, error: ProjectError) -> JSONResponse:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if isinstance(error, WriterBusy) else None
        return reply(_status_for(error), str(error), headers)

    @app.exception_handler(OSError)
    async def storage_error(request: Request, error: Exception) -> JSONResponse:
        log.warning("%s %s failed: %s", request.method, request.url.path, error)
        return reply(*storage_failure(error))

    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, storage_error)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        # One readable sentence first (it names the parameter and the limit),
        # then FastAPI's structured list for programs, each rejected input cut short.
        errors = error.errors()
        return JSONResponse(status_code=422, content={"detail": describe_validation_errors(errors), "errors": bounded_errors(errors)})


class ResponseHeaders:
    """Headers added to every response: which worker process answered, and the docs pages' policy.

    Plain ASGI: ``@app.middleware("http")`` wraps each request in streams and
    a task group, measurable on a request of a few milliseconds.
    """

    def __init__(self, app):
        self.app = app
        self.worker = str(os.getpid()).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = [(b"x-takes-worker", self.worker)]
        documentation = scope["path"] in DOCUMENTATION_PAGES
        if documentation:
            # The ReDoc bundle links its own logo from a CDN; the browser must not even ask.
            extra.append((b"content-security-policy", _DOCUMENTATION_POLICY))

        async def sending(message):
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                if documentation:
                    headers = [(name, value) for name, value in headers if name.lower() != b"content-security-policy"]
                message["headers"] = [*headers, *extra]
            await send(message)

        await self.app(scope, receive, sending)


DOCUMENTATION_PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")
# Swagger UI and ReDoc start from an inline script; ReDoc searches in a blob: worker.
DOCUMENTATION_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_DOCUMENTATION_POLICY = DOCUMENTATION_POLICY.encode()


def _mcp_endpoint(served: Takes, settings: Settings, limiter: anyio.CapacityLimiter):
    """The /mcp endpoint, or None when the optional `mcp` package is not installed."""
    try:
        from search_api.mcp_server import HttpEndpoint, build_server
    except ImportError as error:
        log.info("MCP over HTTP is off (%s): pip install 'takes[mcp]'", error)
        return None
    return HttpEndpoint(build_server(served, limiter=limiter), hosts=settings.hosts())
