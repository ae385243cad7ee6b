"""The running engines of the registered sources: one per source other than the built-in `main`,
swapped whole when the sources file changes, old engines closed once their in-flight queries end.
Each source runs at most its `max_concurrent` queries at once, so a slow source never starves another."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import NotFound, RateLimited
from warehouse.engines import Engine, GuardedStatement, QueryEngine, RelationRules
from warehouse.query import QueryResult
from warehouse.shares import Shares, current_owner
from warehouse.sources import MAIN, Registry, Source, SourceConfigError, watch

log = logging.getLogger(__name__)

# How long a query waits for a slot on a source already running its `max_concurrent` queries.
SLOT_WAIT_SECONDS = 5.0
# Connections (DuckDB: worker threads) an engine has beyond its source's `max_concurrent`: catalog reads
# (list_sources, schema://) and stopping a timed-out query do not queue behind a full source.
SPARE_CONNECTIONS = 1


def build_engine(source: Source, allowed_functions: frozenset[str] = frozenset()) -> Engine:
    """The engine of one non-main source (not started), its pool sized to the source's limit;
    `allowed_functions` is QUERY_ALLOWED_FUNCTIONS, which PostgreSQL sources apply like main."""
    rules = RelationRules(source.tables, source.exclude)
    size = source.max_concurrent + SPARE_CONNECTIONS
    if source.kind == "mysql":
        from warehouse.engines.mysql import MySQLEngine

        return MySQLEngine(source.url.get_secret_value(), name=source.name, rules=rules, pool_size=size)
    if source.kind == "files":
        from warehouse.engines.duckdb_files import FilesEngine

        return FilesEngine(source.name, source.directory, rules=rules, concurrency=size)
    if source.kind == "postgresql":
        from warehouse.engines.postgres import PostgresEngine

        return PostgresEngine(
            source.url.get_secret_value(),
            name=source.name,
            schemas=source.schemas,
            rules=rules,
            pool_size=size,
            allowed_functions=allowed_functions,
        )
    raise SourceConfigError(
        f"ANALYTICS_MCP_SOURCES: [sources.{source.name}] has an engine this server does not know; "
        "use a postgresql://, mysql:// or files:// source"
    )


@dataclass(frozen=True)
class _Slots:
    """The queries one source may run at once: its `max_concurrent`, never more than its engine's pool."""

    limit: int
    semaphore: asyncio.Semaphore

    @classmethod
    def of(cls, source: Source, engine: Engine) -> _Slots:
        limit = max(1, min(source.max_concurrent, engine.pool_size))
        return cls(limit, asyncio.Semaphore(limit))


class _Generation:
    """One registry and its engines; closed when replaced and no query still uses it."""

    def __init__(
        self, registry: Registry, engines: Mapping[str, Engine], slots: Mapping[str, _Slots] | None = None
    ) -> None:
        self.registry = registry
        self.engines = dict(engines)
        # A kept engine keeps its slots (and the queries holding them); a new engine gets its own.
        self.slots = {
            name: (slots or {}).get(name) or _Slots.of(registry.get(name), engine)
            for name, engine in self.engines.items()
        }
        self.in_flight = 0
        self.retired = False

    async def close(self) -> None:
        for name, engine in self.engines.items():
            try:
                await engine.close()
            except Exception:  # noqa: BLE001 - closing goes on for the other engines
                log.warning("closing the engine of source '%s' failed", name)


async def start_engines(
    registry: Registry, allowed_functions: frozenset[str] = frozenset()
) -> dict[str, Engine]:
    """Started engines for every non-main source of `registry`; on a failure the started ones are closed."""
    engines: dict[str, Engine] = {}
    try:
        for source in registry:
            if source.name == MAIN:
                continue
            engine = build_engine(source, allowed_functions)
            await engine.start()
            engines[source.name] = engine
    except BaseException:
        for engine in engines.values():
            await engine.close()
        raise
    return engines


