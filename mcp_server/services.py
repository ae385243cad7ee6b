"""The services a running server shares between its tools and its edge, built once with the runtime; the
background writers and the chart pool are stopped, with what they hold written, when the runtime closes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import cachetools
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from core.batching import BatchWriter
from mcp_server import metrics
from mcp_server.audit import Auditor
from mcp_server.budget import QuerySeconds
from mcp_server.chartpool import ChartPool
from mcp_server.config import Settings
from mcp_server.ratelimit import RateLimiter
from sessions.artifacts import ArtifactStore
from sessions.store import SessionStore
from warehouse.archive import SessionArchive
from warehouse.db import Database
from warehouse.query import QueryLogEntry, write_query_log

CONCURRENT_IMPORTS = 2  # parsing is CPU and memory heavy: a few imports at a time per instance


class CatalogCache:
    """Rendered schema pages kept SCHEMA_CACHE_SECONDS (agents read them often, DDL is rare); a load clears it."""

    def __init__(self, seconds: float) -> None:
        # One page per table plus the overview: the size bound is only a backstop. With 0 seconds
        # (SCHEMA_CACHE_SECONDS=0) a TTLCache never answers what it holds: every read renders.
        self._pages: cachetools.TTLCache[str, str] = cachetools.TTLCache(maxsize=1_024, ttl=seconds)

    async def page(self, key: str, render: Callable[[], Awaitable[str]]) -> str:
        cached = self._pages.get(key)
        if cached is not None:
            return cached
        text = await render()
        self._pages[key] = text
        return text

    async def clear(self) -> None:
        self._pages.clear()

    async def forget(self, prefix: str) -> None:
        """Drop the pages whose key starts with `prefix` (a refreshed source's, see `source_pages`)."""
        for key in [key for key in list(self._pages) if key.startswith(prefix)]:
            self._pages.pop(key, None)


def source_pages(source: str) -> str:
    """The key prefix of a data source's cached schema pages (followed by the sources file's digest)."""
    return f"source:{source}:"


class WriterMetrics:
    """The background writers' state as Prometheus series, brought up to date at each scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.queued = metrics.gauge(
            registry, "analytics_mcp_writer_queued_items", "Items waiting in a background writer", ("writer",)
        )
        self.failing = metrics.gauge(
            registry, "analytics_mcp_writer_failing", "1 while a background writer's writes fail", ("writer",)
        )
        self.failures = metrics.counter(
            registry, "analytics_mcp_writer_failures_total", "Failed batch writes (each retried)", ("writer",)
        )
        self.dropped = metrics.counter(
            registry, "analytics_mcp_writer_dropped_total", "Items a background writer dropped", ("writer",)
        )
        self._counted: dict[tuple[str, str], int] = {}

    def _advance(self, counter: Any, name: str, kind: str, total: int) -> None:
        # Prometheus counters only go up: add what the writer counted since the last scrape.
        counter.labels(writer=name).inc(max(0, total - self._counted.get((name, kind), 0)))
        self._counted[(name, kind)] = total

    def refresh(self, writers: Iterable[BatchWriter[Any]]) -> None:
        for writer in writers:
            self.queued.labels(writer=writer.name).set(writer.queued)
            self.failing.labels(writer=writer.name).set(0 if writer.failing_since is None else 1)
            self._advance(self.failures, writer.name, "failures", writer.failures)
            self._advance(self.dropped, writer.name, "dropped", writer.dropped)


@dataclass
class Services:
    session_store: SessionStore
    artifact_store: ArtifactStore
    rate_limiter: RateLimiter
    query_seconds: QuerySeconds
    auditor: Auditor
    query_log: BatchWriter[QueryLogEntry]
    catalog_cache: CatalogCache
    charts: ChartPool
    import_slots: asyncio.Semaphore
    writer_metrics: WriterMetrics

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: Database,
        redis: aioredis.Redis,
        encryption_keys: tuple[str, ...],
        registry: CollectorRegistry,
    ) -> Services:
        prefix = settings.redis_key_prefix
        return cls(
            session_store=SessionStore(
                redis,
                key_prefix=prefix,
                encryption_keys=encryption_keys,
                archive=SessionArchive(db),
                max_value_bytes=settings.session_max_value_bytes,
                max_session_bytes=settings.session_max_bytes,
                max_ttl_seconds=settings.session_max_ttl_seconds,
                max_session_keys=settings.session_max_keys,
            ),
            artifact_store=ArtifactStore(
                redis,
                key_prefix=prefix,
                encryption_keys=encryption_keys,
                ttl_seconds=settings.artifact_ttl_seconds,
            ),
            rate_limiter=RateLimiter(redis, settings, registry),
            query_seconds=QuerySeconds(redis, settings, registry),
            auditor=Auditor(db, registry),
            query_log=BatchWriter("query_log", functools.partial(write_query_log, db)),
            catalog_cache=CatalogCache(settings.schema_cache_seconds),
            charts=ChartPool(settings.chart_workers),
            import_slots=asyncio.Semaphore(CONCURRENT_IMPORTS),
            writer_metrics=WriterMetrics(registry),
        )

    @property
    def writers(self) -> tuple[BatchWriter[Any], ...]:
        return (self.auditor.writer, self.query_log)

    def writer_states(self) -> dict[str, dict[str, Any]]:
        """What /health shows of the background writers."""
        return {writer.name: writer.state() for writer in self.writers}

    async def data_replaced(self) -> None:
        """After a data load: what was derived from the old data is dropped."""
        await self.catalog_cache.clear()

    async def close(self) -> None:
        """Write what the background writers hold (each retries a failing store a few seconds) and stop
        the chart workers; called by Runtime.close while PostgreSQL and Redis are still open."""
        await self.charts.close()
        for writer in self.writers:
            await writer.close()
