"""Operators' view of a running server: per-tool Prometheus metrics, dependency and pool gauges, and the
p50/p95/p99 latency per tool (from the duration histogram: one record of latency) summary_snapshot shows admins."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from typing import Any

from fastmcp.server.middleware import Middleware, MiddlewareContext
from prometheus_client import CollectorRegistry, Histogram

from mcp_server import metrics
from mcp_server.calls import current_call
from mcp_server.runtime import Runtime

log = logging.getLogger(__name__)

PERCENTILES = (50, 95, 99)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """The q-quantile (0 < q <= 1) of a histogram given as (upper bound, cumulative count) pairs in
    ascending order, the last bound +Inf: linear within the bucket it falls in, as Prometheus does."""
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # above the highest finite bound: that bound is all we know
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def latency_percentiles(durations: Histogram) -> dict[str, dict[str, float | int]]:
    """p50/p95/p99 in milliseconds of each tool called at least once, from the duration histogram."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in durations.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                buckets.setdefault(sample.labels["tool"], []).append((bound, sample.value))
    answer: dict[str, dict[str, float | int]] = {}
    for tool, counts in sorted(buckets.items()):
        counts.sort()
        if counts[-1][1] == 0:
            continue
        answer[tool] = {"samples": int(counts[-1][1])}
        for percentile in PERCENTILES:
            answer[tool][f"p{percentile}_ms"] = round(quantile(percentile / 100, counts) * 1000, 2)
    return answer


async def count_sessions(runtime: Runtime) -> int:
    """Live sessions in Redis (a SCAN over the session hashes)."""
    return sum([1 async for _ in runtime.services.session_store.live_session_ids()])


def _pool_waiters(pool: Any) -> int:
    # asyncpg has no public counter of tasks waiting in acquire(); they wait on the pool's queue.
    queue = getattr(pool, "_queue", None)
    return len(getattr(queue, "_getters", ()) or ())


class RecordMetrics(Middleware):
    """Counts every tool call (by outcome, with its duration) and every resource read and prompt get."""

    def __init__(self, registry: CollectorRegistry, tools: Iterable[str]) -> None:
        self.calls = metrics.counter(
            registry, "analytics_mcp_tool_calls_total", "Tool calls by tool and outcome", ("tool", "outcome")
        )
        self.errors = metrics.counter(
            registry,
            "analytics_mcp_tool_errors_total",
            "Tool calls that failed, by tool and error",
            ("tool", "error"),
        )
        self.durations = metrics.tool_durations(registry)
        self.other_calls = metrics.counter(
            registry,
            "analytics_mcp_component_calls_total",
            "Resource reads and prompt gets by kind, name and outcome",
            ("kind", "name", "outcome"),
        )
        for name in tools:  # every declared tool shows up in /metrics from the start, at zero
            self.calls.labels(tool=name, outcome="ok")
            self.durations.labels(tool=name)

    async def _observed(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        try:
            return await call_next(context)
        finally:
            call = current_call()
            if call is not None:
                name = call.name if call.declared else "<unknown>"
                if call.kind != "tool":
                    self.other_calls.labels(kind=call.kind, name=name, outcome=call.outcome).inc()
                else:
                    self.calls.labels(tool=name, outcome=call.outcome).inc()
                    if call.outcome != "ok":
                        self.errors.labels(tool=name, error=call.outcome).inc()
                    self.durations.labels(tool=name).observe(call.duration_ms / 1000)

    on_call_tool = on_read_resource = on_get_prompt = _observed


async def refresh_gauges(runtime: Runtime) -> None:
    """Bring the dependency, pool, session and writer gauges up to date (at each /metrics scrape)."""
    registry = runtime.metrics
    up = metrics.gauge(
        registry, "analytics_mcp_dependency_up", "1 when the dependency answers", ("dependency",)
    )
    check_seconds = metrics.gauge(
        registry, "analytics_mcp_health_check_seconds", "Duration of the last PostgreSQL + Redis health check"
    )
    pool = metrics.gauge(registry, "analytics_mcp_db_pool_connections", "PostgreSQL pool", ("state",))
    waiters = metrics.gauge(registry, "analytics_mcp_db_pool_waiters", "Tasks waiting for a pool connection")
    sessions = metrics.gauge(registry, "analytics_mcp_active_sessions", "Live sessions in Redis")

    started = time.perf_counter()
    health = await runtime.health(timeout=1.0)
    check_seconds.set(time.perf_counter() - started)
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
    replica = runtime.db.replica
    if replica is not None and replica.lag_seconds is not None:  # while down: dependency_up says so
        metrics.gauge(
            registry,
            "analytics_mcp_replica_lag_seconds",
            "How far the read replica is behind the primary (seconds, as of its last probe)",
        ).set(replica.lag_seconds)
    runtime.services.writer_metrics.refresh(runtime.services.writers)
