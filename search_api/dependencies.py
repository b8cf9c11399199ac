"""Typed dependencies: handlers receive the Searcher, never reach for a global."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from indexer.search import Searcher
from search_api.settings import Settings


def get_searcher(request: Request) -> Searcher:
    return request.app.state.searcher


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SearcherDep = Annotated[Searcher, Depends(get_searcher)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
