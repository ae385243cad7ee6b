"""Small helpers the tests share: call a tool and get its structured answer or its error line."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastmcp import Client
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcp_server.http import build_http_app
from mcp_server.server import build_app


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """The tool's structured content; fails the test with the error text if the tool refused."""
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    if result.is_error:
        raise AssertionError(f"{tool} failed: {error_text(result)}")
    assert result.structured_content is not None, f"{tool} returned no structured content"
    return result.structured_content


async def refusal(client: Client, tool: str, **arguments: Any) -> str:
    """The one-line error of a call that must fail; fails the test if the call succeeded."""
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert result.is_error, f"{tool} should have failed but returned {result.structured_content!r}"
    text = error_text(result)
    assert "\n" not in text, f"error is not one line: {text!r}"
    assert "Traceback" not in text
    return text


def error_text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def version_heard(runtime: Any, version: int | None = None) -> int:
    """Wait until `runtime` uses `version` (default: the row's version now): a change another
    connection commits reaches each instance as a notification, an instant after the commit."""
    import asyncio

    if version is None:
        async with runtime.db.connection() as conn:
            version = int(await conn.fetchval("SELECT version FROM mcp_internal.data_version"))
    async with asyncio.timeout(10):
        while await runtime.db.data_version() != version:
            await asyncio.sleep(0.005)
    return version


async def bump_version(runtime: Any) -> int:
    """Bump the data version as a load elsewhere would (a bare UPDATE), and wait until `runtime` heard."""
    async with runtime.db.connection() as conn:
        version = await conn.fetchval(
            "UPDATE mcp_internal.data_version SET version = version + 1 RETURNING version"
        )
    return await version_heard(runtime, int(version))


def stdio_env(runtime: Any, api_keys: dict[str, str], user: str) -> dict[str, str]:
    """The environment of a `serve --transport stdio` child on the test runtime's database and Redis, whose
    local caller holds `user`'s key (MCP_API_KEY)."""
    import os

    from mcp_server.config import digest_key
    from tests.conftest import USERS

    settings = runtime.settings
    return {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "API_KEYS": ",".join(f"{name}:{USERS[name]}:{digest_key(key)}" for name, key in api_keys.items()),
        "MCP_API_KEY": api_keys[user],
        "SESSION_ENCRYPTION_KEY": settings.session_encryption_keys[0],
        "ANALYTICS_MCP_HOME": str(settings.home),
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "2",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def served(app: Any, port: int | None = None, lifespan: str = "on") -> AsyncIterator[str]:
    """Any ASGI app under uvicorn on a loopback port (a free one unless given); yields its base URL."""
    port = port or free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan=lifespan)
    )
    server.capture_signals = lambda: contextlib.nullcontext()  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
        if task.done():
            task.result()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def serving(runtime: Any) -> AsyncIterator[str]:
    """The runtime's whole HTTP app (MCP, /api/v1, /console) on a free loopback port; yields the base URL."""
    port = free_port()
    async with served(build_http_app(build_app(runtime), base_url=f"http://127.0.0.1:{port}"), port) as url:
        yield url


@contextlib.asynccontextmanager
async def mcp_session(url: str, headers: dict[str, str]) -> AsyncIterator[ClientSession]:
    """The official MCP client over streamable HTTP, initialized."""
    import httpx2

    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                yield session
