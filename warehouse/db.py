"""The one place that talks to PostgreSQL: pools, schema, the least-privilege query role, bulk loads."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from core.errors import Forbidden, Unavailable
from warehouse import copy, sql
from warehouse.generator import Dataset
from warehouse.replica import ReplicaWatch, wait_for_replay
from warehouse.shares import Shares, current_owner
from warehouse.versions import VersionWatch

log = logging.getLogger(__name__)

ANALYTICS_TABLES = ("customers", "network_events", "revenue")
# Agent queries log in as QUERY_ROLE_PREFIX + a digest of the database's name (query_role_name).
QUERY_ROLE_PREFIX = "analytics_mcp_query_"
# Serialises schema set-up between instances starting together (any constant is fine).
_SCHEMA_LOCK = 7_310_421_001

Progress = Callable[[str, int, int], None]


def query_role_name(database: str) -> str:
    """The role the server creates for agent queries on `database`: one per database, since roles are
    cluster-wide and databases sharing a cluster must not share (or reset) one password. 32 bytes."""
    return QUERY_ROLE_PREFIX + hashlib.sha256(database.encode()).hexdigest()[:12]


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
# Session settings of every connection of the main and read pools, where analyses run: JIT compilation
# of their scans costs more than it saves (up to a second at 100,000 customers), hash aggregates over
# customers fit in memory with a little more room, and custom plans see the actual date bounds (a
# generic plan would guess the rows a range keeps). Sent at login, so RESET ALL on release keeps them.
ANALYSIS_SETTINGS = {"jit": "off", "work_mem": "64MB", "plan_cache_mode": "force_custom_plan"}
# The server's own named queries (snapshot, data version) are short; past this, PostgreSQL is
# taken to be unreachable rather than busy, so a hung server gives an error instead of a hang.
NAMED_QUERY_TIMEOUT = 60.0
# At shutdown, how long a pool waits for its connections in use before it drops them.
POOL_CLOSE_SECONDS = 5.0


@dataclass(frozen=True)
class LoadReport:
    customers: int
    network_events: int
    revenue: int
    seconds: float

    @property
    def rows(self) -> int:
        return self.customers + self.network_events + self.revenue


async def close_pool(pool: asyncpg.Pool, seconds: float = POOL_CLOSE_SECONDS) -> None:
    """Close `pool` gracefully, waiting at most `seconds` for connections still in use, then drop them:
    a connection a cancelled task never gave back must not hang a shutdown."""
    try:
        await asyncio.wait_for(pool.close(), timeout=seconds)
    except Exception:  # noqa: BLE001 - a pool that will not close cleanly is terminated
        pool.terminate()


class Database:
    """asyncpg pools for one PostgreSQL database (and an optional read replica), and the pool agent
    queries run on, which logs in as the query role (`query_url`: an operator's read-only account)."""

    def __init__(
        self,
        url: str,
        *,
        read_url: str | None = None,
        query_url: str | None = None,
        min_size: int = 5,
        max_size: int = 20,
        connect_timeout: float = 5.0,
        share_per_owner: int = 4,
    ) -> None:
        self.url = url
        self.read_url = read_url
        self.query_url = query_url
        self.query_role: str | None = None  # who agent queries log in as, once apply_schema has run
        self.min_size = min_size
        self.max_size = max_size
        self.connect_timeout = connect_timeout
        # One caller's read connections at once (QUERY_MAX_CONCURRENT_PER_KEY), never over half the pool.
        self.shares = Shares(max(1, min(share_per_owner, max_size // 2)))
        self._pool: asyncpg.Pool | None = None
        self._read_pool: asyncpg.Pool | None = None
        self._query_pool: asyncpg.Pool | None = None
        # With a replica: whether it answers and its lag (warehouse/replica.py); while it does not, reads
        # and agent queries use the primary (the query role's standby pool there).
        self.replica: ReplicaWatch | None = None
        self._primary_query_pool: asyncpg.Pool | None = None
        # The data version as notified (warehouse/versions.py), once watch_data_version has run.
        self.versions: VersionWatch | None = None

    async def start(self) -> None:
        try:
            self._pool = await self._create_pool(self.url, server_settings=ANALYSIS_SETTINGS)
            if self.read_url:
                self._read_pool = await self._create_pool(self.read_url, server_settings=ANALYSIS_SETTINGS)
                self.replica = ReplicaWatch(self.read_url, on_change=self._replica_changed)
                await self.replica.start()
        except (TimeoutError, OSError, asyncpg.PostgresError) as error:
            await self.close()
            raise Unavailable(
                f"PostgreSQL does not answer ({type(error).__name__}); check DATABASE_URL "
                "and that the server is running"
            ) from error

    async def _create_pool(self, url: str, **options: Any) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            url,
            **options,
            min_size=min(self.min_size, self.max_size),
            max_size=self.max_size,
            timeout=self.connect_timeout,
            command_timeout=None,
            max_inactive_connection_lifetime=300,
        )
        assert pool is not None
        return pool

    async def close(self) -> None:
        if self.replica is not None:
            await self.replica.close()
            self.replica = None
        if self.versions is not None:
            await self.versions.close()
            self.versions = None
        for pool in (self._query_pool, self._primary_query_pool, self._read_pool, self._pool):
            if pool is not None:
                await close_pool(pool)
        self._pool = self._read_pool = self._query_pool = self._primary_query_pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise Unavailable("the database pool is not started")
        return self._pool

    @property
    def read_pool(self) -> asyncpg.Pool:
        """Queries and analyses read here: the replica when DATABASE_READ_URL is set, unless it is down."""
        if self._read_pool is not None and self._replica_up:
            return self._read_pool
        return self.pool

    @property
    def _replica_up(self) -> bool:
        return self.replica is None or self.replica.up

    def _suspect(self, pool: asyncpg.Pool) -> None:
        """A replica connection failed: the watch probes now, so reads move to the primary sooner."""
        if self.replica is not None and pool in (self._read_pool, self._query_pool):
            self.replica.suspect()

    async def _replica_changed(self, up: bool) -> None:
        """The replica is back: its pooled connections died with it, so open fresh ones."""
        if up:
            for pool in (self._read_pool, self._query_pool):
                if pool is not None:
                    await pool.expire_connections()

    @property
    def query_pool(self) -> asyncpg.Pool:
        """Agent queries (warehouse/query.py run_select) run here, logged in as the query role."""
        if self._query_pool is None:
            raise Unavailable("the query pool is not started; retry shortly")
        if self._primary_query_pool is not None and not self._replica_up:
            return self._primary_query_pool
        return self._query_pool

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
        self,
        *,
        read: bool = False,
        query: bool = False,
        timeout: float = 10.0,
    ) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection. `query=True`: a connection of the query pool (logged in as the query
        role), for agent SQL and nothing else.

        A read on behalf of a caller (the owner bound by the MCP edge) counts against that caller's
        share (warehouse/shares.py) until the connection is back in the pool."""
        pool = self.query_pool if query else self.read_pool if read else self.pool
        give_back = await self.shares.take(current_owner() if read else None)
        try:
            # The timeout covers opening a new connection too, so a dead server fails fast.
            conn = await pool.acquire(timeout=timeout)
        except BaseException as error:
            give_back()
            if isinstance(error, TimeoutError) and _all_in_use(pool):
                # Waited the whole timeout for one of N live connections: busy, not down (no suspicion).
                raise Unavailable(
                    f"the server is busy: all {pool.get_max_size()} database connections are in use; "
                    "retry in a few seconds"
                ) from error
            if isinstance(error, (*CONNECTION_ERRORS, asyncpg.PostgresError)):
                self._suspect(pool)
                # A PostgresError here is the server refusing a new connection (too many clients, database
                # not accepting connections, starting up): unavailable for now, not a bad statement.
                raise Unavailable(
                    f"PostgreSQL is not reachable right now ({type(error).__name__}); retry shortly"
                ) from error
            raise
        try:
            yield conn
        except LOST_CONNECTION as error:
            self._suspect(pool)
            raise Unavailable(
                f"the connection to PostgreSQL was lost ({type(error).__name__}); retry shortly"
            ) from error
        finally:
            try:
                await _release(pool, conn, timeout)
            finally:
                give_back()

    async def apply_schema(self) -> None:
        """Create tables, indexes, mcp_internal and the query role with its grants, then open the query
        pool that logs in as it; safe to run on every start.

        The role is the server's own (query_role.sql: LOGIN and nothing else, a generated password kept
        in mcp_internal) unless DATABASE_QUERY_URL names an account the operator made; either way the
        pool refuses to start when its login could reach beyond reading (_check_query_login)."""
        if self.query_url is not None and self._query_pool is None:
            self._query_pool = await self._open_query_pool(self.query_url, "DATABASE_QUERY_URL")
        password = None
        async with self.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await conn.execute(sql.load("schema"))
            if self.query_url is None:
                role = query_role_name(await conn.fetchval("SELECT current_database()"))
                await conn.execute("SELECT set_config('analytics_mcp.query_role', $1, true)", role)
                try:
                    await conn.execute(sql.load("query_role"))
                except asyncpg.InsufficientPrivilegeError:
                    raise Forbidden(
                        "DATABASE_URL's user may not create the role agent queries log in as; give it "
                        "CREATEROLE, or set DATABASE_QUERY_URL to a read-only account made for them"
                    ) from None
                password = await conn.fetchval(
                    "SELECT password FROM mcp_internal.query_login WHERE role_name = $1", role
                )
            else:
                assert self.query_role is not None  # _open_query_pool learnt it above
                role = self.query_role
                await conn.execute("SELECT set_config('analytics_mcp.query_role', $1, true)", role)
            await conn.execute(sql.load("query_grants"))
        if self._query_pool is None and self._read_pool is not None:
            await wait_for_replay(self.pool, self._read_pool)  # the role just made must be there first
        if self._query_pool is None:
            # The same server (the replica when DATABASE_READ_URL is set), as the query role.
            self._query_pool = await self._open_query_pool(
                self.read_url or self.url, "the query role", user=role, password=password
            )
            if self.read_url:  # where agent queries run while the replica is down
                self._primary_query_pool = await self._open_query_pool(
                    self.url, "the query role", user=role, password=password
                )

    async def _open_query_pool(self, url: str, source: str, **login: Any) -> asyncpg.Pool:
        """A pool whose connections start read-only, after checking who it logs in as."""
        try:
            pool = await self._create_pool(
                url, server_settings={"default_transaction_read_only": "on"}, **login
            )
        except (TimeoutError, OSError, asyncpg.PostgresError) as error:
            name = login.get("user") or "DATABASE_QUERY_URL's user"
            raise Unavailable(
                f"{source} cannot log in to PostgreSQL as {name} ({type(error).__name__}); allow it in "
                "pg_hba.conf (password login), or set DATABASE_QUERY_URL to a read-only account that can"
            ) from error
        try:
            self.query_role = await _check_query_login(pool, source)
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def builtin_functions(self) -> frozenset[str]:
        """Names of the functions PostgreSQL itself ships (pg_catalog, OIDs below 16384): what the SQL
        guard lets agent queries call (warehouse/sqlguard.py FunctionPolicy). Read once at start-up."""
        rows = await self.fetch_named("builtin_functions", read=False)
        return frozenset(row["name"] for row in rows)

    async def ping(self, timeout: float = 2.0, *, read: bool = False) -> None:
        async with self.connection(read=read, timeout=timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout)

    async def fetch_named(self, name: str, *args: Any, read: bool = True) -> list[asyncpg.Record]:
        async with self.connection(read=read) as conn:
            rows: list[asyncpg.Record] = await _bounded(
                conn.fetch(sql.load(name), *args, timeout=NAMED_QUERY_TIMEOUT)
            )
            return rows

    async def fetchrow_named(self, name: str, *args: Any, read: bool = True) -> asyncpg.Record | None:
        async with self.connection(read=read) as conn:
            return await _bounded(conn.fetchrow(sql.load(name), *args, timeout=NAMED_QUERY_TIMEOUT))

    async def watch_data_version(self) -> None:
        """Learn the data version from notifications from now on (after apply_schema: the trigger
        that sends them is in the schema). Not with a read replica: its rows (and so the data the
        queries see) may lag behind a notification from the primary, so there it is read per call."""
        if self.versions is None and self.read_url is None:
            self.versions = VersionWatch(self.url, connect_timeout=self.connect_timeout)
            await self.versions.start()

    async def data_version(self, conn: asyncpg.Connection | None = None) -> int:
        """Bumped by every data load; caches key on it so regenerated data is never served stale.

        The version the listener last heard of (warehouse/versions.py: no round trip), whoever bumped
        it; while it is not listening, read from PostgreSQL in one round trip: on `conn` when the
        caller holds one already, else on a pooled connection."""
        known = self.versions.current if self.versions is not None else None
        if known is not None:
            return known
        if conn is not None:
            return await _read_version(conn)
        async with self.connection(read=True) as pooled:
            return await _read_version(pooled)

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
            version = await conn.fetchval(
                "UPDATE mcp_internal.data_version SET version = version + 1, seed = $1, "
                "customers = $2, start_date = $3, end_date = $4, loaded_at = now() RETURNING version",
                plan.seed,
                plan.customers,
                plan.start_date,
                plan.end_date,
            )
        self._saw_version(version)
        async with self.connection() as conn:
            await conn.execute("ANALYZE customers, network_events, revenue")
        return LoadReport(
            counts["customers"],
            counts["network_events"],
            counts["revenue"],
            time.perf_counter() - started,
        )

    async def clear_data(self) -> dict[str, tuple[int, int]]:
        """Empty the analytics tables (reset_data): each table's row count before and after; the data
        version is bumped like a load, so nothing derived from the old rows is served."""

        async def counts(conn: asyncpg.Connection) -> dict[str, int]:
            return {t: int(await conn.fetchval(f'SELECT count(*) FROM "{t}"')) for t in ANALYTICS_TABLES}

        async with self.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            before = await counts(conn)
            await conn.execute("TRUNCATE customers, network_events, revenue")
            version = await conn.fetchval(
                "UPDATE mcp_internal.data_version SET version = version + 1, loaded_at = now() RETURNING version"
            )
            after = await counts(conn)
        self._saw_version(version)
        return {table: (before[table], after[table]) for table in ANALYTICS_TABLES}

    def _saw_version(self, version: int) -> None:
        """A version this instance committed: its own next calls use it without waiting for the notice."""
        if self.versions is not None:
            self.versions.saw(int(version))

    async def row_count(self, table: str) -> int:
        if table not in ANALYTICS_TABLES:
            raise ValueError(table)
        async with self.connection(read=True) as conn:
            return int(await conn.fetchval(f'SELECT count(*) FROM "{table}"'))


def _all_in_use(pool: asyncpg.Pool) -> bool:
    """Every connection the pool may have is open and lent out: an acquire that timed out then was
    waiting its turn, not failing to reach the server (a connection still opening is not counted)."""
    return bool(pool.get_size() == pool.get_max_size() and pool.get_idle_size() == 0)


async def _release(pool: asyncpg.Pool, conn: asyncpg.Connection, timeout: float) -> None:
    try:
        await asyncio.wait_for(pool.release(conn), timeout=timeout)
    except CONNECTION_ERRORS:
        conn.terminate()  # broken: drop it; the pool replaces it on a later acquire
    except Exception:  # noqa: BLE001 - a failed reset: the pool has terminated the connection already
        log.debug("connection release failed", exc_info=True)


async def _check_query_login(pool: asyncpg.Pool, source: str) -> str:
    """The role the query pool logs in as; Forbidden when it is anything but a plain reader."""
    row = await _bounded(pool.fetchrow(sql.load("query_role_check"), timeout=NAMED_QUERY_TIMEOUT))
    role, predefined = str(row["role_name"]), list(row["predefined_roles"])
    if row["privileged"] or predefined:
        what = (
            "a superuser, replication or BYPASSRLS role"
            if row["privileged"]
            else "a member of " + ", ".join(predefined)
        )
        raise Forbidden(
            f"{source} logs in as {role}, {what}; agent queries need a login that can only read: "
            "use a plain role with SELECT on the analytics tables"
        )
    return role


async def _read_version(conn: asyncpg.Connection) -> int:
    value = await _bounded(
        conn.fetchval("SELECT version FROM mcp_internal.data_version", timeout=NAMED_QUERY_TIMEOUT)
    )
    return int(value or 0)


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
