"""Search: GET and POST /search."""

from __future__ import annotations

import json
import time
from typing import Annotated
from urllib.parse import parse_qsl

import anyio.to_thread
from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse, Response

from indexer.api import Takes, prompt_block
from indexer.models import SearchResult, group_by_thread, strong_matches
from search_api.dependencies import SearchLimiterDep, TakesDep
from search_api.schemas import PROMPT_FORMAT, SearchParams, SearchResponse

router = APIRouter(tags=["search"])


def run_search(served: Takes, params: SearchParams) -> tuple[list[SearchResult], float]:
    """The results of ``params`` and the milliseconds the search took."""
    started = time.perf_counter()
    results = served.search(
        params.q,
        params.k,
        mode=params.mode,
        context=params.context,
        author=params.author,
        handle=params.handle,
        thread_id=params.thread_id,
        since=params.since,
        until=params.until,
        min_score=params.min_score,
    )
    return results, round((time.perf_counter() - started) * 1000, 2)


def response_body(params: SearchParams, results: list[SearchResult], took_ms: float) -> dict:
    """The fields of ``SearchResponse``, in its order, as plain JSON values."""
    return {
        "query": params.q,
        "k": params.k,
        "mode": params.mode,
        "results": [result.to_dict() for result in results],
        "strong_matches": strong_matches(results),
        "threads": [group.to_dict() for group in group_by_thread(results)] if params.group_by_thread else None,
        "took_ms": took_ms,
    }


def search_body(served: Takes, params: SearchParams) -> dict:
    """The JSON object of a search (the search page embeds it)."""
    results, took_ms = run_search(served, params)
    return response_body(params, results, took_ms)


def respond(served: Takes, params: SearchParams) -> Response:
    """The JSON response, or with format=context the same takes as a cited prompt block."""
    results, took_ms = run_search(served, params)
    if params.format == PROMPT_FORMAT:
        return PlainTextResponse(prompt_block(results, params.q.strip()))
    # Serialized here, not by FastAPI through ``response_model``: validating the
    # response model again (in a second trip to the thread pool) and encoding it
    # cost about as much as the search around the model, for a body that is
    # built from plain values in SearchResponse's field order
    # (tests/search_api/test_api.py holds it to the model).
    body = json.dumps(response_body(params, results, took_ms), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body.encode("utf-8"), media_type="application/json")


# Encoding the query blocks, so the search runs in a worker thread, at most
# TAKES_SEARCH_THREADS of them at once (``limiter``), in arrival order.
@router.get(
    "/search",
    response_model=SearchResponse,
    response_model_exclude_unset=False,
    summary="Takes that answer a question",
    responses={200: {"content": {"text/plain": {"example": "Takes retrieved for: ...\n\n[1] Jack Clark (@jackclarkSF), ..."}}}},
)
async def search_get(served: TakesDep, limiter: SearchLimiterDep, params: Annotated[SearchParams, Query()]) -> Response:
    return await anyio.to_thread.run_sync(respond, served, params, limiter=limiter)


@router.post("/search", response_model=SearchResponse, summary="Same as GET /search, with a JSON body")
async def search_post(served: TakesDep, limiter: SearchLimiterDep, params: SearchParams) -> Response:
    return await anyio.to_thread.run_sync(respond, served, params, limiter=limiter)


class SearchFastPath:
    """GET /search answered without FastAPI's routing and dependency machinery, when the query is valid.

    A search costs the server about twice the model's own CPU, and about a
    third of the rest was the framework around a handler of three lines
    (docs/PERFORMANCE.md, "Where a request spends its time"). This layer
    validates the query string with the same ``SearchParams`` and calls the
    same ``respond`` under the same limiter; anything else (another route, a
    repeated parameter, a validation error, an exception from the search)
    goes on to the FastAPI route, which answers it exactly as before (the
    search then runs again there: errors are rare, and their answers stay in
    one place).
    """

    def __init__(self, app, served: Takes, limiter: anyio.CapacityLimiter):
        self.app, self.served, self.limiter = app, served, limiter

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != "/search":
            await self.app(scope, receive, send)
            return
        # As Starlette reads a query string: latin-1 bytes, then percent-decoded UTF-8.
        pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        values = dict(pairs)
        response = None
        if len(values) == len(pairs):
            try:
                params = SearchParams.model_validate(values)
                response = await anyio.to_thread.run_sync(respond, self.served, params, limiter=self.limiter)
            except Exception:  # noqa: BLE001 - a validation error or a failed search: the route answers it
                response = None
        if response is None:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)
