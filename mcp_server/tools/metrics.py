"""query_metrics: questions in business terms ("revenue by country last quarter") answered from a source's
named metrics and dimensions, and metrics://{source}, the definitions those answers use."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

from pydantic import Field

from core.errors import InvalidInput
from mcp_server.app import App
from mcp_server.auth import ANALYST
from sessions.datasets import json_ready
from warehouse.models.definitions import Grain
from warehouse.models.metrics import (
    MOST_LIMIT,
    Comparison,
    DateRange,
    Filter,
    MetricQuery,
    RelativeRange,
    metric_catalogue,
    query_metrics,
)
from warehouse.models.records import get_record
from warehouse.models.run import MainDatabase
from warehouse.models.spec import MetricModel
from warehouse.sources import MAIN

JSON = "application/json"


def register(app: App) -> None:
    runtime = app.runtime

    def model_of(source: str) -> tuple[str, MetricModel]:
        found = runtime.sources.source(source)  # NotFound lists the sources
        model = found.metric_model
        if model is None or not model.metrics:
            raise InvalidInput(
                f"source '{found.name}' has no metric definitions; use query_database(source=...) instead"
            )
        return found.name, model

    @app.tool(roles=ANALYST, name="query_metrics", annotations={"readOnlyHint": True, "openWorldHint": False})
    async def query_metrics_tool(
        source: Annotated[
            str, Field(max_length=100, description="a source with a metric model (list_sources)")
        ],
        metrics: Annotated[
            list[str], Field(min_length=1, max_length=10, description="metric names (metrics://{source})")
        ],
        group_by: Annotated[list[str], Field(max_length=5, description="dimension names")] = [],  # noqa: B006
        filters: Annotated[list[Filter], Field(max_length=10, description="[{dimension, op, value}]")] = [],  # noqa: B006
        time_range: Annotated[
            DateRange | RelativeRange | None,
            Field(description="{start, end} inclusive UTC days, or a relative name counted back from as_of"),
        ] = None,
        grain: Annotated[
            Grain | None, Field(description="split by day, week, month, quarter or year")
        ] = None,
        order_by: Annotated[
            str | None, Field(max_length=101, description="a metric or dimension; prefix - for descending")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=MOST_LIMIT)] = 100,
        compare_to: Annotated[
            Comparison | None,
            Field(description="also the window just before, or the same days a year earlier"),
        ] = None,
        as_of: Annotated[
            dt.date | None,
            Field(description="the day relative ranges count back from (default: latest data)"),
        ] = None,
    ) -> dict[str, Any]:
        """Metrics by dimensions over a time range, from the source's governed definitions (metrics://{source}):
        rows, the SQL run, the definitions used, the resolved dates and notes on any default it chose.
        Ask this first for a figure in business terms; use query_database only when no metric fits."""
        name, model = model_of(source)
        query = MetricQuery(
            metrics=metrics,
            group_by=group_by,
            filters=filters,
            time_range=time_range,
            grain=grain,
            order_by=order_by,
            limit=limit,
            compare_to=compare_to,
            as_of=as_of,
        )
        if name == MAIN:
            answer = await query_metrics(MainDatabase(runtime.db), model, query, source=name)
        else:
            async with runtime.sources.use(name) as engine:
                answer = await query_metrics(engine, model, query, source=name)
        return dict(json_ready(answer))

    @app.tool(roles=ANALYST, name="get_record", annotations={"readOnlyHint": True, "openWorldHint": False})
    async def get_record_tool(
        source: Annotated[
            str, Field(max_length=100, description="a source with a metric model (list_sources)")
        ],
        entity: Annotated[
            str, Field(max_length=100, description="a relation with a key, e.g. customers, orders")
        ],
        key: Annotated[int | str, Field(description="the record's key value")],
    ) -> dict[str, Any]:
        """One record by its key with the rows it points to (an order's customer) and, at most 100 each, the
        rows that point to it (an order's items, payment and shipment); entities are in metrics://{source}."""
        if isinstance(key, str) and len(key) > 200:
            raise InvalidInput("key is longer than 200 characters; pass the record's key value")
        name, model = model_of(source)
        if name == MAIN:
            answer = await get_record(MainDatabase(runtime.db), model, entity, key, source=name)
        else:
            async with runtime.sources.use(name) as engine:
                answer = await get_record(engine, model, entity, key, source=name)
        return dict(json_ready(answer))

    @app.resource("metrics://{source}", roles=ANALYST, mime_type=JSON, name="metric_definitions")
    def metric_definitions(source: str) -> str:
        """A source's named metrics and dimensions with the model version: what query_metrics means by each name."""
        name, model = model_of(source)
        return json.dumps({"source": name, **metric_catalogue(model)}, indent=2)
