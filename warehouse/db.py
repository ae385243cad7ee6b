"""The one place that talks to PostgreSQL: pools, schema, the least-privilege query role, bulk loads."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from analytics.errors import Unavailable
from warehouse import copy, sql
from warehouse.generator import Dataset

log = logging.getLogger(__name__)

ANALYTICS_TABLES = ("customers", "network_events", "revenue")
QUERY_ROLE = "analytics_mcp_reader"
# Serialises schema set-up between instances starting together (any constant is fine).
_SCHEMA_LOCK = 7_310_421_001

Progress = Callable[[str, int, int], None]

# Failures that mean "PostgreSQL is not reachable right now", as opposed to a bad statement.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.AdminShutdownError,
    asyncpg.ConnectionDoesNotExistError,
)
# Failures of a connection that was working: the server restarted, crashed or the network dropped.
# asyncpg discards such a connection on release and the pool opens a fresh one on the next acquire.
LOST_CONNECTION: tuple[type[BaseException], ...] = (
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
)
# The server's own named queries (snapshot, data version) are short; past this, PostgreSQL is
# taken to be unreachable rather than busy, so a hung server gives an error instead of a hang.
NAMED_QUERY_TIMEOUT = 60.0


@dataclass(frozen=True)
class LoadReport:
    customers: int
    network_events: int
    revenue: int
    seconds: float

    @property
    def rows(self) -> int:
        return self.customers + self.network_events + self.revenue


class Database:
    """asyncpg pools for one PostgreSQL database (and an optional read replica)."""

    def __init__(
        self,
        url: str,
        *,
        read_url: str | None = None,
        min_size: int = 5,
        max_size: int = 20,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.read_url = read_url
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        self._releases: set[asyncio.Task[None]] = set()  # connections being reset in the background
        # Each analytics table's size in pages as an analysis last saw it: where a scan is split
        # (warehouse/aggregates.py, fetch_in_parts). A hint only: a stale size never changes a result.
        self.table_pages: dict[str, int] = {}
        self._pool: asyncpg.Pool | None = None
        self._read_pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        try:
            self._pool = await self._create_pool(self.url)
            if self.read_url:
                self._read_pool = await self._create_pool(self.read_url)
        except (TimeoutError, OSError, asyncpg.PostgresError) as error:
            await self.close()
            raise Unavailable(
                f"PostgreSQL does not answer ({type(error).__name__}); check DATABASE_URL "
                "and that the server is running"
            ) from error

    async def _create_pool(self, url: str) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            url,
            connection_class=PooledConnection,
            min_size=min(self.min_size, self.max_size),
            max_size=self.max_size,
            timeout=self.connect_timeout,
            command_timeout=None,
            max_inactive_connection_lifetime=300,
        )
        assert pool is not None
        return pool

    async def close(self) -> None:
        if self._releases:  # connections still being reset on their way back to the pool
            await asyncio.wait(self._releases, timeout=5)
        for pool in (self._read_pool, self._pool):
            if pool is not None:
                try:
                    await asyncio.wait_for(pool.close(), timeout=5)
                except (TimeoutError, OSError):
                    pool.terminate()
        self._pool = self._read_pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise Unavailable("the database pool is not started")
        return self._pool

    @property
    def read_pool(self) -> asyncpg.Pool:
        """Queries and analyses read here: the replica when DATABASE_READ_URL is set."""
        return self._read_pool or self.pool

    def pool_stats(self) -> dict[str, int]:
        if self._pool is None:
            return {"size": 0, "idle": 0, "max": self.max_size}
        return {
            "size": self._pool.get_size(),
            "idle": self._pool.get_idle_size(),
            "max": self._pool.get_max_size(),
        }

    @asynccontextmanager
    async def connection(
        self, *, read: bool = False, timeout: float = 10.0, label: bool = True, release_later: bool = False
    ) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection. `label=False` tells the correlation layer (mcp_server/correlation.py)
        not to spend a round trip naming it after the call: for one short internal read, or when the
        caller sets the label itself in a batch it sends anyway (run_select's BEGIN).

        `release_later=True` returns it to the pool (which resets it: a round trip) in the background,
        once the caller has what it needs; `close` waits for those releases."""
        pool = self.read_pool if read else self.pool
        try:
            # The timeout covers opening a new connection too, so a dead server fails fast.
            conn = await pool.acquire(timeout=timeout)
        except (*CONNECTION_ERRORS, asyncpg.PostgresError) as error:
            # A PostgresError here is the server refusing a new connection (too many clients, database
            # not accepting connections, starting up): unavailable for now, not a bad statement.
            raise Unavailable(
                f"PostgreSQL is not reachable right now ({type(error).__name__}); retry shortly"
            ) from error
        try:
            yield conn
        except LOST_CONNECTION as error:
            raise Unavailable(
                f"the connection to PostgreSQL was lost ({type(error).__name__}); retry shortly"
            ) from error
        finally:
            if release_later:
                task = asyncio.create_task(_release(pool, conn, timeout))
                self._releases.add(task)
                task.add_done_callback(self._releases.discard)
            else:
                await _release(pool, conn, timeout)

    async def apply_schema(self) -> None:
        """Create tables, indexes, mcp_internal and the query role; safe to run on every start."""
        async with self.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await conn.execute(sql.load("schema"))
            await conn.execute(sql.load("query_role"))

    async def ping(self, timeout: float = 2.0, *, read: bool = False) -> None:
        async with self.connection(read=read, timeout=timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout)

    async def fetch_named(self, name: str, *args: Any, read: bool = True) -> list[asyncpg.Record]:
        async with self.connection(read=read) as conn:
            return await _bounded(conn.fetch(sql.load(name), *args, timeout=NAMED_QUERY_TIMEOUT))

    async def fetchrow_named(self, name: str, *args: Any, read: bool = True) -> asyncpg.Record | None:
        async with self.connection(read=read) as conn:
            return await _bounded(conn.fetchrow(sql.load(name), *args, timeout=NAMED_QUERY_TIMEOUT))

    async def data_version(self, conn: asyncpg.Connection | None = None) -> int:
        """Bumped by every data load; caches key on it so regenerated data is never served stale.

        Read from PostgreSQL on every call (the row is the truth, whoever bumps it), in one round trip:
        on `conn` when the caller holds one already, else on an unlabelled pooled connection; the
        statement is prepared once per connection."""
        if conn is not None:
            return await _read_version(conn)
        async with self.connection(read=True, label=False) as pooled:
            version = await _read_version(pooled)
            # One SELECT on a connection reset when it was last released: no state to reset again.
            untouched = getattr(pooled, "untouched", None)  # a PooledConnection, through the pool's proxy
            if untouched is not None:
                untouched()
            return version

    async def replace_data(self, data: Dataset, progress: Progress | None = None) -> LoadReport:
        """Swap the analytics tables' contents for `data` in one transaction (old data kept on failure)."""
        started = time.perf_counter()
        counts = {
            "customers": len(data.customers.created_at),
            "network_events": len(data.events.event_timestamp),
            "revenue": len(data.transactions.transaction_date),
        }
        total = sum(counts.values())
        done = 0

        def report(stage: str, rows: int) -> None:
            nonlocal done
            done += rows
            if progress is not None:
                progress(stage, done, total)

        async with self.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute("TRUNCATE customers, network_events, revenue")
            await conn.execute(sql.load("load_prepare"))
            report("cleared", 0)
            await _copy(conn, "customers", copy.CUSTOMER_COLUMNS, copy.customer_chunks(data))
            report("customers", counts["customers"])
            await _copy(conn, "revenue", copy.REVENUE_COLUMNS, copy.revenue_chunks(data))
            report("revenue", counts["revenue"])
            await _copy(conn, "network_events", copy.EVENT_COLUMNS, copy.event_chunks(data))
            report("network_events", counts["network_events"])
            await conn.execute(sql.load("load_finish"))
            await conn.execute(sql.load("schema"))
            report("indexes", 0)
            plan = data.plan
            await conn.execute(
                "UPDATE mcp_internal.data_version SET version = version + 1, seed = $1, "
                "customers = $2, start_date = $3, end_date = $4, loaded_at = now()",
                plan.seed,
                plan.customers,
                plan.start_date,
                plan.end_date,
            )
        async with self.connection() as conn:
            await conn.execute("ANALYZE customers, network_events, revenue")
        return LoadReport(
            counts["customers"],
            counts["network_events"],
            counts["revenue"],
            time.perf_counter() - started,
        )

    async def row_count(self, table: str) -> int:
        if table not in ANALYTICS_TABLES:
            raise ValueError(table)
        async with self.connection(read=True) as conn:
            return int(await conn.fetchval(f'SELECT count(*) FROM "{table}"'))


