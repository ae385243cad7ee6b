"""The edge's own middleware: who calls (Identify), errors as one line (ShapeErrors), declared roles
(Access) and the per-call time limit (CallTimeout). mcp_server/server.py lists them in order."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
import redis.exceptions
from fastmcp.exceptions import FastMCPError, NotFoundError, PromptError, ResourceError, ToolError
from fastmcp.exceptions import ValidationError as FastMCPValidationError
from fastmcp.server.dependencies import get_access_token, get_http_request
from fastmcp.server.middleware import Middleware, MiddlewareContext

from core.errors import AnalyticsError, Forbidden, NotFound, Timeout
from mcp_server import logs
from mcp_server.auth import Identity, bind_identity, identity_of, require_role, reset_identity
from mcp_server.calls import CallInfo, bind_call, current_call, reset_call
from mcp_server.config import Role
from warehouse.db import CONNECTION_ERRORS as POSTGRES_DOWN
from warehouse.shares import bind_owner, reset_owner

log = logging.getLogger(__name__)

Roles = Mapping[tuple[str, str], frozenset[Role]]
FAILURE = {"tool": ToolError, "resource": ResourceError, "prompt": PromptError}
# Redis away, or in a Sentinel failover / cluster re-shard (a demoted master, slots not served yet).
REDIS_DOWN = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
)


def declared_resource(roles: Roles, uri: str) -> str:
    """The declared URI or URI template that serves `uri`."""
    if ("resource", uri) in roles:
        return uri
    matching = [
        declared
        for kind, declared in roles
        if kind == "resource" and "{" in declared and uri.startswith(declared.split("{", 1)[0])
    ]
    # session://{session_id} and session://{session_id}/{key}: the one with as many segments first
    if matching:
        return min(matching, key=lambda declared: declared.count("/") != uri.count("/"))
    return uri  # undeclared: FastMCP answers "not found" itself


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
    """Resolves the caller (API key or OAuth token over HTTP; the local identity over stdio) and binds
    the call (request id, identity, connection share owner) for everything inside it."""

    def __init__(self, local_identity: Identity | None, roles: Roles) -> None:
        self.local_identity = local_identity
        self.roles = roles

    def identify(self) -> Identity | None:
        access = get_access_token()  # set by FastMCP's authentication over HTTP (CallerVerifier)
        if access is not None:
            return identity_of(access)
        try:
            get_http_request()
        except RuntimeError:
            return self.local_identity  # stdio or in memory: FastMCP does not authenticate
        return None

    async def _bound(self, call: CallInfo, context: MiddlewareContext[Any], call_next: Any) -> Any:
        identity = call.identity
        user_id = identity.user_id if identity else None
        request_token = logs.request_id_var.set(call.request_id)
        user_token = logs.user_id_var.set(user_id)
        identity_token = bind_identity(identity)
        owner_token = bind_owner(user_id)  # the caller's connections count against its share
        call_token = bind_call(call)
        try:
            return await call_next(context)
        finally:
            reset_call(call_token)
            reset_owner(owner_token)
            reset_identity(identity_token)
            logs.user_id_var.reset(user_token)
            logs.request_id_var.reset(request_token)

    async def _called(
        self, kind: str, name: str, arguments: dict[str, Any], context: Any, call_next: Any
    ) -> Any:
        call = CallInfo(uuid.uuid4().hex[:16], kind, name, self.identify(), arguments)
        call.declared = (kind, name) in self.roles
        return await self._bound(call, context, call_next)

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        message = context.message
        return await self._called("tool", message.name, dict(message.arguments or {}), context, call_next)

    async def on_read_resource(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        uri = str(context.message.uri)
        return await self._called(
            "resource", declared_resource(self.roles, uri), {"uri": uri}, context, call_next
        )

    async def on_get_prompt(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        message = context.message
        return await self._called("prompt", message.name, dict(message.arguments or {}), context, call_next)

    async def _listed(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        call = CallInfo(uuid.uuid4().hex[:16], "list", context.method or "list", self.identify())
        return await self._bound(call, context, call_next)

    on_list_tools = on_list_resources = on_list_resource_templates = on_list_prompts = _listed


class ShapeErrors(Middleware):
    """Every failure of a call becomes one line for the agent (a fault: a generic line with the request
    id, logged with its traceback here), and its kind is recorded as the call's outcome."""

    def __init__(self, roles: Roles) -> None:
        self.roles = roles

    async def _shaped(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        call = current_call()
        if call is None:
            return await call_next(context)
        kind, name = call.kind, call.name
        try:
            return await call_next(context)
        except (pydantic.ValidationError, FastMCPValidationError) as error:
            cause = error if isinstance(error, pydantic.ValidationError) else error.__cause__
            message = _one_line(cause) if isinstance(cause, pydantic.ValidationError) else "invalid arguments"
            outcome = "InvalidInput"
        except NotFoundError:
            # FastMCP's own "unknown": a URI no template matches (a/b where one segment goes), or a
            # parameter its path screening refuses (.., %2e%2e, an absolute path, a NUL byte).
            shown = str(call.arguments.get("uri", name))[:80] if kind == "resource" else name[:80]
            declared = sorted(n for k, n in self.roles if k == kind)
            outcome = "NotFound"
            message = (
                f"no {kind} '{shown}' (a template parameter is one path segment, without '..'); "
                f"{kind}s: {', '.join(declared)}"
            )
        except Exception as error:
            # FastMCP hands on a component's own exception as the cause of its masked ToolError & co.
            cause = error.__cause__ if isinstance(error, FastMCPError) and error.__cause__ else error
            outcome, message = _answer(cause, call)
        call.outcome, call.error = outcome, logs.sanitize_error(" ".join(message.split()))
        raise FAILURE[kind](call.error) from None

    on_call_tool = on_read_resource = on_get_prompt = _shaped


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


class Access(Middleware):
    """A component answers only the roles it was declared with (undeclared: nobody), and lists show
    each caller only what its role may use."""

    def __init__(self, roles: Roles) -> None:
        self.roles = roles

    def _allowed(self, kind: str, name: str) -> frozenset[Role]:
        return self.roles.get((kind, name), frozenset())

    async def _checked(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        call = current_call()
        if call is None or call.identity is None:
            raise Forbidden("no valid API key; send X-API-Key or Authorization: Bearer")
        kind, name = call.kind, call.name
        if kind == "resource" and ("resource", name) not in self.roles:
            # Undeclared means unreachable: an unknown URI, or a resource registered without roles.
            declared = sorted(n for k, n in self.roles if k == "resource")
            raise NotFound(f"no resource '{name[:80]}'; resources: {', '.join(declared)}")
        allowed = self._allowed(kind, name)
        if not allowed:  # a made-up name, or a component registered without roles: nobody's
            raise Forbidden(
                f"no {kind} '{name[:80]}' is available to your key; list the {kind}s to see yours"
            )
        require_role(call.identity, allowed, f"{kind} '{name}'")
        return await call_next(context)

    on_call_tool = on_read_resource = on_get_prompt = _checked

    async def _visible(
        self, kind: str, context: MiddlewareContext[Any], call_next: Any, name_of: Callable[[Any], str]
    ) -> list[Any]:
        call = current_call()
        if call is None or call.identity is None:
            return []  # nothing is listed to a caller without a key (and nothing is counted)
        role = call.identity.role
        return [c for c in await call_next(context) if role in self._allowed(kind, name_of(c))]

    async def on_list_tools(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return await self._visible("tool", context, call_next, lambda t: t.name)

    async def on_list_resources(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return await self._visible(
            "resource", context, call_next, lambda r: declared_resource(self.roles, str(r.uri))
        )

    async def on_list_resource_templates(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return await self._visible("resource", context, call_next, lambda t: t.uri_template)

    async def on_list_prompts(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        return await self._visible("prompt", context, call_next, lambda p: p.name)


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
