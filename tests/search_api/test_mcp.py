"""The MCP server, driven by the SDK's own clients: `takes mcp` over stdio, and /mcp on `takes serve`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest

from tests.cli_process import serving, takes_command

mcp = pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

QUESTION = "what about compute governance"
# What a desktop client gives a server it launches: a PATH and little else.
BARE_ENV = {"PATH": "/usr/bin:/bin"}
TIMEOUT = 120


def stdio_params(index_dir: Path, cwd: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable, args=["-m", "search_api.cli", "mcp", "--index-dir", str(index_dir)], env=BARE_ENV, cwd=str(cwd)
    )


def error_text(result) -> str:
    assert result.is_error, result
    return " ".join(block.text for block in result.content if block.type == "text")


async def exercise(session: ClientSession) -> None:
    """The checks both transports must pass, in one session."""
    await session.initialize()

    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert set(tools) == {"search_takes", "get_thread"}
    search_schema = tools["search_takes"].input_schema
    assert search_schema["required"] == ["query"]
    assert search_schema["properties"]["k"]["minimum"] == 1
    assert search_schema["properties"]["k"]["maximum"] == 100
    assert search_schema["properties"]["k"]["default"] == 8
    assert {"author", "since", "until"} <= set(search_schema["properties"])
    assert tools["get_thread"].input_schema["required"] == ["thread_id"]
    assert "plain" in tools["search_takes"].description and "get_thread" in tools["search_takes"].description
    assert tools["search_takes"].output_schema is not None

    result = await session.call_tool("search_takes", {"query": QUESTION})
    assert not result.is_error, result.content
    results = result.structured_content["results"]
    assert len(results) == 8
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    compute = [
        r for r in results
        if r["date"] == "2023-06-25" and ("means of production" in r["text"] or "go after compute" in r["text"])
    ]
    assert compute, [r["id"] for r in results]
    take = compute[0]
    assert take["citation"].startswith(f"Jack Clark (@jackclarkSF), 2023-06-25, thread jackclarkSF-2023-06-25 take {take['position']}/22")
    assert {"id", "text", "author", "handle", "thread_id", "position", "thread_size", "url", "source", "score"} <= set(take)
    # The text rendering carries the same takes, numbered and cited.
    text = result.content[0].text
    assert "[1] " + results[0]["citation"] in text
    assert take["citation"] in text and take["text"].splitlines()[0] in text

    thread = await session.call_tool("get_thread", {"thread_id": take["thread_id"]})
    assert not thread.is_error, thread.content
    assert thread.structured_content["thread_id"] == take["thread_id"]
    positions = [t["position"] for t in thread.structured_content["takes"]]
    assert positions == sorted(positions) and take["position"] in positions
    assert all(t["citation"].startswith("Jack Clark (@jackclarkSF), 2023-06-25") for t in thread.structured_content["takes"])
    assert "means of production" in thread.content[0].text

    filtered = await session.call_tool("search_takes", {"query": QUESTION, "k": 3, "since": "2023-01-01", "author": "@jackclarkSF"})
    assert not filtered.is_error, filtered.content
    assert filtered.structured_content["results"] and all(r["date"] >= "2023-01-01" for r in filtered.structured_content["results"])

    assert "k" in error_text(await session.call_tool("search_takes", {"query": QUESTION, "k": 0}))
    assert "k" in error_text(await session.call_tool("search_takes", {"query": QUESTION, "k": 101}))
    assert "query" in error_text(await session.call_tool("search_takes", {"query": ""}))
    assert "empty" in error_text(await session.call_tool("search_takes", {"query": "   "}))
    assert "query" in error_text(await session.call_tool("search_takes", {}))
    assert "since" in error_text(await session.call_tool("search_takes", {"query": QUESTION, "since": "last year"}))
    assert "no-such-thread" in error_text(await session.call_tool("get_thread", {"thread_id": "no-such-thread"}))

    # Still serving after the errors.
    again = await session.call_tool("search_takes", {"query": "open source models", "k": 2})
    assert not again.is_error and len(again.structured_content["results"]) == 2


def test_stdio_with_a_bare_environment(seed_index, tmp_path):
    async def main():
        with anyio.fail_after(TIMEOUT), open(tmp_path / "stderr.log", "w") as errlog:
            async with stdio_client(stdio_params(seed_index, tmp_path), errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await exercise(session)

    anyio.run(main)


def test_stdio_without_an_index_answers_with_a_tool_error(tmp_path):
    async def main():
        with anyio.fail_after(TIMEOUT), open(tmp_path / "stderr.log", "w") as errlog:
            async with stdio_client(stdio_params(tmp_path / "missing", tmp_path), errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    assert "no index" in error_text(await session.call_tool("search_takes", {"query": QUESTION}))
                    assert "no index" in error_text(await session.call_tool("get_thread", {"thread_id": "x"}))
                    assert {tool.name for tool in (await session.list_tools()).tools} == {"search_takes", "get_thread"}

    anyio.run(main)


def test_stdout_carries_only_the_protocol(seed_index, tmp_path):
    """Model loading, FAISS and logging write to stderr; every stdout line is a JSON-RPC message."""
    process = subprocess.Popen(
        takes_command("mcp", "--index-dir", seed_index),
        env=BARE_ENV, cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    killer = threading.Timer(TIMEOUT, process.kill)
    killer.start()
    try:
        requests = [
            {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "search_takes", "arguments": {"query": QUESTION, "k": 2}}},
        ]
        for request in requests:
            process.stdin.write(json.dumps(request) + "\n")
        process.stdin.flush()
        answers = {}
        while 2 not in answers:
            line = process.stdout.readline()
            assert line, f"server closed stdout early: {process.stderr.read() if process.poll() is not None else ''}"
            message = json.loads(line)
            assert message["jsonrpc"] == "2.0"
            answers[message.get("id")] = message
        assert answers[1]["result"]["serverInfo"]["name"] == "takes"
        assert len(answers[2]["result"]["structuredContent"]["results"]) == 2
        process.stdin.close()
        assert process.wait(timeout=30) == 0
        assert process.stdout.read() == ""
        assert "loaded 99 takes" in process.stderr.read()
    finally:
        killer.cancel()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def test_streamable_http_on_the_api_server(seed_index, tmp_path):
    with serving(seed_index, log=tmp_path / "serve.log") as (url, _process):

        async def main():
            with anyio.fail_after(TIMEOUT):
                async with streamable_http_client(f"{url}/mcp") as (read, write):
                    async with ClientSession(read, write) as session:
                        await exercise(session)

        anyio.run(main)
        # The HTTP API still answers beside it.
        import httpx

        assert httpx.get(f"{url}/search", params={"q": QUESTION, "k": 1}, timeout=30).json()["results"]
