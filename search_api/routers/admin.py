"""Writing the index over HTTP: POST /takes and DELETE /takes/{id}, behind a bearer token.

Writes go through the same ``Takes.add`` / ``Takes.remove`` as `takes add`,
with the model the server has already loaded, and are served from the next
request on. Parsing, embedding and the writer lock block, so each
write runs on the server's single writer thread (search_api/writes.py), never
in the thread pool that serves searches.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from indexer.errors import ParseError
from indexer.models import Take
from indexer.sources import FORMATS, parse_text
from indexer.sources.jsonl import loads, parse_records
from search_api.dependencies import SettingsDep, TakesDep
from search_api.writes import RETRY_AFTER_SECONDS, WriteQueue

router = APIRouter(tags=["admin"])

_bearer = HTTPBearer(auto_error=False, description="The token the server was started with (TAKES_ADMIN_TOKEN).")

DISABLED_MESSAGE = (
    "writing through the API is disabled: set TAKES_ADMIN_TOKEN in the server's environment "
    "and send it as a bearer token (Authorization: Bearer <token>)"
)

# The parsers' format names, so /docs lists exactly what parse_text accepts.
Format = Literal[FORMATS]  # type: ignore[valid-type]


class TakeIn(BaseModel):
    """One take to add; only ``text`` is required (the JSONL record fields)."""

    text: str = Field(description="The text of the take.")
    id: str | None = Field(None, description="URL-safe id; derived from the source and position when absent.")
    author: str | None = Field(None, description="Display name of the author.")
    handle: str | None = Field(None, description="The author's handle ('@' optional).")
    date: str | None = Field(None, description="ISO date like 2024-03-03.")
    thread_id: str | None = Field(None, description="URL-safe thread id; each take is its own thread when absent.")
    position: int | None = Field(None, description="1-based position in the thread.")
    thread_size: int | None = Field(None, description="How many posts the thread has.")
    url: str | None = Field(None, description="Link to the original post.")


_NOTE = Field(
    None,
    description="Set only when the write committed but the server could not switch to the new generation "
    "yet: the change is saved and served from the server's next reload.",
)


class AddedOut(BaseModel):
    added: int = Field(description="Takes added to the index.")
    skipped: int = Field(description="Takes already indexed (same id, or the same text from the same author).")
    generation: int = Field(description="Index generation the write committed (served from the next request on).")
    ids: list[str] = Field(description="Ids of the takes added.")
    note: str | None = _NOTE


class RemovedOut(BaseModel):
    removed: int = Field(description="Takes removed.")
    generation: int = Field(description="Index generation the write committed (served from the next request on).")
    note: str | None = _NOTE


def require_admin(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """403 unless the server has a token and the request carries it."""
    if not settings.admin_token:
        raise HTTPException(403, DISABLED_MESSAGE)
    if credentials is None:
        raise HTTPException(
            401, "missing bearer token: send Authorization: Bearer <TAKES_ADMIN_TOKEN>", headers={"WWW-Authenticate": "Bearer"}
        )
    # Constant-time comparison: the response time must not reveal a prefix of the token.
    if not hmac.compare_digest(credentials.credentials.encode(), settings.admin_token.encode()):
        raise HTTPException(403, "wrong bearer token")


async def read_body(request: Request) -> bytes:
    """The request body; RequestGuard (search_api/limits.py) has already refused one over TAKES_MAX_BODY_BYTES."""
    return await request.body()


def get_write_queue(request: Request) -> WriteQueue:
    return request.app.state.write_queue


def parse_body(body: bytes, content_type: str, input_format: str | None, source: str | None) -> list[Take]:
    """Takes from a JSON list of records, or from a file's text in one of the input formats."""
    # Named after the body's content by default, so re-sending the same body
    # derives the same ids (and adds nothing), while different bodies never collide.
    source = source or f"post-{hashlib.sha1(body).hexdigest()[:10]}"
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ParseError(source, None, f"body is not UTF-8 text (byte 0x{body[error.start]:02x} at offset {error.start})") from None
    media_type = content_type.split(";")[0].strip().lower()
    if input_format is None and (media_type == "application/json" or media_type.endswith("+json")):
        # loads turns every failure (deep nesting, 4,301-digit numbers too) into a ParseError.
        return parse_records(loads(text, source), source)
    return parse_text(text, source, input_format)


