"""The HTTP face: MCP at /mcp behind API-key auth (401 before any MCP handling), /health and /metrics."""

from __future__ import annotations

import functools
import json
import logging
from importlib import resources
from typing import Any

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.datastructures import URL
from starlette.middleware import Middleware as StarletteMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mcp_server.app import App
from mcp_server.config import Settings
from mcp_server.limits import RequestLimits
from mcp_server.oauth import METADATA_PATH, protected_resource_metadata, resolve_identity, www_authenticate
from mcp_server.observability import refresh_gauges
from mcp_server.runtime import Runtime
from mcp_server.urls import PLOTLY_JS_PATH

log = logging.getLogger(__name__)


class ApiKeyMiddleware:
    """Refuses MCP requests without a valid key or OAuth token with 401, before the MCP layer sees them."""

    def __init__(self, app: ASGIApp, runtime: Runtime, mcp_path: str = "/mcp") -> None:
        self.app = app
        self.runtime = runtime
        self.mcp_path = mcp_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.mcp_path):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        identity = await resolve_identity(self.runtime.keys, self.runtime.oauth, headers)
        try:
            await self.runtime.services.auditor.authentication(identity, scope)
        except Exception:  # noqa: BLE001 - the audit trail must not block authentication
            log.exception("auditing an authentication failed")
        if identity is None:
            detail = "send a valid key as X-API-Key or Authorization: Bearer"
            if self.runtime.oauth is not None:
                detail += ", or an OAuth access token (see WWW-Authenticate's resource_metadata)"
            body = json.dumps({"error": "unauthorized", "detail": detail}).encode()
            challenge = www_authenticate(self.runtime.oauth, request_base_url(self.runtime.settings, scope))
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"www-authenticate", challenge.encode("latin-1", "replace")),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        # The MCP SDK binds each stateful session to the user that opened it and answers 404 "Session
        # not found" to any other: so another key can neither use nor DELETE a session id it learned.
        scope["user"] = AuthenticatedUser(
            AccessToken(token=f"key:{identity.key_id}", client_id=identity.key_id, scopes=[identity.role])
        )
        await self.app(scope, receive, send)


def request_base_url(settings: Settings, scope: Scope) -> str:
    """PUBLIC_BASE_URL, else the scheme and Host of the request (quotes dropped: it goes in a header)."""
    if settings.public_base_url:
        return settings.public_base_url
    url = URL(scope=scope)
    return f"{url.scheme}://{url.netloc}".replace('"', "")


@functools.cache
def _plotly_min_js() -> bytes:
    """The plotly.min.js bundled with the installed plotly package (the version the charts are written for)."""
    return (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()


def build_http_app(app: App) -> Any:
    runtime = app.runtime

    @app.mcp.custom_route("/health", methods=["GET"], include_in_schema=False)
    async def health(request: Request) -> Response:
        components = await runtime.health()
        healthy = all(state == "ok" for state in components.values())
        failing = [name for name, state in components.items() if state != "ok"]
        # A background writer (audit trail, query log) that cannot write keeps its rows and retries: the
        # server still serves (200) but says it is degraded until the rows are written.
        writers = runtime.services.writer_states()
        lagging = [name for name, state in writers.items() if state["status"] != "ok"]
        status = "unavailable" if not healthy else "degraded" if lagging else "ok"
        return JSONResponse(
            {"status": status, "components": components, "failing": failing, "writers": writers},
            status_code=200 if healthy else 503,
        )

    @app.mcp.custom_route("/metrics", methods=["GET"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        # Any valid key may scrape (give the scraper its own viewer key): the series count calls per
        # tool and dependency, never per user. METRICS_PUBLIC=true lifts this for a private network.
        if (
            not runtime.settings.metrics_public
            and await resolve_identity(runtime.keys, runtime.oauth, request.headers) is None
        ):
            return JSONResponse(
                {
                    "error": "unauthorized",
                    "detail": "/metrics needs a valid key as X-API-Key or Authorization: Bearer "
                    "(or METRICS_PUBLIC=true on a private network)",
                },
                status_code=401,
                headers={
                    "www-authenticate": www_authenticate(
                        runtime.oauth, request_base_url(runtime.settings, request.scope)
                    )
                },
            )
        await refresh_gauges(runtime)
        return Response(generate_latest(runtime.metrics), media_type=CONTENT_TYPE_LATEST)

    @app.mcp.custom_route(PLOTLY_JS_PATH, methods=["GET"], include_in_schema=False)
    async def plotly_js(request: Request) -> Response:
        # Public (no key): HTML charts load it from here, never from a CDN. The charts ask for it with
        # ?v=<plotly version>, so a year of caching is safe: a new plotly is a new URL.
        return Response(
            _plotly_min_js(),
            media_type="text/javascript; charset=utf-8",
            headers={"cache-control": "public, max-age=31536000, immutable"},
        )

    if runtime.oauth is not None:
        oauth = runtime.oauth

        @app.mcp.custom_route(METADATA_PATH, methods=["GET"], include_in_schema=False)
        async def protected_resource(request: Request) -> Response:
            # Public (RFC 9728): an OAuth client reads it after a 401 to learn which issuer to ask.
            return JSONResponse(
                protected_resource_metadata(oauth, request_base_url(runtime.settings, request.scope)),
                headers={"cache-control": "public, max-age=3600", "access-control-allow-origin": "*"},
            )

    # 401 first, then 413 (body size) and 429 (rate limit) before MCP sees the request.
    middleware = [
        StarletteMiddleware(ApiKeyMiddleware, runtime=runtime),
        StarletteMiddleware(RequestLimits, runtime=runtime),
    ]
    return app.mcp.http_app(path="/mcp", middleware=middleware)
