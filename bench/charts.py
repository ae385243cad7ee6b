"""Chart rendering: p50 time per chart type and format, and whether the event loop stays responsive.

Part 1 renders each type x format a few times (pure rendering, 2,000 input rows).
Part 2 runs a query loop through the runtime's database pool alone (the baseline), then while 20
concurrent create_visualization calls render in the chart pool, then while the same 20 charts are
drawn ON the event loop (what a naive tool would do), and prints query p95 ratios against the baseline.
The query traffic is the same in every phase; only what else is going on changes.

Usage: python bench/charts.py [--repeats 5] [--customers 2000] [--concurrent 20] [--rounds 5] [--workers N]
(--workers sets CHART_WORKERS; default: the server's, one fewer than the cores)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastmcp import Client  # noqa: E402

from analytics.chart_data import CHART_TYPES, ChartSpec  # noqa: E402
from analytics.charts import render_chart  # noqa: E402
from bench.common import bench_runtime, scratch_database  # noqa: E402
from mcp_server.auth import Identity  # noqa: E402
from mcp_server.server import build_app  # noqa: E402
from mcp_server.tools.visualize import render_workers  # noqa: E402

FORMATS = ("png", "svg", "html")


def sample_frame(rows: int = 2_000) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "month": pd.date_range("2024-01-01", periods=24, freq="MS").repeat(rows // 24 + 1)[:rows],
            "account_type": rng.choice(["Basic", "Premium", "Enterprise"], rows),
            "revenue": rng.gamma(4, 25, rows),
            "quality": rng.uniform(1, 5, rows),
            "age": rng.integers(18, 80, rows),
        }
    )


SPECS = {
    "bar": ChartSpec("bar", x="account_type", y=("revenue",)),
    "grouped_bar": ChartSpec("grouped_bar", x="account_type", y=("revenue",), hue="account_type"),
    "stacked_bar": ChartSpec("stacked_bar", x="month", y=("revenue",), hue="account_type"),
    "line": ChartSpec("line", x="month", y=("revenue",), hue="account_type"),
    "scatter": ChartSpec("scatter", x="age", y=("quality",), hue="account_type"),
    "histogram": ChartSpec("histogram", x="revenue"),
    "heatmap": ChartSpec("heatmap", x="month", y=("account_type",), value="revenue"),
    "correlation_heatmap": ChartSpec("correlation_heatmap", y=("revenue", "quality", "age")),
    "box": ChartSpec("box", x="account_type", y=("revenue",)),
    "pie": ChartSpec("pie", x="account_type", y=("revenue",)),
}


def render_times(repeats: int) -> None:
    frame = sample_frame()
    render_chart(frame, SPECS["bar"])  # warm-up: fonts, imports
    render_chart(frame, dataclasses.replace(SPECS["bar"], format="html"))
    print(f"p50 render ms ({repeats} runs each, 2,000 rows, 800x600):")
    print(f"  {'chart type':<22}" + "".join(f"{f:>9}" for f in FORMATS))
    for chart_type in CHART_TYPES:
        cells = []
        for fmt in FORMATS:
            spec = dataclasses.replace(SPECS[chart_type], format=fmt)
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                render_chart(frame, spec)
                times.append((time.perf_counter() - started) * 1000)
            cells.append(statistics.median(times))
        print(f"  {chart_type:<22}" + "".join(f"{ms:>9.0f}" for ms in cells))


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


async def query_loop(runtime: Any, stop: asyncio.Event, latencies: list[float]) -> None:
    age = 18
    while not stop.is_set():
        started = time.perf_counter()
        async with runtime.db.connection(read=True) as conn:
            await conn.fetch(
                "SELECT customer_id, age, account_type FROM customers WHERE age = $1 LIMIT 50", age
            )
        latencies.append((time.perf_counter() - started) * 1000)
        age = 18 + (age - 17) % 60
        await asyncio.sleep(0.002)  # an agent's pace, not a tight loop


def chart_requests(count: int) -> list[dict[str, Any]]:
    frame = sample_frame(1_000)
    rows = frame.assign(month=frame["month"].dt.strftime("%Y-%m-%d")).to_dict("records")
    data = {"rows": rows, "columns": list(frame.columns)}
    kinds = [
        ("bar", {"x_axis": "account_type", "y_axis": "revenue"}),
        ("line", {"x_axis": "month", "y_axis": "revenue", "hue": "account_type"}),
        ("scatter", {"x_axis": "age", "y_axis": "quality", "hue": "account_type"}),
        ("histogram", {"x_axis": "revenue"}),
        ("heatmap", {"x_axis": "month", "y_axis": "account_type", "value": "revenue"}),
    ]
    requests = []
    for index in range(count):
        chart_type, axes = kinds[index % len(kinds)]
        fmt = ("png", "svg", "png", "html")[index % 4]
        requests.append({"data": data, "chart_type": chart_type, "format": fmt, **axes})
    return requests


async def responsiveness(customers: int, concurrent: int, rounds: int = 5, workers: int = 0) -> None:
    runs: list[tuple[list[float], list[float], float]] = []
    extra = {"DB_POOL_MIN_SIZE": "2", "DB_POOL_MAX_SIZE": "4", "CHART_WORKERS": str(workers)}
    # bench_runtime removes the run's Redis keys (the charts' artifacts among them) when it is done.
    async with scratch_database() as url, bench_runtime(url, customers, seed=7, extra_env=extra) as runtime:
        app = build_app(runtime, local_identity=Identity("bench", "analyst", "bench"))
        requests = chart_requests(concurrent)
        async with Client(app.mcp) as client:
            await client.call_tool("create_visualization", requests[0])  # warm-up

            async def queries_while(work: Any) -> tuple[list[float], float]:
                stop, latencies = asyncio.Event(), []
                loop_task = asyncio.create_task(query_loop(runtime, stop, latencies))
                await asyncio.sleep(0.2)
                latencies.clear()
                started = time.perf_counter()
                await work()
                elapsed = time.perf_counter() - started
                stop.set()
                await loop_task
                return latencies, elapsed

            async def idle() -> None:
                await asyncio.sleep(4.0)

            async def pooled() -> None:
                results = await asyncio.gather(
                    *(client.call_tool("create_visualization", r, raise_on_error=False) for r in requests)
                )
                failed = [r for r in results if r.is_error]
                assert not failed, failed[0].content

            async def on_loop() -> None:
                frame = sample_frame(1_000)
                for r in requests:  # the naive tool: render inside the coroutine
                    spec = ChartSpec(
                        r["chart_type"],
                        x=r.get("x_axis"),
                        y=(r["y_axis"],) if r.get("y_axis") else (),
                        hue=r.get("hue"),
                        value=r.get("value"),
                        format=r["format"],
                    )
                    render_chart(frame, spec)
                    await asyncio.sleep(0)

            # Alternate baseline and charts a few times: one p95 on a shared machine is noisy.
            for _ in range(rounds):
                alone, _ = await queries_while(idle)
                during, chart_seconds = await queries_while(pooled)
                runs.append((alone, during, chart_seconds))
            naive, naive_seconds = await queries_while(on_loop)
    print(
        f"\nevent loop while {concurrent} concurrent create_visualization calls render "
        f"(pool of {render_workers(workers)} worker process{'es' if render_workers(workers) != 1 else ''}):"
    )
    ratios = []
    for index, (alone, during, chart_seconds) in enumerate(runs, start=1):
        ratios.append(p95(during) / p95(alone))
        print(
            f"  round {index}: query p95 alone {p95(alone):6.2f} ms ({len(alone)} queries), while charts render "
            f"{p95(during):6.2f} ms ({len(during)} queries): ratio {ratios[-1]:.2f}x; "
            f"{concurrent} charts in {chart_seconds:.2f} s"
        )
    alone, during, chart_seconds = runs[-1]
    base = p95(alone)
    print(f"  median ratio over {len(runs)} rounds: {statistics.median(ratios):.2f}x (target <= 2x)")
    print(
        f"  query p95, charts on the loop:     {p95(naive):7.2f} ms  ({len(naive)} queries)  "
        f"ratio {p95(naive) / base:.2f}x (naive baseline)"
    )
    print(
        f"  chart throughput: {concurrent} charts in {chart_seconds:.2f} s = {concurrent / chart_seconds:.1f} charts/s "
        f"(through MCP, incl. base64; on-loop naive: {concurrent / naive_seconds:.1f} charts/s)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0, help="CHART_WORKERS (0: cores - 1)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    render_times(args.repeats)
    await responsiveness(args.customers, args.concurrent, args.rounds, args.workers)


if __name__ == "__main__":
    asyncio.run(main())
