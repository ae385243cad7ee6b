"""trend, anomalies and segment_compare at scale: each through the analyze_data tool (cold cache) against the
naive way (pull the tables into pandas, aggregate and test there), in one run.

Usage: python bench/advanced_trends.py [--customers 100000] [--seed 42] [--repeats 3]
Uses TEST_DATABASE_URL / the local PostgreSQL and Redis when reachable, else embedded ones.
Targets: every analysis under 5 s through the tool; the ratio naive/tool is printed for each.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import statsmodels.api as sm  # noqa: E402
from fastmcp import Client  # noqa: E402
from scipy import stats  # noqa: E402
from statsmodels.tsa.seasonal import STL  # noqa: E402

from bench.common import bench_runtime, best_of, pull, scratch_database  # noqa: E402
from mcp_server.auth import Identity  # noqa: E402
from mcp_server.runtime import Runtime  # noqa: E402
from mcp_server.server import build_app  # noqa: E402

CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("trend", {"metric": "arpu", "grain": "month"}, ("revenue",)),
    ("trend", {"metric": "quality", "grain": "day"}, ("network_events",)),
    ("trend", {"metric": "usage", "grain": "week"}, ("network_events",)),
    ("trend", {"metric": "churn", "grain": "week"}, ("customers",)),
    ("forecast", {"metric": "quality", "grain": "day", "horizon": 14}, ("network_events",)),
    ("forecast", {"metric": "arpu", "grain": "month", "horizon": 6}, ("revenue",)),
    ("anomalies", {"metric": "quality", "grain": "day"}, ("network_events",)),
    ("anomalies", {"metric": "usage", "grain": "hour"}, ("network_events",)),
    ("segment_compare", {"metric": "arpu", "group_by": "account_type"}, ("customers", "revenue")),
    ("segment_compare", {"metric": "quality", "group_by": "location"}, ("customers", "network_events")),
    ("segment_compare", {"metric": "churn", "group_by": "account_type"}, ("customers",)),
    ("segment_compare", {"metric": "usage", "group_by": "age_band"}, ("customers", "network_events")),
]
FLOORS = {"day": "D", "hour": "h"}


def _bucket(when: pd.Series, grain: str) -> pd.Series:
    if grain == "month":
        return when.dt.to_period("M").dt.start_time
    if grain == "week":
        return when.dt.to_period("W-SUN").dt.start_time
    return when.dt.floor(FLOORS[grain])


def _ols(values: pd.Series) -> Any:
    values = values.dropna()
    return sm.OLS(values.to_numpy(dtype=float), sm.add_constant(np.arange(len(values), dtype=float))).fit()


def naive_trend(tables: dict[str, pd.DataFrame], metric: str, grain: str) -> Any:
    if metric == "arpu":
        revenue = tables["revenue"].assign(amount=lambda f: f["amount"].astype(float))
        grouped = revenue.groupby(_bucket(revenue["transaction_date"], grain))
        series = grouped["amount"].sum() / grouped["customer_id"].nunique()
    elif metric in ("quality", "usage"):
        events = tables["network_events"]
        column = "network_quality_score" if metric == "quality" else "data_usage_mb"
        grouped = events.groupby(_bucket(events["event_timestamp"], grain))[column]
        series = grouped.mean() if metric == "quality" else grouped.sum()
    else:
        customers = tables["customers"]
        new = customers.groupby(_bucket(customers["created_at"], grain)).size()
        lost = customers[customers["is_churned"]].groupby(_bucket(customers["churn_date"], grain)).size()
        frame = pd.DataFrame({"new": new, "lost": lost}).fillna(0)
        active = (frame["new"] - frame["lost"]).cumsum().shift(1, fill_value=0)
        series = (frame["lost"] / active).where(active > 0)
    fit = _ols(series)
    period = {"day": 7, "week": 52, "month": 12}[grain]
    clean = series.dropna()
    decomposition = STL(clean.to_numpy(), period=period).fit() if len(clean) >= 2 * period else None
    return fit, decomposition


def naive_anomalies(tables: dict[str, pd.DataFrame], metric: str, grain: str) -> Any:
    events = tables["network_events"]
    column = "network_quality_score" if metric == "quality" else "data_usage_mb"
    grouped = events.groupby(_bucket(events["event_timestamp"], grain))[column]
    series = grouped.mean() if metric == "quality" else grouped.sum()
    window = 28 if grain == "day" else 168
    past = series.shift(1).rolling(window, min_periods=window // 2)
    median = past.median()
    mad = past.apply(lambda w: np.median(np.abs(w - np.median(w))), raw=True)
    z = (series - median) / (1.4826 * mad)
    return z[z.abs() > 3.5]


AGE_BINS = [0, 25, 35, 45, 55, 65, 200]


def naive_compare(tables: dict[str, pd.DataFrame], metric: str, group_by: str) -> Any:
    customers = tables["customers"].set_index("customer_id")
    if group_by == "age_band":
        segments = pd.cut(customers["age"], AGE_BINS, right=False).astype(str)
    else:
        segments = customers[group_by]
    if metric == "churn":
        table = pd.crosstab(segments, customers["is_churned"])
        pairs = [
            stats.chi2_contingency(table.loc[[a, b]], correction=False)
            for a, b in itertools.combinations(table.index, 2)
        ]
        return stats.chi2_contingency(table, correction=False), pairs
    if metric == "arpu":
        values = tables["revenue"].assign(amount=lambda f: f["amount"].astype(float))
        per_customer = values.groupby("customer_id")["amount"].sum()
    else:
        column = "network_quality_score" if metric == "quality" else "data_usage_mb"
        grouped = tables["network_events"].groupby("customer_id")[column]
        per_customer = grouped.mean() if metric == "quality" else grouped.sum()
    joined = pd.DataFrame({"value": per_customer, "segment": segments.reindex(per_customer.index)})
    groups = [g["value"].to_numpy() for _, g in joined.groupby("segment")]
    skews = [stats.skew(g) for g in groups]
    levene = stats.levene(*groups, center="median")
    omnibus = stats.kruskal(*groups) if max(map(abs, skews)) > 1 else stats.f_oneway(*groups)
    pairs = [
        stats.mannwhitneyu(a, b) if max(map(abs, skews)) > 1 else stats.ttest_ind(a, b, equal_var=False)
        for a, b in itertools.combinations(groups, 2)
    ]
    return levene, omnibus, pairs


def naive_forecast(tables: dict[str, pd.DataFrame], metric: str, grain: str, horizon: int) -> Any:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    fit, _ = naive_trend(tables, metric, grain)
    series = pd.Series(fit.model.endog)
    period = {"day": 7, "week": 52, "month": 12}[grain]
    seasonal = len(series) >= 3 * period
    model = ETSModel(
        series,
        error="add",
        trend="add",
        damped_trend=True,
        seasonal="add" if seasonal else None,
        seasonal_periods=period if seasonal else None,
    )
    return (
        model.fit(disp=False).get_prediction(start=len(series), end=len(series) + horizon - 1).summary_frame()
    )


def naive(analysis: str, parameters: dict[str, Any]) -> Callable[[dict[str, pd.DataFrame]], Any]:
    if analysis == "forecast":
        return lambda tables: naive_forecast(
            tables, parameters["metric"], parameters["grain"], parameters["horizon"]
        )
    if analysis == "trend":
        return lambda tables: naive_trend(tables, parameters["metric"], parameters["grain"])
    if analysis == "anomalies":
        return lambda tables: naive_anomalies(tables, parameters["metric"], parameters["grain"])
    return lambda tables: naive_compare(tables, parameters["metric"], parameters["group_by"])


async def run(runtime: Runtime, repeats: int) -> list[tuple[str, float, float]]:
    app = build_app(runtime, local_identity=Identity("bench", "analyst", "bench"))

    async def clear_cache() -> None:
        async for key in runtime.redis.scan_iter(match=runtime.key("cache", "analysis") + "*", count=1000):
            await runtime.redis.delete(key)

    timings: list[tuple[str, float]] = []
    async with Client(app.mcp) as client:
        for analysis, parameters, _ in CASES:

            async def tool(analysis: str = analysis, parameters: dict[str, Any] = parameters) -> None:
                result = await client.call_tool(
                    "analyze_data",
                    {"data_source": "database", "analysis_type": analysis, "parameters": parameters},
                    raise_on_error=True,
                )
                assert result.structured_content is not None

            await clear_cache()
            await tool()  # warm-up: plans, connections, imports
            timings.append((_label(analysis, parameters), await best_of(repeats, tool, clear_cache)))

    tables: dict[str, pd.DataFrame] = {}
    pull_seconds: dict[str, float] = {}
    for table in ("customers", "revenue", "network_events"):
        tables[table], pull_seconds[table] = await pull(runtime, table)
    print(
        "naive pulls: "
        + ", ".join(f"{t} {s:.2f} s ({len(tables[t]):,} rows)" for t, s in pull_seconds.items())
    )
    rows = []
    for (analysis, parameters, needed), (label, tool_seconds) in zip(CASES, timings, strict=True):
        started = time.perf_counter()
        naive(analysis, parameters)(tables)
        naive_seconds = time.perf_counter() - started + sum(pull_seconds[t] for t in needed)
        rows.append((label, tool_seconds, naive_seconds))
    return rows


def _label(analysis: str, parameters: dict[str, Any]) -> str:
    return f"{analysis} " + " ".join(str(v) for v in parameters.values())


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    async with scratch_database() as url, bench_runtime(url, args.customers, args.seed) as runtime:
        rows = await run(runtime, args.repeats)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'analysis':<40} {'tool (cold)':>12} {'naive':>9} {'naive/tool':>11} {'< 5 s':>6}")
    for label, tool_seconds, naive_seconds in rows:
        print(
            f"{label:<40} {tool_seconds * 1000:>9.0f} ms {naive_seconds:>7.2f} s "
            f"{naive_seconds / tool_seconds:>10.1f}x {'met' if tool_seconds < 5 else 'NOT':>6}"
        )
    print("target: every analysis < 5 s through the tool (best of repeats, cold cache)")


if __name__ == "__main__":
    asyncio.run(main())
