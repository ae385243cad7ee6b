"""Operators' view of a running server: per-tool Prometheus metrics, dependency and pool gauges, and the
p50/p95/p99 latency per tool that summary_snapshot shows agents.

Latency percentiles come from a reservoir shared by all instances: each call's duration is pushed
(in background batches) onto a capped Redis list per tool, so every instance reports the same
numbers, over the last RESERVOIR_SIZE calls of each tool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
import redis.exceptions

from mcp_server import metrics
from mcp_server.audit import component_name
from mcp_server.batching import BatchWriter
from mcp_server.runtime import Runtime

if TYPE_CHECKING:
    from mcp_server.app import App, CallInfo

log = logging.getLogger(__name__)

RESERVOIR_SIZE = 1000
RESERVOIR_TTL_SECONDS = 7 * 24 * 3600
SESSION_ID_LENGTH = 36


class LatencyReservoir:
    """The durations of the last RESERVOIR_SIZE calls of each tool, in Redis lists shared by instances."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.writer: BatchWriter[tuple[str, float]] = BatchWriter("latency", self._write, interval=0.5)
        self.tools: set[str] = set()

    def _key(self, tool: str) -> str:
        return self.runtime.key("latency", tool)

    def add(self, tool: str, duration_ms: float) -> None:
        self.tools.add(tool)
        self.writer.submit((tool, duration_ms))

    async def _write(self, samples: list[tuple[str, float]]) -> None:
        by_tool: dict[str, list[float]] = defaultdict(list)
        for tool, duration in samples:
            by_tool[tool].append(round(duration, 3))
        async with self.runtime.redis.pipeline(transaction=False) as pipe:
            for tool, durations in by_tool.items():
                pipe.lpush(self._key(tool), *durations)
                pipe.ltrim(self._key(tool), 0, RESERVOIR_SIZE - 1)
                pipe.expire(self._key(tool), RESERVOIR_TTL_SECONDS)
            await pipe.execute()

    async def percentiles(self, tools: list[str]) -> dict[str, dict[str, float | int]]:
        await self.writer.flush()
        async with self.runtime.redis.pipeline(transaction=False) as pipe:
            for tool in tools:
                pipe.lrange(self._key(tool), 0, -1)
            lists = await pipe.execute()
        answer: dict[str, dict[str, float | int]] = {}
        for tool, raw in zip(tools, lists, strict=True):
            if not raw:
                continue
            values = np.array([float(item) for item in raw])
            p50, p95, p99 = np.percentile(values, [50, 95, 99])
            answer[tool] = {
                "samples": len(values),
                "p50_ms": round(float(p50), 2),
                "p95_ms": round(float(p95), 2),
                "p99_ms": round(float(p99), 2),
            }
        return answer


def reservoir(runtime: Runtime) -> LatencyReservoir:
    found = runtime.extras.get("latency_reservoir")
    if found is None:
        found = runtime.extras["latency_reservoir"] = LatencyReservoir(runtime)
        runtime.on_close.append(found.writer.flush)
    return found


async def count_sessions(runtime: Runtime) -> int:
    """Live sessions: the `session:{uuid}` hashes (data values and index sets are other keys)."""
    base = runtime.key("session", "")
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in base) + "*"
    count = 0
    async for raw in runtime.redis.scan_iter(match=pattern, count=1000, _type="HASH"):
        tail = raw.decode("utf-8", "replace")[len(base) :]
        if len(tail) == SESSION_ID_LENGTH and ":" not in tail:
            count += 1
    return count


def _pool_waiters(pool: Any) -> int:
    # asyncpg has no public counter of tasks waiting in acquire(); they wait on the pool's queue.
    queue = getattr(pool, "_queue", None)
    return len(getattr(queue, "_getters", ()) or ())


