"""Answers cached in Redis, keyed on what was asked and on the data version, so regenerated data is never served stale."""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mcp_server import metrics
from mcp_server.runtime import Runtime

log = logging.getLogger(__name__)

# The Redis reads made for the current call in the rate limit's round trip (App.prefetch): key -> value.
prefetched_reads: contextvars.ContextVar[dict[str, bytes | None] | None] = contextvars.ContextVar(
    "analytics_mcp_prefetched", default=None
)


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
        self._last_version: int | None = None  # the data version lookup() saw last (a guess, never trusted)
        # Entries store_later() is still writing, by key: this instance reads them as if they had landed.
        self._pending: dict[str, bytes] = {}
        self._writes: set[asyncio.Task[None]] = set()  # strong references until each write is done
        runtime.on_close.append(self.flush)

    async def version(self) -> int:
        """The data version keys are built on; read it once and pass it to get and put to save a round trip."""
        return await self.runtime.db.data_version()

    def _digest(self, question: Any) -> str:
        return hashlib.sha256(json.dumps(question, sort_keys=True, default=str).encode()).hexdigest()

    def _key_for(self, digest: str, version: int) -> str:
        return self.runtime.key("cache", self.namespace, str(version), digest)

    async def _key(self, question: Any, version: int | None = None) -> str:
        if version is None:
            version = await self.runtime.db.data_version()
        return self._key_for(self._digest(question), version)

    async def _fetch(self, key: str) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        try:
            return await self.runtime.redis.get(key)
        except Exception as error:  # noqa: BLE001 - a cache failure is a miss, not an error
            log.warning("cache lookup failed", extra={"cache": self.namespace, "error": type(error).__name__})
            return None

    def _decoded(self, raw: bytes | None) -> Any | None:
        events = metrics.cache_events(self.runtime)
        if raw is None:
            events.labels(cache=self.namespace, outcome="miss").inc()
            return None
        events.labels(cache=self.namespace, outcome="hit").inc()
        try:
            return json.loads(zlib.decompress(self._fernet.decrypt(raw)))
        except InvalidToken:  # written under a key no longer configured
            return None

    async def get(self, question: Any, version: int | None = None) -> Any | None:
        return self._decoded(await self._fetch(await self._key(question, version)))

    async def lookup(
        self, question: Any, read_version: Callable[[], Awaitable[int]] | None = None
    ) -> tuple[int, Any | None]:
        """The data version read now and the answer cached under it (None on a miss); pass the
        version to `put`.

        The version is always read (from PostgreSQL, via `read_version`, by default a pooled read), and
        an answer is returned only when it is stored under that very version. While the version is
        read, the entry under the version this cache saw last is fetched from Redis at the same time,
        or was fetched already with the rate limit's admission (App.prefetch, `likely_key`): when the
        data has not changed since (nearly always) that is the answer, and it costs no round trip of
        its own. Any entry is immutable in what it may hold (answers computed after reading its
        version), so when it was read does not matter, only under which version.
        """
        read = read_version or self.runtime.db.data_version
        digest = self._digest(question)
        guess = self._last_version
        reads = prefetched_reads.get() or {}
        if guess is None:
            version = await read()
            raw = await self._fetch(self._key_for(digest, version))
        else:
            key = self._key_for(digest, guess)
            if key in reads and key not in self._pending:  # read already, with the rate limit (App.prefetch)
                version, raw = await read(), reads[key]
            else:
                version, raw = await asyncio.gather(read(), self._fetch(key))
            if version != guess:  # the data changed: that entry belongs to other data
                raw = await self._fetch(self._key_for(digest, version))
        self._last_version = version
        return version, self._decoded(raw)

    def likely_key(self, question: Any) -> str | None:
        """The key `lookup(question)` will most likely read (under the version seen last), for
        App.prefetch; None before the first lookup."""
        guess = self._last_version
        return None if guess is None else self._key_for(self._digest(question), guess)

    def guessed_miss(self, question: Any) -> int | None:
        """The version seen last, when the entry under it was read with the rate limit's admission
        (App.prefetch) and was not there: the answer will almost surely have to be computed, so the
        caller may start computing before `lookup` has confirmed the version. None otherwise."""
        guess = self._last_version
        if guess is None:
            return None
        key = self._key_for(self._digest(question), guess)
        reads = prefetched_reads.get() or {}
        return guess if key in reads and reads[key] is None and key not in self._pending else None

    def _encoded(self, answer: Any) -> bytes | None:
        try:
            return self._fernet.encrypt(zlib.compress(json.dumps(answer, default=str).encode(), 3))
        except Exception as error:  # noqa: BLE001 - an answer that will not encode is simply not cached
            self._store_failed(error)
            return None

    def _store_failed(self, error: Exception) -> None:
        log.warning("cache store failed", extra={"cache": self.namespace, "error": type(error).__name__})

    async def put(self, question: Any, answer: Any, version: int | None = None) -> None:
        payload = self._encoded(answer)
        if payload is None:
            return
        try:
            key = await self._key(question, version)  # may read the version: PostgreSQL may be down
        except Exception as error:  # noqa: BLE001
            self._store_failed(error)
            return
        await self._write(key, payload)

    def store_later(self, question: Any, answer: Any, version: int) -> None:
        """Store `answer` under `version` off the caller's path: the call returns while Redis is written;
        until the write lands this instance reads the entry from memory, and `flush` (on close) waits
        for the writes still under way.

        `answer` must have been computed on data of `version` or newer: computed after `version` was
        read, or after it was seen last when `lookup` then read that same version (see `guessed_miss`).
        Readers of the entry read `version` themselves, so they are never served older data than theirs.
        """
        payload = self._encoded(answer)
        if payload is None:
            return
        key = self._key_for(self._digest(question), version)
        self._pending[key] = payload
        task = asyncio.create_task(self._write(key, payload))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, key: str, payload: bytes) -> None:
        try:
            await self.runtime.redis.set(key, payload, ex=self.ttl_seconds)
        except Exception as error:  # noqa: BLE001 - a cache failure is a skipped store, not an error
            self._store_failed(error)
        finally:
            if self._pending.get(key) is payload:
                del self._pending[key]

    async def flush(self) -> None:
        """Wait for the writes `store_later` has under way (on shutdown, before Redis closes)."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
