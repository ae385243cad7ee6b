"""Request limits: body size (413 before MCP), argument size and depth, and the per-call timeout."""

from __future__ import annotations

import asyncio

import httpx
from fastmcp import Client

from mcp_server.auth import ANALYST
from tests.conftest import app_for
from tests.security.conftest import instance
from tests.support import call, refusal, serving


async def test_a_request_body_over_the_limit_gets_413_before_mcp(runtime, api_keys):
    rt = instance(runtime, max_request_bytes=50_000)
    headers = {"X-API-Key": api_keys["analyst"], "Accept": "application/json, text/event-stream"}
    huge = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "x", "arguments": {"q": "A" * 60_000}},
    }
    async with serving(rt) as url, httpx.AsyncClient() as http:
        declared = await http.post(f"{url}/mcp", headers=headers, json=huge)

        async def chunks():  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b"A" * 10_000

        streamed = await http.post(f"{url}/mcp", headers=headers, content=chunks())
        anonymous = await http.post(f"{url}/mcp", json=huge)
    assert declared.status_code == 413 and "MAX_REQUEST_BYTES" in declared.json()["error"]["message"]
    assert streamed.status_code == 413
    assert anonymous.status_code == 401  # authentication still comes first


async def test_arguments_too_large_or_too_deep_are_refused_before_the_tool_runs(runtime):
    rt = instance(runtime, max_argument_bytes=5_000)
    app = app_for(rt, "analyst")
    ran = []

    @app.tool(roles=ANALYST, name="echo")
    async def echo(value: object = None) -> dict:
        ran.append(1)
        return {"ok": True}

    deep: object = "x"
    for _ in range(200):
        deep = [deep]
    async with Client(app.mcp) as client:
        assert "MAX_ARGUMENT_BYTES" in await refusal(client, "echo", value="é" * 6_000)
        assert "nested deeper than" in await refusal(client, "echo", value=deep)
        await call(client, "echo", value="small")
    assert len(ran) == 1


async def test_a_call_over_the_time_limit_is_stopped_with_a_clear_error(runtime):
    rt = instance(runtime, call_timeout_seconds=1)
    app = app_for(rt, "analyst")
    finished = []

    @app.tool(roles=ANALYST, name="slow")
    async def slow() -> dict:
        await asyncio.sleep(30)
        finished.append(1)
        return {}

    async with Client(app.mcp) as client:
        message = await refusal(client, "slow")
        await call(client, "summary_snapshot")  # the server keeps serving
    assert "ran longer than 1 s (TOOL_TIMEOUT_SECONDS)" in message
    assert finished == []
