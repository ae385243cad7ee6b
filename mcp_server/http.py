"""The HTTP face: MCP at /mcp behind FastMCP's auth (our CallerVerifier; 401 before any MCP handling),
/health and /metrics."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from fastmcp.server.auth import RemoteAuthProvider
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware import Middleware as StarletteMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console import add_routes as add_console_routes
from mcp_server.app import App
from mcp_server.audit import Auditor
from mcp_server.auth import CallerVerifier, http_identity
from mcp_server.config import ConfigError
from mcp_server.limits import RequestLimits
from mcp_server.observability import refresh_gauges
from mcp_server.urls import MCP_PATH, PLOTLY_JS_PATH
from warehouse.replica import READING_FROM_PRIMARY

# RFC 9728 section 3.1: the well-known prefix, then the resource's path (FastMCP serves it).
METADATA_PATH = "/.well-known/oauth-protected-resource" + MCP_PATH


class Credentials:
    """Outermost ASGI layer. FastMCP reads only `Authorization: Bearer`, so an `X-API-Key` is passed on
    as one; every /mcp request's authentication is audited; FastMCP's 401 gets our one-line JSON body
    and a challenge with our realm (and, with OAuth, where the protected-resource metadata is)."""

    def __init__(self, app: ASGIApp, auditor: Auditor, challenge: str, detail: str) -> None:
        self.app = app
        self.auditor = auditor
        self.challenge = challenge.encode("latin-1", "replace")
        self.body = json.dumps({"error": "unauthorized", "detail": detail}).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        if not any(name.lower() == b"authorization" for name, _ in headers):
            key = next((value for name, value in headers if name.lower() == b"x-api-key"), b"")
            if key.strip():
                scope = {**scope, "headers": [*headers, (b"authorization", b"Bearer " + key.strip())]}
        if not scope["path"].startswith(MCP_PATH):
            await self.app(scope, receive, send)
            return
        refused = False

        async def answer(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start":
                refused = message["status"] == 401
                await self.auditor.authentication(None if refused else http_identity(scope), scope)
                if refused:
                    message = {
                        "type": "http.response.start",
                        "status": 401,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"www-authenticate", self.challenge),
                        ],
                    }
            elif message["type"] == "http.response.body" and refused:
                if message.get("more_body", False):
                    return  # FastMCP's own body is replaced by ours, sent with its last part
                message = {"type": "http.response.body", "body": self.body}
            await send(message)

        await self.app(scope, receive, answer)


@functools.cache
def _plotly_min_js() -> bytes:
    """The plotly.min.js bundled with the installed plotly package (the version the charts are written for)."""
    return (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()


def build_http_app(app: App, base_url: str | None = None) -> Any:
    """The ASGI app. `base_url` is where this server is reached when PUBLIC_BASE_URL is not set; with
    OAuth it names the protected resource in the RFC 9728 metadata."""
    runtime = app.runtime
    verifier = CallerVerifier(runtime.keys, runtime.oauth)
    challenge = 'Bearer realm="analytics-mcp"'
    detail = "send a valid key as X-API-Key or Authorization: Bearer"
    if runtime.oauth is None:
        app.mcp.auth = verifier
    else:
        base_url = runtime.settings.public_base_url or base_url
        if base_url is None:
            raise ConfigError("OAuth needs PUBLIC_BASE_URL (the URL clients reach /mcp at) on this address")
        app.mcp.auth = RemoteAuthProvider(
            verifier,
            # A str, not AnyHttpUrl: the metadata document then names the issuer exactly as configured.
            [runtime.oauth.settings.issuer],  # type: ignore[list-item]
            base_url,
            resource_name="analytics-mcp",
        )
        challenge += f', resource_metadata="{base_url.rstrip("/")}{METADATA_PATH}"'
        detail += ", or an OAuth access token (see WWW-Authenticate's resource_metadata)"

    @app.mcp.custom_route("/health", methods=["GET"], include_in_schema=False)
    async def health(request: Request) -> Response:
        components = await runtime.health()
        # A read replica that is down is not a failure: reads go to the primary (degraded, with a warning).
        failing = [name for name, state in components.items() if state not in ("ok", READING_FROM_PRIMARY)]
        healthy = not failing
        # A background writer (audit trail, query log) that cannot write keeps its rows and retries: the
        # server still serves (200) but says it is degraded until the rows are written.
        writers = runtime.services.writer_states()
        lagging = [name for name, state in writers.items() if state["status"] != "ok"]
        body: dict[str, Any] = {"components": components, "failing": failing, "writers": writers}
        replica = runtime.db.replica
        if replica is not None:
            body["replica"] = replica.state
            body["replica_lag_seconds"] = replica.lag_seconds
            if not replica.up:
                body["warnings"] = [
                    "the read replica (DATABASE_READ_URL) does not answer: queries and analyses read "
                    "from the primary until it is back"
                ]
        degraded = lagging or (replica is not None and not replica.up)
        status = "unavailable" if not healthy else "degraded" if degraded else "ok"
        return JSONResponse({"status": status, **body}, status_code=200 if healthy else 503)

    @app.mcp.custom_route("/metrics", methods=["GET"], include_in_schema=False)
    async def metrics(request: Request) -> Response:
        # Any valid key may scrape (give the scraper its own viewer key): the series count calls per
        # tool and dependency, never per user. METRICS_PUBLIC=true lifts this for a private network.
        if not runtime.settings.metrics_public and http_identity(request.scope) is None:
            return JSONResponse(
                {
                    "error": "unauthorized",
                    "detail": "/metrics needs a valid key as X-API-Key or Authorization: Bearer "
                    "(or METRICS_PUBLIC=true on a private network)",
                },
                status_code=401,
                headers={"www-authenticate": challenge},
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

    add_console_routes(app)  # /api/v1 (read API) and /console (operator pages): console/__init__.py

    # FastMCP's authentication runs first (a request without a valid key or token gets 401 before MCP
    # sees it); then 413 (body size) and 429 (rate limit).
    http = app.mcp.http_app(path=MCP_PATH, middleware=[StarletteMiddleware(RequestLimits, runtime=runtime)])
    return Credentials(http, runtime.services.auditor, challenge, detail)
