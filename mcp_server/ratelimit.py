"""MCP calls per API key (tools, resource reads, prompt gets and lists), counted in Redis so every instance shares one sliding window.

Each key has a sorted set of its recent calls (score = Redis server time in ms). A Lua script trims
calls older than the window, counts, and admits the call only below the limit, atomically; refused
calls are not recorded, so hammering does not extend a ban. The clock is Redis's own, so instances
with skewed clocks agree. Over the limit a call raises RateLimited before any work is done.

Over HTTP the call is admitted once, at the door (mcp_server/limits.py: a refusal there is an HTTP 429),
and the middleware here takes that admission instead of asking Redis again: one round trip per call.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from fastmcp.server.dependencies import get_http_request
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
# Where the HTTP layer leaves the admission of the request it let in (an ASGI scope key).
ADMISSION = "analytics_mcp.rate_limit_admission"


@dataclass
class Admission:
    """One call recorded in `key_id`'s window (`member`; None when Redis did not answer and the call
    was let in), not yet claimed by the call it was recorded for."""

    key_id: str
    member: str | None
    pending: bool = True

    def claim(self, key_id: str) -> bool:
        """Take this admission for a call of `key_id`: True once, for the first call that asks."""
        if not self.pending or key_id != self.key_id:
            return False
        self.pending = False
        return True


class RateLimiter:
    """RATE_LIMIT_PER_MINUTE calls (tools, resource reads, prompt gets, lists) per API key per
    RATE_LIMIT_WINDOW_SECONDS (default 60)."""

    def __init__(self, redis: aioredis.Redis, settings: Settings, registry: CollectorRegistry) -> None:
        self.redis = redis
        self.key_prefix = settings.redis_key_prefix + "ratelimit:"
        self.limit = settings.rate_limit_per_minute
        self.window_ms = settings.rate_limit_window_seconds * 1000
        self._admit = redis.register_script(_ADMIT)
        self._refused = metrics.counter(
            registry, "analytics_mcp_rate_limited_total", "MCP calls refused by the rate limit"
        )

    def _key(self, key_id: str) -> str:
        return self.key_prefix + key_id

    async def admit(self, key_id: str) -> Admission:
        """Record one call for `key_id`, or raise RateLimited (nothing recorded) when over the limit.

        One round trip: the refusal carries the seconds until a call would be admitted."""
        member = secrets.token_hex(8)
        arguments: list[int | str] = [self.limit, self.window_ms, member]
        try:
            admitted, retry_ms = await self._admit(keys=[self._key(key_id)], args=arguments)
        except Exception as error:  # noqa: BLE001 - Redis trouble must not stop the analysis tools
            log.warning("rate limit check skipped", extra={"error": type(error).__name__})
            return Admission(key_id, None)
        if not int(admitted):
            self.count_refusal()
            raise self.error(int(retry_ms))
        return Admission(key_id, member)

    async def withdraw(self, admission: Admission) -> None:
        """Un-record an admission no call claimed (the request was refused before the rate limit's turn:
        an unknown session, a role refusal), so such requests cost the key nothing, as before."""
        if admission.member is None:
            return
        try:
            await self.redis.zrem(self._key(admission.key_id), admission.member)
        except Exception as error:  # noqa: BLE001 - the entry expires with the window anyway
            log.warning("rate limit withdrawal skipped", extra={"error": type(error).__name__})

    def error(self, retry_ms: int) -> RateLimited:
        seconds = max(1, math.ceil(retry_ms / 1000))
        return RateLimited(
            f"rate limit reached: {self.limit} calls per {self.window_ms // 1000} s for this API key; "
            f"retry after {seconds} s",
            retry_after=seconds,
        )

    def count_refusal(self) -> None:
        self._refused.inc()


def admission_in(scope: MutableMapping[str, Any]) -> Admission | None:
    admission = scope.get(ADMISSION)
    return admission if isinstance(admission, Admission) else None


def _admitted_at_the_door(key_id: str) -> bool:
    """Did the HTTP layer already admit this call (its request's admission, claimed now)?"""
    try:
        request = get_http_request()
    except RuntimeError:
        return False  # stdio or in memory: nothing was admitted before the middleware
    admission = admission_in(request.scope)
    return admission is not None and admission.claim(key_id)


class RateLimit(Middleware):
    """Every MCP method a key calls (tool, resource read, prompt get, list) spends one unit of its key's
    budget before any work; refused calls do none."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def _spend(self, key_id: str) -> None:
        if not _admitted_at_the_door(key_id):
            await self.limiter.admit(key_id)

    async def _admit(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        call = current_call()
        if call is not None and call.identity is not None:
            await self._spend(call.identity.key_id)
        return await call_next(context)

    on_call_tool = on_read_resource = on_get_prompt = _admit

    async def _admit_list(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        """Lists cost work too (resources/list reads every session of the caller): each one counts."""
        call = current_call()
        if call is not None and call.identity is not None:
            try:
                await self._spend(call.identity.key_id)
            except RateLimited as error:
                raise MCPError(INVALID_REQUEST, error.message) from None
        return await call_next(context)

    on_list_tools = on_list_resources = on_list_resource_templates = on_list_prompts = _admit_list