class ActiveSources:
    """The current registry and its started engines; `use` hands out an engine for one query."""

    def __init__(
        self,
        registry: Registry,
        engines: Mapping[str, Engine] | None = None,
        *,
        wait_seconds: float = SLOT_WAIT_SECONDS,
        allowed_functions: frozenset[str] = frozenset(),
    ) -> None:
        self._current = _Generation(registry, engines or {})
        self.wait_seconds = wait_seconds  # for a slot on a source running its max_concurrent queries
        self.allowed_functions = allowed_functions  # QUERY_ALLOWED_FUNCTIONS, for engines a reload starts
        self._watcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # set: the watcher re-reads the sources file now
        # Called with the names of the sources a reload started (their profiles are computed anew).
        self.on_started: Callable[[list[str]], None] | None = None
        # Called with each valid new registry the watcher reads from the file, before its engines start
        # (other instances are told at once, so they start theirs meanwhile rather than after).
        self.on_file_changed: Callable[[Registry], None] | None = None

    @classmethod
    async def start(
        cls, registry: Registry, allowed_functions: frozenset[str] = frozenset()
    ) -> ActiveSources:
        return cls(
            registry,
            await start_engines(registry, allowed_functions),
            allowed_functions=allowed_functions,
        )

    @property
    def registry(self) -> Registry:
        return self._current.registry

    def source(self, name: str | None) -> Source:
        """The source called `name` (None, `main`, `database`: the built-in one); NotFound names them all."""
        return self.registry.get(name)

    def has_engine(self, name: str) -> bool:
        return name in self._current.engines

    def engine_now(self, name: str) -> Engine:
        """The engine of a non-main source, for a catalog read (no in-flight accounting)."""
        engine = self._current.engines.get(self.registry.get(name).name)
        if engine is None:
            raise NotFound(f"source '{name}' has no engine; sources: {', '.join(self.registry.names)}")
        return engine

    @contextlib.asynccontextmanager
    async def use(self, name: str) -> AsyncIterator[Engine]:
        """The engine of source `name` for one query, holding one of the source's `max_concurrent` slots:
        waits up to `wait_seconds` for one, then refuses in one line. A reload meanwhile closes the
        engine only after this ends."""
        generation = self._current
        source = generation.registry.get(name)
        engine = generation.engines.get(source.name)
        if engine is None:
            raise NotFound(f"source '{name}' has no engine; sources: {', '.join(generation.registry.names)}")
        slots = generation.slots[source.name]
        generation.in_flight += 1  # counted while waiting too: a reload must not close the engine under it
        try:
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await slots.semaphore.acquire()
            except TimeoutError:
                raise RateLimited(
                    f"source '{source.name}' already runs {slots.limit} queries (max_concurrent); "
                    "retry shortly",
                    retry_after=1,
                ) from None
            try:
                yield engine
            finally:
                slots.semaphore.release()
        finally:
            generation.in_flight -= 1
            if generation.retired and generation.in_flight == 0:
                await generation.close()

    async def replace(self, registry: Registry) -> bool:
        """Swap to `registry`: engines of unchanged sources are kept, others started; a source that will
        not start keeps the old definitions (logged in one line) and answers False."""
        old = self._current
        kept = {
            name: engine
            for name, engine in old.engines.items()
            if name in registry and old.registry.get(name) == registry.get(name)
        }
        started: dict[str, Engine] = {}
        try:
            for source in registry:
                if source.name == MAIN or source.name in kept:
                    continue
                engine = build_engine(source, self.allowed_functions)
                await engine.start()
                started[source.name] = engine
        except Exception as error:  # noqa: BLE001 - a bad edit keeps the sources that work
            for engine in started.values():
                await engine.close()
            log.warning("sources not reloaded, keeping the current ones: %s", str(error).splitlines()[0])
            return False
        self._current = _Generation(registry, {**kept, **started}, {name: old.slots[name] for name in kept})
        retiring = _Generation(old.registry, {n: e for n, e in old.engines.items() if n not in kept})
        old.engines = retiring.engines  # in-flight queries of the old generation release these
        old.retired = True
        if old.in_flight == 0:
            await old.close()
        if self.on_started is not None and started:
            self.on_started(list(started))
        return True

    def watch(self, path: str | Path, env: Mapping[str, str], *, interval: float = 1.0) -> None:
        """Follow the sources file: an edit that validates replaces the sources within `interval`
        seconds, or at once after `recheck`."""
        self._watcher = asyncio.create_task(
            watch(path, self._reloaded, env=env, current=self.registry, interval=interval, wake=self._wake),
            name="sources-watch",
        )

    @property
    def watching(self) -> bool:
        return self._watcher is not None

    def recheck(self) -> None:
        """Re-read the watched sources file now rather than at the next poll (another instance changed
        the sources); the same validation and `replace` as a poll, so a bad file changes nothing."""
        self._wake.set()

    async def _reloaded(self, registry: Registry) -> None:
        if self.on_file_changed is not None:
            self.on_file_changed(registry)
        await self.replace(registry)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watcher
            self._watcher = None
        await self._current.close()  # shutting down: in-flight queries are being cancelled anyway


async def run_on(
    engine: QueryEngine,
    statement: GuardedStatement,
    parameters: Mapping[str, Any],
    *,
    shares: Shares,
    timeout: float,
    max_rows: int,
    max_bytes: int,
) -> QueryResult:
    """Run a guarded statement on `engine` within the caller's fair share of connections."""
    give_back = await shares.take(current_owner())
    try:
        return await engine.run(
            statement, parameters, timeout=timeout, max_rows=max_rows, max_bytes=max_bytes
        )
    finally:
        give_back()
