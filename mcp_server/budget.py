"""Database seconds per API user: query_database may spend QUERY_SECONDS_PER_MINUTE seconds of query
time per user per minute, counted in Redis so every instance draws on one budget.

Checked before a query starts (a spent budget refuses it) and charged with the query's actual duration
when it ends, whatever its outcome: a query that timed out used the database as long as one that
answered. The window starts with the first charge and lasts a minute (the key's expiry, Redis's clock).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from core.errors import RateLimited
from mcp_server import metrics
from mcp_server.config import Settings
from mcp_server.pipelines import failure, sent
from sessions import scripts

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60

_CHARGE = scripts.load("mcp_server", "query_seconds_charge")  # KEYS, ARGV: in mcp_server/lua/


class QuerySeconds:
    def __init__(self, redis: aioredis.Redis, settings: Settings, registry: CollectorRegistry) -> None:
        self.redis = redis
        self.key_prefix = settings.redis_key_prefix + "query_seconds:"
        self.budget = settings.query_seconds_per_minute
        self._refused = metrics.counter(
            registry, "analytics_mcp_query_seconds_refused_total", "Queries refused: query seconds spent"
        )

    def _key(self, user_id: str) -> str:
        return self.key_prefix + user_id

    def read(self, pipe: Any, user_id: str) -> None:
        """Queue on `pipe` what `refuse_if_spent` needs: the seconds used and the window's time left."""
        pipe.get(self._key(user_id))
        pipe.pttl(self._key(user_id))

    def refuse_if_spent(self, replies: list[Any] | BaseException) -> None:
        """Raise RateLimited when `read`'s replies say the budget is spent (a failed read lets it pass)."""
        error = failure(replies)
        if error is not None:  # Redis trouble must not stop queries
            log.warning("query seconds check skipped", extra={"error": error})
            return
        assert not isinstance(replies, BaseException)
        used, ttl_ms = replies
        if used is None or float(used) < self.budget:
            return
        seconds = max(1, math.ceil((ttl_ms if ttl_ms > 0 else WINDOW_SECONDS * 1000) / 1000))
        self._refused.inc()
        raise RateLimited(
            f"query time budget spent: {self.budget} database seconds per {WINDOW_SECONDS} s for this "
            f"API key (QUERY_SECONDS_PER_MINUTE); retry after {seconds} s or make queries cheaper",
            retry_after=seconds,
        )

    def add(self, pipe: Any, user_id: str, seconds: float) -> None:
        """Queue on `pipe` the charge of `seconds` (the script as EVAL: no separate load round trip)."""
        pipe.eval(_CHARGE, 1, self._key(user_id), f"{seconds:.6f}", WINDOW_SECONDS * 1000)

    def charged(self, replies: list[Any] | BaseException) -> None:
        """Log a charge `add` queued that did not happen (the query is answered anyway)."""
        error = failure(replies)
        if error is not None:
            log.warning("query seconds not charged", extra={"error": error})

    async def check(self, user_id: str) -> None:
        """Raise RateLimited when `user_id` has spent its seconds in the current window."""
        pipe = self.redis.pipeline(transaction=False)
        self.read(pipe, user_id)
        self.refuse_if_spent(await sent(pipe))

    async def charge(self, user_id: str, seconds: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        self.add(pipe, user_id, seconds)
        self.charged(await sent(pipe))
