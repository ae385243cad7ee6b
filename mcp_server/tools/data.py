"""A first look at the data (summary_snapshot) and regenerating it (generate_data, admin only)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastmcp import Context
from pydantic import Field

from mcp_server import metrics
from mcp_server.app import App
from mcp_server.auth import ADMIN, ANALYST, current_identity
from mcp_server.observability import latency_percentiles
from sessions.datasets import json_ready
from warehouse.generator import generate, make_plan


def register(app: App) -> None:
    runtime = app.runtime

    @app.tool(roles=ANALYST, annotations={"readOnlyHint": True})
    async def summary_snapshot() -> dict[str, Any]:
        """Row counts, date ranges, churn rate and revenue total per table: call this first."""
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
        customers: Annotated[int, Field(ge=1, le=2_000_000, description="number of customers")] = 5_000,
        seed: Annotated[int, Field(ge=0, le=2**62, description="same seed, same rows")] = 42,
        start_date: Annotated[str | None, Field(description="YYYY-MM-DD, default 2024-01-01")] = None,
        end_date: Annotated[str | None, Field(description="YYYY-MM-DD, default 2025-12-31")] = None,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        """Replace all analytics data with deterministic synthetic data (one transaction; caches invalidated)."""
        plan = make_plan(customers, seed, start_date, end_date)
        if ctx is not None:
            await ctx.report_progress(0, 100, "generating")
        data = await asyncio.to_thread(generate, plan)
        progress_updates: list[asyncio.Future[Any]] = []

        def progress(stage: str, done: int, total: int) -> None:
            if ctx is not None:
                progress_updates.append(
                    asyncio.ensure_future(ctx.report_progress(done, total, f"loaded {stage}"))
                )

        report = await runtime.db.replace_data(data, progress=progress)
        await asyncio.gather(*progress_updates, return_exceptions=True)
        await runtime.services.data_replaced()
        return {
            "customers": report.customers,
            "network_events": report.network_events,
            "revenue": report.revenue,
            "rows": report.rows,
            "seconds": round(report.seconds, 3),
            "rows_per_second": round(report.rows / report.seconds) if report.seconds else None,
            "seed": plan.seed,
            "start_date": plan.start_date.isoformat(),
            "end_date": plan.end_date.isoformat(),
            "data_version": await runtime.db.data_version(),
        }
