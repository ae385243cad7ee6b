"""A first look at the data (summary_snapshot) and regenerating or emptying it (generate_data, reset_data,
admin only): the telecom tables (the built-in database, MySQL/MariaDB and files sources) or the shop dataset
(any source)."""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated, Any, Literal

from fastmcp import Context
from pydantic import Field

from core.errors import InvalidInput
from mcp_server import datasets, metrics
from mcp_server.app import App
from mcp_server.auth import ADMIN, ANALYST
from mcp_server.calls import current_identity
from mcp_server.observability import latency_percentiles
from mcp_server.runtime import Runtime
from sessions.datasets import json_ready
from warehouse.db import Progress
from warehouse.generator import GenerationPlan, generate, make_plan
from warehouse.shop import DEFAULT_CUSTOMERS as SHOP_CUSTOMERS
from warehouse.shop import shop_plan
from warehouse.sources import MAIN

Dataset = Literal["telecom", "shop"]
TELECOM_CUSTOMERS = 5_000


def register(app: App) -> None:
    runtime = app.runtime

    @app.tool(roles=ANALYST, annotations={"readOnlyHint": True})
    async def summary_snapshot(
        source: Annotated[str, Field(description="main (the built-in database) or a source's name")] = MAIN,
        dataset: Annotated[
            Dataset | None,
            Field(description="default: telecom on main and on sources with model telecom, else shop"),
        ] = None,
    ) -> dict[str, Any]:
        """Row counts, date ranges, churn rate and revenue total per table: call this first. On another
        source, or main with dataset=shop: rows per table and the last generated window."""
        found = runtime.sources.source(source)  # NotFound (one line) lists the sources
        if dataset is None:
            dataset = "telecom" if found.name == MAIN or found.model == "telecom" else "shop"
        if found.name != MAIN or dataset == "shop":
            return await datasets.summary(runtime, found.name, dataset)
        row = await runtime.db.fetchrow_named("summary_snapshot")
        assert row is not None
        customers = row["customers"] or 0
        churned = row["churned_customers"] or 0
        snapshot = {
            "tables": {
                "customers": {
                    "rows": customers,
                    "created_at": {
                        "min": row["customers_first_created"],
                        "max": row["customers_last_created"],
                    },
                    "churned": churned,
                    "churn_rate": (churned / customers) if customers else None,
                },
                "network_events": {
                    "rows": row["network_events"],
                    "event_timestamp": {"min": row["events_first"], "max": row["events_last"]},
                    "mean_network_quality": row["mean_network_quality"],
                },
                "revenue": {
                    "rows": row["revenue_rows"],
                    "transaction_date": {"min": row["revenue_first"], "max": row["revenue_last"]},
                    "total": row["revenue_total"],
                },
            },
            "data_version": await runtime.db.data_version(),
        }
        if current_identity().is_admin:  # every caller's latency: only admins see it
            snapshot["latency_ms"] = latency_percentiles(metrics.tool_durations(runtime.metrics))
        answer: dict[str, Any] = json_ready(snapshot)
        return answer

    @app.tool(roles=ADMIN, annotations={"destructiveHint": True})
    async def generate_data(
        dataset: Annotated[
            Dataset, Field(description="telecom (main, MySQL/MariaDB, files) or shop (any source)")
        ] = "telecom",
        source: Annotated[
            str, Field(description="where to load: main (shop: its schema shop) or a source with a write_url")
        ] = MAIN,
        customers: Annotated[
            int | None,
            Field(ge=1, le=2_000_000, description="number of customers (telecom 5000, shop 20000)"),
        ] = None,
        seed: Annotated[int, Field(ge=0, le=2**62, description="same seed, same rows")] = 42,
        start_date: Annotated[str | None, Field(description="YYYY-MM-DD, default 2024-01-01")] = None,
        end_date: Annotated[str | None, Field(description="YYYY-MM-DD, default 2025-12-31")] = None,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        """Replace a dataset with deterministic synthetic data (same arguments, same rows; caches invalidated,
        profiles refreshed), with progress notifications: telecom (customers, revenue, network_events) in
        the built-in database or a MySQL/MariaDB or files source, or the shop (products, customers, orders,
        order_items, payments, shipments) in any source; other than main, the source needs a write_url."""
        found = runtime.sources.source(source)  # NotFound (one line) before anything starts
        if dataset == "shop":
            planned = shop_plan(
                SHOP_CUSTOMERS if customers is None else customers, seed, start_date, end_date
            )
            load = functools.partial(datasets.generate_shop, runtime, found.name, planned)
        else:
            datasets.check_telecom_source(found)
            plan = make_plan(customers or TELECOM_CUSTOMERS, seed, start_date, end_date)
            if found.name == MAIN:
                load = functools.partial(load_generated, runtime, plan)
            else:
                load = functools.partial(datasets.generate_telecom, runtime, found.name, plan)
        if ctx is not None:
            await ctx.report_progress(0, 100, "generating")
        progress_updates: list[asyncio.Future[Any]] = []
        loop = asyncio.get_running_loop()

        def report(stage: str, done: int, total: int) -> None:
            assert ctx is not None
            progress_updates.append(
                asyncio.ensure_future(ctx.report_progress(done, total, f"loaded {stage}"))
            )

        def progress(stage: str, done: int, total: int) -> None:
            if ctx is not None:  # the shop reports from a worker thread too (files sources)
                loop.call_soon_threadsafe(report, stage, done, total)

        answer = await load(progress)
        await asyncio.sleep(0)  # the last reports queued from a thread are sent too
        await asyncio.gather(*progress_updates, return_exceptions=True)
        return answer

    @app.tool(roles=ADMIN, annotations={"destructiveHint": True})
    async def reset_data(
        source: Annotated[
            str, Field(description="main (its schema shop) or a source with a write_url")
        ] = MAIN,
        dataset: Annotated[
            Dataset, Field(description="shop (any source) or telecom (main, MySQL/MariaDB, files)")
        ] = "shop",
        confirm: Annotated[
            bool, Field(description="must be true: every table of the dataset is emptied")
        ] = False,
    ) -> dict[str, Any]:
        """Empty every table of a dataset in a source (children first): the shop in main's schema shop or a
        source with a write_url, or the telecom tables of main or a MySQL/MariaDB or files source with a
        write_url; answers each table's row count before and after. Refused unless confirm=true."""
        found = runtime.sources.source(source)  # NotFound (one line) lists the sources
        if not confirm:
            raise InvalidInput(
                f"reset_data empties every {dataset} table of source '{found.name}'; nothing was changed: "
                "call it again with confirm=true"
            )
        return await datasets.reset(runtime, found.name, dataset)


async def load_generated(
    runtime: Runtime, plan: GenerationPlan, progress: Progress | None = None
) -> dict[str, Any]:
    """Generate `plan`'s data and load it in place of the analytics tables (generate_data, and the read
    API's generate and reset); what was derived from the old data is dropped."""
    data = await asyncio.to_thread(generate, plan)
    report = await runtime.db.replace_data(data, progress=progress)
    await runtime.services.data_replaced()
    return {
        "customers": report.customers,
        "network_events": report.network_events,
        "revenue": report.revenue,
        **datasets.load_answer(report.rows, report.seconds, plan),
        "data_version": await runtime.db.data_version(),
    }
