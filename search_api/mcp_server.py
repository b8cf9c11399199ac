"""The MCP server: the search as tools a chatbot can call.

Two transports share one tool set: stdio (``takes mcp``, for desktop clients
that launch the server) and streamable HTTP at ``/mcp`` on the API server
(``create_app`` mounts it and hands it the app's ``Takes``, already loaded).

Every tool answers twice: ``structuredContent`` with the API's fields plus a
``citation`` for programs, and a numbered, cited text rendering for clients
that only read text. Failures the caller can fix (bad arguments, an unknown
thread, no index yet) come back as tool errors, never as a dead server.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from datetime import date
from typing import Annotated

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field, ValidationError

from embeddings import stay_offline
from indexer.api import Takes, cited, prompt_block
from indexer.errors import ProjectError
from indexer.models import strong_matches
from indexer.query_limits import MAX_K, MAX_QUERY_CHARS, PROMPT_K
from search_api.errors import describe_validation_errors
from search_api.schemas import ResultOut, TakeOut

log = logging.getLogger("takes.mcp")

INSTRUCTIONS = (
    "Search a corpus of AI-policy takes: short posts in threads, mostly Jack Clark's (@jackclarkSF) "
    "threads from 2022-2023 on AI policy, compute, evaluation, open models and regulation; the owner may "
    "have added more. Call search_takes with a plain-language question to find takes that answer it, "
    "then get_thread to read a take's whole thread. Quote takes with their `citation`."
)

SEARCH_DESCRIPTION = f"""Find the takes (short posts from AI-policy threads) that best answer a question.

The corpus is mostly Jack Clark's (@jackclarkSF) AI-policy threads from 2022-2023 (compute governance,
evaluations, open models, regulation, AI labs and governments), extendable by its owner. Search by meaning:
write `query` as a plain natural-language question or topic ("what about compute governance"), not
keywords or boolean syntax. Results come best first. Each has the take's `text`, `author`, `handle`,
`date` (ISO), `thread_id`, `position` (1-based place in its thread), `thread_size`, `url` (when known),
`score` (relevance from 0 to 1, the same scale for every query), `match` ("strong" from 0.5 up:
it very likely answers; "weak": only the closest there is, say so rather than rely on it) and `citation` (a ready-made reference: use it when
you quote or rely on a take). Call get_thread with a result's `thread_id` to read the surrounding thread.
`k` is 1 to {MAX_K}; `since`/`until` are inclusive ISO dates (YYYY-MM-DD); `author` matches a name or
handle ("Jack Clark" or "@jackclarkSF")."""

THREAD_DESCRIPTION = """Read a whole thread of takes, in order, by its `thread_id` (from a search_takes result).

