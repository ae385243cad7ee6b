"""The app factory: one FastMCP server per runtime, every tool, resource and prompt declared with its roles."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import logging
import pkgutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pydantic
import redis.exceptions
from fastmcp import FastMCP
from fastmcp.exceptions import FastMCPError, NotFoundError, PromptError, ResourceError, ToolError
from fastmcp.exceptions import ValidationError as FastMCPValidationError
from fastmcp.server.dependencies import get_http_headers
from fastmcp.server.middleware import Middleware, MiddlewareContext
from mcp import MCPError
from mcp.types import INVALID_REQUEST

from analytics.errors import AnalyticsError, Forbidden, NotFound, Timeout
from mcp_server import logs, package_version
from mcp_server.auth import (
    Identity,
    bind_identity,
    require_role,
    reset_identity,
)
from mcp_server.config import Role
from mcp_server.oauth import resolve_identity
from mcp_server.responses import ResponseLimit
from mcp_server.runtime import Runtime
from warehouse.db import CONNECTION_ERRORS
from warehouse.shares import bind_owner, reset_owner

log = logging.getLogger(__name__)

REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
QUIET = logging.DEBUG  # the level FastMCP logs an error at that a component has answered already
POSTGRES_DOWN = CONNECTION_ERRORS

INSTRUCTIONS = """\
analytics-mcp: statistical analysis of a telecom operator's PostgreSQL data (tables customers,
network_events, revenue). Start with summary_snapshot, read schema://database/main and
docs://data_dictionary, open a session (session_create) to keep datasets, analyses and charts,
query with query_database (read-only SELECT, %(name)s parameters), analyse with analyze_data,
and chart with create_visualization."""

# Hooks other features add to every call (metrics, audit, rate limits); each gets the CallInfo.
CallHook = Callable[["CallInfo"], Any]


@dataclass
class CallInfo:
    request_id: str
    kind: str  # tool | resource | prompt
    name: str
    identity: Identity | None
    arguments: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    outcome: str = "ok"
    error: str | None = None

    @property
    def duration_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000


class App:
    """A FastMCP server plus the role each of its components needs: declared once, checked always."""

    def __init__(self, runtime: Runtime, local_identity: Identity | None = None) -> None:
        self.runtime = runtime
        self.local_identity = local_identity
        self.mcp = FastMCP(
            "analytics-mcp", instructions=INSTRUCTIONS, mask_error_details=True, version=package_version()
        )
        self.roles: dict[tuple[str, str], frozenset[Role]] = {}
        self.before_call: list[CallHook] = []
        self.after_call: list[CallHook] = []
        # Hooks run before every list method (tools/list, resources/list ...), with the caller and the
        # method: the rate limit counts a list as one call.
        self.before_list: list[Callable[[Identity, str], Any]] = []
        self.mcp.add_middleware(Guard(self))
        self.mcp.add_middleware(ResponseLimit())  # inside the guard: a refusal is logged like any other

    def tool(self, *, roles: frozenset[Role], **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            name = options.get("name") or function.__name__
            self.roles[("tool", name)] = roles
            return self.mcp.tool(_answering_errors(function, "tool", ToolError), **options)

        return register

    def resource(
        self, uri: str, *, roles: frozenset[Role], **options: Any
    ) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            self.roles[("resource", uri)] = roles
            return self.mcp.resource(uri, **options)(_answering_errors(function, "resource", ResourceError))

        return register

    def prompt(self, *, roles: frozenset[Role], **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            name = options.get("name") or function.__name__
            self.roles[("prompt", name)] = roles
            return self.mcp.prompt(_answering_errors(function, "prompt", PromptError), **options)

        return register

    def roles_for(self, kind: str, name: str) -> frozenset[Role]:
        # Undeclared means nobody: a new component without a role declaration is refused, not open.
        return self.roles.get((kind, name), frozenset())

    async def identify(self) -> Identity | None:
        headers = get_http_headers(include={"authorization"})
        if headers:
            return await resolve_identity(self.runtime.keys, self.runtime.oauth, headers)
        return self.local_identity


def _answering_errors(
    function: Callable[..., Any], kind: str, failure: type[FastMCPError]
) -> Callable[..., Any]:
    """Domain errors become their one-line message; anything else a generic line with a request id.

    This runs inside the component, before FastMCP's own handler, which would otherwise log the
    exception text (possibly data) with a traceback and mask the message we want the agent to see.
    What reaches FastMCP is already answered (and logged here if it was a fault): its own "Error
    calling tool" line is only debug detail (QUIET).
    """

    @functools.wraps(function)
    async def answered(*args: Any, **kwargs: Any) -> Any:
        try:
            result = function(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        except AnalyticsError as error:
            raise failure(error.message, log_level=QUIET) from None
        except (ToolError, ResourceError, PromptError):
            raise
        except REDIS_DOWN as error:
            log.warning("redis unavailable", extra={"error": type(error).__name__})
            raise failure(
                "Redis (the session and cache store) is not answering; retry shortly", log_level=QUIET
            ) from None
        except redis.exceptions.OutOfMemoryError:
            # The session Redis runs with maxmemory and noeviction: full means writes are refused.
            log.warning("redis is full", extra={"kind": kind, "component": function.__name__})
            raise failure(
                "the session store is full; close or delete sessions you no longer need and retry, "
                "or ask the operator to raise REDIS_MAXMEMORY",
                log_level=QUIET,
            ) from None
        except POSTGRES_DOWN as error:
            log.warning("postgres unavailable", extra={"error": type(error).__name__})
            raise failure("PostgreSQL is not answering; retry shortly", log_level=QUIET) from None
        except Exception:
            request_id = logs.request_id_var.get() or "-"
            log.exception("unexpected error", extra={"kind": kind, "component": function.__name__})
            raise failure(
                f"internal error while serving {kind} '{function.__name__}'; request id {request_id}",
                log_level=QUIET,
            ) from None

    return answered


def _one_line(error: pydantic.ValidationError) -> str:
    problems = []
    for item in error.errors()[:3]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("call",)) or "arguments"
        if len(where) > 60:  # an argument name is the agent's input: never echo a huge one back
            where = where[:57] + "..."
        problems.append(f"{where}: {' '.join(str(item.get('msg', 'invalid')).split())[:200]}")
    more = f" (+{error.error_count() - 3} more)" if error.error_count() > 3 else ""
    return "invalid arguments: " + "; ".join(problems) + more


class Guard(Middleware):
    """Authenticates, checks the declared role, binds request ids, and turns errors into one line."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def _guarded(self, kind: str, name: str, arguments: dict[str, Any], call: Callable[[], Any]) -> Any:
        info = CallInfo(uuid.uuid4().hex[:16], kind, name, await self.app.identify(), arguments)
        request_token = logs.request_id_var.set(info.request_id)
        user_token = logs.user_id_var.set(info.identity.user_id if info.identity else None)
        identity_token = bind_identity(info.identity)
        # The caller's database connections count against its share (warehouse/shares.py).
        owner_token = bind_owner(info.identity.user_id if info.identity else None)
        failure = {"tool": ToolError, "resource": ResourceError, "prompt": PromptError}[kind]
        try:
            if info.identity is None:
                raise Forbidden("no valid API key; send X-API-Key or Authorization: Bearer")
            if kind == "resource" and ("resource", name) not in self.app.roles:
                # Undeclared means unreachable: an unknown URI, or a resource registered without roles.
                declared = sorted(n for k, n in self.app.roles if k == "resource")
                raise NotFound(f"no resource '{name[:80]}'; resources: {', '.join(declared)}")
            allowed = self.app.roles_for(kind, name)
            if not allowed:  # a made-up name, or a component registered without roles: nobody's
                raise Forbidden(
                    f"no {kind} '{name[:80]}' is available to your key; list the {kind}s to see yours"
                )
            require_role(info.identity, allowed, f"{kind} '{name}'")
            for hook in self.app.before_call:
                await hook(info)
            limit = self.app.runtime.settings.call_timeout_seconds
            try:
                async with asyncio.timeout(limit) as deadline:
                    return await call()
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise Timeout(
                    f"{kind} '{name}' ran longer than {limit} s (TOOL_TIMEOUT_SECONDS) and was stopped; "
                    "ask for less data or a narrower query"
                ) from None
        except AnalyticsError as error:
            info.outcome, info.error = type(error).__name__, logs.sanitize_error(error.message)
            raise failure(info.error) from None
        except (pydantic.ValidationError, FastMCPValidationError) as error:
            cause = error if isinstance(error, pydantic.ValidationError) else error.__cause__
            message = _one_line(cause) if isinstance(cause, pydantic.ValidationError) else "invalid arguments"
            info.outcome, info.error = "InvalidInput", message
            raise failure(message) from None
        except NotFoundError:
            # FastMCP's own "unknown": a URI no template matches (a/b where one segment goes), or a
            # parameter its path screening refuses (.., %2e%2e, an absolute path, a NUL byte).
            shown = str(arguments.get("uri", name))[:80] if kind == "resource" else name[:80]
            declared = sorted(n for k, n in self.app.roles if k == kind)
            info.outcome = "NotFound"
            info.error = logs.sanitize_error(
                f"no {kind} '{shown}' (a template parameter is one path segment, without '..'); "
                f"{kind}s: {', '.join(declared)}"
            )
            raise failure(info.error) from None
        except (ToolError, ResourceError, PromptError) as error:
            # A component's own wrapper turned a domain error into this one; keep its kind for metrics.
            origin = error.__context__
            if isinstance(origin, AnalyticsError):
                info.outcome = type(origin).__name__
            elif isinstance(origin, REDIS_DOWN + POSTGRES_DOWN):
                info.outcome = "Unavailable"
            else:
                info.outcome = "Refused"
            info.error = logs.sanitize_error(" ".join(str(error).split()))
            raise failure(info.error) from None
        except Exception:
            info.outcome = "InternalError"
            log.exception("unexpected error", extra={"kind": kind, "component": name})
            raise failure(
                f"internal error while serving {kind} '{name}'; request id {info.request_id}"
            ) from None
        finally:
            for hook in self.app.after_call:
                try:
                    await hook(info)
                except Exception:  # noqa: BLE001 - observers must not break calls
                    log.exception("after-call hook failed")
            reset_owner(owner_token)
            reset_identity(identity_token)
            logs.user_id_var.reset(user_token)
            logs.request_id_var.reset(request_token)

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        message = context.message
        return await self._guarded(
            "tool", message.name, dict(message.arguments or {}), lambda: call_next(context)
        )

    async def on_read_resource(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        uri = str(context.message.uri)
        declared = self._resource_declaration(uri)
        return await self._guarded("resource", declared, {"uri": uri}, lambda: call_next(context))

    async def on_get_prompt(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        message = context.message
        return await self._guarded(
            "prompt", message.name, dict(message.arguments or {}), lambda: call_next(context)
        )

    async def on_list_tools(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        await self._before_list("tools/list")
        tools = await call_next(context)
        identity = await self.app.identify()
        if identity is None:
            return []
        return [t for t in tools if identity.role in self.app.roles_for("tool", t.name)]

    async def on_list_resources(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        await self._before_list("resources/list")
        return await self._visible(
            "resource", await call_next(context), lambda r: self._resource_declaration(str(r.uri))
        )

    async def on_list_resource_templates(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        await self._before_list("resources/templates/list")
        return await self._visible("resource", await call_next(context), lambda t: t.uri_template)

    async def on_list_prompts(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        await self._before_list("prompts/list")
        return await self._visible("prompt", await call_next(context), lambda p: p.name)

    async def _before_list(self, method: str) -> None:
        """Lists cost work too (resources/list reads every session of the caller): each one counts."""
        identity = await self.app.identify()
        if identity is None:
            return  # nothing is listed to a caller without a key
        try:
            for hook in self.app.before_list:
                await hook(identity, method)
        except AnalyticsError as error:
            raise MCPError(INVALID_REQUEST, error.message) from None

    async def _visible(self, kind: str, components: Any, name_of: Callable[[Any], str]) -> list[Any]:
        """Only what the caller's role may use is listed (undeclared: nobody's)."""
        identity = await self.app.identify()
        if identity is None:
            return []
        return [c for c in components if identity.role in self.app.roles_for(kind, name_of(c))]

    def _resource_declaration(self, uri: str) -> str:
        """The declared URI or URI template that serves `uri`."""
        if ("resource", uri) in self.app.roles:
            return uri
        matching = [
            declared
            for kind, declared in self.app.roles
            if kind == "resource" and "{" in declared and uri.startswith(declared.split("{", 1)[0])
        ]
        # session://{session_id} and session://{session_id}/{key}: the one with as many segments first
        if matching:
            return min(matching, key=lambda declared: declared.count("/") != uri.count("/"))
        return uri  # undeclared: FastMCP answers "not found" itself


def build_app(runtime: Runtime, local_identity: Identity | None = None) -> App:
    """Create the server and register every module in mcp_server.tools (each has `register(app)`)."""
    app = App(runtime, local_identity)
    from mcp_server import tools

    for module_info in sorted(pkgutil.iter_modules(tools.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{tools.__name__}.{module_info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)
    # Observers and limits, after the tools so they see every declared name. Order of before_call:
    # rate limit (before any work), argument limits.
    from mcp_server import audit, limits, observability, ratelimit

    for install in (
        ratelimit.install,
        limits.install,
        observability.install,
        audit.install,
    ):
        install(app)
    return app
