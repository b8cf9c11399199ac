"""Liveness and index statistics."""

from __future__ import annotations

from fastapi import APIRouter

from search_api.dependencies import TakesDep
from search_api.schemas import HealthOut, StatsOut

router = APIRouter(tags=["service"])


@router.get("/health", response_model=HealthOut, summary="200 once the model and index are loaded")
def health(served: TakesDep) -> HealthOut:
    return HealthOut(status="ok", generation=served.generation)


@router.get("/stats", response_model=StatsOut, summary="Same object as `takes stats --json`")
def stats(served: TakesDep) -> StatsOut:
    return StatsOut(**served.stats())
