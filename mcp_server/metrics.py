"""Prometheus metrics of one runtime, created on first use so any module can count without ordering."""

from __future__ import annotations

import weakref
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mcp_server.runtime import Runtime

_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = weakref.WeakKeyDictionary()

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def _metric(
    runtime: Runtime, kind: type, name: str, documentation: str, labels: tuple[str, ...], **options: Any
) -> Any:
    # Keyed on the registry, not on runtime.extras: a copy of a runtime (dataclasses.replace with
    # fresh extras) shares the registry, and registering a name twice would raise.
    registry = _by_registry.setdefault(runtime.metrics, {})
    if name not in registry:
        registry[name] = kind(name, documentation, labels, registry=runtime.metrics, **options)
    return registry[name]


def counter(runtime: Runtime, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
    return _metric(runtime, Counter, name, documentation, labels)


def gauge(runtime: Runtime, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Gauge:
    return _metric(runtime, Gauge, name, documentation, labels)


def histogram(runtime: Runtime, name: str, documentation: str, labels: tuple[str, ...] = ()) -> Histogram:
    return _metric(runtime, Histogram, name, documentation, labels, buckets=LATENCY_BUCKETS)


def cache_events(runtime: Runtime) -> Counter:
    return counter(
        runtime,
        "analytics_mcp_cache_events_total",
        "Cache events by cache and outcome (hit/miss; too_large: an answer not stored)",
        ("cache", "outcome"),
    )
