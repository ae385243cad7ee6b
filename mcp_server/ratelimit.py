"""MCP calls per API key (tools, resource reads, prompt gets and lists), counted in Redis so every instance shares one sliding window.

Each key has a sorted set of its recent calls (score = Redis server time in ms). A Lua script trims
calls older than the window, counts, and admits the call only below the limit, atomically; refused
calls are not recorded, so hammering does not extend a ban. The clock is Redis's own, so instances
with skewed clocks agree. Over the limit a call raises RateLimited before any work is done.
"""

from __future__ import annotations

import logging
import math
import secrets
from typing import TYPE_CHECKING

from analytics.errors import RateLimited
from mcp_server import metrics
from mcp_server.runtime import Runtime

if TYPE_CHECKING:
    from mcp_server.app import App, CallInfo
    from mcp_server.auth import Identity

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
    """RATE_LIMIT_PER_MINUTE calls (tools, resource reads, prompt gets, lists) per API key per
    RATE_LIMIT_WINDOW_SECONDS (default 60)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.limit = runtime.settings.rate_limit_per_minute
        self.window_ms = runtime.settings.rate_limit_window_seconds * 1000
        self._admit = runtime.redis.register_script(_ADMIT)
        self._peek = runtime.redis.register_script(_PEEK)

    def _key(self, key_id: str) -> str:
        return self.runtime.key("ratelimit", key_id)

    async def admit(self, key_id: str) -> None:
        """Record one call for `key_id`, or raise RateLimited (nothing recorded) when over the limit."""
        arguments: list[int | str] = [self.limit, self.window_ms, secrets.token_hex(8)]
        try:
            admitted, retry_ms = await self._admit(keys=[self._key(key_id)], args=arguments)
        except Exception as error:  # noqa: BLE001 - Redis trouble must not stop the analysis tools
            log.warning("rate limit check skipped", extra={"error": type(error).__name__})
            return
        if not int(admitted):
            self.count_refusal()
            raise self.error(int(retry_ms))

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
            f"rate limit reached: {self.limit} calls per {self.window_ms // 1000} s for this API key; "
            f"retry after {seconds} s",
            retry_after=seconds,
        )

    def count_refusal(self) -> None:
        metrics.counter(
            self.runtime, "analytics_mcp_rate_limited_total", "MCP calls refused by the rate limit"
        ).inc()


def rate_limiter(runtime: Runtime) -> RateLimiter:
    limiter = runtime.extras.get("rate_limiter")
    if limiter is None:
        limiter = runtime.extras["rate_limiter"] = RateLimiter(runtime)
    return limiter


def install(app: App) -> None:
    """Every MCP method a key calls (tool, resource read, prompt get, list) spends one unit of its key's
    budget before any work; refused calls do none."""
    limiter = rate_limiter(app.runtime)

    async def limit(info: CallInfo) -> None:
        if info.identity is not None:
            await limiter.admit(info.identity.key_id)

    async def limit_list(identity: Identity, method: str) -> None:
        await limiter.admit(identity.key_id)

    app.before_call.append(limit)
    app.before_list.append(limit_list)
