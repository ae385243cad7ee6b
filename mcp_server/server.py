"""The app factory: every tool module registered, and the edge's middleware composed in one ordered list."""

from __future__ import annotations

from fastmcp.server.middleware import AuthMiddleware, Middleware

from mcp_server.app import App
from mcp_server.audit import AuditTrail
from mcp_server.auth import Identity, is_declared
from mcp_server.edge import CallTimeout, Identify, ShapeErrors
from mcp_server.limits import ArgumentLimits
from mcp_server.observability import RecordMetrics
from mcp_server.ratelimit import RateLimit
from mcp_server.responses import ResponseLimit
from mcp_server.runtime import Runtime
from mcp_server.tools import analyze, catalog, data, imports, metrics, query, sessions, sources, visualize

TOOL_MODULES = (analyze, catalog, data, imports, metrics, query, sessions, sources, visualize)


def build_app(runtime: Runtime, local_identity: Identity | None = None) -> App:
    """A server whose callers over stdio (or in memory) are `local_identity`; over HTTP, whoever's key
    or token comes with the request."""
    app = App(runtime, local_identity)
    for module in TOOL_MODULES:
        module.register(app)
    settings, services = runtime.settings, runtime.services
    # Outermost first. Audit and metrics see every outcome, refusals included. FastMCP's AuthMiddleware
    # refuses a component the caller's role may not use (its own `auth=`) or nobody may (declared no
    # roles), and filters lists likewise, before the call spends its rate limit; no work is done before
    # the limits pass. The caller's live sessions are listed after that filter: they are its own.
    middleware: list[Middleware] = [
        Identify(app),
        AuditTrail(services.auditor),
        RecordMetrics(runtime.metrics, app.tool_names),
        ShapeErrors(app),
        catalog.SessionResources(services.session_store),
        AuthMiddleware(auth=is_declared),
        RateLimit(services.rate_limiter),
        ArgumentLimits(settings.max_argument_bytes),
        CallTimeout(settings.call_timeout_seconds),
        ResponseLimit(),
    ]
    for each in middleware:
        app.mcp.add_middleware(each)
    return app
