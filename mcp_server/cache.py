"""Answers cached in Redis, keyed on what was asked, by whom, and on the data version, so regenerated data is never served stale."""

from __future__ import annotations

import hashlib
import json
import logging
import zlib
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mcp_server import metrics
from mcp_server.pipelines import failure, one_trip

if TYPE_CHECKING:
    from mcp_server.runtime import Runtime

log = logging.getLogger(__name__)


class Cache:
    """A JSON cache in Redis for one kind of answer (`namespace`), with a time to live.

    Keys are `cache:{namespace}:{data_version}:{sha256 of the question}`; a data load bumps the
    version, so old entries are simply never read again and expire on their own. The cache is an
    optimisation: when Redis fails, lookups miss and stores are skipped, and the call goes on.

    A question names its asker (`"user": ...`) so entries are per user, and says what was asked in a
    form that is equal only for the same question (for SQL: the parser's canonical text plus the bound
    values). Entries live in CACHE_REDIS_URL's Redis when set (bounded by its maxmemory, evicted LRU),
    else in the session Redis with their TTL; an answer stored larger than CACHE_MAX_ENTRY_BYTES is
    not cached at all.
    """

    def __init__(self, runtime: Runtime, namespace: str, ttl_seconds: int) -> None:
        self.runtime = runtime
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        # Cached answers are customer data: encrypted like session values, never plaintext in Redis.
        self._fernet = MultiFernet([Fernet(key.encode()) for key in runtime.encryption_keys])

    @property
    def redis(self) -> aioredis.Redis:
        return self.runtime.cache_redis or self.runtime.redis

    def key(self, question: Any, version: int | str) -> str:
        """Where the answer to `question` under data `version` is kept."""
        digest = hashlib.sha256(json.dumps(question, sort_keys=True, default=str).encode()).hexdigest()
        return self.runtime.key("cache", self.namespace, str(version), digest)

    # Queued on a pipeline the caller sends with other commands (one_trip): --------------------------

    def read(self, pipe: Any, key: str) -> None:
        pipe.get(key)

    def answer(self, replies: list[Any] | BaseException) -> Any | None:
        """The answer `read` fetched, None on a miss (a failed read is a miss)."""
        error = failure(replies)
        if error is not None:
            log.warning("cache lookup failed", extra={"cache": self.namespace, "error": error})
            return None
        assert not isinstance(replies, BaseException)
        return self._decoded(replies[0])

    def write(self, pipe: Any, key: str, payload: bytes) -> None:
        """Queue the store of `payload` (from `encoded`) under `key`."""
        pipe.set(key, payload, ex=self.ttl_seconds)

    def written(self, replies: list[Any] | BaseException) -> None:
        """Log a store that did not happen (the call goes on)."""
        error = failure(replies)
        if error is not None:
            log.warning("cache store failed", extra={"cache": self.namespace, "error": error})

    def _decoded(self, raw: bytes | str | None) -> Any | None:
        events = metrics.cache_events(self.runtime.metrics)
        if raw is None:
            events.labels(cache=self.namespace, outcome="miss").inc()
            return None
        events.labels(cache=self.namespace, outcome="hit").inc()
        try:
            return json.loads(zlib.decompress(self._fernet.decrypt(raw)))
        except InvalidToken:  # written under a key no longer configured
            return None

    async def get(self, question: Any, version: int | str) -> Any | None:
        key = self.key(question, version)
        (replies,) = await one_trip((self.redis, lambda pipe: self.read(pipe, key)))
        return self.answer(replies)

    async def lookup(self, question: Any) -> tuple[int, Any | None]:
        """The data version read now (from PostgreSQL) and the answer cached under it (None on a miss).

        Compute a missing answer after this call and `put_each` it under the returned version: an entry
        then never holds data older than its version, so no one is served stale data.
        """
        version = await self.runtime.db.data_version()
        return version, await self.get(question, version)

    def encoded(self, answer: Any) -> bytes | None:
        """The answer as stored (compressed, encrypted); None when it is not to be cached."""
        try:
            payload = self._fernet.encrypt(zlib.compress(json.dumps(answer, default=str).encode(), 3))
        except Exception as error:  # noqa: BLE001 - an answer that will not encode is simply not cached
            self.written(error)
            return None
        if len(payload) > self.runtime.settings.cache_max_entry_bytes:
            # Bounds what one answer may take from the cache's memory; a large answer is recomputed.
            metrics.cache_events(self.runtime.metrics).labels(cache=self.namespace, outcome="too_large").inc()
            return None
        return payload

    async def put_each(self, answers: list[tuple[Any, Any]], version: int | str) -> None:
        """Store each (question, answer) under `version`, in one round trip."""
        payloads = [(question, payload) for question, answer in answers if (payload := self.encoded(answer))]
        if not payloads:
            return
        entries = [(self.key(question, version), payload) for question, payload in payloads]

        def queue(pipe: Any) -> None:
            for key, payload in entries:
                self.write(pipe, key, payload)

        (replies,) = await one_trip((self.redis, queue))
        self.written(replies)
