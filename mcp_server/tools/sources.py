"""Data sources for the agent: list_sources, and schema://{source} with each source's tables and columns."""

from __future__ import annotations

from typing import Any

from core.errors import AnalyticsError, Forbidden
from mcp_server.app import App
from mcp_server.auth import ANALYST, EVERYONE, current_identity
from resources.schema import render_schema
from resources.sources import render_source
from warehouse import catalog
from warehouse.sources import MAIN

MARKDOWN = "text/markdown"


def register(app: App) -> None:
    runtime = app.runtime
    cache = runtime.services.catalog_cache

    @app.tool(roles=EVERYONE, annotations={"readOnlyHint": True, "openWorldHint": False})
    async def list_sources() -> dict[str, Any]:
        """The data sources query_database(source=...) can read: engine, description, tables with row estimates."""
        listed = []
        for source in runtime.sources.registry:
            entry: dict[str, Any] = {
                "name": source.name,
                "engine": "postgresql",
                "description": source.description,
            }
            try:
                if source.name == MAIN:
                    described = await catalog.describe_tables(runtime.db)
                    tables = [{"name": t.name, "row_estimate": t.estimated_rows} for t in described]
                else:
                    engine = runtime.sources.engine_now(source.name)
                    entry["engine"] = engine.kind
                    tables = [{"name": t.name, "row_estimate": t.row_estimate} for t in await engine.tables()]
            except AnalyticsError as error:  # one source down never hides the others
                tables, entry["error"] = [], error.message
            listed.append({**entry, "tables": tables})
        return {"sources": listed}

    @app.resource("schema://{source}", roles=EVERYONE, mime_type=MARKDOWN, name="source_schema")
    async def source_schema(source: str) -> str:
        """A data source's tables (with row estimates) and their columns and types, for query_database(source=...)."""
        found = runtime.sources.source(source)  # NotFound lists the sources
        if found.name == MAIN and current_identity().role not in ANALYST:
            raise Forbidden(
                "the built-in database's schema needs role analyst or admin, like schema://database/main"
            )

        async def render() -> str:
            if found.name == MAIN:
                return render_schema(await catalog.describe_tables(runtime.db))
            engine = runtime.sources.engine_now(found.name)
            tables = await engine.tables()
            return render_source(
                found.name,
                engine.kind,
                found.description,
                [(table, await engine.columns(table.name)) for table in tables],
            )

        return await cache.page(f"source:{found.name}:{runtime.sources.registry.digest}", render)
