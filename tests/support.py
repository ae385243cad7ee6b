"""Small helpers the tests share: call a tool and get its structured answer or its error line."""

from __future__ import annotations

from typing import Any

from fastmcp import Client


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
