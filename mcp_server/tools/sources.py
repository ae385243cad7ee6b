"""Data sources for the agent: list_sources, refresh_source, schema://{source} (tables and columns),
schema://{source}/{table} (profiles) and docs://{source}/data_dictionary (profiles with descriptions)."""

from __future__ import annotations

import asyncio
from typing import Any

from core.errors import AnalyticsError, Forbidden, NotFound, Unavailable
from mcp_server import datasets
from mcp_server.app import App
from mcp_server.auth import ADMIN, ANALYST, EVERYONE
from mcp_server.calls import current_identity
from mcp_server.services import source_pages
from resources.dictionary import render_dictionary
from resources.schema import render_schema
from resources.sources import render_data_dictionary, render_profile, render_source
from warehouse import catalog, profiles
from warehouse.descriptions import Descriptions, DescriptionsError, merged, read_descriptions
from warehouse.sources import MAIN

MARKDOWN = "text/markdown"


def register(app: App) -> None:
    runtime = app.runtime
    cache = runtime.services.catalog_cache

    @app.tool(roles=EVERYONE, annotations={"readOnlyHint": True, "openWorldHint": False})
    async def list_sources() -> dict[str, Any]:
        """The data sources query_database(source=...) can read: engine, description, tables with row estimates."""
        listed = []
        times = await profiles.profiled_times(runtime.db)
        for source in runtime.sources.registry:
            entry: dict[str, Any] = {
                "name": source.name,
                "engine": "postgresql",
                "description": source.description,
                "profiled_at": times.get(source.name),
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

        return await cache.page(source_pages(found.name) + runtime.sources.registry.digest, render)

    @app.tool(roles=ADMIN, annotations={"readOnlyHint": True, "openWorldHint": False})
    async def refresh_source(source: str) -> dict[str, Any]:
        """Profile every table of a data source now (rows, null shares, distinct values, ranges, top
        values, roles) and answer the profiles; the background keeps them fresh on start and reload."""
        name, tables = await datasets.refresh_profiles(runtime, source)
        return {"source": name, "tables": tables}

    @app.resource("schema://{source}/{table}", roles=EVERYONE, mime_type=MARKDOWN, name="source_table")
    async def source_table(source: str, table: str) -> str:
        """One table of a data source as a metadata card: rows, sample profiled, and per column its type,
        null share, distinct values, min, max, top values, keys and guessed role."""
        found = runtime.sources.source(source)
        if not runtime.sources.has_engine(found.name):
            raise NotFound(
                f"no resource 'schema://{source[:40]}/{table[:60]}'; the built-in database's tables are at "
                "schema://database/main/{table}"
            )
        stored = [p for p in await profiles.stored(runtime.db, found.name) if p["table"] == table]
        if stored:
            profile = stored[0]
        else:  # not profiled yet (or added since): measured now, for this table only
            async with runtime.sources.use(found.name) as engine:
                profile = await engine.profile(table, profiles.SAMPLE_ROWS)
        return render_profile(found.name, runtime.sources.engine_now(found.name).kind, profile)

    @app.resource(
        "docs://{source}/data_dictionary", roles=EVERYONE, mime_type=MARKDOWN, name="source_data_dictionary"
    )
    async def source_data_dictionary(source: str) -> str:
        """A data source's data dictionary: its description, per table its rows and description, per column
        its type, guessed role, null share, range and description (database comments, operator's file)."""
        found = runtime.sources.source(source)
        if found.name == MAIN:
            if current_identity().role not in ANALYST:
                raise Forbidden(
                    "the built-in database's dictionary needs role analyst or admin, like docs://data_dictionary"
                )
            return render_dictionary()
        written: Descriptions = {}
        if found.descriptions is not None:
            try:
                written = await asyncio.to_thread(read_descriptions, found.descriptions)
            except DescriptionsError as error:
                raise Unavailable(
                    f"source '{found.name}': its descriptions file is invalid ({error}); ask the operator to fix it"
                ) from None
        stored = {p["table"]: p for p in await profiles.stored(runtime.db, found.name)}
        async with runtime.sources.use(found.name) as engine:
            measured = [
                stored.get(table.name) or await engine.profile(table.name, profiles.SAMPLE_ROWS)
                for table in await engine.tables()  # a table not profiled yet is measured now
            ]
            described = merged(await engine.comments(), written)
        return render_data_dictionary(found.name, engine.kind, found.description, measured, described)
