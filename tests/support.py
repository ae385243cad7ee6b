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
