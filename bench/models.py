"""Metric models: each telecom analysis compiled from the telecom model (warehouse/models, through the agent
query guard and role) against the hard-wired runner on its hand-written SQL (warehouse/aggregates.py), on
the same database in one run; best of --repeats each, and the ratio.

Usage: python bench/models.py [--customers 20000] [--seed 7] [--repeats 3]
Uses TEST_DATABASE_URL / the local PostgreSQL and Redis when reachable, else embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from analytics.parameters import parse_parameters  # noqa: E402
from bench.common import bench_runtime, scratch_database  # noqa: E402
from warehouse import aggregates  # noqa: E402
from warehouse.models import shipped_model  # noqa: E402
from warehouse.models.run import MainDatabase, run_modelled  # noqa: E402

CASES: list[tuple[str, dict[str, Any]]] = [
    ("churn_rate", {"group_by": "account_type", "monthly": True}),
    ("arpu", {"group_by": "account_type"}),
    ("retention", {"group_by": "account_type"}),
    ("segment_compare", {"metric": "arpu", "group_by": "location"}),
    ("trend", {"metric": "arpu", "grain": "week"}),
    ("forecast", {"metric": "churn", "grain": "month"}),
    ("correlation", {"columns": ["tenure_days", "event_count", "total_revenue", "is_churned"]}),
    ("churn_drivers", {"features": ["tenure_days", "event_count", "total_revenue"]}),
]


async def best(work: Callable[[], Awaitable[Any]], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        await work()
        times.append(time.perf_counter() - started)
    return min(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    model = shipped_model("telecom")
    async with scratch_database() as url, bench_runtime(url, options.customers, options.seed) as runtime:
        engine = MainDatabase(runtime.db)
        print(f"{'analysis':16s} {'hard-wired ms':>14s} {'modelled ms':>12s} {'ratio':>6s}")
        for name, parameters in CASES:
            checked = parse_parameters(name, parameters)
            wired = await best(lambda: aggregates.RUNNERS[name](runtime.db, checked), options.repeats)  # noqa: B023
            modelled = await best(
                lambda: run_modelled(engine, model, name, parameters, source="main"),  # noqa: B023
                options.repeats,
            )
            print(f"{name:16s} {wired * 1000:14.1f} {modelled * 1000:12.1f} {modelled / wired:6.2f}")


if __name__ == "__main__":
    asyncio.run(main())
