"""Tool calls per API key, counted in Redis so every instance shares one sliding window.

Each key has a sorted set of its recent calls (score = Redis server time in ms). A Lua script trims
calls older than the window, counts, and admits the call only below the limit, atomically; refused
calls are not recorded, so hammering does not extend a ban. The clock is Redis's own, so instances
with skewed clocks agree. Over the limit a call raises RateLimited before any work is done.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from analytics.errors import RateLimited
from mcp_server import metrics
from mcp_server.runtime import Runtime

if TYPE_CHECKING:
    from mcp_server.app import App, CallInfo

log = logging.getLogger(__name__)

# KEYS[1] the key's window; ARGV limit, window ms, a unique member. Returns {admitted, retry_after_ms}.
_ADMIT = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], window)
  return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, count - limit, 'WITHSCORES')
return {0, tonumber(oldest[#oldest]) + window - now}
"""

# Read-only: would a call be refused now? Same answer shape, nothing recorded.
_PEEK = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local count = redis.call('ZCOUNT', KEYS[1], '(' .. (now - window), '+inf')
if count < limit then
  return {1, 0}
end
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (now - window), '+inf', 'WITHSCORES', 'LIMIT', count - limit, 1)
return {0, tonumber(oldest[2]) + window - now}
"""


class RateLimiter:
    """RATE_LIMIT_PER_MINUTE calls per API key per RATE_LIMIT_WINDOW_SECONDS (default 60)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.limit = runtime.settings.rate_limit_per_minute
        self.window_ms = runtime.settings.rate_limit_window_seconds * 1000
        self._admit = runtime.redis.register_script(_ADMIT)
        self._peek = runtime.redis.register_script(_PEEK)

    def _key(self, key_id: str) -> str:
        return self.runtime.key("ratelimit", key_id)

    async def admit(
        self, key_id: str, reads: Sequence[str] = (), into: dict[str, bytes | None] | None = None
    ) -> None:
        """Record one call for `key_id`, or raise RateLimited (nothing recorded) when over the limit.

        `reads`: keys to GET in the same round trip (a pipeline; the admission is still one atomic
        script), stored in `into` whatever the admission says. Plain reads: nothing else is done.
        """
        arguments = [self.limit, self.window_ms, secrets.token_hex(8)]
        try:
            if reads and into is not None:
                admitted, retry_ms = await self._admit_and_read(key_id, arguments, reads, into)
            else:
                admitted, retry_ms = await self._admit(keys=[self._key(key_id)], args=arguments)
        except Exception as error:  # noqa: BLE001 - Redis trouble must not stop the analysis tools
            log.warning("rate limit check skipped", extra={"error": type(error).__name__})
            return
        if not int(admitted):
            self.count_refusal()
            raise self.error(int(retry_ms))

    async def _admit_and_read(
        self, key_id: str, arguments: list[Any], reads: Sequence[str], into: dict[str, bytes | None]
    ) -> tuple[Any, Any]:
        # EVALSHA queued by hand: a Script object in a pipeline costs a SCRIPT EXISTS round trip first.
        async with self.runtime.redis.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._admit.sha, 1, self._key(key_id), *arguments)
            for key in reads:
                pipe.get(key)
            answers = await pipe.execute(raise_on_error=False)
        admission = answers[0]
        if isinstance(admission, Exception):  # the script is not loaded yet (NOSCRIPT): load and run it
            admission = await self._admit(keys=[self._key(key_id)], args=arguments)
        for key, value in zip(reads, answers[1:], strict=True):
            if not isinstance(value, Exception):
                into[key] = value
        return admission[0], admission[1]

    async def retry_after(self, key_id: str) -> float | None:
        """Seconds until `key_id` may call again if it is over the limit now, else None (records nothing)."""
        try:
            admitted, retry_ms = await self._peek(keys=[self._key(key_id)], args=[self.limit, self.window_ms])
        except Exception as error:  # noqa: BLE001
            log.warning("rate limit check skipped", extra={"error": type(error).__name__})
            return None
        return None if int(admitted) else max(int(retry_ms), 0) / 1000

    def error(self, retry_ms: int) -> RateLimited:
        seconds = max(1, math.ceil(retry_ms / 1000))
        return RateLimited(
            f"rate limit reached: {self.limit} tool calls per {self.window_ms // 1000} s for this API key; "
            f"retry after {seconds} s",
            retry_after=seconds,
        )

    def count_refusal(self) -> None:
        metrics.counter(
            self.runtime, "analytics_mcp_rate_limited_total", "Tool calls refused by the rate limit"
        ).inc()


def rate_limiter(runtime: Runtime) -> RateLimiter:
    limiter = runtime.extras.get("rate_limiter")
    if limiter is None:
        limiter = runtime.extras["rate_limiter"] = RateLimiter(runtime)
    return limiter


def install(app: App) -> None:
    """Every tool call spends one unit of its key's budget before any work; refused calls do none."""
    limiter = rate_limiter(app.runtime)

    async def limit(info: CallInfo) -> None:
        if info.kind == "tool" and info.identity is not None:
            reads: list[str] = []
            keys_for = app.prefetchers.get(info.name)
            if keys_for is not None:
                try:
                    reads = keys_for(info.arguments)
                except Exception:  # noqa: BLE001 - a guess that fails is no guess
                    reads = []
            await limiter.admit(info.identity.key_id, reads, info.prefetched)

    app.before_call.append(limit)
