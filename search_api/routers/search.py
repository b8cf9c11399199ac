"""Search: GET and POST /search."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from indexer.api import Takes, prompt_block
from indexer.models import SearchResult, group_by_thread, strong_matches
from search_api.dependencies import TakesDep
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


def respond(served: Takes, params: SearchParams) -> dict | PlainTextResponse:
    """The JSON response, or with format=context the same takes as a cited prompt block."""
    results, took_ms = run_search(served, params)
    if params.format == PROMPT_FORMAT:
        return PlainTextResponse(prompt_block(results, params.q.strip()))
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
def search_get(served: TakesDep, params: Annotated[SearchParams, Query()]) -> dict | PlainTextResponse:
    return respond(served, params)


@router.post("/search", response_model=SearchResponse, summary="Same as GET /search, with a JSON body")
def search_post(served: TakesDep, params: SearchParams) -> dict | PlainTextResponse:
    return respond(served, params)
