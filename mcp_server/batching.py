"""A bounded in-memory queue drained by one background task in batches: observers that never slow a call."""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")


class BatchWriter(Generic[Item]):
    """`submit` is synchronous and O(1); a task started on demand writes batches every `interval`
    seconds and exits after `idle_seconds` without work (so nothing lingers after a test or a
    shutdown). A full queue drops the new item and counts it, rather than grow without bound."""

    def __init__(
        self,
        name: str,
        write: Callable[[list[Item]], Awaitable[None]],
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        interval: float = 0.2,
        idle_seconds: float = 5.0,
    ) -> None:
        self.name = name
        self._write = write
        self._items: deque[Item] = deque()
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self.idle_seconds = idle_seconds
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def submit(self, item: Item) -> bool:
        if len(self._items) >= self.capacity:
            self.dropped += 1
            return False
        self._items.append(item)
        if self._task is None or self._task.done():
            try:
                # A fresh context: the writer must not inherit the current call's request id or trace span.
                self._task = asyncio.get_running_loop().create_task(
                    self._run(), name=f"batch-{self.name}", context=contextvars.Context()
                )
            except RuntimeError:  # no running loop: the next submit or flush writes it
                pass
        return True

    async def flush(self) -> None:
        """Write everything submitted so far (including a batch the task is writing right now)."""
        while self._items:
            await self._write_one_batch()
        async with self._lock:  # wait out a batch in flight
            pass

    async def _write_one_batch(self) -> None:
        async with self._lock:
            batch = [self._items.popleft() for _ in range(min(self.batch_size, len(self._items)))]
            if not batch:
                return
            try:
                await self._write(batch)
            except Exception as error:  # noqa: BLE001 - an observer's failure never reaches a caller
                self.dropped += len(batch)
                log.warning(
                    "batch write failed (%s: %s)",
                    self.name,
                    type(error).__name__,
                    extra={"writer": self.name},
                )

    async def _run(self) -> None:
        idle = 0.0
        while idle < self.idle_seconds:
            if self._items:
                idle = 0.0
                await self._write_one_batch()
                if len(self._items) >= self.batch_size:
                    continue
            await asyncio.sleep(self.interval)
            if not self._items:
                idle += self.interval
