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
