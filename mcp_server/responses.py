"""No response over what one MCP message may carry: the official client refuses a server-sent event
over 1 MiB, so an answer that would not fit is refused in one line that says how to ask for less."""

from __future__ import annotations

from typing import Any

from fastmcp.exceptions import ResourceError, ToolError
from fastmcp.resources import ResourceResult
from fastmcp.server.middleware import Middleware, MiddlewareContext
from pydantic import BaseModel

# Of the 1,048,576 bytes the official client accepts per event, what an answer may use: the rest is
# the JSON-RPC envelope and the event's framing.
RESPONSE_MAX_BYTES = 1_000_000


def encoded_size(result: Any) -> int:
    """The size of a result as it goes on the wire (its JSON), in bytes."""
    if isinstance(result, ResourceResult):  # its bytes (a PNG) cannot be dumped as JSON: sized as base64
        return sum(encoded_size(item.content) for item in result.contents)
    if isinstance(result, BaseModel):
        return len(result.model_dump_json(by_alias=True, exclude_none=True).encode())
    if isinstance(result, (list, tuple)):
        return sum(encoded_size(item) for item in result)
    if isinstance(result, bytes):
        return len(result) * 4 // 3  # base64 on the wire
    return len(str(result).encode())


class ResponseLimit(Middleware):
    """Refuses a tool or resource answer over RESPONSE_MAX_BYTES, whatever the tool, format or value."""

    async def _limited(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        result = await call_next(context)
        size = encoded_size(result)
        if size > RESPONSE_MAX_BYTES:
            tool = context.method == "tools/call"
            what = f"tool '{context.message.name}'" if tool else "that resource"
            refusal = (
                f"the answer of {what} is {size:,} bytes, over the {RESPONSE_MAX_BYTES:,} a response may carry "
                "(MCP clients refuse larger messages); ask for less: detail='summary', fewer rows or columns, "
                "or save it in a session (session_id + save_as) and chart or read it by reference"
            )
            raise ToolError(refusal) if tool else ResourceError(refusal)
        return result

    on_call_tool = on_read_resource = _limited
