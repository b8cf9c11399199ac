"""Request and response models: the same field names as the CLI's --json and the MCP tools."""

from __future__ import annotations

from pydantic import BaseModel, Field

from datetime import date
from typing import Literal

from indexer.query_limits import DEFAULT_K, DEFAULT_MODE, MAX_K, MAX_NEIGHBOURS, MAX_QUERY_CHARS, MODES


class TakeOut(BaseModel):
    id: str = Field(description="Stable, URL-safe id of the take.")
    text: str = Field(description="The text of the take, whitespace tidied.")
    author: str | None = Field(description="Display name of the author.")
    handle: str | None = Field(description="The author's handle, with '@'.")
    date: str | None = Field(description="ISO date of the thread (or of the post).")
    thread_id: str = Field(description="URL-safe id of the thread the take belongs to.")
    position: int = Field(description="1-based position of the take in its thread.")
    thread_size: int | None = Field(description="How many posts the source says the thread has.")
    url: str | None = Field(description="Link to the original post, when known.")
    source: str = Field(description="File the take was read from.")


class ResultOut(TakeOut):
    score: float = Field(
        ge=0,
        le=1,
        description="Relevance from 0 to 1 on one scale for every query, mode and filter, fitted on judged "
        "queries (higher is better; 0.5 and up is a strong match).",
    )
    match: Literal["strong", "weak"] = Field(
        description="strong: the take very likely answers the query (score >= 0.5); weak: the closest the "
        "index has, which may not answer it."
    )


class NeighboursOut(BaseModel):
    before: list[TakeOut] = Field(description="Up to `context` takes before this one in its thread, in order.")
    after: list[TakeOut] = Field(description="Up to `context` takes after this one in its thread, in order.")


class ResultWithNeighboursOut(ResultOut):
    context: NeighboursOut = Field(description="The take's neighbours in its thread (when `context` > 0).")


class ThreadGroupOut(BaseModel):
    thread_id: str
    score: float = Field(description="Best score among the thread's matching takes.")
    takes: list[ResultWithNeighboursOut | ResultOut] = Field(description="The thread's matching takes, in thread order.")


# The response format that renders results as a cited prompt block ("context"
# for users: `format=context`, `--format context`).
PROMPT_FORMAT = "context"


class SearchParams(BaseModel):
    """Search parameters: the query string of GET /search, or the JSON body of POST /search."""

    model_config = {"extra": "forbid"}

    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description=f"The question, in plain words (1 to {MAX_QUERY_CHARS} characters).")
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description=f"How many takes to return (1 to {MAX_K}).")
    mode: Literal[MODES] = Field(  # type: ignore[valid-type]
        DEFAULT_MODE, description="hybrid (meaning and words, the default), dense (meaning only) or lexical (BM25 words only)."
    )
    author: str | None = Field(None, description="Only takes by this author name or handle (case-insensitive).")
    handle: str | None = Field(None, description="Only takes by this handle, with or without '@'.")
    thread_id: str | None = Field(None, description="Only takes of this thread.")
    since: date | None = Field(None, description="Only takes dated on or after this ISO date.")
    until: date | None = Field(None, description="Only takes dated on or before this ISO date.")
    min_score: float | None = Field(None, ge=0, le=1, description="Drop results scoring below this (0 to 1; 0.5 keeps strong matches only).")
    context: int = Field(0, ge=0, le=MAX_NEIGHBOURS, description=f"Return up to this many neighbouring takes before and after each result (0 to {MAX_NEIGHBOURS}).")
    group_by_thread: bool = Field(False, description="Also return `threads`: one entry per thread with its matching takes in thread order.")
    format: Literal["json", "context"] = Field(
        "json", description="json (the default), or context: a numbered, cited plain-text block (text/plain) to paste into a prompt."
    )


class SearchResponse(BaseModel):
    query: str = Field(description="The query as searched.")
    k: int = Field(description="The number of results asked for.")
    mode: str = Field(description="The ranking used.")
    results: list[ResultWithNeighboursOut | ResultOut] = Field(description="Takes best first.")
    strong_matches: int = Field(description="How many results are strong matches; 0 means nothing answers the query well.")
    threads: list[ThreadGroupOut] | None = Field(None, description="With group_by_thread: results grouped by thread, best thread first.")
    took_ms: float = Field(description="Server time for the search, in milliseconds.")


class ThreadOut(BaseModel):
    thread_id: str
    takes: list[TakeOut] = Field(description="All takes of the thread, in thread order.")


class StatsOut(BaseModel):
    takes: int = Field(description="Number of takes in the index.")
    threads: int = Field(description="Number of threads.")
    model: str = Field(description="Embedding model that built the index.")
    dim: int = Field(description="Vector dimension.")
    index_bytes: int = Field(description="Size of the index on disk.")
    reclaimable_bytes: int = Field(description="About how many of those bytes `takes compact` would free.")
    index_type: str = Field(description="FAISS index type: flat (exact) or approximate.")
    generation: int = Field(description="Generation of the index being served.")
    backend: str = Field(description="Embedding backend serving queries.")


class HealthOut(BaseModel):
    status: str
    generation: int
