"""The server's own URLs as a client reaches them: PUBLIC_BASE_URL, else the HTTP request's host."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from mcp_server.config import Settings

MCP_PATH = "/mcp"  # where MCP is served over streamable HTTP
PLOTLY_JS_PATH = "/assets/plotly.min.js"
DEFAULT_BASE_URL = "http://127.0.0.1:8000"  # `analytics-mcp serve`'s default address


def base_url(settings: Settings) -> str:
    """PUBLIC_BASE_URL (a proxy's address), else scheme and host of the current HTTP request, else
    the default serve address (stdio and in-process clients have no request)."""
    if settings.public_base_url:
        return settings.public_base_url
    try:
        from fastmcp.server.dependencies import get_http_request

        request = get_http_request()
    except RuntimeError:
        return DEFAULT_BASE_URL
    return f"{request.url.scheme}://{request.url.netloc}"


def plotly_js_url(settings: Settings) -> str:
    """Where an HTML chart loads plotly.js: this server's asset route, versioned so it can be cached."""
    try:
        plotly_version = version("plotly")
    except PackageNotFoundError:  # pragma: no cover - plotly is a dependency
        plotly_version = "0"
    return f"{base_url(settings)}{PLOTLY_JS_PATH}?v={plotly_version}"
