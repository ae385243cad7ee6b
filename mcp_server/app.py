"""The registration API: a FastMCP server whose tools, resources and prompts each declare the roles that
may use them, as FastMCP's own per-component `auth=` (a RoleCheck). FastMCP enforces and filters lists.

Tools import this module to declare themselves; it imports none of them (mcp_server/server.py builds).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fastmcp import FastMCP
from fastmcp.tools import Tool
from fastmcp.utilities.components import FastMCPComponent
from fastmcp.utilities.json_schema import dereference_refs

from mcp_server import package_version
from mcp_server.auth import Identity, RoleCheck, roles_of
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
    """A FastMCP server whose components are registered with the roles that may use them."""

    def __init__(self, runtime: Runtime, local_identity: Identity | None = None) -> None:
        self.runtime = runtime
        self.local_identity = local_identity
        self.mcp = FastMCP(
            "analytics-mcp",
            instructions=INSTRUCTIONS,
            mask_error_details=True,
            version=package_version(),
            dereference_schemas=False,  # done once per tool at registration (below), not on every list
        )
        self.tool_names: list[str] = []

    def tool(self, *, roles: frozenset[Role], **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            self.tool_names.append(options.get("name") or function.__name__)
            tool = Tool.from_function(function, auth=RoleCheck(roles), **options)
            # Inline the schema's $refs once here, or FastMCP's DereferenceRefsMiddleware does it on every
            # tools/list (6 ms of CPU per list with 17 tools), for clients that cannot follow $ref.
            if "$defs" in tool.parameters:
                tool.parameters = dereference_refs(tool.parameters)
            self.mcp.add_tool(tool)
            return function

        return register

    def resource(
        self, uri: str, *, roles: frozenset[Role], **options: Any
    ) -> Callable[[Callable[..., Any]], Any]:
        return self.mcp.resource(uri, auth=RoleCheck(roles), **options)

    def prompt(self, *, roles: frozenset[Role], **options: Any) -> Callable[[Callable[..., Any]], Any]:
        def register(function: Callable[..., Any]) -> Any:
            return self.mcp.prompt(function, auth=RoleCheck(roles), **options)

        return register

    async def component(self, kind: str, name: str) -> FastMCPComponent | None:
        """The tool, prompt or resource (a URI, matched to its template) a call names, from FastMCP's
        registry: found whoever asks (FastMCP's role checks come after this lookup)."""
        provider = self.mcp.local_provider
        if kind == "tool":
            return await provider.get_tool(name)
        if kind == "prompt":
            return await provider.get_prompt(name)
        return await provider.get_resource(name) or await provider.get_resource_template(name)

    async def roles(self, kind: str) -> dict[str, frozenset[Role]]:
        """Every component of a kind in FastMCP's registry, by its declared name (for a resource: its URI
        or URI template), with the roles that may use it (none: nobody)."""
        provider = self.mcp.local_provider
        found: Sequence[FastMCPComponent]
        if kind == "tool":
            found = await provider.list_tools()
        elif kind == "prompt":
            found = await provider.list_prompts()
        else:
            found = [*await provider.list_resources(), *await provider.list_resource_templates()]
        return {name_of(component): roles_of(component) for component in found}

    async def declared(self, kind: str) -> list[str]:
        return sorted(name for name, roles in (await self.roles(kind)).items() if roles)


def name_of(component: FastMCPComponent) -> str:
    """A component's declared name: a tool's or prompt's name, a resource's URI or URI template."""
    return getattr(component, "uri_template", None) or str(getattr(component, "uri", component.name))
