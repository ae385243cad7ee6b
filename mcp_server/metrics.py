"""Prometheus metrics of one runtime, created on first use so any module can count without ordering."""

from __future__ import annotations

import weakref
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = weakref.WeakKeyDictionary()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _metric(
    registry: CollectorRegistry,
    kind: type,
    name: str,
    documentation: str,
    labels: tuple[str, ...],
    **options: Any,
) -> Any:
    # Keyed on the registry: a copy of a runtime (dataclasses.replace) may share the registry, and
    # registering a name twice would raise.
    known = _by_registry.setdefault(registry, {})
    if name not in known:
        known[name] = kind(name, documentation, labels, registry=registry, **options)
    return known[name]


def counter(
    registry: CollectorRegistry, name: str, documentation: str, labels: tuple[str, ...] = ()
) -> Counter:
    metric: Counter = _metric(registry, Counter, name, documentation, labels)
    return metric


def gauge(registry: CollectorRegistry, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
    metric: Gauge = _metric(registry, Gauge, name, documentation, labels)
    return metric


def histogram(
    registry: CollectorRegistry, name: str, documentation: str, labels: tuple[str, ...] = ()
) -> Histogram:
    metric: Histogram = _metric(registry, Histogram, name, documentation, labels, buckets=LATENCY_BUCKETS)
    return metric


def cache_events(registry: CollectorRegistry) -> Counter:
    return counter(
        registry,
        "analytics_mcp_cache_events_total",
        "Cache events by cache and outcome (hit/miss; too_large: an answer not stored)",
        ("cache", "outcome"),
    )


def tool_durations(registry: CollectorRegistry) -> Histogram:
    return histogram(
        registry, "analytics_mcp_tool_duration_seconds", "Tool call latency (seconds)", ("tool",)
    )
