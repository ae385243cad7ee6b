"""The read replica's state, checked in the background: how far it lags its primary, and whether it
answers at all; while it does not, queries and analyses read from the primary (Database.read_pool).

One probe every CHECK_SECONDS over its own connection, bounded by PROBE_TIMEOUT: a replica that refuses
or hangs is marked down after one failed probe (so reads move to the primary within CHECK_SECONDS +
PROBE_TIMEOUT, sooner when a read there fails) and up again after one that answers. Each change is
one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from warehouse import sql

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
PROBE_TIMEOUT = 2.0
# A read that fails on the replica asks for a probe at once (suspect), but never more often than this.
SUSPECT_GAP_SECONDS = 0.25
# At start-up the query pool opens on the replica as the query role the primary has just made: first
# wait (this long at most) until the replica has replayed it.
REPLAY_WAIT_SECONDS = 15.0
PRIMARY_POSITION_SQL = "SELECT pg_current_wal_lsn()::text"
REPLAYED_SQL = (
    "SELECT NOT pg_is_in_recovery() OR coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false)"
)
OK = "ok"
READING_FROM_PRIMARY = "down, reading from the primary"


class ReplicaWatch:
    """Probes the replica at `url`; `up` picks the pool reads use, `lag_seconds` is the last lag seen."""

    def __init__(
        self,
        url: str,
        *,
        interval: float = CHECK_SECONDS,
        timeout: float = PROBE_TIMEOUT,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
    ) -> None:
        self._url = url
        self._interval = interval
        self._timeout = timeout
        self._on_change = on_change
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._suspected = asyncio.Event()
        self.up = True  # until a probe says otherwise: the read pool opened on it a moment ago
        self.lag_seconds: float | None = None  # None until the first probe, and while down

    @property
    def state(self) -> str:
        return OK if self.up else READING_FROM_PRIMARY

    async def start(self) -> None:
        """Probe once now (so lag is known from the start), then every `interval` in the background."""
        await self.probe()
        self._task = asyncio.create_task(self._run(), name="replica watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connection()

    async def probe(self) -> None:
        """Read the lag; a replica that fails to answer within the timeout is down. A kept connection
        that fails is replaced at once (the replica may have restarted) before calling it down."""
        for attempt in range(2):
            fresh = self._conn is None or self._conn.is_closed()
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self._url,
                        timeout=self._timeout,
                        server_settings={"application_name": "analytics-mcp replica watch"},
                    )
                lag = await self._conn.fetchval(sql.load("replica_lag"), timeout=self._timeout)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                await self._drop_connection()
                if fresh or attempt:
                    self.lag_seconds = None
                    await self._mark(False, type(error).__name__)
                    return
                continue
            self.lag_seconds = round(float(lag), 3)
            await self._mark(True)
            return

    async def _mark(self, up: bool, reason: str = "") -> None:
        if up == self.up:
            return
        self.up = up
        if up:
            log.warning("the read replica answers again: queries and analyses read from it")
        else:
            log.warning(
                "the read replica does not answer (%s): queries and analyses read from the primary", reason
            )
        if self._on_change is not None:
            await self._on_change(up)

    def suspect(self) -> None:
        """A connection to the replica just failed: probe now rather than at the next tick."""
        self._suspected.set()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(SUSPECT_GAP_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._suspected.wait(), self._interval - SUSPECT_GAP_SECONDS)
            self._suspected.clear()
            try:
                await self.probe()
            except Exception:  # noqa: BLE001 - the watch must outlive any surprise; the next probe retries
                log.exception("replica probe failed")

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()


async def wait_for_replay(
    primary: asyncpg.Pool, replica: asyncpg.Pool, seconds: float = REPLAY_WAIT_SECONDS
) -> bool:
    """Wait until the replica has replayed all the primary has written so far; False (and one log line)
    when it is still behind after `seconds`. A read server that is not a standby is never behind."""
    position = await primary.fetchval(PRIMARY_POSITION_SQL, timeout=PROBE_TIMEOUT)
    try:
        async with asyncio.timeout(seconds):
            while True:  # polled: a standby tells no one when it has replayed a position
                if await replica.fetchval(REPLAYED_SQL, position, timeout=PROBE_TIMEOUT):
                    break
                await asyncio.sleep(0.05)
    except TimeoutError:
        log.warning("the read replica has not replayed the primary's schema after %.0f s", seconds)
        return False
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        # Opening the query pool there says what is wrong, in one line.
        log.warning("the read replica does not answer (%s)", type(error).__name__)
        return False
    return True