Use it after search_takes when one take needs its context: the argument around it, what came before
and after. Returns every take of the thread with the same fields as search_takes (no score) and a
`citation` for each. An unknown thread_id is an error naming it."""


class CitedTake(TakeOut):
    citation: str = Field(description="How to cite the take: author (handle), date, thread, take position/size, URL.")


class CitedResult(ResultOut):
    citation: str = Field(description="How to cite the take: author (handle), date, thread, take position/size, URL.")


class SearchTakesOutput(BaseModel):
    results: list[CitedResult] = Field(description="Takes that answer the query, best first.")
    strong_matches: int = Field(description="How many results are strong matches; 0 means nothing in the corpus answers the query well.")


class ThreadOutput(BaseModel):
    thread_id: str = Field(description="The thread's id.")
    takes: list[CitedTake] = Field(description="Every take of the thread, in thread order.")


def _tool_error(error: Exception) -> ToolError:
    return ToolError(str(error))


class TakesMCPServer(MCPServer):
    """Argument errors as the HTTP API's 422 sentence, not pydantic's multi-line dump with a link."""

    async def call_tool(self, name, arguments, context=None):
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as error:
            if isinstance(error.__cause__, ValidationError):
                raise ToolError(describe_validation_errors(error.__cause__.errors(), http=False)) from error.__cause__
            raise


def build_server(served: Takes, *, quiet_stdout: bool = False, limiter: anyio.CapacityLimiter | None = None) -> MCPServer:
    """The MCP server with its two tools over ``served``.

    ``quiet_stdout``: whatever a model load prints goes to stderr, never into
    the protocol (stdio transport). ``limiter``: the searches' slots, shared
    with the HTTP routes when the server is mounted at /mcp (None: anyio's
    default thread pool). ``served`` loads lazily and retries after a
    failure, so a missing index is reported per call and works once it exists.
    """
    guard = (lambda: contextlib.redirect_stdout(sys.stderr)) if quiet_stdout else contextlib.nullcontext
    server = TakesMCPServer(
        "takes",
        title="takes: AI-policy takes search",
        instructions=INSTRUCTIONS,
        version="0.1.0",
        log_level="WARNING",
    )

    @server.tool(name="search_takes", title="Search AI-policy takes", description=SEARCH_DESCRIPTION)
    async def search_takes(
        query: Annotated[
            str,
            Field(min_length=1, max_length=MAX_QUERY_CHARS, description="The question or topic, in plain natural language."),
        ],
        k: Annotated[int, Field(ge=1, le=MAX_K, description=f"How many takes to return (1 to {MAX_K}).")] = PROMPT_K,
        author: Annotated[str | None, Field(description="Only takes by this author name or handle.")] = None,
        # date, as in the HTTP API: "2024-13-01" is refused, not searched.
        since: Annotated[date | None, Field(description="Only takes dated on or after this ISO date (YYYY-MM-DD).")] = None,
        until: Annotated[date | None, Field(description="Only takes dated on or before this ISO date (YYYY-MM-DD).")] = None,
    ) -> Annotated[CallToolResult, SearchTakesOutput]:
        def search():
            with guard():
                return served.search(query, k, author=author, since=since, until=until)

        try:
            results = await anyio.to_thread.run_sync(search, limiter=limiter)
        except ProjectError as error:
            raise _tool_error(error) from None
        return CallToolResult(
            content=[TextContent(type="text", text=prompt_block(results, query.strip()))],
            structured_content={"results": [cited(result) for result in results], "strong_matches": strong_matches(results)},
        )

    @server.tool(name="get_thread", title="Read a thread", description=THREAD_DESCRIPTION)
    def get_thread(
        thread_id: Annotated[str, Field(min_length=1, description="A `thread_id` from a search_takes result.")],
    ) -> Annotated[CallToolResult, ThreadOutput]:
        try:
            with guard():
                takes = served.thread(thread_id)
        except ProjectError as error:
            raise _tool_error(error) from None
        text = prompt_block(takes, title=f"Thread {thread_id} ({len(takes)} takes, in order):")
        return CallToolResult(
            content=[TextContent(type="text", text=text)],
            structured_content={"thread_id": thread_id, "takes": [cited(take) for take in takes]},
        )

    return server


def run_stdio(served: Takes, *, reload_interval: float = 0.2) -> None:
    """Serve MCP on stdin/stdout until the client hangs up; logs go to stderr."""
    # Desktop clients launch servers with a bare environment: never try the network.
    stay_offline()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="takes mcp: %(message)s")
    log.setLevel(logging.INFO)
    logging.getLogger("takes").setLevel(logging.INFO)
    try:
        # Load before the first call so it answers quickly; a missing index is reported per call.
        with contextlib.redirect_stdout(sys.stderr):
            served.load()
    except ProjectError as error:
        log.warning("%s (the tools will report this until the index exists)", error)
    follower = served.follow(reload_interval)
    try:
        build_server(served, quiet_stdout=True).run("stdio")
    finally:
        follower.stop()


class HttpEndpoint:
    """ASGI endpoint for ``/mcp`` whose session manager lives in the app's lifespan.

    A fresh session manager per lifespan (the SDK allows each to run once), so
    the same app can start, stop and start again (tests do). Stateless, with
    the Host/Origin checks of ``hosts`` (Settings.hosts()) whatever the bind.
    """

    def __init__(self, server: MCPServer, hosts: list[str]):
        self.server, self.hosts = server, hosts
        self._manager = None

    def security(self) -> TransportSecuritySettings:
        """Host and Origin checks on for every bind (the SDK turns them off beyond loopback)."""
        allowed_hosts, allowed_origins = [], []
        for host in self.hosts:
            name = f"[{host}]" if ":" in host else host
            allowed_hosts += [name, f"{name}:*"]
            allowed_origins += [f"{scheme}://{name}{port}" for scheme in ("http", "https") for port in ("", ":*")]
        return TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins
        )

    @contextlib.asynccontextmanager
    async def running(self):
        # Stateless: the tools keep nothing between calls, so no session is
        # kept either. A client that sends 10,000 `initialize` calls leaves
        # nothing behind to lock others out or to hold memory.
        self.server.streamable_http_app(stateless_http=True, transport_security=self.security())
        manager = self.server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    async def __call__(self, scope, receive, send) -> None:
        if self._manager is None:
            from starlette.responses import PlainTextResponse

            await PlainTextResponse("MCP is not running", status_code=503)(scope, receive, send)
            return
        await self._manager.handle_request(scope, receive, send)
