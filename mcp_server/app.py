"""The registration API: a FastMCP server plus the role each tool, resource and prompt is declared with.

Tools import this module to declare themselves; it imports none of them (mcp_server/server.py builds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastmcp import FastMCP
from fastmcp.tools import Tool
from fastmcp.utilities.json_schema import dereference_refs

from mcp_server import package_version
from mcp_server.auth import Identity
from mcp_server.config import Role
from mcp_server.runtime import Runtime

INSTRUCTIONS = """\
analytics-mcp: statistical analysis of a telecom operator's PostgreSQL data (tables customers,
network_events, revenue). Start with summary_snapshot, read schema://database/main and
docs://data_dictionary, open a session (session_create) to keep datasets, analyses and charts,
query with query_database (read-only SELECT, %(name)s parameters), analyse with analyze_data,
and chart with create_visualization. Other data sources (list_sources, schema://{source}) are
queried with query_database(source=...) in their own SQL dialect."""


class App:
    """A FastMCP server plus the role each of its components needs: declared once, checked always."""

    def __init__(self, runtime: Runtime, local_identity: Identity | None = None) -> None:
        self.runtime = runtime
        self.local_identity = local_identity
        self.mcp = FastMCP(
            "analytics-mcp", instructions=INSTRUCTIONS, mask_error_details=True, version=package_version()
        )
        # (kind, declared name or URI template) -> the roles that may use it; undeclared: nobody.
        self.roles: dict[tuple[str, str], frozenset[Role]] = {}

    def tool(self, *, roles: frozenset[Role], **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            self.roles[("tool", options.get("name") or function.__name__)] = roles
            tool = self.mcp.tool(function, **options)
            # Inline the schema's $refs once here; FastMCP's DereferenceRefsMiddleware would redo it on
            # every tools/list (6 ms of CPU per list with 17 tools), for clients that cannot follow $ref.
            if isinstance(tool, Tool) and "$defs" in tool.parameters:
                tool.parameters = dereference_refs(tool.parameters)
            return tool

        return register

    def resource(
        self, uri: str, *, roles: frozenset[Role], **options: Any
    ) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            self.roles[("resource", uri)] = roles
            return self.mcp.resource(uri, **options)(function)

        return register

    def prompt(self, *, roles: frozenset[Role], **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            self.roles[("prompt", options.get("name") or function.__name__)] = roles
            return self.mcp.prompt(function, **options)

        return register

    def roles_for(self, kind: str, name: str) -> frozenset[Role]:
        # Undeclared means nobody: a new component without a role declaration is refused, not open.
        return self.roles.get((kind, name), frozenset())
