"""query_metrics against the same hand-written SQL through query_database, both over MCP (in-memory client,
analyst) on the telecom demo in one run: median of --calls each, the ratio, and the answers checked equal.

Each call carries a fresh value in a never-true filter (`account_type <> nonce`), so query_database's result
cache never answers and both sides do the same work.

Usage: python bench/metrics.py [--customers 20000] [--seed 7] [--calls 15]
Uses TEST_DATABASE_URL / the local PostgreSQL and Redis when reachable, else embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import bench_runtime, scratch_database  # noqa: E402

JOINED = "FROM revenue r JOIN customers c ON c.customer_id = r.customer_id"
CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "revenue by account type, 2024",
        {
            "metrics": ["revenue"],
            "group_by": ["account_type"],
            "time_range": {"start": "2024-01-01", "end": "2024-12-31"},
        },
        f"SELECT c.account_type, SUM(r.amount)::float8 AS revenue {JOINED} WHERE r.transaction_date >= '2024-01-01' "
        "AND r.transaction_date < '2025-01-01' AND c.account_type <> %(nonce)s GROUP BY c.account_type",
        "revenue",
    ),
    (
        "arpu by service type",
        {"metrics": ["arpu"], "group_by": ["service_type"]},
        f"SELECT r.service_type, SUM(r.amount)::float8 / COUNT(DISTINCT r.customer_id) AS arpu {JOINED} "
        "WHERE c.account_type <> %(nonce)s GROUP BY r.service_type",
        "arpu",
    ),
    (
        "data usage by event type and month",
        {"metrics": ["data_usage"], "group_by": ["event_type"], "grain": "month", "limit": 1000},
        "SELECT e.event_type, date_trunc('month', e.event_timestamp)::date AS month, SUM(e.data_usage_mb) AS data_usage "
        "FROM network_events e JOIN customers c ON c.customer_id = e.customer_id WHERE c.account_type <> %(nonce)s "
        "GROUP BY e.event_type, date_trunc('month', e.event_timestamp)",
        "data_usage",
    ),
]


async def main() -> None:
    from fastmcp import Client

    from mcp_server.server import build_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--calls", type=int, default=15)
    options = parser.parse_args()
    nonces = (f"nowhere-{index}" for index in itertools.count())
    async with scratch_database() as url, bench_runtime(url, options.customers, options.seed) as runtime:
        app = build_app(runtime, local_identity=_bench_identity())
        async with Client(app.mcp) as client:
            compiled: dict[str, Any] = {}  # the last query_metrics answer: its SQL and parameters

            async def metrics(question: dict[str, Any]) -> list[dict[str, Any]]:
                nonce = {"dimension": "account_type", "op": "!=", "value": next(nonces)}
                filters = [*question.get("filters", []), nonce]
                result = await client.call_tool(
                    "query_metrics", {"source": "main", **question, "filters": filters}
                )
                assert not result.is_error, result.content
                compiled.update(result.structured_content or {})
                rows: list[dict[str, Any]] = compiled["rows"]
                return rows

            async def by_sql(sql: str, given: dict[str, Any] | None = None) -> list[dict[str, Any]]:
                # The nonce is `nonce` in the hand-written SQL, the last bound value in the compiled one.
                parameters = {"nonce": next(nonces)} if given is None else {**given, "v0": next(nonces)}
                result = await client.call_tool("query_database", {"query": sql, "parameters": parameters})
                assert not result.is_error, result.content
                rows: list[dict[str, Any]] = (result.structured_content or {})["rows"]
                return rows

            async def median_ms(work: Any) -> float:
                await work()  # warm
                times = []
                for _ in range(options.calls):
                    started = time.perf_counter()
                    await work()
                    times.append(time.perf_counter() - started)
                return statistics.median(times) * 1000

            print(
                f"{'question':38s} {'query_database ms':>18s} {'query_metrics ms':>17s} {'ratio':>6s} "
                f"{'its SQL via query_database ms':>30s}"
            )
            for title, question, sql, metric in CASES:
                found, expected = await metrics(question), await by_sql(sql)
                assert len(found) == len(expected), (title, len(found), len(expected))
                got = sorted(round(float(row[metric]), 6) for row in found)
                want = sorted(round(float(row[metric]), 6) for row in expected)
                assert got == want, title
                own_sql, own_parameters = compiled["sql"], compiled["parameters"]
                hand = await median_ms(lambda sql=sql: by_sql(sql))
                tool = await median_ms(lambda question=question: metrics(question))
                same = await median_ms(lambda: by_sql(own_sql, own_parameters))  # noqa: B023
                print(f"{title:38s} {hand:18.1f} {tool:17.1f} {tool / hand:6.2f} {same:30.1f}")


def _bench_identity() -> Any:
    from mcp_server.auth import Identity

    return Identity("bench", "analyst", "bench")


if __name__ == "__main__":
    asyncio.run(main())