def install(app: App) -> None:
    runtime = app.runtime
    latency = reservoir(runtime)
    calls = metrics.counter(
        runtime, "analytics_mcp_tool_calls_total", "Tool calls by tool and outcome", ("tool", "outcome")
    )
    errors = metrics.counter(
        runtime,
        "analytics_mcp_tool_errors_total",
        "Tool calls that failed, by tool and error",
        ("tool", "error"),
    )
    durations = metrics.histogram(
        runtime, "analytics_mcp_tool_duration_seconds", "Tool call latency (seconds)", ("tool",)
    )
    other_calls = metrics.counter(
        runtime,
        "analytics_mcp_component_calls_total",
        "Resource reads and prompt gets by kind, name and outcome",
        ("kind", "name", "outcome"),
    )
    for kind, name in app.roles:  # every declared tool shows up in /metrics from the start, at zero
        if kind == "tool":
            calls.labels(tool=name, outcome="ok")
            durations.labels(tool=name)
            latency.tools.add(name)

    async def observe(info: CallInfo) -> None:
        name = component_name(app, info)
        if info.kind != "tool":
            other_calls.labels(kind=info.kind, name=name, outcome=info.outcome).inc()
            return
        duration_ms = info.duration_ms
        calls.labels(tool=name, outcome=info.outcome).inc()
        if info.outcome != "ok":
            errors.labels(tool=name, error=info.outcome).inc()
        durations.labels(tool=name).observe(duration_ms / 1000)
        if name != "<unknown>":
            latency.add(name, duration_ms)

    app.after_call.append(observe)

    if runtime.extras.get("observability_installed"):
        return
    runtime.extras["observability_installed"] = True
    _install_runtime_gauges(runtime)

    async def latency_percentiles() -> dict[str, Any]:
        # Latency is a convenience: with Redis away the data answer still goes out, marked as such.
        try:
            return {"latency_ms": await latency.percentiles(sorted(latency.tools))}
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return {"latency_ms": None, "latency_note": "Redis is not answering; latency unavailable"}

    runtime.extras.setdefault("snapshot_extensions", []).append(latency_percentiles)


def _install_runtime_gauges(runtime: Runtime) -> None:
    up = metrics.gauge(
        runtime, "analytics_mcp_dependency_up", "1 when the dependency answers", ("dependency",)
    )
    check_seconds = metrics.gauge(
        runtime, "analytics_mcp_health_check_seconds", "Duration of the last PostgreSQL + Redis health check"
    )
    pool = metrics.gauge(runtime, "analytics_mcp_db_pool_connections", "PostgreSQL pool", ("state",))
    waiters = metrics.gauge(runtime, "analytics_mcp_db_pool_waiters", "Tasks waiting for a pool connection")
    sessions = metrics.gauge(runtime, "analytics_mcp_active_sessions", "Live sessions in Redis")
    audit_dropped = metrics.gauge(
        runtime, "analytics_mcp_observer_dropped", "Audit/latency items dropped", ("writer",)
    )

    async def refresh() -> None:
        started = time.perf_counter()
        health = await runtime.health(timeout=1.0)
        elapsed = time.perf_counter() - started
        check_seconds.set(elapsed)
        for dependency, state in health.items():
            up.labels(dependency=dependency).set(1 if state == "ok" else 0)
        stats = runtime.db.pool_stats()
        pool.labels(state="size").set(stats["size"])
        pool.labels(state="idle").set(stats["idle"])
        pool.labels(state="in_use").set(stats["size"] - stats["idle"])
        pool.labels(state="max").set(stats["max"])
        try:
            waiters.set(_pool_waiters(runtime.db.pool))
        except Exception:  # noqa: BLE001 - pool not started
            waiters.set(0)
        if health.get("redis") == "ok":
            try:
                sessions.set(await asyncio.wait_for(count_sessions(runtime), timeout=2.0))
            except Exception as error:  # noqa: BLE001 - keep the last value
                log.warning("session count failed", extra={"error": type(error).__name__})
        for name, found in (
            ("audit", runtime.extras.get("auditor")),
            ("latency", runtime.extras.get("latency_reservoir")),
        ):
            if found is not None:
                audit_dropped.labels(writer=name).set(found.writer.dropped)

    runtime.extras.setdefault("metrics_refreshers", []).append(refresh)
