"""Prometheus metrics of one runtime, created on first use so any module can count without ordering."""

from __future__ import annotations

import weakref
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = weakref.WeakKeyDictionary()

M = TypeVar("M", Counter, Gauge, Histogram)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _metric(
    registry: CollectorRegistry,
    kind: type[M],
    name: str,
    documentation: str,
    labels: tuple[str, ...],
    **options: Any,
) -> M:
    # Keyed on the registry: a copy of a runtime (dataclasses.replace) may share the registry, and
    # registering a name twice would raise.
    known = _by_registry.setdefault(registry, {})
    if name not in known:
        known[name] = kind(name, documentation, labels, registry=registry, **options)
    metric: M = known[name]
    return metric


def counter(
    registry: CollectorRegistry, name: str, documentation: str, labels: tuple[str, ...] = ()
) -> Counter:
    return _metric(registry, Counter, name, documentation, labels)


def gauge(registry: CollectorRegistry, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
    return _metric(registry, Gauge, name, documentation, labels)


def histogram(
    registry: CollectorRegistry, name: str, documentation: str, labels: tuple[str, ...] = ()
) -> Histogram:
    return _metric(registry, Histogram, name, documentation, labels, buckets=LATENCY_BUCKETS)


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
