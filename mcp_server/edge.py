"""The edge's own middleware: who calls (Identify), errors as one line (ShapeErrors) and the per-call
time limit (CallTimeout). Roles are FastMCP's (each component's `auth=` and its AuthMiddleware);
mcp_server/server.py lists them all in order."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pydantic
import redis.exceptions
from fastmcp.exceptions import (
    AuthorizationError,
    FastMCPError,
    NotFoundError,
    PromptError,
    ResourceError,
    ToolError,
)
from fastmcp.exceptions import ValidationError as FastMCPValidationError
from fastmcp.server.context import TransportType, reset_transport, set_transport
from fastmcp.server.dependencies import get_access_token, get_http_request
from fastmcp.server.middleware import Middleware, MiddlewareContext
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

from core.errors import AnalyticsError, Forbidden, NotFound, Timeout
from mcp_server import logs
from mcp_server.app import App, name_of
from mcp_server.auth import (
    Identity,
    access_token,
    identity_of,
    role_refusal,
    roles_of,
)
from mcp_server.calls import CallInfo, bind_call, current_call, reset_call
from warehouse.db import CONNECTION_ERRORS as POSTGRES_DOWN
from warehouse.shares import bind_owner, reset_owner

log = logging.getLogger(__name__)

FAILURE = {"tool": ToolError, "resource": ResourceError, "prompt": PromptError}
# Redis away, or in a Sentinel failover / cluster re-shard (a demoted master, slots not served yet).
REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


def _one_line(error: pydantic.ValidationError) -> str:
    problems = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("call",)) or "arguments"
        if len(where) > 60:  # an argument name is the agent's input: never echo a huge one back
            where = where[:57] + "..."
        problems.append(f"{where}: {' '.join(str(item.get('msg', 'invalid')).split())[:200]}")
    more = f" (+{error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return "invalid arguments: " + "; ".join(problems) + more


class Identify(Middleware):
    """Resolves the caller (API key or OAuth token over HTTP, checked by FastMCP's auth; the local identity
    over stdio and in memory) and binds the call (request id, identity, connection share owner) for
    everything inside it."""

    def __init__(self, app: App) -> None:
        self.app = app
        identity = app.local_identity
        self.local_user = AuthenticatedUser(access_token(identity)) if identity is not None else None

    def _caller(self) -> tuple[Identity | None, bool]:
        """The caller, and whether it is the local one (stdio or in memory: no HTTP request)."""
        access = get_access_token()  # set by FastMCP's authentication over HTTP (CallerVerifier)
        if access is not None:
            return identity_of(access), False
        try:
            get_http_request()
        except RuntimeError:
            return self.app.local_identity, True  # FastMCP authenticates only HTTP requests
        return None, False

    async def _bound(
        self, kind: str, name: str, arguments: dict[str, Any], context: Any, call_next: Any
    ) -> Any:
        identity, local = self._caller()
        call = CallInfo(logs.new_request_id(), kind, name, identity, arguments)
        if kind != "list":
            component = await self.app.component(kind, name)
            if kind == "resource" and component is not None:
                call.name = name_of(component)  # the URI template that serves the URI
            call.declared = bool(roles_of(component))
        user_id = identity.user_id if identity else None
        owner_token = bind_owner(user_id)  # the caller's connections count against its share
        call_token = bind_call(call)
        # The one thin path for the local caller (MCP_API_KEY's holder): its token, for FastMCP's role
        # checks to read, and FastMCP's stdio exemption from those checks lifted for the call (transport
        # None is its in-memory case, where the checks run), so declared roles hold on every transport.
        auth_token = auth_context_var.set(self.local_user) if local else None
        transport_token = set_transport(cast(TransportType, None)) if local else None
        try:
            with logs.request_bound(call.request_id, user_id):
                return await call_next(context)
        finally:
            if transport_token is not None:
                reset_transport(transport_token)
            if auth_token is not None:
                auth_context_var.reset(auth_token)
            reset_call(call_token)
            reset_owner(owner_token)

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        message = context.message
        return await self._bound("tool", message.name, dict(message.arguments or {}), context, call_next)

    async def on_read_resource(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        uri = str(context.message.uri)
        return await self._bound("resource", uri, {"uri": uri}, context, call_next)

    async def on_get_prompt(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        message = context.message
        return await self._bound("prompt", message.name, dict(message.arguments or {}), context, call_next)

    async def _listed(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return await self._bound("list", context.method or "list", {}, context, call_next)

    on_list_tools = on_list_resources = on_list_resource_templates = on_list_prompts = _listed


class ShapeErrors(Middleware):
    """Every failure of a call becomes one line for the agent (a fault: a generic line with the request
    id, logged with its traceback here), and its kind is recorded as the call's outcome."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def _shaped(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        call = current_call()
        if call is None:
            return await call_next(context)
        try:
            return await call_next(context)
        except (pydantic.ValidationError, FastMCPValidationError) as error:
            cause = error if isinstance(error, pydantic.ValidationError) else error.__cause__
            message = _one_line(cause) if isinstance(cause, pydantic.ValidationError) else "invalid arguments"
            outcome = "InvalidInput"
        except (AuthorizationError, NotFoundError) as error:
            # FastMCP says only "not found" or "not found or not authorized": say which, and what to do.
            outcome, message = _answer(await self._refusal(call, error), call)
        except Exception as error:
            # FastMCP hands on a component's own exception as the cause of its masked ToolError & co.
            cause = error.__cause__ if isinstance(error, FastMCPError) and error.__cause__ else error
            outcome, message = _answer(cause, call)
        call.outcome, call.error = outcome, logs.sanitize_error(" ".join(message.split()))
        raise FAILURE[call.kind](call.error) from None

    on_call_tool = on_read_resource = on_get_prompt = _shaped

    async def _refusal(self, call: CallInfo, error: Exception) -> AnalyticsError:
        """Why FastMCP refused a call: no caller, a role the caller lacks, or a name it may not use."""
        kind, identity = call.kind, call.identity
        if identity is None:
            return Forbidden("no valid API key; send X-API-Key or Authorization: Bearer")
        asked = str(call.arguments["uri"]) if kind == "resource" else call.name
        roles = roles_of(await self.app.component(kind, asked))
        if roles and identity.role not in roles:
            return role_refusal(identity, roles, f"{kind} '{call.name}'")
        if kind == "resource" or isinstance(error, NotFoundError):
            # FastMCP's own "unknown" (NotFoundError) is a URI no template matches (a/b where one segment
            # goes) or a parameter its path screening refuses (.., %2e%2e, an absolute path, a NUL byte).
            hint = (
                " (a template parameter is one path segment, without '..')"
                if isinstance(error, NotFoundError)
                else ""
            )
            declared = ", ".join(await self.app.declared(kind))
            return NotFound(f"no {kind} '{asked[:80]}'{hint}; {kind}s: {declared}")
        # A made-up name, or a component registered without roles: nobody's.
        return Forbidden(f"no {kind} '{asked[:80]}' is available to your key; list the {kind}s to see yours")


