"""The built-in database's data version, learnt from PostgreSQL notifications instead of read per call.

A trigger on mcp_internal.data_version (sql/schema.sql) sends a notice on CHANNEL in the transaction
that bumps it, whoever bumps it (a load, reset_data, another instance, an operator's UPDATE);
PostgreSQL delivers it at commit. One dedicated connection LISTENs; on each notice it reads the row
(changes are rare: one read per change, not per call) and keeps the version in memory. The notice is
only a signal: its payload is never trusted, so a stray NOTIFY on the channel costs one read. While
that connection is down the version is unknown (None) and readers fall back to reading the row per
call; on reconnect it LISTENs first and then reads the row, so no change made meanwhile is missed.
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
# A silently broken connection (no reset from the network) is found by a read this often.
CHECK_SECONDS = 30.0
CHECK_TIMEOUT = 5.0
RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # waits between reconnect attempts, the last one repeated


class VersionWatch:
    """Listens on CHANNEL over its own connection to `url`; `current` is the version or None."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._conn: asyncpg.Connection | None = None
        self._version: int | None = None  # None: not listening
        self._wake = asyncio.Event()  # a notice, or the connection lost
        self._task: asyncio.Task[None] | None = None

    @property
    def current(self) -> int | None:
        """The data version as of the last notice; None while not listening (read the row instead)."""
        return self._version if self._conn is not None else None

    @property
    def listening(self) -> bool:
        return self.current is not None

    def saw(self, version: int) -> None:
        """A version this process committed itself: used at once, before its notice is read."""
        self._advance(version)

    def _advance(self, version: int) -> None:
        # Versions only grow: a read that started before a newer commit never takes it back.
        if self._conn is not None and self._version is not None:
            self._version = max(self._version, version)

    async def start(self) -> None:
        """Listen now if PostgreSQL lets us, else keep trying in the background (reads meanwhile)."""
        try:
            await self._connect()
        except Exception as error:  # noqa: BLE001 - not listening only means reading per call
            log.warning(
                "data version notifications unavailable (%s); reading it per call", type(error).__name__
            )
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
        # Ours before LISTEN (the version still unknown), so a notice that arrives with the read below
        # wakes the loop for another read rather than being dropped.
        self._conn, self._version = conn, None
        try:
            await conn.add_listener(CHANNEL, self._notified)
            conn.add_termination_listener(self._terminated)
            # After LISTEN: a change committed before it is in the row, one after it is notified.
            version = int(await conn.fetchval(VERSION_SQL, timeout=CHECK_TIMEOUT) or 0)
        except BaseException:
            self._conn = None
            conn.terminate()
            raise
        self._version = version

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if conn is self._conn:
            self._wake.set()

    def _terminated(self, conn: Any) -> None:
        if conn is self._conn:
            log.warning("data version listener lost; reading it per call until it is back")
            self._conn = self._version = None
            self._wake.set()

    async def _keep_listening(self) -> None:
        attempt = 0
        while True:
            if self._conn is None:
                await self._drop()
                try:
                    await self._connect()
                except Exception as error:  # noqa: BLE001 - retried: meanwhile readers read the row
                    log.debug("data version listener reconnect failed (%s)", type(error).__name__)
                    await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
                    attempt += 1
                    continue
                if attempt:
                    log.warning("data version listener back")
                attempt = 0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=CHECK_SECONDS)
            self._wake.clear()
            conn = self._conn
            if conn is None:
                attempt = max(attempt, 1)  # lost: reconnect (and say so when back)
                continue
            try:  # a notice, or the periodic check that the connection is alive
                self._advance(int(await conn.fetchval(VERSION_SQL, timeout=CHECK_TIMEOUT) or 0))
            except Exception:  # noqa: BLE001 - a dead connection: reconnect
                log.warning("data version listener lost; reading it per call until it is back")
                self._conn = self._version = None
                attempt = 1
                with contextlib.suppress(Exception):
                    conn.terminate()

    async def _drop(self) -> None:
        conn, self._conn, self._version = self._conn, None, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), timeout=2)
            except Exception:  # noqa: BLE001 - a connection that will not close cleanly is dropped
                conn.terminate()
