"""Resources and prompts: the live schema, the data dictionary, analysis templates, sessions, guided workflows."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastmcp.resources import TextResource
from fastmcp.server.middleware import Middleware, MiddlewareContext
from pydantic import AnyUrl, Field

from core.errors import AnalyticsError, NotFound
from mcp_server.app import App
from mcp_server.auth import ANALYST, EVERYONE
from mcp_server.calls import current_call, current_identity
from mcp_server.edge import REDIS_DOWN
from mcp_server.runtime import Runtime
from prompts import workflows
from resources.dictionary import render_dictionary
from resources.schema import render_schema, render_table
from sessions.datasets import json_ready
from sessions.store import SessionStore
from warehouse import catalog
from warehouse.sources import MAIN

MARKDOWN = "text/markdown"
JSON = "application/json"
SAMPLE_ROWS = 5


# Prompt parameters are annotated inline: FastMCP turns a prompt's string arguments into values with
# TypeAdapters of the (string) annotations, which do not see a module-level alias of ours.


class SessionResources(Middleware):
    """Lists the caller's live sessions as `session://{id}` resources, so a client that browses
    resources sees an agent's context (reading one goes through the session:// template)."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    async def on_list_resources(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        resources = list(await call_next(context))
        call = current_call()
        if call is None or call.identity is None:
            return resources
        try:
            listed = await self.store.list_sessions(call.identity)
        except (AnalyticsError, *REDIS_DOWN):
            return resources  # the store is unavailable: the static resources are still listed
        for session in listed["sessions"]:
            keys = ", ".join(item["key"] for item in session["keys"][:8]) or "no keys yet"
            resources.append(
                TextResource(
                    uri=AnyUrl(f"session://{session['session_id']}"),
                    name=f"session {session['session_id'][:8]} ({session['data_source'][:40]})",
                    description=f"owner {session['owner_id']}, expires {session['expires_at']}; keys: {keys}",
                    mime_type=JSON,
                    text="",  # never served from here: reads resolve through the session:// template
                )
            )
        return resources


def _model_support(runtime: Runtime, analysis: str) -> dict[str, Any]:
    """Per source with a metric model (main keeps its own parameters above): whether its model serves
    `analysis` pushed down into its engine, with which segments, or which part of the model is missing."""
    from warehouse.models.run import MODELLED, model_support

    support: dict[str, Any] = {}
    for source in runtime.sources.registry:
        if source.name == MAIN or source.metric_model is None:
            continue
        model = source.metric_model
        if analysis in MODELLED:
            entry = model_support(model)[analysis]
        else:
            entry = {"supported": False, "missing": "not a modelled analysis; name the columns instead"}
        support[source.name] = {"model": model.name, "model_version": model.version, **entry}
    return support


def register(app: App) -> None:
    runtime = app.runtime
    cache = runtime.services.catalog_cache

    @app.resource("schema://database/main", roles=ANALYST, mime_type=MARKDOWN, name="database_schema")
    async def database_schema() -> str:
        """Every analytics table: columns, types, nullability, defaults, checks, keys, indexes, row estimates."""

        async def render() -> str:
            return render_schema(await catalog.describe_tables(runtime.db))

        return await cache.page("schema", render)

    @app.resource("schema://database/main/{table}", roles=ANALYST, mime_type=MARKDOWN, name="table_schema")
    async def table_schema(table: str) -> str:
        """One analytics table in full, with a few sample rows (customers, network_events or revenue)."""
        name = catalog.check_table(table)

        async def render() -> str:
            (described,) = await catalog.describe_tables(runtime.db, [name])
            return render_table(described, await catalog.sample_rows(runtime.db, described, SAMPLE_ROWS))

        return await cache.page(f"table:{name}", render)

    @app.resource("docs://data_dictionary", roles=ANALYST, mime_type=MARKDOWN, name="data_dictionary")
    def data_dictionary() -> str:
        """What every column means (units, allowed values) and the business rules: churn, ARPU, quality, tenure."""
        return render_dictionary()

    @app.resource("templates://analysis/{type}", roles=ANALYST, mime_type=JSON, name="analysis_template")
    def analysis_template(type: str) -> str:
        """The parameters an analyze_data analysis type takes, with types, defaults, allowed values and an example."""
        from analytics.parameters import templates

        known = templates()
        if type not in known:
            shown = type[:40]
            raise NotFound(
                f"no analysis type '{shown}'; known types: {', '.join(sorted(known))} "
                "(read templates://analysis/<type>)"
            )
        template = dict(known[type])
        template["on_modelled_sources"] = _model_support(runtime, type)
        return json.dumps(json_ready(template), indent=2)

    @app.resource("session://{session_id}", roles=EVERYONE, mime_type=JSON, name="session")
    async def session(session_id: str) -> str:
        """A session you may read: its metadata and the keys (datasets, analyses, charts, values) it holds."""
        described = await runtime.services.session_store.describe(current_identity(), session_id)
        return json.dumps(json_ready(described), indent=2)

    @app.prompt(roles=ANALYST)
    def churn_analysis(
        segment: Annotated[
            str | None,
            Field(description="account_type (default), gender, location, age_band or tenure_band"),
        ] = None,
        start_date: Annotated[str | None, Field(description="first day, YYYY-MM-DD")] = None,
        end_date: Annotated[str | None, Field(description="last day, YYYY-MM-DD")] = None,
        focus: Annotated[
            str | None,
            Field(description="segments (compare groups) or drivers (what goes with churn); default both"),
        ] = None,
    ) -> str:
        """Step by step: churn rate by segment with confidence intervals, its drivers, a chart, saved in a session."""
        return workflows.churn_analysis(segment, start_date, end_date, focus)

    @app.prompt(roles=ANALYST)
    def network_analysis(
        segment: Annotated[
            str | None,
            Field(
                description="event_type (default), account_type, gender, location, age_band or hour_of_day"
            ),
        ] = None,
        start_date: Annotated[str | None, Field(description="first day, YYYY-MM-DD")] = None,
        end_date: Annotated[str | None, Field(description="last day, YYYY-MM-DD")] = None,
        focus: Annotated[
            str | None,
            Field(
                description="quality (where it is poor) or churn (does poor quality drive churn); default both"
            ),
        ] = None,
    ) -> str:
        """Step by step: network quality by segment, poor-quality share, its link to churn, a chart, saved."""
        return workflows.network_analysis(segment, start_date, end_date, focus)

    @app.prompt(roles=ANALYST)
    def revenue_optimization(
        segment: Annotated[
            str | None,
            Field(description="account_type (default), gender, location, age_band or tenure_band"),
        ] = None,
        start_date: Annotated[str | None, Field(description="first day, YYYY-MM-DD")] = None,
        end_date: Annotated[str | None, Field(description="last day, YYYY-MM-DD")] = None,
        focus: Annotated[
            str | None,
            Field(
                description="arpu, trend (month by month) or retention (revenue lost to churn); default all"
            ),
        ] = None,
    ) -> str:
        """Step by step: ARPU by segment and month, revenue lost to churn, a trend chart, saved in a session."""
        return workflows.revenue_optimization(segment, start_date, end_date, focus)

    @app.prompt(roles=ANALYST)
    def explore_dataset(
        table: Annotated[
            str | None,
            Field(description="customers (default), network_events or revenue"),
        ] = None,
    ) -> str:
        """A first look at one table: its schema and meaning, its distributions, a chart, notes kept in a session."""
        return workflows.explore_dataset(table)
