"""query_database overhead: the tool (guard, query role pool, limits, log, cache lookup, JSON answer) against
the same statement run with bare asyncpg (its own pool, same rows back), in one run, in memory and over
streamable HTTP; p50 and p95 of the added time against the targets, with PASS/MISS.

Usage: python bench/query.py [--customers 2000] [--calls 300]
Uses TEST_DATABASE_URL / the local PostgreSQL and Redis when reachable, else embedded ones.
Every call binds a different parameter value, so the tool never answers from its cache (that would
flatter it); cache hits are measured separately.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import secrets
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from bench.common import redis_url_for_bench, scratch_database  # noqa: E402
from mcp_server.config import Settings, digest_key  # noqa: E402
from mcp_server.http import build_http_app  # noqa: E402
from mcp_server.runtime import start_runtime  # noqa: E402
from mcp_server.server import build_app  # noqa: E402
from tests.support import mcp_session, served  # noqa: E402
from warehouse.generator import generate, make_plan  # noqa: E402

QUERY_TOOL = (
    "SELECT account_type, count(*) AS customers, avg(age) AS mean_age FROM customers "
    "WHERE age >= %(min_age)s AND location <> %(nonce)s GROUP BY account_type ORDER BY account_type"
)
BIG_QUERY = "SELECT g, md5(g::text) AS h FROM generate_series(1, 3000000) AS g"
QUERY_DIRECT = QUERY_TOOL.replace("%(min_age)s", "$1").replace("%(nonce)s", "$2")


async def timed(calls: int, run: Callable[[int], Awaitable[object]], warm_up: int = 30) -> list[float]:
    for i in range(warm_up):
        await run(i)
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        await run(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[18]


# Targets (issue 20): time added over bare asyncpg, in ms.
ADDED_P50 = {"memory": 4.0, "http": 8.0}
ADDED_P95 = 12.0


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    load_before = _load()
    key = secrets.token_urlsafe(24)
    prefix = f"amcp-bench-{uuid.uuid4().hex[:8]}:"
    async with scratch_database() as url:
        env = {
            "DATABASE_URL": url,
            "REDIS_KEY_PREFIX": prefix,
            "API_KEYS": f"bench:analyst:{digest_key(key)}",
            "SESSION_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "RATE_LIMIT_PER_MINUTE": "1000000",
            "DB_POOL_MIN_SIZE": "2",
            "DB_POOL_MAX_SIZE": "4",
            "LOG_LEVEL": "WARNING",
            "ANALYTICS_MCP_HOME": os.environ.get("ANALYTICS_MCP_HOME", ".analytics-mcp"),
        }
        redis_url = redis_url_for_bench()
        if redis_url:
            env["REDIS_URL"] = redis_url
        runtime = await start_runtime(Settings.from_env(env), seed_demo=False)
        try:
            await runtime.db.replace_data(await asyncio.to_thread(generate, make_plan(args.customers, 42)))
            identity = runtime.keys.resolve(key)
            app = build_app(runtime, local_identity=identity)
            calls = args.calls
            tick = iter(range(10**9))  # a fresh nonce for every call: the tool never hits its cache

            # The baseline: bare asyncpg on a pool of its own (acquire, fetch, release), server defaults.
            bare = await asyncpg.create_pool(url, min_size=2, max_size=4)

            async def direct(i: int) -> object:
                async with bare.acquire() as conn:
                    return await conn.fetch(QUERY_DIRECT, 40, f"nowhere-{next(tick)}")

            from fastmcp import Client

            from mcp_server.auth import EVERYONE

            @app.tool(roles=EVERYONE)
            async def bench_noop() -> dict[str, bool]:
                """The MCP stack alone (role check, rate limit, audit, in-memory transport): no query."""
                return {"ok": True}

            series: dict[str, list[float]] = {}
            async with (
                Client(app.mcp) as client,
                served(build_http_app(app)) as base,
                mcp_session(base, {"X-API-Key": key}) as session,
            ):

                async def in_memory(i: int) -> object:
                    parameters = {"min_age": 40, "nonce": f"nowhere-{next(tick)}"}
                    result = await client.call_tool(
                        "query_database", {"query": QUERY_TOOL, "parameters": parameters}
                    )
                    assert not result.is_error, result.content
                    return result

                async def cached(i: int) -> object:
                    parameters = {"min_age": 40, "nonce": "nowhere"}
                    return await client.call_tool(
                        "query_database", {"query": QUERY_TOOL, "parameters": parameters}
                    )

                async def noop(i: int) -> object:
                    return await client.call_tool("bench_noop", {})

                async def over_http(i: int) -> object:
                    parameters = {"min_age": 40, "nonce": f"nowhere-{next(tick)}"}
                    result = await session.call_tool(
                        "query_database", {"query": QUERY_TOOL, "parameters": parameters}
                    )
                    assert not result.is_error, result
                    return result

                # Same statement, same result: the tool's rows are the bare asyncpg rows.
                parameters = {"min_age": 40, "nonce": "same-result"}
                answer = await client.call_tool(
                    "query_database", {"query": QUERY_TOOL, "parameters": parameters}
                )
                async with bare.acquire() as conn:
                    expected = await conn.fetch(QUERY_DIRECT, 40, "same-result")
                assert [_comparable(row) for row in expected] == [
                    _comparable(row) for row in answer.structured_content["rows"]
                ], answer.structured_content

                # Rounds interleave the series, so load from elsewhere on the machine hits them alike.
                rounds = 3
                for _ in range(rounds):
                    for name, run in (
                        ("direct", direct),
                        ("memory", in_memory),
                        ("cached", cached),
                        ("noop", noop),
                        ("http", over_http),
                    ):
                        series.setdefault(name, []).extend(await timed(calls // rounds, run, warm_up=10))

            # The bounds: pg_sleep(10) with timeout=1 gives a timeout error within 2 s; a 3-million-row
            # query comes back truncated within seconds; the server still serves afterwards.
            limits: dict[str, list[float]] = {"timeout": [], "truncated": [], "after": []}
            async with Client(app.mcp) as client:
                for _ in range(3):
                    started = time.perf_counter()
                    slept = await client.call_tool(
                        "query_database", {"query": "SELECT pg_sleep(10)", "timeout": 1}, raise_on_error=False
                    )
                    limits["timeout"].append(time.perf_counter() - started)
                    assert slept.is_error and "timeout" in slept.content[0].text, slept.content
                    started = time.perf_counter()
                    big = await client.call_tool("query_database", {"query": BIG_QUERY})
                    limits["truncated"].append(time.perf_counter() - started)
                    assert big.structured_content["truncated"] is True
                    started = time.perf_counter()
                    after = await client.call_tool("query_database", {"query": "SELECT 1 AS still_serving"})
                    limits["after"].append(time.perf_counter() - started)
                    assert after.structured_content["rows"] == [{"still_serving": 1}]
        finally:
            with contextlib.suppress(NameError):  # NameError: it failed before the pool was made
                await bare.close()
            with contextlib.suppress(Exception):
                async for redis_key in runtime.redis.scan_iter(match=prefix + "*", count=1000):
                    await runtime.redis.delete(redis_key)
            await runtime.close()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average before {load_before}, after {_load()}; {args.customers:,} customers, "
        f"{calls} calls each, ms"
    )
    print(f"query: {QUERY_TOOL}")
    base50, base95 = p50(series["direct"]), p95(series["direct"])
    print(f"{'series':30s} {'p50':>7} {'p95':>7} {'added p50':>10} {'added p95':>10}  targets (added)")
    print(f"{'bare asyncpg (baseline)':30s} {base50:7.2f} {base95:7.2f}")
    for name, label in (
        ("memory", "query_database in-memory"),
        ("http", "query_database over HTTP"),
        ("cached", "query_database cache hit"),
        ("noop", "no-op tool (MCP stack only)"),
    ):
        added50, added95 = p50(series[name]) - base50, p95(series[name]) - base95
        verdict = ""
        if name in ADDED_P50:
            verdict = (
                f"  p50 <= {ADDED_P50[name]:g} ms: {'PASS' if added50 <= ADDED_P50[name] else 'MISS'}; "
                f"p95 <= {ADDED_P95:g} ms: {'PASS' if added95 <= ADDED_P95 else 'MISS'}"
            )
        print(
            f"{label:30s} {p50(series[name]):7.2f} {p95(series[name]):7.2f} {added50:+10.2f} {added95:+10.2f}"
            + verdict
        )
    baseline = base50
    stack = p50(series["noop"])
    print(
        f"query_database in-memory beyond the MCP stack itself: {p50(series['memory']) - stack - baseline:+.2f} ms "
        "over direct asyncpg"
    )
    worst = {name: max(samples) for name, samples in limits.items()}
    print(
        f"pg_sleep(10) with timeout=1:       worst of 3 {worst['timeout']:5.2f} s to the timeout error; "
        f"target < 2 s: {'met' if worst['timeout'] < 2 else 'NOT met'}"
    )
    print(
        f"3,000,000-row query:               worst of 3 {worst['truncated']:5.2f} s to a truncated answer "
        f"(1,000 rows); target within seconds (< 5 s): {'met' if worst['truncated'] < 5 else 'NOT met'}"
    )
    print(f"next query after each of those:    worst of 3 {worst['after'] * 1000:5.1f} ms")


def _comparable(row: Any) -> tuple[str, int, float]:
    return row["account_type"], row["customers"], round(float(row["mean_age"]), 6)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    asyncio.run(main())
