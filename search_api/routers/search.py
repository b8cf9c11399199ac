"""Search: GET and POST /search."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from indexer.client import format_context
from indexer.models import SearchResult, group_by_thread, strong_matches
from indexer.search import Filters, Searcher
from search_api.dependencies import SearcherDep
from search_api.schemas import SearchParams, SearchResponse

router = APIRouter(tags=["search"])


def run_search(searcher: Searcher, params: SearchParams) -> tuple[list[SearchResult], float]:
    """The results of ``params`` and the milliseconds the search took."""
    started = time.perf_counter()
    filters = Filters(
        author=params.author,
        handle=params.handle,
        thread_id=params.thread_id,
        since=params.since,
        until=params.until,
        min_score=params.min_score,
    )
    results = searcher.search(params.q, params.k, mode=params.mode, filters=filters, context=params.context)
    return results, round((time.perf_counter() - started) * 1000, 2)


def respond(searcher: Searcher, params: SearchParams) -> dict | PlainTextResponse:
    """The JSON response, or with format=context the same takes as a cited text block."""
    results, took_ms = run_search(searcher, params)
    if params.format == "context":
        return PlainTextResponse(format_context(results, params.q.strip()))
    return {
        "query": params.q,
        "k": params.k,
        "mode": params.mode,
        "results": [result.to_dict() for result in results],
        "strong_matches": strong_matches(results),
        "threads": [group.to_dict() for group in group_by_thread(results)] if params.group_by_thread else None,
        "took_ms": took_ms,
    }


# Plain `def`: encoding the query blocks, so FastAPI runs it in its thread pool.
@router.get(
    "/search",
    response_model=SearchResponse,
    response_model_exclude_unset=False,
    summary="Takes that answer a question",
    responses={200: {"content": {"text/plain": {"example": "Takes retrieved for: ...\n\n[1] Jack Clark (@jackclarkSF), ..."}}}},
)
def search_get(searcher: SearcherDep, params: Annotated[SearchParams, Query()]) -> dict | PlainTextResponse:
    return respond(searcher, params)


@router.post("/search", response_model=SearchResponse, summary="Same as GET /search, with a JSON body")
def search_post(searcher: SearcherDep, params: SearchParams) -> dict | PlainTextResponse:
    return respond(searcher, params)
