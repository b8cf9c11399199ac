"""Limits that keep one client from stalling the server: body size, JSON shape, connections.

Two layers. ``RequestGuard`` is ASGI middleware: it reads every request body
up to a limit before any route parses it (413 past the limit), and checks a
JSON body once with a parser that refuses what Python's ``json`` would turn
into a 500 later (nesting that exhausts the stack, integers of thousands of
digits, lone surrogates, NaN). ``guarded_protocol`` wraps uvicorn's HTTP
protocol: a request's headers must arrive within a deadline, and past a
number of open connections the longest-idle ones are closed, so idle sockets
cannot crowd out a new client.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

import pydantic_core
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from search_api.settings import Settings

# Integers a take can hold (SQLite's INTEGER is 64-bit signed).
MAX_INTEGER = 2**63 - 1
# A request line and headers past this are not a client we want (browsers send a few kB).
MAX_HEAD_BYTES = 64 * 1024
# pydantic_core's parser stops at this depth (its own limit); said in the message.
MAX_JSON_DEPTH = 200
# Paths whose own protocol answers malformed JSON (JSON-RPC errors).
_OWN_JSON_ERRORS = ("/mcp",)


def _plain_response(status: int, detail: str, headers: dict[str, str] | None = None):
    from starlette.responses import JSONResponse

    # The client may still be sending: close rather than read the rest.
    return JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close", **(headers or {})})


class RejectedJson(ValueError):
    """JSON that parses in Python only to fail later: said as one line."""


def load_json(body: bytes | str):
    """The value of JSON ``body``, or RejectedJson saying what is wrong and where."""
    try:
        value = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as error:
        message = str(error)
        where = message.split(" at ", 1)[-1] if " at line " in message else "the body"
        if "recursion limit" in message:
            raise RejectedJson(f"JSON nests deeper than {MAX_JSON_DEPTH} levels ({where})") from None
        if "number out of range" in message:
            raise RejectedJson(f"a number is too large ({where}); the limit is {MAX_INTEGER}") from None
        # pydantic_core says "end of hex escape" when a high surrogate has no low one after it.
        if "surrogate" in message or "end of hex escape" in message:
            raise RejectedJson(f"a string holds a lone UTF-16 surrogate, which is not text ({where})") from None
        raise RejectedJson(f"malformed JSON: {message}") from None
    check_json_value(value)
    return value


def check_json_value(value: object) -> None:
    """RejectedJson when decoded JSON holds a number the index cannot store: past 64 bits, or not finite."""
    # Iterative walk: the value can be deep and wide.
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int) and not -MAX_INTEGER - 1 <= item <= MAX_INTEGER:
            digits = len(str(abs(item)))
            shown = str(item) if digits <= 30 else f"a {digits}-digit integer"
            raise RejectedJson(f"{where or 'value'}: {shown} is out of range (the limit is {MAX_INTEGER})")
        if isinstance(item, float) and not math.isfinite(item):
            raise RejectedJson(f"{where or 'value'}: {item} is not a finite number")
        if isinstance(item, dict):
            stack.extend((f"{where}.{key}" if where else str(key)[:60], child) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((f"{where}[{index}]", child) for index, child in enumerate(item))


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class RequestGuard:
    """413 for a body over its route's limit, 422 for JSON a route would choke on; both before any parsing."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app, self.settings = app, settings

    @staticmethod
    def _is_write(scope: Scope) -> bool:
        return scope["method"] == "POST" and scope["path"].rstrip("/") == "/takes"

    def _parses_its_own_json(self, scope: Scope) -> bool:
        # POST /takes may carry a file's text under any content type (?format=)
        # and its parser refuses bad JSON with its own line; /mcp answers in JSON-RPC.
        return self._is_write(scope) or scope["path"].startswith(_OWN_JSON_ERRORS)

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        if self._is_write(scope):
            return self.settings.max_body_bytes, "TAKES_MAX_BODY_BYTES"
        return self.settings.max_query_bytes, "TAKES_MAX_QUERY_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, variable = self.limit_for(scope)
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response = _plain_response(413, f"request body is {int(declared)} bytes; the limit is {limit} bytes ({variable})")
            await response(scope, receive, send)
            return

        # Count what arrives: Content-Length can be absent (chunked) or wrong.
        body = bytearray()
        replay: deque[Message] = deque()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                replay.append(message)
                break
            body += message.get("body", b"")
            if len(body) > limit:
                response = _plain_response(413, f"request body is over the limit of {limit} bytes ({variable})")
                await response(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        if body and _is_json(headers.get("content-type", "")) and not self._parses_its_own_json(scope):
            try:
                load_json(bytes(body))
            except RejectedJson as problem:
                await _plain_response(422, f"request body: {problem}")(scope, receive, send)
                return

        replay.appendleft({"type": "http.request", "body": bytes(body), "more_body": False})

        async def replaying() -> Message:
            return replay.popleft() if replay else await receive()

        await self.app(scope, replaying, send)


class _ProtocolGuards:
    """The header deadline and the connection cap, mixed in before uvicorn's protocol class."""

    _header_timeout: float
    _max_connections: int
    _head_deadline: asyncio.TimerHandle | None = None
    _idle_since = 0.0
    _head_bytes = 0

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._idle_since = self.loop.time()
        self._arm_head_deadline()
        self._make_room()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._serving():
            self._disarm_head_deadline()
            self._head_bytes = 0
            return
        # A partial head: the deadline counts from its first byte, not
        # the last, so a byte every few seconds does not keep it open.
        self._arm_head_deadline()
        # httptools sets no size limit on a head (h11 stops at 16 kB).
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _serving(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self._header_timeout, self._head_too_slow)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self._serving() and not self.transport.is_closing():
            self.transport.close()

    def _make_room(self) -> None:
        # uvicorn's own limit_concurrency answers 503 to every new request
        # once idle sockets fill it; closing the longest-idle connections
        # instead keeps the server reachable and its descriptors bounded.
        excess = len(self.connections) - self._max_connections
        if excess <= 0:
            return
        idle = sorted(
            (connection for connection in self.connections if connection is not self and not connection._serving()),
            key=lambda connection: connection._idle_since,
        )
        for connection in idle[:excess]:
            self.connections.discard(connection)
            connection.transport.close()
        if len(idle) < excess:
            # Every other connection is mid-request: this one waits its turn elsewhere.
            self.connections.discard(self)
            self.transport.close()


def guarded_protocol(settings: Settings, base: type | None = None) -> type:
    """uvicorn's HTTP protocol class (httptools, else h11) with a header deadline and a connection cap."""
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol as base

    class GuardedProtocol(_ProtocolGuards, base):  # type: ignore[misc, valid-type]
        _header_timeout = settings.header_timeout
        _max_connections = settings.max_connections

    return GuardedProtocol
