"""Short-lived artifacts (charts drawn without a session) in Redis, encrypted like session values.

Each artifact is one Redis hash `{a:<user_id>}:artifact:<id>` (meta: owner, MIME type, name, size; content: the
bytes), Fernet-encrypted and expiring after a fixed time. Only the user who made it may read it; to
anyone else it does not exist. Ids are 128 random bits, so they cannot be guessed or enumerated. A user
keeps at most `max_per_user` artifacts (the list `{a:<user_id>}:artifacts`): a new one drops the oldest,
so the memory one key can fill is bounded whatever its call rate. The hash tag keeps a user's artifacts and
list in one Redis Cluster slot, so the script that stores one touches one slot.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from core.errors import InvalidInput, NotFound
from sessions import scripts
from sessions.access import Caller
from sessions.crypto import Cipher

ARTIFACT_TTL_SECONDS = 3600
MAX_ARTIFACTS_PER_USER = 50

_ARTIFACT_ID = re.compile(r"^[0-9a-f]{32}$")


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class ArtifactStore:
    """Bytes kept for a while under a random id, readable by their owner only."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str,
        encryption_keys: Sequence[str],
        ttl_seconds: int = ARTIFACT_TTL_SECONDS,
        max_bytes: int = 16_000_000,
        max_per_user: int = MAX_ARTIFACTS_PER_USER,
    ) -> None:
        self.redis = redis
        self.prefix = key_prefix
        self.cipher = Cipher(encryption_keys)
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.max_per_user = max_per_user
        self._put = redis.register_script(scripts.load("sessions", "artifact_put"))

    def _tag(self, user_id: str) -> str:
        return f"{self.prefix}{{a:{user_id}}}"

    def _key(self, user_id: str, artifact_id: str) -> str:
        return f"{self._tag(user_id)}:artifact:{artifact_id}"

    async def put(self, caller: Caller, content: bytes, mime_type: str, name: str) -> dict[str, Any]:
        """Store `content`; returns {artifact_id, uri, mime_type, size_bytes, expires_at}."""
        if len(content) > self.max_bytes:
            raise InvalidInput(
                f"the artifact is {len(content):,} bytes, above the {self.max_bytes:,} limit; make it smaller"
            )
        artifact_id = secrets.token_hex(16)
        now = time.time()
        meta = {
            "owner_id": caller.user_id,
            "mime_type": mime_type,
            "name": name,
            "size_bytes": len(content),
            "created_at": now,
        }
        await self._put(
            keys=[self._key(caller.user_id, artifact_id), self._tag(caller.user_id) + ":artifacts"],
            args=[
                self.cipher.encrypt_json(meta),
                self.cipher.encrypt(content),
                self.ttl_seconds,
                artifact_id,
                self.max_per_user,
                self._key(caller.user_id, ""),
            ],
        )
        return {
            "artifact_id": artifact_id,
            "uri": f"artifact://{artifact_id}",
            "mime_type": mime_type,
            "size_bytes": len(content),
            "expires_at": _iso(now + self.ttl_seconds),
        }

    async def get(self, caller: Caller, artifact_id: str) -> tuple[dict[str, Any], bytes]:
        """(metadata, content) of an artifact the caller made; NotFound for any other, or an expired one."""
        missing = NotFound(
            f"artifact '{str(artifact_id)[:40]}' not found: artifacts are kept {self.ttl_seconds // 60} "
            f"minutes (your latest {self.max_per_user}) for the user who made them only; draw the chart "
            "again, or save it in a session (session_id + save_as)"
        )
        if not isinstance(artifact_id, str) or not _ARTIFACT_ID.match(artifact_id):
            raise missing
        # Another user's artifact is under another tag: it does not exist for this caller.
        key = self._key(caller.user_id, artifact_id)
        meta_blob, content_blob = await self.redis.hmget(key, ["meta", "content"])
        if meta_blob is None or content_blob is None:
            raise missing
        meta: dict[str, Any] = self.cipher.decrypt_json(meta_blob)
        if meta.get("owner_id") != caller.user_id:
            raise missing  # another user's artifact does not exist for this caller
        return meta, self.cipher.decrypt(content_blob)
