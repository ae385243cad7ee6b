"""The operator console (/console) and the read API (/api/v1) on the HTTP server, beside /mcp.

`add_routes(app)` is the one hook: mcp_server/http.py calls it while building the HTTP app."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mcp_server.app import App


def add_routes(app: App) -> None:
    """Register the read API's and the console's routes on the app's FastMCP server (behind the same
    authentication middleware as /mcp: an X-API-Key or Bearer token identifies an API caller)."""
    from console import api
    from console.pages import Console

    for path, methods, endpoint in [*api.routes(app.runtime), *Console(app.runtime).routes()]:
        app.mcp.custom_route(path, methods=methods, include_in_schema=False)(endpoint)
