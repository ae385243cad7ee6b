"""Session latency: session_update / session_read through the in-memory MCP client and through the store,
against the raw redis-py calls that move the same bytes, all in one run.

Usage: python bench/sessions.py [--iterations 400]
Uses TEST_DATABASE_URL / TEST_REDIS_URL or this machine's servers when reachable, else embedded ones.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet  # noqa: E402
from fastmcp import Client  # noqa: E402

from bench.common import redis_url_for_bench, scratch_database  # noqa: E402
from mcp_server.auth import EVERYONE, Identity  # noqa: E402
from mcp_server.config import Settings, digest_key  # noqa: E402
from mcp_server.runtime import start_runtime  # noqa: E402
from mcp_server.server import build_app  # noqa: E402

VALUE = {
    "analysis_type": "churn_rate",
    "by_segment": {s: {"rate": 0.1 * i, "n": 100 * i} for i, s in enumerate("ABCDE")},
}


async def timed(operation: Callable[[int], Awaitable[Any]], iterations: int, warmup: int = 30) -> list[float]:
    for i in range(warmup):
        await operation(i)
    samples = []
    for i in range(iterations):
        started = time.perf_counter()
        await operation(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[int(q) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=400)
    args = parser.parse_args()
    n = args.iterations
    prefix = f"amcp-bench-{uuid.uuid4().hex[:8]}:"
    key = "bench-local-key"
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
                "DB_POOL_MIN_SIZE": "1",
                "DB_POOL_MAX_SIZE": "2",
                "RATE_LIMIT_PER_MINUTE": "1000000",
            }
        )
        runtime = await start_runtime(settings, seed_demo=False)
        try:
            identity = runtime.local_identity or Identity("bench", "analyst", "bench")
            redis = runtime.redis
            store = runtime.services.session_store
            raw_value = json.dumps(VALUE).encode()
            raw_key = runtime.key("bench-raw")

            async def raw_update(i: int) -> None:
                async with redis.pipeline(transaction=False) as pipe:
                    pipe.set(raw_key, raw_value)
                    pipe.expire(raw_key, 3600)
                    await pipe.execute()

            async def raw_read(i: int) -> None:
                json.loads(await redis.get(raw_key))

            session = (await store.create(identity, "database"))["session_id"]

            async def store_update(i: int) -> None:
                await store.update(identity, session, "result", VALUE)

            async def store_read(i: int) -> None:
                await store.read(identity, session, "result")

            results: dict[str, list[float]] = {}
            app = build_app(runtime, identity)

            @app.tool(roles=EVERYONE)
            async def bench_noop() -> dict[str, Any]:
                """The MCP stack alone (guard, hooks, in-memory transport): no session work."""
                return {"ok": True}

            async with Client(app.mcp) as client:

                async def tool_noop(i: int) -> None:
                    answer = await client.call_tool("bench_noop", {})
                    assert not answer.is_error

                async def tool_update(i: int) -> None:
                    answer = await client.call_tool(
                        "session_update", {"session_id": session, "key": "t", "value": VALUE}
                    )
                    assert not answer.is_error

                async def tool_read(i: int) -> None:
                    answer = await client.call_tool("session_read", {"session_id": session, "key": "t"})
                    assert not answer.is_error

                # interleave rounds so machine noise hits every series alike
                for _ in range(2):
                    for name, operation in (
                        ("raw redis-py SET+EXPIRE", raw_update),
                        ("raw redis-py GET", raw_read),
                        ("store.update", store_update),
                        ("store.read", store_read),
                        ("tool session_update", tool_update),
                        ("tool session_read", tool_read),
                        ("tool no-op (MCP stack)", tool_noop),
                    ):
                        results.setdefault(name, []).extend(await timed(operation, n // 2, warmup=10))
        finally:
            async for leftover in runtime.redis.scan_iter(match=prefix + "*", count=1000):
                await runtime.redis.delete(leftover)
            await runtime.close()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.1f}; {n} calls each"
    )
    print(f"{'operation':28} {'p50 ms':>8} {'p95 ms':>8}")
    for name, samples in results.items():
        print(f"{name:28} {p(samples, 50):8.3f} {p(samples, 95):8.3f}")
    for q in (50, 95):
        stack = p(results["tool no-op (MCP stack)"], q)
        for kind, raw in (("update", "raw redis-py SET+EXPIRE"), ("read", "raw redis-py GET")):
            base = p(results[raw], q)
            store_added = p(results[f"store.{kind}"], q) - base
            tool_added = p(results[f"tool session_{kind}"], q) - stack - base
            print(
                f"p{q} {kind}: added over raw redis-py by the session store {store_added:.3f} ms "
                f"(ratio {p(results[f'store.{kind}'], q) / base:.1f}x); through the in-memory MCP client, "
                f"beyond the MCP stack itself ({stack:.3f} ms for a no-op tool), {tool_added:.3f} ms; "
                f"target < 2 ms: {'met' if max(store_added, tool_added) < 2 else 'NOT met'}"
            )
            total = p(results[f"tool session_{kind}"], q) - base
            print(
                f"p{q} {kind}: the whole tool call over raw redis-py, MCP stack included: {total:.3f} ms "
                f"(ratio {p(results[f'tool session_{kind}'], q) / base:.1f}x)"
            )


if __name__ == "__main__":
    asyncio.run(main())
