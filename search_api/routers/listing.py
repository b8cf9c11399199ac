"""Listing what the index holds: GET /authors and GET /threads."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from search_api.dependencies import TakesDep

router = APIRouter(tags=["takes"])


class AuthorOut(BaseModel):
    author: str | None = Field(description="Display name of the author.")
    handle: str | None = Field(description="The author's handle, with '@'.")
    takes: int = Field(description="How many of the author's takes are indexed.")
    threads: int = Field(description="How many of the author's threads are indexed.")


class AuthorsOut(BaseModel):
    authors: list[AuthorOut] = Field(description="Every author, most takes first.")


class ThreadSummaryOut(BaseModel):
    thread_id: str = Field(description="URL-safe id of the thread: GET /threads/{thread_id} reads it whole.")
    author: str | None = Field(description="Display name of the author.")
    handle: str | None = Field(description="The author's handle, with '@'.")
    date: str | None = Field(description="ISO date of the thread's first take.")
    takes: int = Field(description="How many of the thread's takes are indexed.")
    thread_size: int | None = Field(description="How many posts the source says the thread has.")
    first_words: str = Field(description="The first words of the thread's first take.")


class ThreadsOut(BaseModel):
    threads: list[ThreadSummaryOut] = Field(description="Every thread, newest first.")


@router.get("/authors", response_model=AuthorsOut, summary="Every author, with counts")
def list_authors(served: TakesDep) -> AuthorsOut:
    return AuthorsOut(authors=[AuthorOut(**author.to_dict()) for author in served.authors()])


@router.get("/threads", response_model=ThreadsOut, summary="Every thread: id, author, date, size, first words")
def list_threads(
    served: TakesDep,
    author: str | None = Query(None, description="Only threads by this author: a word of the name, or the handle."),
) -> ThreadsOut:
    threads = served.threads(author=author)
    return ThreadsOut(threads=[ThreadSummaryOut(**thread.to_dict()) for thread in threads])
