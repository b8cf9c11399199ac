"""Request and response models: the same field names as the CLI's --json and the MCP tools."""

from __future__ import annotations

from pydantic import BaseModel, Field

from indexer.search import DEFAULT_K, MAX_K, MAX_QUERY_CHARS


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
    score: float = Field(description="Relevance score, higher is better (cosine similarity for dense search).")


class SearchRequest(BaseModel):
    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description=f"The question, in plain words (1 to {MAX_QUERY_CHARS} characters).")
    k: int = Field(DEFAULT_K, ge=1, le=MAX_K, description=f"How many takes to return (1 to {MAX_K}).")


class SearchResponse(BaseModel):
    query: str = Field(description="The query as searched.")
    k: int = Field(description="The number of results asked for.")
    results: list[ResultOut] = Field(description="Takes best first.")
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
    index_type: str = Field(description="FAISS index type: flat (exact) or approximate.")
    generation: int = Field(description="Generation of the index being served.")
    backend: str = Field(description="Embedding backend serving queries.")


class HealthOut(BaseModel):
    status: str
    generation: int
