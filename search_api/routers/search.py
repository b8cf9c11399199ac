"""Search: GET and POST /search."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query

from indexer.search import DEFAULT_K, MAX_K, MAX_QUERY_CHARS
from search_api.dependencies import SearcherDep
from search_api.schemas import SearchRequest, SearchResponse

router = APIRouter(tags=["search"])


def run_search(searcher, query: str, k: int) -> SearchResponse:
    started = time.perf_counter()
    results = searcher.search(query, k)
    took_ms = (time.perf_counter() - started) * 1000
    return SearchResponse(
        query=query,
        k=k,
        results=[result.to_dict() for result in results],
        took_ms=round(took_ms, 2),
    )


# Plain `def`: encoding the query blocks, so FastAPI runs it in its thread pool.
@router.get("/search", response_model=SearchResponse, summary="Takes nearest in meaning to a question")
def search_get(
    searcher: SearcherDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description=f"The question, in plain words (1 to {MAX_QUERY_CHARS} characters).")],
    k: Annotated[int, Query(ge=1, le=MAX_K, description=f"How many takes to return (1 to {MAX_K}).")] = DEFAULT_K,
) -> SearchResponse:
    return run_search(searcher, q, k)


@router.post("/search", response_model=SearchResponse, summary="Same as GET /search, with a JSON body")
def search_post(searcher: SearcherDep, request: SearchRequest) -> SearchResponse:
    return run_search(searcher, request.q, request.k)
