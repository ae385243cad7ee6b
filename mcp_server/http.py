"""The HTTP face: MCP at /mcp behind API-key auth (401 before any MCP handling), /health and /metrics."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware import Middleware as StarletteMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_server.app import App
from mcp_server.auth import presented_key
from mcp_server.runtime import Runtime

log = logging.getLogger(__name__)

# Observers of authentication attempts (audit trail, metrics): called with (identity or None, scope).
AuthHook = Callable[[Any, Scope], Awaitable[None]]


class ApiKeyMiddleware:
    """Refuses MCP requests without a valid key with 401, before the MCP layer sees them."""

    def __init__(self, app: ASGIApp, runtime: Runtime, mcp_path: str = "/mcp") -> None:
        self.app = app
        self.runtime = runtime
        self.mcp_path = mcp_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.mcp_path):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        identity = self.runtime.keys.resolve(presented_key(headers))
        for hook in self.runtime.extras.get("auth_hooks", []):
            try:
                await hook(identity, scope)
            except Exception:  # noqa: BLE001 - observers must not block authentication
                log.exception("auth hook failed")
        if identity is None:
            body = json.dumps(
                {"error": "unauthorized", "detail": "send a valid key as X-API-Key or Authorization: Bearer"}
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", b'Bearer realm="analytics-mcp"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def build_http_app(app: App) -> Any:
    runtime = app.runtime

    @app.mcp.custom_route("/health", methods=["GET"], include_in_schema=False)
    async def health(request: Request) -> Response:
        components = await runtime.health()
        healthy = all(state == "ok" for state in components.values())
        failing = [name for name, state in components.items() if state != "ok"]
        return JSONResponse(
            {"status": "ok" if healthy else "unavailable", "components": components, "failing": failing},
            status_code=200 if healthy else 503,
        )

    @app.mcp.custom_route("/metrics", methods=["GET"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        for refresh in runtime.extras.get("metrics_refreshers", []):
            await refresh()
        return Response(generate_latest(runtime.metrics), media_type=CONTENT_TYPE_LATEST)

    from mcp_server.limits import RequestLimits

    # 401 first, then 413 (body size) and 429 (rate limit) before MCP sees the request.
    middleware = [
        StarletteMiddleware(ApiKeyMiddleware, runtime=runtime),
        StarletteMiddleware(RequestLimits, runtime=runtime),
    ]
    middleware += runtime.extras.get("asgi_middleware", [])
    return app.mcp.http_app(path="/mcp", middleware=middleware)
