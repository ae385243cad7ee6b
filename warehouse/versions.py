"""The built-in database's data version, learnt from PostgreSQL notifications instead of read per call.

A trigger on mcp_internal.data_version (sql/schema.sql) sends the new version on CHANNEL in the
transaction that bumps it, whoever bumps it (a load, reset_data, another instance, an operator's
UPDATE); PostgreSQL delivers it at commit. One dedicated connection LISTENs and keeps the latest
version in memory. While that connection is down the version is unknown (None) and readers fall back
to reading the row per call; on reconnect it LISTENs first and then reads the row, so no change made
meanwhile is missed. Versions only grow, so the larger of what was read and what was heard wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

CHANNEL = "analytics_mcp_data_version"
VERSION_SQL = "SELECT version FROM mcp_internal.data_version"
# A silently broken connection (no reset from the network) is found by a read this often, and the
# row read then also corrects the version, whatever the notifications said.
CHECK_SECONDS = 30.0
CHECK_TIMEOUT = 5.0
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # waits between reconnect attempts, the last one repeated


class VersionWatch:
    """Listens on CHANNEL over its own connection to `url`; `current` is the version or None."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._conn: asyncpg.Connection | None = None
        self._read: int | None = None  # read when the connection was (re)made or last checked
        self._heard = 0  # the largest version notified on the current connection
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> int | None:
        """The data version as of the last notification; None while not listening (read the row)."""
        if self._conn is None or self._read is None:
            return None
        return max(self._read, self._heard)

    @property
    def listening(self) -> bool:
        return self.current is not None

    def saw(self, version: int) -> None:
        """A version this process committed itself: known at once, before its notification arrives."""
        if self._conn is not None:
            self._heard = max(self._heard, version)

    async def start(self) -> None:
        """Listen now if PostgreSQL lets us, else keep trying in the background (reads meanwhile)."""
        try:
            await self._connect()
        except Exception as error:  # noqa: BLE001 - not listening only means reading per call
            log.warning("data version notifications unavailable (%s); reading it per call", type(error).__name__)
            self._lost.set()
        self._task = asyncio.create_task(self._keep_listening(), name="data-version-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(
            self._url,
            timeout=self._connect_timeout,
            server_settings={"application_name": "analytics-mcp data version"},
        )
        try:
            self._heard = 0
            await conn.add_listener(CHANNEL, self._heard_of)
            conn.add_termination_listener(self._terminated)
            # After LISTEN: a change committed before it is in the row, one after it is notified.
            self._read = int(await conn.fetchval(VERSION_SQL, timeout=CHECK_TIMEOUT) or 0)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._lost.clear()

    def _heard_of(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if conn is not self._conn:
            return
        try:
            self._heard = max(self._heard, int(payload))
        except ValueError:  # not ours (someone else NOTIFYing on the channel): check the row instead
            self._read = None
            self._lost.set()

    def _terminated(self, conn: Any) -> None:
        if conn is self._conn:
            log.warning("data version listener lost; reading it per call until it is back")
            self._conn = self._read = None
            self._lost.set()

    async def _keep_listening(self) -> None:
        attempt = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=CHECK_SECONDS)
            if not self._lost.is_set() and self._conn is not None:
                try:  # still alive? the row also corrects anything a notification got wrong
                    self._read = int(await self._conn.fetchval(VERSION_SQL, timeout=CHECK_TIMEOUT) or 0)
                    continue
                except Exception:  # noqa: BLE001 - a dead connection: reconnect below
                    self._lost.set()
            await self._drop()
            try:
                await self._connect()
                attempt = 0
                log.info("data version listener back")
            except Exception as error:  # noqa: BLE001 - retried: meanwhile readers read the row
                log.debug("data version listener reconnect failed (%s)", type(error).__name__)
                await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                attempt += 1

    async def _drop(self) -> None:
        conn, self._conn, self._read = self._conn, None, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), timeout=2)
            except Exception:  # noqa: BLE001 - a connection that will not close cleanly is dropped
                conn.terminate()
