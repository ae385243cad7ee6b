"""Answers cached in Redis, keyed on what was asked and on the data version, so regenerated data is never served stale."""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mcp_server import metrics
from mcp_server.runtime import Runtime

log = logging.getLogger(__name__)


class Cache:
    """A JSON cache in Redis for one kind of answer (`namespace`), with a time to live.

    Keys are `cache:{namespace}:{data_version}:{sha256 of the question}`; a data load bumps the
    version, so old entries are simply never read again and expire on their own. The cache is an
    optimisation: when Redis fails, lookups miss and stores are skipped, and the call goes on.
    """

    def __init__(self, runtime: Runtime, namespace: str, ttl_seconds: int) -> None:
        self.runtime = runtime
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        # Cached answers are customer data: encrypted like session values, never plaintext in Redis.
        self._fernet = MultiFernet([Fernet(key.encode()) for key in runtime.encryption_keys])

    async def _key(self, question: Any) -> str:
        version = await self.runtime.db.data_version()
        digest = hashlib.sha256(json.dumps(question, sort_keys=True, default=str).encode()).hexdigest()
        return self.runtime.key("cache", self.namespace, str(version), digest)

    async def get(self, question: Any) -> Any | None:
        events = metrics.cache_events(self.runtime)
        try:
            raw = await self.runtime.redis.get(await self._key(question))
        except Exception as error:  # noqa: BLE001 - a cache failure is a miss, not an error
            log.warning("cache lookup failed", extra={"cache": self.namespace, "error": type(error).__name__})
            raw = None
        if raw is None:
            events.labels(cache=self.namespace, outcome="miss").inc()
            return None
        events.labels(cache=self.namespace, outcome="hit").inc()
        try:
            return json.loads(zlib.decompress(self._fernet.decrypt(raw)))
        except InvalidToken:  # written under a key no longer configured
            return None

    async def put(self, question: Any, answer: Any) -> None:
        try:
            payload = self._fernet.encrypt(zlib.compress(json.dumps(answer, default=str).encode(), 3))
            await self.runtime.redis.set(await self._key(question), payload, ex=self.ttl_seconds)
        except Exception as error:  # noqa: BLE001
            log.warning("cache store failed", extra={"cache": self.namespace, "error": type(error).__name__})