def _answer(error: BaseException, call: CallInfo) -> tuple[str, str]:
    """The outcome of a failed call and the line the agent reads; a fault is logged with its traceback."""
    if isinstance(error, AnalyticsError):
        return type(error).__name__, error.message
    if isinstance(error, FastMCPError):  # a refusal made as such (ResponseLimit, FastMCP's own checks)
        return "Refused", str(error)
    if isinstance(error, REDIS_DOWN):
        log.warning("redis unavailable", extra={"error": type(error).__name__})
        return "Unavailable", "Redis (the session and cache store) is not answering; retry shortly"
    if isinstance(error, redis.exceptions.OutOfMemoryError):
        # The session Redis runs with maxmemory and noeviction: full means writes are refused.
        log.warning("redis is full", extra={"kind": call.kind, "component": call.name})
        return "Refused", (
            "the session store is full; close or delete sessions you no longer need and retry, "
            "or ask the operator to raise REDIS_MAXMEMORY"
        )
    if isinstance(error, POSTGRES_DOWN):
        log.warning("postgres unavailable", extra={"error": type(error).__name__})
        return "Unavailable", "PostgreSQL is not answering; retry shortly"
    log.error("unexpected error", exc_info=error, extra={"kind": call.kind, "component": call.name})
    return (
        "InternalError",
        f"internal error while serving {call.kind} '{call.name}'; request id {call.request_id}",
    )


class CallTimeout(Middleware):
    """A call that runs longer than TOOL_TIMEOUT_SECONDS is stopped and answered with a Timeout."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def _limited(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        try:
            async with asyncio.timeout(self.seconds) as deadline:
                return await call_next(context)
        except TimeoutError:
            if not deadline.expired():
                raise
            call = current_call()
            what = f"{call.kind} '{call.name}'" if call is not None else "the call"
            raise Timeout(
                f"{what} ran longer than {self.seconds} s (TOOL_TIMEOUT_SECONDS) and was stopped; "
                "ask for less data or a narrower query"
            ) from None

    on_call_tool = on_read_resource = on_get_prompt = _limited
