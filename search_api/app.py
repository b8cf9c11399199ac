"""The FastAPI application: built by ``create_app`` so tests and the CLI share one path."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from embeddings import EmbeddingError
from indexer.errors import (
    IndexCorrupt,
    IndexLocked,
    IndexNotFound,
    InvalidQuery,
    ModelMismatch,
    ParseError,
    TakeNotFound,
    TakesError,
)
from indexer.search import Searcher
from search_api.routers import health, search, takes
from search_api.settings import Settings

log = logging.getLogger("takes")

_STATUS = {
    InvalidQuery: 422,
    ParseError: 422,
    TakeNotFound: 404,
    IndexNotFound: 503,
    IndexCorrupt: 503,
    ModelMismatch: 409,
    IndexLocked: 409,
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


def create_app(settings: Settings | None = None, searcher: Searcher | None = None) -> FastAPI:
    """Build the app; pass ``searcher`` to reuse a loaded model (tests, embedding)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Load the model and index once, before the first request.
        app.state.searcher = searcher or Searcher(settings.index_dir, model=settings.model, backend=settings.backend)
        stop = threading.Event()
        watcher = threading.Thread(target=_watch_generations, args=(app, stop), name="takes-reload", daemon=True)
        if settings.reload_interval > 0:
            watcher.start()
        try:
            yield
        finally:
            stop.set()

    app = FastAPI(
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

    @app.exception_handler(TakesError)
    async def takes_error(request: Request, error: TakesError) -> JSONResponse:
        return JSONResponse(status_code=_status_for(error), content={"detail": str(error)})

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        # One readable sentence first (it names the parameter and the limit),
        # then FastAPI's structured list for programs.
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"] if part not in ("query", "body"))
            problems.append(f"{where}: {item['msg']}" if where else item["msg"])
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems), "errors": error.errors()})

    for router in (search.router, takes.router, health.router):
        app.include_router(router)
    return app