async def _release(pool: asyncpg.Pool, conn: asyncpg.Connection, timeout: float) -> None:
    try:
        await asyncio.wait_for(pool.release(conn), timeout=timeout)
    except CONNECTION_ERRORS:
        conn.terminate()  # broken: drop it; the pool replaces it on a later acquire
    except Exception:  # noqa: BLE001 - a failed reset: the pool has terminated the connection already
        log.debug("connection release failed", exc_info=True)


async def _read_version(conn: asyncpg.Connection) -> int:
    value = await _bounded(
        conn.fetchval("SELECT version FROM mcp_internal.data_version", timeout=NAMED_QUERY_TIMEOUT)
    )
    return int(value or 0)


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection that may skip the server-side reset (RESET ALL, CLOSE ALL, UNLISTEN *, advisory
    unlock: one round trip) on its way back to the pool when its holder vouches that it ran nothing but
    plain reads since it was last reset (`untouched`). Everyone else's connection is reset as always."""

    __slots__ = ("_untouched",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._untouched = False

    def untouched(self) -> None:
        """Say, just before releasing it, that this connection only ran plain reads since its last reset."""
        self._untouched = True

    def get_reset_query(self) -> str:
        untouched, self._untouched = self._untouched, False
        return "" if untouched else str(super().get_reset_query())


async def _bounded(awaitable: Any) -> Any:
    """A named query that outlived NAMED_QUERY_TIMEOUT means a hung server: say so in one line."""
    try:
        return await awaitable
    except TimeoutError as error:
        raise Unavailable(
            f"PostgreSQL did not answer within {NAMED_QUERY_TIMEOUT:.0f} s; retry shortly"
        ) from error


async def _copy(conn: asyncpg.Connection, table: str, columns: list[str], chunks: Iterator[bytes]) -> None:
    async def source() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    await conn.copy_to_table(table, source=source(), columns=columns, format="binary")
