"""Each caller's share of database connections: one API user holds at most `limit` pooled connections
for its queries and analyses at once, so it cannot starve everyone else. Counted per server instance.

The caller is the owner bound to the current context (the MCP edge binds it per call); work without an
owner (audit and log writers, health checks, schema set-up) is never limited.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field

from core.errors import RateLimited

# How long a call over its share waits for one of its own connections to come back before it is refused.
WAIT_SECONDS = 2.0

_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar("warehouse_owner", default=None)


def bind_owner(owner: str | None) -> contextvars.Token[str | None]:
    """Make `owner` (an API user id) the holder of connections taken in this context."""
    return _owner.set(owner)


def reset_owner(token: contextvars.Token[str | None]) -> None:
    _owner.reset(token)


def current_owner() -> str | None:
    return _owner.get()


@dataclass
class _Share:
    semaphore: asyncio.Semaphore
    users: int = 0  # holders and waiters: the entry is removed when none is left
    # Tasks holding a slot, with how many connections each holds on it: a task that takes a second
    # connection while it holds one (a data-version read, then the query) uses the slot it has, so it
    # can never wait for itself.
    holders: dict[asyncio.Task[object] | None, int] = field(default_factory=dict)


@dataclass
class Shares:
    """Per-owner semaphores, created on first use and removed when idle (memory follows active owners)."""

    limit: int
    wait_seconds: float = WAIT_SECONDS
    _by_owner: dict[str, _Share] = field(default_factory=dict)

    async def take(self, owner: str | None) -> Callable[[], None]:
        """One of `owner`'s slots (no owner: no limit); call what it returns to give the slot back.

        Waits up to `wait_seconds` for a slot, then refuses in one line."""
        if owner is None:
            return _nothing
        share = self._by_owner.get(owner)
        if share is None:
            share = self._by_owner[owner] = _Share(asyncio.Semaphore(self.limit))
        task = asyncio.current_task()
        share.users += 1
        if task not in share.holders:
            try:
                async with asyncio.timeout(self.wait_seconds):
                    await share.semaphore.acquire()
            except BaseException as error:
                self._leave(owner, share)
                if isinstance(error, TimeoutError):
                    raise RateLimited(
                        f"you already run {self.limit} queries at once (QUERY_MAX_CONCURRENT_PER_KEY); "
                        "wait for one to finish",
                        retry_after=1,
                    ) from None
                raise
        share.holders[task] = share.holders.get(task, 0) + 1

        def give_back() -> None:
            share.holders[task] -= 1
            if not share.holders[task]:
                del share.holders[task]
                share.semaphore.release()
            self._leave(owner, share)

        return give_back

    def _leave(self, owner: str, share: _Share) -> None:
        share.users -= 1
        if share.users == 0 and self._by_owner.get(owner) is share:
            del self._by_owner[owner]

    def owners(self) -> int:
        """Owners holding or waiting for a slot now."""
        return len(self._by_owner)


def _nothing() -> None:
    return None
