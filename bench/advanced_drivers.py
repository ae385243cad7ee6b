"""describe, churn_drivers and retention at scale: each through analyze_data (cold cache) against the naive
way (pull the raw tables into pandas, aggregate there, then run the same statistics), in one run.

Usage: python bench/advanced_drivers.py [--customers 100000] [--seed 42] [--repeats 3]
Uses TEST_DATABASE_URL / the local PostgreSQL and Redis when reachable, else embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
from fastmcp import Client  # noqa: E402

from analytics.describe import describe  # noqa: E402
from analytics.drivers import churn_drivers_of_table  # noqa: E402
from analytics.parameters import DRIVERS, ChurnDriversParameters, RetentionParameters  # noqa: E402
from analytics.survival import retention_of_frame  # noqa: E402
from bench.common import bench_runtime, best_of, pull, scratch_database  # noqa: E402
from mcp_server.auth import Identity  # noqa: E402
from mcp_server.runtime import Runtime  # noqa: E402
from mcp_server.server import build_app  # noqa: E402
from warehouse import sql  # noqa: E402
from warehouse.aggregates import statement  # noqa: E402

TARGET_SECONDS = 5.0
# (label, analysis_type, parameters, tables the naive way pulls)
CASES: list[tuple[str, str, dict[str, Any], tuple[str, ...]]] = [
    ("describe customers", "describe", {"table": "customers"}, ("customers",)),
    ("describe network_events", "describe", {"table": "network_events"}, ("network_events",)),
    ("churn_drivers", "churn_drivers", {}, ("customers", "network_events", "revenue")),
    (
        "churn_drivers + boosting",
        "churn_drivers",
        {"gradient_boosting": True},
        ("customers", "network_events", "revenue"),
    ),
    ("retention", "retention", {}, ("customers",)),
]


def naive_features(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The per-customer feature matrix built in pandas from the raw rows."""
    customers = tables["customers"].set_index("customer_id")
    events = (
        tables["network_events"]
        .groupby("customer_id")
        .agg(
            avg_network_quality=("network_quality_score", "mean"),
            event_count=("network_quality_score", "size"),
            total_data_usage_mb=("data_usage_mb", "sum"),
        )
    )
    revenue = tables["revenue"].assign(amount=tables["revenue"]["amount"].astype(float))
    payments = revenue.groupby("customer_id").agg(total_revenue=("amount", "sum"))
    features = customers[["age", "account_type"]].join(events).join(payments)
    as_of = max(
        customers["created_at"].max(),
        customers["churn_date"].max(),
        tables["network_events"]["event_timestamp"].max(),
        tables["revenue"]["transaction_date"].max(),
    )
    end = customers["churn_date"].fillna(as_of)
    features["tenure_days"] = (end - customers["created_at"]).dt.total_seconds() / 86400
    features["is_churned"] = customers["is_churned"].astype(float)
    for name in ("age", "event_count", "total_data_usage_mb", "total_revenue"):
        features[name] = features[name].fillna(0).astype(float)
    return features.sort_index()[["is_churned", *DRIVERS]]


def naive(label: str, parameters: dict[str, Any], tables: dict[str, pd.DataFrame]) -> Any:
    if label.startswith("describe"):
        return describe(tables[parameters["table"]])
    if label.startswith("churn_drivers"):
        return churn_drivers_of_table(naive_features(tables), ChurnDriversParameters(**parameters))
    return retention_of_frame(tables["customers"], RetentionParameters(**parameters))


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    async with scratch_database() as url, bench_runtime(url, args.customers, args.seed) as runtime:
        await run(runtime, args.repeats)


async def run(runtime: Runtime, repeats: int) -> None:
    app = build_app(runtime, local_identity=Identity("bench", "analyst", "bench"))

    async def clear_cache() -> None:
        async for key in runtime.redis.scan_iter(match=runtime.key("cache", "analysis") + "*", count=1000):
            await runtime.redis.delete(key)

    measured: list[tuple[str, float, int]] = []
    async with Client(app.mcp) as client:
        for label, analysis, parameters, _ in CASES:

            async def tool(
                analysis: str = analysis, parameters: dict[str, Any] = parameters
            ) -> dict[str, Any]:
                result = await client.call_tool(
                    "analyze_data",
                    {"data_source": "database", "analysis_type": analysis, "parameters": parameters},
                    raise_on_error=True,
                )
                assert result.structured_content is not None
                return result.structured_content

            await clear_cache()
            answer = await tool()  # warm-up: plans, connections, imports
            seconds = await best_of(repeats, tool, clear_cache)
            measured.append((label, seconds, len(answer["metadata"]["sql"] or [])))

    # The rows each tool run brings into Python, counted by running its statements once more.
    brought: dict[str, int] = {}
    async with runtime.db.connection() as conn:
        as_of = await conn.fetchval(
            "SELECT greatest((SELECT max(created_at) FROM customers), (SELECT max(churn_date) FROM customers),"
            " (SELECT max(event_timestamp) FROM network_events), (SELECT max(transaction_date) FROM revenue))"
        )
        brought["churn_drivers"] = len(await conn.fetch(sql.load("analysis_driver_features"), as_of))
        lifetimes = statement("analysis_retention_lifetimes", segment='c."account_type"')
        brought["retention"] = len(await conn.fetch(lifetimes, as_of)) + len(
            await conn.fetch(sql.load("analysis_retention_cohorts"), as_of)
        )

    tables: dict[str, pd.DataFrame] = {}
    pull_seconds: dict[str, float] = {}
    for table in ("customers", "revenue", "network_events"):
        tables[table], pull_seconds[table] = await pull(runtime, table)
    print(
        "naive pulls: "
        + ", ".join(f"{t} {s:.2f} s ({len(tables[t]):,} rows)" for t, s in pull_seconds.items())
    )
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(
        f"{'analysis':<26} {'tool (cold)':>12} {'naive':>9} {'naive/tool':>11} {'rows into Python':>17} "
        f"{'< 5 s':>6}"
    )
    cases = {label: (parameters, needed) for label, _, parameters, needed in CASES}
    for label, seconds, statements in measured:
        parameters, needed = cases[label]
        naive_seconds = _timed(lambda: naive(label, parameters, tables)) + sum(
            pull_seconds[t] for t in needed
        )
        rows = brought.get(label.split(" ")[0], statements)
        print(
            f"{label:<26} {seconds * 1000:>9.0f} ms {naive_seconds:>7.2f} s {naive_seconds / seconds:>10.1f}x "
            f"{rows:>17,} {'yes' if seconds < TARGET_SECONDS else 'NO':>6}"
        )
    print(
        "rows into Python: the per-customer matrix (churn_drivers), per-(segment, day, churned) and per-"
        "(cohort, months) counts (retention), one row per column statement (describe)"
    )


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


if __name__ == "__main__":
    asyncio.run(main())
