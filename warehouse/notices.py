"""Source notices between the instances of one deployment, over one Redis pub/sub channel
(`<REDIS_KEY_PREFIX>sources`): "the sources file changed" and "a source's profiles were refreshed".

A notice is a hint, never a payload: it names an event, a file digest or a source name and the
instance that sent it, nothing more (no URL, no secret). The receiver acts on its own state (it re-reads
its own sources file, drops its own cached pages); anything on the channel is hostile until checked.
When Redis is down notices are simply not sent or heard: sources file polling goes on, and the
subscriber resubscribes (and re-reads the file once) when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from warehouse.sources import is_source_name

log = logging.getLogger(__name__)

MAX_NOTICE_BYTES = 512  # a real notice is under 200 bytes; anything larger is refused unread
PUBLISH_SECONDS = 2.0  # a publish never holds up the reload or the tool call that sends it
RETRY_FIRST_SECONDS = 0.5  # after Redis is lost, resubscribing is tried this soon, then less often
RETRY_MOST_SECONDS = 5.0
_REFUSAL_LOG_SECONDS = 60.0  # at most one log line a minute about refused notices

Handler = Callable[[str | None], Awaitable[None] | None]


class _Notice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    sender: str = Field(alias="from", pattern=r"^[0-9a-f]{32}$")


class SourcesChanged(_Notice):
    event: Literal["sources_changed"]
    digest: str = Field(pattern=r"^[0-9a-f]{64}$")  # sha256 of the sources file the sender applied


class ProfilesRefreshed(_Notice):
    event: Literal["profiles_refreshed"]
    source: str = Field(max_length=32)

    @field_validator("source")
    @classmethod
    def _source_name(cls, value: str) -> str:
        if not is_source_name(value):
            raise ValueError("not a source name")
        return value


Notice = Annotated[SourcesChanged | ProfilesRefreshed, Field(discriminator="event")]
_NOTICE: TypeAdapter[SourcesChanged | ProfilesRefreshed] = TypeAdapter(Notice)


def read_notice(data: object) -> SourcesChanged | ProfilesRefreshed | None:
    """The notice in one pub/sub message's data, or None when it is not one (too large, not JSON, an
    unknown event, a malformed digest or source name, any key more or less)."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if not isinstance(data, bytes) or len(data) > MAX_NOTICE_BYTES:
        return None
    try:
        return _NOTICE.validate_json(data)
    except ValidationError:
        return None


class SourceNotices:
    """Publishes this instance's source notices and, in a background task, hears the others': on
    `sources_changed` calls `on_sources_changed(digest)`, on `profiles_refreshed` calls
    `on_profiles_refreshed(source)`. Its own notices are ignored; so are malformed ones (counted)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        channel: str,
        *,
        on_sources_changed: Handler,
        on_profiles_refreshed: Handler,
        instance_id: str | None = None,
    ) -> None:
        self._redis = redis
        self.channel = channel
        self.instance_id = instance_id or uuid.uuid4().hex
        self._on_sources_changed = on_sources_changed
        self._on_profiles_refreshed = on_profiles_refreshed
        self._listener: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self.listening = False  # subscribed right now
        self.heard = 0  # other instances' notices acted on
        self.refused = 0  # messages on the channel that were not notices
        self._refusal_logged = -_REFUSAL_LOG_SECONDS

    # --- sending -------------------------------------------------------------------------------

    async def sources_changed(self, digest: str) -> None:
        await self._publish({"event": "sources_changed", "digest": digest})

    async def profiles_refreshed(self, source: str) -> None:
        await self._publish({"event": "profiles_refreshed", "source": source})

    def send_sources_changed(self, digest: str) -> None:
        """`sources_changed` without waiting (from the sources watcher's callback)."""
        task = asyncio.create_task(self.sources_changed(digest), name="source-notice")
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _publish(self, notice: dict[str, str]) -> None:
        payload = json.dumps({**notice, "from": self.instance_id}, separators=(",", ":"))
        try:
            async with asyncio.timeout(PUBLISH_SECONDS):
                await self._redis.publish(self.channel, payload)
        except Exception as error:  # noqa: BLE001 - other instances catch up by polling or cache expiry
            log.warning(
                "source notice '%s' not sent (Redis: %s); other instances see it at their next poll",
                notice["event"],
                type(error).__name__,
            )

    # --- hearing -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="source-notices")

    async def close(self) -> None:
        tasks = [*self._sending, *([self._listener] if self._listener is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listener = None
        self.listening = False

    async def _listen(self) -> None:
        """Subscribe and hear notices until cancelled; when Redis is lost, log one line, retry with a
        growing pause, and once back re-read the sources file (notices sent meanwhile were missed)."""
        delay, lost = RETRY_FIRST_SECONDS, False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.listening = True
                if lost:
                    log.info("source notices: Redis is back; listening again")
                    lost, delay = False, RETRY_FIRST_SECONDS
                    await self._call(self._on_sources_changed, None)
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self._receive(message.get("data"))
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - Redis down or restarting: polling goes on
                if not lost:
                    log.warning(
                        "source notices: Redis unreachable (%s); the sources file is still polled, "
                        "resubscribing when Redis is back",
                        type(error).__name__,
                    )
                    lost = True
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(PUBLISH_SECONDS):
                        await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MOST_SECONDS)

    async def _receive(self, data: object) -> None:
        notice = read_notice(data)
        if notice is None:
            self.refused += 1
            now = time.monotonic()
            if now - self._refusal_logged >= _REFUSAL_LOG_SECONDS:
                self._refusal_logged = now
                log.warning("source notices: ignored a message that is not a valid notice")
            return
        if notice.sender == self.instance_id:
            return
        self.heard += 1
        if isinstance(notice, SourcesChanged):
            await self._call(self._on_sources_changed, notice.digest)
        else:
            await self._call(self._on_profiles_refreshed, notice.source)

    @staticmethod
    async def _call(handler: Handler, argument: str | None) -> None:
        try:
            outcome = handler(argument)
            if outcome is not None:
                await outcome
        except Exception:  # noqa: BLE001 - a failing handler never stops the subscriber
            log.exception("source notices: acting on a notice failed")
