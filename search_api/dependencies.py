"""Typed dependencies: handlers receive the library's front door, never reach for a global."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import Depends, Request

from indexer.api import Takes
from search_api.settings import Settings


# ``async``: FastAPI runs a plain ``def`` dependency in its thread pool, a
# thread hand-off per request to read an attribute.
async def get_takes(request: Request) -> Takes:
    return request.app.state.takes


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_search_limiter(request: Request) -> anyio.CapacityLimiter:
    return request.app.state.search_limiter


TakesDep = Annotated[Takes, Depends(get_takes)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SearchLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_search_limiter)]
