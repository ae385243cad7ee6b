"""analyze_data at scale: each analysis through the tool (cold cache) against the best hand-written SQL
query for the same figures and against the naive way (pull the tables into pandas, compute), in one run;
plus the cached repeat.

Usage: python bench/analytics.py [--customers 100000] [--seed 42] [--repeats 5]
Uses TEST_DATABASE_URL / the local PostgreSQL and Redis when reachable, else embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from fastmcp import Client  # noqa: E402
from scipy import stats  # noqa: E402

from bench.common import bench_runtime, pull, scratch_database  # noqa: E402
from mcp_server.app import build_app  # noqa: E402
from mcp_server.auth import Identity  # noqa: E402
from mcp_server.runtime import Runtime  # noqa: E402

# The single best hand-written query an analyst would write for each analysis's headline figures.
HAND_WRITTEN = {
    "churn_rate": """
        SELECT account_type, count(*) AS customers, count(*) FILTER (WHERE is_churned) AS churned
        FROM customers GROUP BY account_type""",
    "arpu": """
        SELECT 'segment' AS level, c.account_type AS key, sum(r.amount) / count(DISTINCT r.customer_id) AS arpu
        FROM revenue r JOIN customers c USING (customer_id) GROUP BY c.account_type
        UNION ALL
        SELECT 'month', to_char(transaction_date, 'YYYY-MM'), sum(amount) / count(DISTINCT customer_id)
        FROM revenue GROUP BY 2
        UNION ALL
        SELECT 'service_type', service_type, sum(amount) / count(DISTINCT customer_id) FROM revenue GROUP BY 2""",
    "network_quality": """
        SELECT event_type, count(*) AS events, avg(network_quality_score) AS mean,
               stddev_samp(network_quality_score) AS sd,
               percentile_cont(ARRAY[0.05, 0.25, 0.5, 0.75, 0.95]) WITHIN GROUP (ORDER BY network_quality_score),
               avg((network_quality_score < 2.5)::int) AS poor_share
        FROM network_events GROUP BY event_type""",
    "correlation": """
        WITH activity AS (
            SELECT customer_id, avg(network_quality_score) AS q, count(*) AS n, sum(data_usage_mb) AS mb
            FROM network_events GROUP BY customer_id),
        payments AS (SELECT customer_id, sum(amount) AS total FROM revenue GROUP BY customer_id),
        features AS (
            SELECT c.age AS a, extract(epoch FROM (coalesce(c.churn_date, now()::timestamp) - c.created_at)) / 86400 AS t,
                   a.q, coalesce(a.n, 0) AS n, coalesce(a.mb, 0) AS mb, coalesce(p.total, 0)::float8 AS r,
                   c.is_churned::int AS ch
            FROM customers c LEFT JOIN activity a USING (customer_id) LEFT JOIN payments p USING (customer_id))
        SELECT corr(a, t), corr(a, q), corr(a, n), corr(a, mb), corr(a, r), corr(a, ch), corr(t, q), corr(t, n),
               corr(t, mb), corr(t, r), corr(t, ch), corr(q, n), corr(q, mb), corr(q, r), corr(q, ch), corr(n, mb),
               corr(n, r), corr(n, ch), corr(mb, r), corr(mb, ch), corr(r, ch)
        FROM features""",
}
TABLES_NEEDED = {
    "churn_rate": ("customers",),
    "arpu": ("customers", "revenue"),
    "network_quality": ("network_events",),
    "correlation": ("customers", "network_events", "revenue"),
}


def naive_churn(tables: dict[str, pd.DataFrame]) -> Any:
    customers = tables["customers"]
    counts = customers.groupby("account_type")["is_churned"].agg(["size", "sum"])
    table = np.column_stack([counts["sum"], counts["size"] - counts["sum"]])
    return counts["sum"] / counts["size"], stats.chi2_contingency(table, correction=False)


def naive_arpu(tables: dict[str, pd.DataFrame]) -> Any:
    revenue = tables["revenue"].merge(tables["customers"][["customer_id", "account_type"]], on="customer_id")
    revenue["amount"] = revenue["amount"].astype(float)
    revenue["month"] = revenue["transaction_date"].dt.strftime("%Y-%m")
    return [
        revenue.groupby(key).apply(lambda g: g["amount"].sum() / g["customer_id"].nunique())
        for key in ("account_type", "month", "service_type")
    ]


def naive_network(tables: dict[str, pd.DataFrame]) -> Any:
    events = tables["network_events"]
    grouped = events.groupby("event_type")["network_quality_score"]
    summary = grouped.describe(percentiles=[0.05, 0.25, 0.5, 0.75, 0.95])
    poor = grouped.apply(lambda s: (s < 2.5).mean())
    groups = [group.to_numpy() for _, group in grouped]
    return summary, poor, stats.f_oneway(*groups), stats.kruskal(*groups)


def naive_correlation(tables: dict[str, pd.DataFrame]) -> Any:
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
    customers = tables["customers"].set_index("customer_id")
    features = customers[["age"]].join(events).join(payments)
    end = customers["churn_date"].fillna(pd.Timestamp.now())
    features["tenure_days"] = (end - customers["created_at"]).dt.total_seconds() / 86400
    features["is_churned"] = customers["is_churned"].astype(int)
    return features.corr()


NAIVE: dict[str, Callable[[dict[str, pd.DataFrame]], Any]] = {
    "churn_rate": naive_churn,
    "arpu": naive_arpu,
    "network_quality": naive_network,
    "correlation": naive_correlation,
}


ROUND_SECONDS = 3.0
MAX_ROUNDS = 40


async def timed(run: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--database-url", help="measure an already loaded database instead (nothing is loaded or dropped)"
    )
    args = parser.parse_args()
    if args.database_url:
        await measure(args.database_url, None, args.repeats)
        return
    async with scratch_database() as url:
        await measure(url, (args.customers, args.seed), args.repeats)


async def measure(url: str, load: tuple[int, int] | None, repeats: int) -> None:
    customers, seed = load if load is not None else (None, 42)
    async with bench_runtime(url, customers, seed) as runtime:
        await run(runtime, repeats)


async def run(runtime: Runtime, repeats: int) -> None:
    app = build_app(runtime, local_identity=Identity("bench", "analyst", "bench"))

    async def clear_cache() -> None:
        async for key in runtime.redis.scan_iter(match=runtime.key("cache", "analysis") + "*", count=1000):
            await runtime.redis.delete(key)

    # Per analysis: (tool cold, hand SQL, hand SQL with JIT off, cached repeat) timings in seconds.
    rounds_run: dict[str, int] = {}
    timings: dict[str, tuple[list[float], list[float], list[float], list[float]]] = {}
    async with Client(app.mcp) as client:

        async def tool(analysis: str) -> None:
            result = await client.call_tool(
                "analyze_data", {"data_source": "database", "analysis_type": analysis}, raise_on_error=True
            )
            assert result.structured_content is not None

        async def hand_written(query: str, jit: bool = True) -> None:
            async with runtime.db.connection(read=True) as conn:
                if jit:
                    await conn.fetch(query)
                    return
                async with conn.transaction():
                    await conn.execute("SET LOCAL jit = off")
                    await conn.fetch(query)

        for analysis, query in HAND_WRITTEN.items():
            await tool(analysis)  # warm-up: plans, connections, imports, table pages in cache
            await clear_cache()
            first = await timed(lambda analysis=analysis: tool(analysis))
            await hand_written(query)
            cold, sql_times, sql_no_jit, cached = [], [], [], []
            # Interleaved, so a burst of load on the machine hits both sides alike; best of `repeats`, or
            # of as many rounds as fit in about ROUND_SECONDS (at most MAX_ROUNDS) for a quick analysis,
            # whose best of a few is mostly the luck of the machine's scheduling.
            rounds = max(repeats, min(MAX_ROUNDS, int(ROUND_SECONDS / max(first, 1e-3))))
            rounds_run[analysis] = rounds
            for _ in range(rounds):
                await clear_cache()
                cold.append(await timed(lambda analysis=analysis: tool(analysis)))
                sql_times.append(await timed(lambda query=query: hand_written(query)))
                sql_no_jit.append(await timed(lambda query=query: hand_written(query, jit=False)))
            for _ in range(20):
                cached.append(await timed(lambda analysis=analysis: tool(analysis)))
            timings[analysis] = (cold, sql_times, sql_no_jit, cached)

    # The naive way: pull each table once (timed), then compute per analysis in pandas/scipy (timed).
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
        "best of the interleaved rounds ("
        + ", ".join(f"{analysis} {rounds}" for analysis, rounds in rounds_run.items())
        + "; median in brackets); cached: best of 20 (median)"
    )
    print(
        f"{'analysis':<16} {'tool (cold)':>20} {'hand SQL':>20} {'tool/SQL':>9} {'SQL jit off':>12} "
        f"{'naive':>8} {'naive/tool':>11} {'cached':>16}"
    )
    for analysis, (cold, sql_times, sql_no_jit, cached) in timings.items():
        started = time.perf_counter()
        NAIVE[analysis](tables)
        naive = time.perf_counter() - started + sum(pull_seconds[t] for t in TABLES_NEEDED[analysis])
        tool_best, sql_best = min(cold), min(sql_times)
        print(
            f"{analysis:<16} {_ms(cold):>20} {_ms(sql_times):>20} {tool_best / sql_best:>8.2f}x "
            f"{min(sql_no_jit) * 1000:>9.1f} ms {naive:>6.2f} s {naive / tool_best:>10.1f}x {_ms(cached, 2):>16}"
        )
    print("targets: tool/SQL <= 1.3x, naive/tool >= 10x, cached < 5 ms")


def _ms(seconds: list[float], digits: int = 1) -> str:
    return f"{min(seconds) * 1000:.{digits}f} ({statistics.median(seconds) * 1000:.{digits}f}) ms"


if __name__ == "__main__":
    asyncio.run(main())
