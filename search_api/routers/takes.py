"""Reading takes and threads by id."""

from __future__ import annotations

from fastapi import APIRouter

from search_api.dependencies import TakesDep
from search_api.schemas import TakeOut, ThreadOut

router = APIRouter(tags=["takes"])


@router.get("/takes/{take_id}", response_model=TakeOut, summary="One take by id")
def get_take(take_id: str, served: TakesDep) -> TakeOut:
    return TakeOut(**served.take(take_id).to_dict())


@router.get("/threads/{thread_id}", response_model=ThreadOut, summary="All takes of a thread, in order")
def get_thread(thread_id: str, served: TakesDep) -> ThreadOut:
    takes = served.thread(thread_id)
    return ThreadOut(thread_id=thread_id, takes=[take.to_dict() for take in takes])
