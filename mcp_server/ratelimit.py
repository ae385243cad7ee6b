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
from typing import Any

import redis.asyncio as aioredis
from fastmcp.server.middleware import Middleware, MiddlewareContext
from mcp import MCPError
from mcp.types import INVALID_REQUEST
from prometheus_client import CollectorRegistry

from core.errors import RateLimited
from mcp_server import metrics
from mcp_server.calls import current_call
from mcp_server.config import Settings
from sessions import scripts

log = logging.getLogger(__name__)

# Each file in mcp_server/lua/ says what its script does, its KEYS and ARGV.
_ADMIT = scripts.load("mcp_server", "rate_limit_admit")
_PEEK = scripts.load("mcp_server", "rate_limit_peek")  # the same answer, nothing recorded


class RateLimiter:
    """RATE_LIMIT_PER_MINUTE calls (tools, resource reads, prompt gets, lists) per API key per
    RATE_LIMIT_WINDOW_SECONDS (default 60)."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, registry: CollectorRegistry) -> None:
        self.key_prefix = settings.redis_key_prefix + "ratelimit:"
        self.limit = settings.rate_limit_per_minute
        self.window_ms = settings.rate_limit_window_seconds * 1000
        self._admit = redis.register_script(_ADMIT)
        self._peek = redis.register_script(_PEEK)
        self._refused = metrics.counter(
            registry, "analytics_mcp_rate_limited_total", "MCP calls refused by the rate limit"
        )

    def _key(self, key_id: str) -> str:
        return self.key_prefix + key_id

    async def admit(self, key_id: str) -> None:
        """Record one call for `key_id`, or raise RateLimited (nothing recorded) when over the limit."""
        arguments: list[int | str] = [self.limit, self.window_ms, secrets.token_hex(8)]
        try:
            admitted, retry_ms = await self._admit(keys=[self._key(key_id)], args=arguments)
        except Exception as error:  # noqa: BLE001 - Redis trouble must not stop the analysis tools
            log.warning("rate limit check skipped", extra={"error": type(error).__name__})
            return
        if not int(admitted):
            self._refused.inc()
            raise self.error(int(retry_ms))

    async def retry_after(self, key_id: str) -> float | None:
        """Seconds until `key_id` may call again if it is over the limit now, else None (records nothing)."""
        try:
            admitted, retry_ms = await self._peek(keys=[self._key(key_id)], args=[self.limit, self.window_ms])
        except Exception as error:  # noqa: BLE001
            log.warning("rate limit check skipped", extra={"error": type(error).__name__})
            return None
        return None if int(admitted) else max(int(retry_ms), 0) / 1000

    async def refusal(self, key_id: str) -> RateLimited | None:
        """The RateLimited a call from `key_id` meets now, counted as refused; None below the limit (records
        nothing)."""
        retry_after = await self.retry_after(key_id)
        if retry_after is None:
            return None
        self._refused.inc()
        return self.error(round(retry_after * 1000))

    def error(self, retry_ms: int) -> RateLimited:
        seconds = max(1, math.ceil(retry_ms / 1000))
        return RateLimited(
            f"rate limit reached: {self.limit} calls per {self.window_ms // 1000} s for this API key; "
            f"retry after {seconds} s",
            retry_after=seconds,
        )


class RateLimit(Middleware):
    """Every MCP method a key calls (tool, resource read, prompt get, list) spends one unit of its key's
    budget before any work; refused calls do none."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def _admit(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        call = current_call()
        if call is not None and call.identity is not None:
            await self.limiter.admit(call.identity.key_id)
        return await call_next(context)

    on_call_tool = on_read_resource = on_get_prompt = _admit

    async def _admit_list(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        """Lists cost work too (resources/list reads every session of the caller): each one counts."""
        call = current_call()
        if call is not None and call.identity is not None:
            try:
                await self.limiter.admit(call.identity.key_id)
            except RateLimited as error:
                raise MCPError(INVALID_REQUEST, error.message) from None
        return await call_next(context)

    on_list_tools = on_list_resources = on_list_resource_templates = on_list_prompts = _admit_list
