"""No response over what one MCP message may carry: an answer over the limit is refused in one line."""

from __future__ import annotations

import pytest
from fastmcp import Client, FastMCP
from fastmcp.exceptions import ToolError

from mcp_server.responses import RESPONSE_MAX_BYTES, ResponseLimit


def _server() -> FastMCP:
    server = FastMCP("sizes")
    server.add_middleware(ResponseLimit())

    @server.tool
    def text_of(characters: int) -> str:
        return "x" * characters

    @server.resource("data://blob/{characters}")
    def blob(characters: str) -> str:
        return "y" * int(characters)

    return server


async def test_an_answer_within_the_limit_passes_and_one_over_it_is_refused_in_one_line() -> None:
    async with Client(_server()) as client:
        fits = await client.call_tool("text_of", {"characters": RESPONSE_MAX_BYTES // 3})
        assert len(fits.content[0].text) == RESPONSE_MAX_BYTES // 3
        with pytest.raises(ToolError) as refused:
            await client.call_tool("text_of", {"characters": RESPONSE_MAX_BYTES})
        assert "\n" not in str(refused.value)
        assert "over the 1,000,000 a response may carry" in str(refused.value)
        assert "detail='summary'" in str(refused.value)
        again = await client.call_tool("text_of", {"characters": 10})  # the server goes on
        assert again.content[0].text == "x" * 10


async def test_a_resource_over_the_limit_is_refused_too() -> None:
    async with Client(_server()) as client:
        assert len((await client.read_resource("data://blob/1000"))[0].text) == 1000
        with pytest.raises(Exception, match="a response may carry"):
            await client.read_resource(f"data://blob/{RESPONSE_MAX_BYTES + 10}")
