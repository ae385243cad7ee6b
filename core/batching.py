"""A bounded in-memory queue drained by one background task in batches, in order: the audit trail, the
query log and latency samples are written off the call's path, and a failing store loses nothing."""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")

# At shutdown a failing store gets this long to come back (the runtime allows each close hook 5 s).
CLOSE_RETRY_SECONDS = 4.0


class BatchWriter(Generic[Item]):
    """Items are written in batches by a task started on demand, every `interval` seconds; it exits
    after `idle_seconds` without work (so nothing lingers after a test or a shutdown).

    A batch that fails stays at the head of the queue and is retried, backing off up to `max_backoff`
    seconds, until it is written: a store that is down delays rows, never drops them. The queue holds
    `capacity` items: `put` waits for room (backpressure on the callers: the audit trail and the
    query log use it); `submit`, for samples that may be lost but must never wait, drops and counts.
    """

    def __init__(
        self,
        name: str,
        write: Callable[[list[Item]], Awaitable[None]],
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        interval: float = 0.2,
        idle_seconds: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.name = name
        self._write = write
        self._items: deque[Item] = deque()
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self.idle_seconds = idle_seconds
        self.max_backoff = max_backoff
        self.dropped = 0  # only by `submit` on a full queue, or by `close` when the store never came back
        self.failures = 0  # failed batch writes (each one retried)
        self.failing_since: float | None = None  # wall-clock time of the first failure of an ongoing outage
        self.last_error: str | None = None  # the kind (exception type) of the last failure
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._room: asyncio.Event | None = None  # set whenever a write makes room in the queue

    @property
    def queued(self) -> int:
        return len(self._items)

    def submit(self, item: Item) -> bool:
        """Queue `item` now, or drop it (counted) when the queue is full; never waits."""
        if len(self._items) >= self.capacity:
            self.dropped += 1
            return False
        self._items.append(item)
        self._start()
        return True

    async def put(self, item: Item) -> None:
        """Queue `item`, waiting while the queue is full (its store is down or slow); never drops it."""
        while len(self._items) >= self.capacity:
            self._start()
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            try:
                await self._room.wait()
            except asyncio.CancelledError:
                # The caller stopped waiting (its call was cancelled): keep the item anyway. The queue
                # then exceeds its capacity by at most one item per cancelled call.
                self._items.append(item)
                self._start()
                raise
        self._items.append(item)
        self._start()

    def _start(self) -> None:
        if self._task is None or self._task.done():
            try:
                # A fresh context: the writer must not inherit the current call's request id or trace span.
                self._task = asyncio.get_running_loop().create_task(
                    self._run(), name=f"batch-{self.name}", context=contextvars.Context()
                )
            except RuntimeError:  # no running loop: the next submit or flush writes it
                pass

    async def flush(self, retry_seconds: float = 0.0) -> bool:
        """Write everything queued so far (including a batch the task is writing right now), retrying a
        failing write for up to `retry_seconds`. True when all of it is written; the rest stays queued."""
        deadline = time.monotonic() + retry_seconds
        backoff = self.interval
        while self._items:
            if not await self._write_one_batch():
                if time.monotonic() + backoff > deadline:
                    return False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        async with self._lock:  # wait out a batch in flight
            pass
        return not self._items

    async def close(self, retry_seconds: float = CLOSE_RETRY_SECONDS) -> None:
        """At shutdown: write what is queued, retrying for up to `retry_seconds`, and stop the task.
        Items that still cannot be written are counted as dropped and logged as an error."""
        written = await self.flush(retry_seconds)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        if not written:
            lost = len(self._items)
            self._items.clear()
            self.dropped += lost
            log.error(
                "batch writer closed with unwritten items (%s: %d, %s)",
                self.name,
                lost,
                self.last_error,
                extra={"writer": self.name, "lost": lost},
            )

    async def _write_one_batch(self) -> bool:
        """Write the oldest batch; True when it is written (or there was nothing to write)."""
        async with self._lock:
            batch = list(itertools.islice(self._items, self.batch_size))
            if not batch:
                return True
            try:
                await self._write(batch)
            except Exception as error:  # noqa: BLE001 - an observer's failure never reaches a caller
                self.failures += 1
                self.last_error = type(error).__name__
                if self.failing_since is None:
                    self.failing_since = time.time()
                    log.warning(
                        "batch write failed, retrying (%s: %s)",
                        self.name,
                        self.last_error,
                        extra={"writer": self.name},
                    )
                return False
            for _ in batch:  # only this lock's holder removes items: the head is still this batch
                self._items.popleft()
            if self.failing_since is not None:
                log.warning(
                    "batch writes recovered (%s, after %.1f s)",
                    self.name,
                    time.time() - self.failing_since,
                    extra={"writer": self.name},
                )
                self.failing_since = None
            if self._room is not None:
                self._room.set()
            return True

    async def _run(self) -> None:
        idle = 0.0
        backoff = self.interval
        while idle < self.idle_seconds:
            if self._items:
                idle = 0.0
                if not await self._write_one_batch():
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    continue
                backoff = self.interval
                if len(self._items) >= self.batch_size:
                    continue
            await asyncio.sleep(self.interval)
            if not self._items:
                idle += self.interval

    def state(self) -> dict[str, Any]:
        """What /health shows of this writer."""
        since = self.failing_since
        return {
            "status": "ok" if since is None else "failing",
            "queued": len(self._items),
            "failing_since": None if since is None else dt.datetime.fromtimestamp(since, dt.UTC).isoformat(),
            "last_error": self.last_error,
            "failures": self.failures,
            "dropped": self.dropped,
        }
