"""GET /metrics exposes per-tool calls, errors and latency, sessions, caches, pool and health, with
the right counts after known calls; summary_snapshot shows admins p50/p95/p99 per tool from the histogram."""

from __future__ import annotations

import httpx
import numpy as np
from fastmcp import Client
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from mcp_server.cache import Cache
from mcp_server.metrics import LATENCY_BUCKETS
from mcp_server.observability import latency_percentiles
from tests.conftest import app_for
from tests.security.conftest import instance
from tests.support import call, refusal, serving


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name, **labels):
    return found.get((name, tuple(sorted(labels.items()))))


async def test_metrics_count_known_calls_errors_sessions_cache_events_pool_and_health(
    runtime, fresh_prefix, api_keys
):
    rt = instance(runtime, fresh_prefix)
    async with Client(app_for(rt, "analyst").mcp) as client:
        for _ in range(3):
            await call(client, "summary_snapshot")
        for _ in range(2):
            await refusal(client, "session_read", session_id="00000000-0000-4000-8000-000000000000", key="k")
        await refusal(client, "session_create")  # missing data_source: invalid arguments
        for _ in range(2):
            await call(client, "session_create", data_source="database")
        await refusal(client, "generate_data")  # refused by role: counted as a Forbidden error
    cache = Cache(rt, "probe", 60)
    version, _ = await cache.lookup({"q": 1})  # a miss
    await cache.put_each([({"q": 1}, {"a": 1})], version)
    await cache.get({"q": 1}, version)
    await cache.get({"q": 1}, version)
    async with serving(rt) as url, httpx.AsyncClient() as http:
        response = await http.get(f"{url}/metrics", headers={"X-API-Key": api_keys["viewer"]})
    assert response.status_code == 200
    found = samples(response.text)
    assert value(found, "analytics_mcp_tool_calls_total", tool="summary_snapshot", outcome="ok") == 3
    assert value(found, "analytics_mcp_tool_calls_total", tool="session_read", outcome="NotFound") == 2
    assert value(found, "analytics_mcp_tool_calls_total", tool="session_create", outcome="ok") == 2
    assert value(found, "analytics_mcp_tool_calls_total", tool="session_create", outcome="InvalidInput") == 1
    assert value(found, "analytics_mcp_tool_errors_total", tool="session_read", error="NotFound") == 2
    assert value(found, "analytics_mcp_tool_errors_total", tool="generate_data", error="Forbidden") == 1
    assert value(found, "analytics_mcp_tool_duration_seconds_count", tool="summary_snapshot") == 3
    assert value(found, "analytics_mcp_tool_duration_seconds_count", tool="session_create") == 3
    assert (
        value(found, "analytics_mcp_tool_calls_total", tool="query_database", outcome="ok") == 0
    )  # declared, unused
    assert value(found, "analytics_mcp_active_sessions") == 2
    assert value(found, "analytics_mcp_cache_events_total", cache="probe", outcome="miss") == 1
    assert value(found, "analytics_mcp_cache_events_total", cache="probe", outcome="hit") == 2
    assert value(found, "analytics_mcp_dependency_up", dependency="postgres") == 1
    assert value(found, "analytics_mcp_dependency_up", dependency="redis") == 1
    assert value(found, "analytics_mcp_db_pool_connections", state="size") >= 1
    assert value(found, "analytics_mcp_db_pool_connections", state="max") == rt.db.max_size
    assert value(found, "analytics_mcp_db_pool_waiters") == 0


async def test_summary_snapshot_shows_admins_the_latency_percentiles_of_the_duration_histogram(
    runtime, fresh_prefix
):
    rt = instance(runtime, fresh_prefix)
    async with Client(app_for(rt, "analyst").mcp) as analyst, Client(app_for(rt, "admin").mcp) as admin:
        for _ in range(4):
            await call(analyst, "summary_snapshot")
        await refusal(analyst, "session_read", session_id="00000000-0000-4000-8000-000000000000", key="k")
        seen_by_analyst = await call(analyst, "summary_snapshot")
        snapshot = await call(admin, "summary_snapshot")
    assert "latency_ms" not in seen_by_analyst  # every caller's calls: not an analyst's business
    latency = snapshot["latency_ms"]
    assert latency["summary_snapshot"]["samples"] == 5  # the admin's own call is still running
    assert latency["session_read"]["samples"] == 1
    assert "query_database" not in latency  # declared, never called
    stats = latency["summary_snapshot"]
    assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"]


def test_percentiles_from_the_histogram_match_numpy_within_a_bucket():
    durations = Histogram(
        "probe_seconds", "probe", ("tool",), registry=CollectorRegistry(), buckets=LATENCY_BUCKETS
    )
    observed = np.linspace(0.0101, 0.0249, 99)  # spread evenly inside the 10-25 ms bucket
    for seconds in observed:
        durations.labels(tool="probe").observe(seconds)
    found = latency_percentiles(durations)["probe"]
    assert found["samples"] == 99
    for percentile in (50, 95, 99):
        expected_ms = float(np.percentile(observed, percentile)) * 1000
        assert abs(found[f"p{percentile}_ms"] - expected_ms) < 0.2
