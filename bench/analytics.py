"""analyze_data at scale: each analysis through the tool (cold cache) against the median of its best
hand-written SQL (the statements it needs, run plainly with asyncpg) and against the naive way (pull the
tables into pandas, compute there), plus the cached repeat, in one run; targets with PASS/MISS.

Usage: python bench/analytics.py [--customers 100000] [--seed 42] [--repeats 3] [--only churn_rate arpu]
                                 [--model telecom|shop|all] [--shop-customers 20000]
                                 [--shop-engines postgresql mariadb duckdb]
(--customers 1000000 for the large target; that run loads 39 million rows and takes a quarter of an hour.)
--model all (the default) also runs the modelled analyses on the generated shop (metric model `shop`), each
against its hand-written SQL (bench/shop_analytics.py), in PostgreSQL, in MariaDB (a scratch database read
by a SELECT-only user, dropped at the end) and as Parquet files read by DuckDB: all three unless
--shop-engines names fewer; --model telecom or shop runs one of the two.
Uses TEST_DATABASE_URL / the local PostgreSQL and Redis when reachable, else embedded ones; MariaDB at
BENCH_MYSQL_URL (default mysql://root@127.0.0.1:3306/), its shop run skipped when nothing answers there.
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

import asyncpg  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from fastmcp import Client  # noqa: E402
from scipy import stats  # noqa: E402

from analytics.describe import describe  # noqa: E402
from analytics.drivers import churn_drivers_of_table  # noqa: E402
from analytics.parameters import ChurnDriversParameters, RetentionParameters  # noqa: E402
from analytics.survival import retention_of_frame  # noqa: E402
from bench.advanced_drivers import naive_features  # noqa: E402
from bench.advanced_trends import naive_anomalies, naive_compare, naive_forecast, naive_trend  # noqa: E402
from bench.common import bench_runtime, pull, scratch_database  # noqa: E402
from bench.shop_analytics import CASES as SHOP_CASES  # noqa: E402
from bench.shop_analytics import ENGINES as SHOP_ENGINES  # noqa: E402
from bench.shop_analytics import measure_shop, print_table  # noqa: E402
from mcp_server.auth import Identity  # noqa: E402
from mcp_server.runtime import Runtime  # noqa: E402
from mcp_server.server import build_app  # noqa: E402
from warehouse import sql  # noqa: E402
from warehouse.db import ANALYSIS_SETTINGS  # noqa: E402

# Per analysis: (analysis_type, parameters, the tables its naive way pulls). Parameters are the defaults:
# trend and forecast: ARPU by month (6 months ahead); anomalies: mean quality by day; segment_compare: ARPU
# by account_type; describe: the customers table.
CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("churn_rate", {}, ("customers",)),
    ("arpu", {}, ("customers", "revenue")),
    ("network_quality", {}, ("network_events",)),
    ("correlation", {}, ("customers", "network_events", "revenue")),
    ("trend", {}, ("revenue",)),
    ("anomalies", {}, ("network_events",)),
    ("segment_compare", {}, ("customers", "revenue")),
    ("forecast", {}, ("revenue",)),
    ("retention", {}, ("customers",)),
    ("churn_drivers", {}, ("customers", "network_events", "revenue")),
    ("describe", {}, ("customers",)),
]
AS_OF = object()  # stands for the latest instant in the data, read first by analyses that need it
# The arguments each statement the analysis reports (metadata.sql, in order) is run with: the defaults mean
# no date range ($n = NULL), the as_of instant, or the time bucket.
ARGUMENTS: dict[str, list[tuple[Any, ...]]] = {
    "churn_rate": [(None,)],
    "arpu": [(None, None, None), (None, None), (None, None)],
    "network_quality": [(None, None, None)],
    "correlation": [(AS_OF,)],
    "trend": [("month", None, None)],
    "anomalies": [("day", None, None)],
    "segment_compare": [(None, None, None)],
    "forecast": [("month", None, None)],
    "retention": [(AS_OF,), (AS_OF,)],
    "churn_drivers": [(AS_OF,)],
    "describe": [()] * 20,  # no arguments; one statement per column plus the row count
}
# Another formulation an analyst would write for the same headline figures: one statement (from the bench
# this one replaced); each is timed too, with server defaults and with JIT off, and the fastest counts.
SINGLE_STATEMENT = {
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
NEEDS_AS_OF = {analysis for analysis, calls in ARGUMENTS.items() if any(AS_OF in call for call in calls)}


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
    groups = [group.dropna().to_numpy() for _, group in grouped]
    return summary, poor, stats.f_oneway(*groups), stats.kruskal(*groups)


def naive_correlation(tables: dict[str, pd.DataFrame]) -> Any:
    return naive_features(tables).drop(columns="account_type").corr()


NAIVE: dict[str, Callable[[dict[str, pd.DataFrame]], Any]] = {
    "churn_rate": naive_churn,
    "arpu": naive_arpu,
    "network_quality": naive_network,
    "correlation": naive_correlation,
    "trend": lambda tables: naive_trend(tables, "arpu", "month"),
    "anomalies": lambda tables: naive_anomalies(tables, "quality", "day"),
    "segment_compare": lambda tables: naive_compare(tables, "arpu", "account_type"),
    "forecast": lambda tables: naive_forecast(tables, "arpu", "month", 6),
    "retention": lambda tables: retention_of_frame(tables["customers"], RetentionParameters()),
    "churn_drivers": lambda tables: churn_drivers_of_table(naive_features(tables), ChurnDriversParameters()),
    "describe": lambda tables: describe(tables["customers"]),
}

# A quick analysis runs as many interleaved rounds as fit in about ROUND_SECONDS (at most MAX_ROUNDS).
ROUND_SECONDS = 3.0
MAX_ROUNDS = 40
CACHED_REPEATS = 20


async def timed(run: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds at least (slow analyses)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted({case[0] for case in CASES} | {case[0] for case in SHOP_CASES}),
        help="these analyses only",
    )
    parser.add_argument(
        "--model",
        choices=["telecom", "shop", "all"],
        default="all",
        help="the telecom tables, the shop, or both",
    )
    parser.add_argument("--shop-customers", type=int, default=20_000, help="customers of the generated shop")
    parser.add_argument(
        "--shop-engines",
        nargs="+",
        choices=SHOP_ENGINES,
        default=list(SHOP_ENGINES),
        help="where the shop is loaded: PostgreSQL schema shop, a MariaDB database, Parquet files read by DuckDB",
    )
    parser.add_argument(
        "--database-url", help="measure an already loaded database instead (nothing is loaded or dropped)"
    )
    args = parser.parse_args()
    cases = [case for case in CASES if not args.only or case[0] in args.only]
    print(f"load average before: {_load()}")
    if args.model in ("telecom", "all") and cases:
        if args.database_url:
            await measure(args.database_url, None, cases, args.repeats)
        else:
            async with scratch_database() as url:
                await measure(url, (args.customers, args.seed), cases, args.repeats)
    if args.model in ("shop", "all"):
        for engine in args.shop_engines:
            shop = await measure_shop(args.shop_customers, args.seed, args.repeats, args.only, engine)
            if shop:
                print_table(shop, args.shop_customers, engine)
    print(f"load average after: {_load()}")


async def measure(
    url: str,
    load: tuple[int, int] | None,
    cases: list[tuple[str, dict[str, Any], tuple[str, ...]]],
    repeats: int,
) -> None:
    customers, seed = load if load is not None else (None, 42)
    async with bench_runtime(url, customers, seed) as runtime:
        customers = await runtime.db.row_count("customers")
        # Hand-written SQL runs on the bench's own asyncpg pools: server defaults, and the analysis pool's
        # connection settings (JIT off, a larger work_mem); whichever is faster counts.
        async with (
            asyncpg.create_pool(url, min_size=2, max_size=12) as plain,
            asyncpg.create_pool(url, min_size=2, max_size=12, server_settings=ANALYSIS_SETTINGS) as tuned,
        ):
            await run(runtime, {"defaults": plain, "jit off": tuned}, cases, repeats, customers)


async def run(
    runtime: Runtime,
    pools: dict[str, asyncpg.Pool],
    cases: list[tuple[str, dict[str, Any], tuple[str, ...]]],
    repeats: int,
    customers: int,
) -> None:
    app = build_app(runtime, local_identity=Identity("bench", "analyst", "bench"))

    async def clear_cache() -> None:
        async for key in runtime.redis.scan_iter(match=runtime.key("cache", "analysis") + "*", count=1000):
            await runtime.redis.delete(key)

    # Per analysis: tool cold, each hand-written formulation, cached repeat (seconds), and the rounds run.
    results: dict[str, tuple[list[float], dict[str, list[float]], list[float]]] = {}
    async with Client(app.mcp) as client:
        for analysis, parameters, _ in cases:

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
            started = time.perf_counter()
            result = await client.call_tool(  # warm-up: plans, connections, imports, table pages in cache
                "analyze_data",
                {
                    "data_source": "database",
                    "analysis_type": analysis,
                    "parameters": parameters,
                    "include_sql": True,
                },
                raise_on_error=True,
            )
            first = time.perf_counter() - started
            texts = result.structured_content["metadata"]["sql"]
            formulations = hand_written(analysis, texts, pools)
            for run_sql in formulations.values():
                await run_sql()  # warm-up too
            rounds = max(repeats, min(MAX_ROUNDS, int(ROUND_SECONDS / max(first, 1e-3))))
            # Interleaved rounds, so a burst of load from elsewhere on the machine hits every side alike.
            cold: list[float] = []
            sql_times: dict[str, list[float]] = {name: [] for name in formulations}
            for _ in range(rounds):
                await clear_cache()
                cold.append(await timed(tool))
                for name, run_sql in formulations.items():
                    sql_times[name].append(await timed(run_sql))
            cached = [await timed(tool) for _ in range(CACHED_REPEATS)]
            results[analysis] = (cold, sql_times, cached)
            best = min(sql_times, key=lambda name: statistics.median(sql_times[name]))
            print(
                f"  {analysis}: {rounds} rounds, tool {_ms(cold)}, best SQL ({best}) {_ms(sql_times[best])}",
                flush=True,
            )

    # The naive way: pull each table once (timed), then compute per analysis in pandas/scipy (timed).
    tables: dict[str, pd.DataFrame] = {}
    pull_seconds: dict[str, float] = {}
    for table in sorted({table for case in cases for table in case[2]}):
        tables[table], pull_seconds[table] = await pull(runtime, table)
    print(
        "naive pulls: "
        + ", ".join(f"{t} {s:.2f} s ({len(tables[t]):,} rows)" for t, s in pull_seconds.items())
    )
    bound = 1.2 if customers >= 1_000_000 else 1.5
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{customers:,} customers"
    )
    print("times in ms: median of the interleaved rounds (best in brackets); cached: median of 20 (best)")
    print(
        f"{'analysis':<16} {'rounds':>6} {'tool (cold)':>17} {'best hand SQL':>17} {'formulation':>26} "
        f"{'tool/SQL':>9} {'naive s':>8} {'naive/tool':>11} {'cached':>14}"
    )
    verdicts = []
    for analysis, _, needed in cases:
        cold, sql_times, cached = results[analysis]
        best = min(sql_times, key=lambda name: statistics.median(sql_times[name]))
        tool_median, sql_median = statistics.median(cold), statistics.median(sql_times[best])
        started = time.perf_counter()
        NAIVE[analysis](tables)
        naive = time.perf_counter() - started + sum(pull_seconds[t] for t in needed)
        ratio, speedup, repeat = tool_median / sql_median, naive / tool_median, statistics.median(cached)
        verdicts.append((ratio <= bound, speedup >= 10, repeat <= 0.003))
        print(
            f"{analysis:<16} {len(cold):>6} {_ms(cold):>17} {_ms(sql_times[best]):>17} {best:>26} "
            f"{ratio:>8.2f}x {naive:>8.2f} {speedup:>10.1f}x {_ms(cached, 2):>14}",
            flush=True,
        )
    for label, target, column in (
        (f"tool/SQL <= {bound}x", "each analysis", 0),
        ("naive/tool >= 10x", "each analysis", 1),
        ("cached repeat <= 3 ms", "each analysis", 2),
    ):
        missed = [case[0] for case, verdict in zip(cases, verdicts, strict=True) if not verdict[column]]
        print(f"target {label} ({target}): " + ("PASS" if not missed else "MISS: " + ", ".join(missed)))


def hand_written(
    analysis: str, texts: list[str], pools: dict[str, asyncpg.Pool]
) -> dict[str, Callable[[], Awaitable[None]]]:
    """The hand-written SQL for an analysis, by formulation: the statements the analysis runs (as it reports
    them), run plainly with asyncpg side by side on the JIT-off pool (after the as_of read where needed), and
    the single statement where there is one, on either pool."""
    calls = ARGUMENTS[analysis][: len(texts)]
    assert len(calls) == len(texts), f"{analysis}: {len(texts)} statements, {len(calls)} argument lists"

    async def statements() -> None:
        pool = pools["jit off"]
        as_of = await pool.fetchval(sql.load("analysis_as_of")) if analysis in NEEDS_AS_OF else None
        await asyncio.gather(
            *(
                pool.fetch(text, *(as_of if value is AS_OF else value for value in call))
                for text, call in zip(texts, calls, strict=True)
            )
        )

    formulations: dict[str, Callable[[], Awaitable[None]]] = {"its statements, jit off": statements}
    if analysis in SINGLE_STATEMENT:
        for name, pool in pools.items():

            async def single(pool: asyncpg.Pool = pool) -> None:
                await pool.fetch(SINGLE_STATEMENT[analysis])

            formulations[f"one statement, {name}"] = single
    return formulations


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _ms(seconds: list[float], digits: int = 1) -> str:
    return f"{statistics.median(seconds) * 1000:.{digits}f} ({min(seconds) * 1000:.{digits}f})"


if __name__ == "__main__":
    asyncio.run(main())
