"""The services a running server shares between its tools and its edge, built once with the runtime.

Each is a named, typed attribute (no string-keyed bag); the background writers and the chart pool
are stopped, with what they hold written, when the runtime closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import cachetools
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from mcp_server.audit import Auditor
from mcp_server.batching import BatchWriter, WriterMetrics
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
    """Rendered schema pages kept for a few seconds: agents read them often, the catalog rarely changes.

    One per runtime (in-process); a data load clears it, and SCHEMA_CACHE_SECONDS bounds staleness
    after DDL (an added column shows up at most that many seconds later).
    """

    def __init__(self, seconds: float) -> None:
        # One page per table plus the overview: the size bound is only a backstop.
        self._pages: cachetools.TTLCache[str, str] | None = (
            cachetools.TTLCache(maxsize=1_024, ttl=seconds) if seconds > 0 else None
        )

    async def page(self, key: str, render: Callable[[], Awaitable[str]]) -> str:
        cached: str | None = self._pages.get(key) if self._pages is not None else None
        if cached is not None:
            return cached
        text = await render()
        if self._pages is not None:
            self._pages[key] = text
        return text

    async def clear(self) -> None:
        if self._pages is not None:
            self._pages.clear()


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

        async def write_queries(entries: list[QueryLogEntry]) -> None:
            await write_query_log(db, entries)

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
            query_log=BatchWriter("query_log", write_queries),
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
