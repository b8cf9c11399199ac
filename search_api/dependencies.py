"""Typed dependencies: handlers receive the library's front door, never reach for a global."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from indexer.api import Takes
from search_api.settings import Settings


def get_takes(request: Request) -> Takes:
    return request.app.state.takes


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


TakesDep = Annotated[Takes, Depends(get_takes)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
