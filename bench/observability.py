"""What security and observability cost per tool call: the same two tools (a no-op, and one SQL round
trip on a pooled connection) served bare by FastMCP and through the full App stack (API-key identity,
role check, Redis rate-limit window, argument limits, Prometheus metrics, audit trail), with
OpenTelemetry tracing off and then on (it instruments the whole process), all in one run.

Usage: python bench/observability.py [--iterations 600]
Uses TEST_DATABASE_URL / TEST_REDIS_URL or this machine's servers when reachable, else embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402
from fastmcp import Client, FastMCP  # noqa: E402

from bench.common import redis_url_for_bench, scratch_database  # noqa: E402
from core import tracing  # noqa: E402
from mcp_server.auth import ANALYST, Identity  # noqa: E402
from mcp_server.config import Settings, digest_key  # noqa: E402
from mcp_server.runtime import Runtime, start_runtime  # noqa: E402
from mcp_server.server import build_app  # noqa: E402


def p(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def add_probes(register: Callable[..., Any], runtime: Runtime) -> None:
    async def bench_noop() -> dict[str, Any]:
        """Nothing at all: the server stack alone."""
        return {"ok": True}

    async def bench_sql() -> dict[str, Any]:
        """One pooled connection, one SELECT."""
        async with runtime.db.connection(read=True) as conn:
            return {"one": await conn.fetchval("SELECT 1")}

    register(bench_noop)
    register(bench_sql)


async def timed(client: Client, tool: str, iterations: int) -> list[float]:
    samples = []
    for _ in range(iterations):
        started = time.perf_counter()
        answer = await client.call_tool(tool, {})
        samples.append((time.perf_counter() - started) * 1000)
        assert not answer.is_error
    return samples


async def measure(
    servers: dict[str, Any],
    iterations: int,
    results: dict[tuple[str, str], list[float]],
    between: Callable[[], Any] = lambda: None,
) -> None:
    """Warm up, then interleaved rounds, so machine noise hits every series alike."""
    clients = {name: Client(server) for name, server in servers.items()}
    for client in clients.values():
        await client.__aenter__()
    try:
        for tool in ("bench_noop", "bench_sql"):
            for client in clients.values():
                await timed(client, tool, 30)
        for _ in range(6):
            for tool in ("bench_noop", "bench_sql"):
                for name, client in clients.items():
                    results.setdefault((name, tool), []).extend(await timed(client, tool, iterations // 6))
                    between()
    finally:
        for client in clients.values():
            await client.__aexit__(None, None, None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=600)
    args = parser.parse_args()
    prefix = f"amcp-bench-{uuid.uuid4().hex[:8]}:"
    key = "bench-local-key"
    results: dict[tuple[str, str], list[float]] = {}
    async with scratch_database() as url:
        settings = Settings.from_env(
            {
                "DATABASE_URL": url,
                "REDIS_URL": redis_url_for_bench() or "",
                "REDIS_KEY_PREFIX": prefix,
                "API_KEYS": f"bench:analyst:{digest_key(key)}",
                "MCP_API_KEY": key,
                "SESSION_ENCRYPTION_KEY": Fernet.generate_key().decode(),
                "ANALYTICS_MCP_HOME": os.environ.get("ANALYTICS_MCP_HOME", ".analytics-mcp"),
                "DB_POOL_MIN_SIZE": "2",
                "DB_POOL_MAX_SIZE": "2",
                "RATE_LIMIT_PER_MINUTE": "1000000",
            }
        )
        runtime = await start_runtime(settings, seed_demo=False)
        try:
            identity = runtime.local_identity or Identity("bench", "analyst", "bench")
            bare = FastMCP("bare")
            add_probes(lambda function: bare.tool(function), runtime)
            full = build_app(runtime, identity)
            add_probes(lambda function: full.tool(roles=ANALYST)(function), runtime)
            await measure({"bare FastMCP": bare, "full stack": full.mcp}, args.iterations, results)
            # Tracing instruments the whole process (OpenTelemetry's provider is global): its series last.
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

            exporter = InMemorySpanExporter()
            provider = tracing.start(settings.otel_endpoint, exporter)
            assert provider is not None
            try:
                await measure({"full stack + tracing": full.mcp}, args.iterations, results, exporter.clear)
            finally:
                await tracing.stop(provider)
        finally:
            await runtime.services.auditor.flush()  # the background writer finishes before the pools close
            async for leftover in runtime.redis.scan_iter(match=prefix + "*", count=1000):
                await runtime.redis.delete(leftover)
            await runtime.close()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}; {args.iterations} calls per series, in-memory MCP client"
    )
    print(f"{'server':24} {'tool':12} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for (name, tool), samples in results.items():
        print(f"{name:24} {tool:12} {p(samples, 50):8.3f} {p(samples, 95):8.3f} {p(samples, 99):8.3f}")
    for tool in ("bench_noop", "bench_sql"):
        base = results[("bare FastMCP", tool)]
        for name in ("full stack", "full stack + tracing"):
            added = p(results[(name, tool)], 50) - p(base, 50)
            ratio = p(results[(name, tool)], 50) / p(base, 50)
            print(f"p50 {tool}: {name} adds {added:.3f} ms per call over bare FastMCP (ratio {ratio:.2f}x)")


if __name__ == "__main__":
    asyncio.run(main())