_BODY_DOC = {
    "requestBody": {
        "required": True,
        "description": "A JSON list of takes, or (with `format`, or as text/plain) a file's text.",
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": TakeIn.model_json_schema()},
                "example": [{"text": "Fund AI auditors from a levy on compute.", "author": "Dana Okafor", "date": "2024-03-03"}],
            },
            "text/plain": {
                "schema": {"type": "string"},
                "example": "Dana Okafor Profile picture\nMar 3, 2024 2 tweets\n1/ First take.\n2/ Second take.\n",
            },
        },
    }
}

_AUTH_RESPONSES = {
    401: {"description": "No bearer token sent."},
    403: {"description": "Wrong token, or writing is disabled (TAKES_ADMIN_TOKEN not set)."},
    409: {"description": "Another writer held the index past the lock timeout, or the model does not match."},
    429: {"description": f"Too many writes already waiting (TAKES_MAX_QUEUED_WRITES); retry after the Retry-After seconds ({RETRY_AFTER_SECONDS})."},
    507: {"description": "The server's disk is full; nothing was written."},
}


@router.post(
    "/takes",
    response_model=AddedOut,
    response_model_exclude_none=True,
    dependencies=[Depends(require_admin)],
    summary="Add takes to the live index",
    description=(
        "Adds takes without a rebuild and serves them from the next request on. The body is either a JSON "
        "list of takes (`Content-Type: application/json`; only `text` is required) or the text of a file "
        "in one of the input formats (`?format=threadreader|archive|jsonl|csv|text`, or `text/plain` to "
        "detect it). Takes already indexed (same id, or the same text from the same author) are skipped, "
        "so sending the same body twice adds nothing. Only new text is embedded, with the model the server "
        "already has loaded. Needs `Authorization: Bearer <TAKES_ADMIN_TOKEN>`."
    ),
    responses={**_AUTH_RESPONSES, 413: {"description": "Body larger than TAKES_MAX_BODY_BYTES."}, 422: {"description": "The body does not parse; the message names the item or line."}},
    openapi_extra=_BODY_DOC,
)
async def add_takes(
    request: Request,
    served: TakesDep,
    writes: Annotated[WriteQueue, Depends(get_write_queue)],
    body: Annotated[bytes, Depends(read_body)],
    input_format: Annotated[
        Format | None,
        Query(alias="format", description="Parse the body as a file in this format instead of a JSON list."),
    ] = None,
    source: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="Name recorded as the takes' source (and the base of derived ids). Default: a hash of the body."),
    ] = None,
) -> AddedOut:
    content_type = request.headers.get("content-type", "")

    def write() -> AddedOut:
        takes = parse_body(body, content_type, input_format, source)
        report = served.add(takes, source=source or "body")
        note = served.serve_committed(report.generation)
        return AddedOut(added=report.added, skipped=report.skipped, generation=report.generation, ids=report.added_ids, note=note)

    return await writes.run(write)


@router.delete(
    "/takes/{take_id}",
    response_model=RemovedOut,
    response_model_exclude_none=True,
    dependencies=[Depends(require_admin)],
    summary="Remove one take from the live index",
    description=(
        "Removes the take in a new generation; searches stop returning it from the next request on. "
        "404 if no take has this id. Needs `Authorization: Bearer <TAKES_ADMIN_TOKEN>`."
    ),
    responses={**_AUTH_RESPONSES, 404: {"description": "No take with this id."}},
)
async def remove_take(
    take_id: str, served: TakesDep, writes: Annotated[WriteQueue, Depends(get_write_queue)]
) -> RemovedOut:
    def write() -> RemovedOut:
        report = served.remove([take_id])
        note = served.serve_committed(report.generation)
        return RemovedOut(removed=report.removed, generation=report.generation, note=note)

    return await writes.run(write)
