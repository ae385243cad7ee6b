"""Request limits, so no single call can exhaust memory: body size (HTTP 413), argument size, rate (HTTP 429)."""

from __future__ import annotations

import json
from typing import Any

from fastmcp.server.middleware import Middleware, MiddlewareContext
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import InvalidInput
from mcp_server.auth import http_identity
from mcp_server.calls import current_call
from mcp_server.runtime import Runtime
from mcp_server.urls import MCP_PATH

MAX_NESTING = 64  # deeper arguments are refused before anything walks them recursively


def argument_problem(arguments: dict[str, Any], max_bytes: int) -> str | None:
    """Why these arguments are refused (too deep, too large), or None when they are acceptable."""
    if _deeper_than(arguments, MAX_NESTING):
        return f"arguments are nested deeper than {MAX_NESTING} levels; flatten them"
    try:
        size = len(json.dumps(arguments, default=str, ensure_ascii=False).encode("utf-8", "replace"))
    except (TypeError, ValueError):
        return "arguments are not valid JSON values"
    if size > max_bytes:
        return (
            f"arguments are {size:,} bytes, more than the {max_bytes:,} allowed (MAX_ARGUMENT_BYTES); "
            "pass large data by reference (a session dataset) instead"
        )
    return None


def _deeper_than(arguments: Any, limit: int) -> bool:
    """The general depth check (any mapping or sequence type), iterative so depth cannot hurt it."""
    stack: list[tuple[Any, int]] = [(arguments, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((item, depth + 1) for item in value)
    return False


class ArgumentLimits(Middleware):
    """Refuses arguments nested deeper than MAX_NESTING or larger than MAX_ARGUMENT_BYTES, before any work."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    async def _checked(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        call = current_call()
        problem = argument_problem(call.arguments, self.max_bytes) if call is not None else None
        if call is not None and problem is not None:
            # A file too big to upload inline: the server can read it from its import folder instead.
            if call.name == "import_file" and "MAX_ARGUMENT_BYTES" in problem:
                problem = problem.split("; ")[0] + "; put the file in the server's IMPORT_DIR and pass path"
            raise InvalidInput(problem)
        return await call_next(context)

    on_call_tool = on_read_resource = on_get_prompt = _checked


async def _refuse(
    send: Send, status: int, reason: str, message: str, request_id: Any = None, retry_after: int | None = None
) -> None:
    """Send a refusal as a JSON-RPC error (what an MCP client shows its user), with an HTTP status that
    says the same: `error.message` is the one line, `error.data.reason` a stable word for scripts (and
    `retry_after`, when given, the seconds of the Retry-After header too)."""
    data: dict[str, Any] = {"reason": reason}
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        data["retry_after"] = retry_after
        headers.append((b"retry-after", str(retry_after).encode()))
    payload = {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": -32000, "message": message, "data": data},
    }
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


class _TooDeep(Exception):
    """The body is JSON nested deeper than the parser's recursion limit."""


# Every method the rate limit counts (mcp_server/ratelimit.py): these get the HTTP 429 when over it.
COUNTED_METHODS = frozenset(
    {
        "tools/call",
        "resources/read",
        "prompts/get",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
    }
)


def _counted_call(body: bytes) -> tuple[bool, Any]:
    """Does the body hold a call the rate limit counts (a tool, resource, prompt or list)? And the id
    of a single JSON-RPC request, so the client matches a refusal to it (else None)."""
    if not any(method.encode() in body for method in COUNTED_METHODS):
        return False, None
    try:
        message = json.loads(body)
    except ValueError:
        return False, None  # not JSON: the MCP layer answers that itself
    except RecursionError:
        raise _TooDeep from None
    messages = message if isinstance(message, list) else [message]
    counted = any(isinstance(m, dict) and m.get("method") in COUNTED_METHODS for m in messages)
    return counted, message.get("id") if isinstance(message, dict) else None


class RequestLimits:
    """ASGI middleware for /mcp: 413 for bodies over MAX_REQUEST_BYTES (counted as they stream, so a
    lying Content-Length does not help), and 429 with Retry-After for a counted call (tool, resource,
    prompt, list) from a key that is over its rate limit (nothing recorded, nothing run)."""

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.max_bytes = runtime.settings.max_request_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith(MCP_PATH):
            await self.app(scope, receive, send)
            return
        identity = http_identity(scope)
        if identity is None:  # FastMCP's authentication answers 401 first
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            calls_a_tool, request_id = _counted_call(body)
        except _TooDeep:
            detail = f"request JSON is nested too deeply; arguments may nest at most {MAX_NESTING} levels"
            await _refuse(send, 400, "invalid_request", detail)
            return
        if calls_a_tool:
            refused = await self.runtime.services.rate_limiter.refusal(identity.key_id)
            if refused is not None:
                await _refuse(
                    send, 429, "rate_limited", refused.message, request_id, int(refused.retry_after)
                )
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        detail = f"request body over {self.max_bytes:,} bytes (MAX_REQUEST_BYTES); send less data per call"
        await _refuse(send, 413, "request_too_large", detail)
