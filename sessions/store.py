"""The encrypted session store in Redis: metadata hash, one key per value, per-user index sets, shared TTL.

Layout (every key under the configured prefix; `{s:<id>}` is a Redis Cluster hash tag, so all keys of one
session share a hash slot while different sessions spread over every master):
- `{s:<id>}:session` hash: `meta` (encrypted: owner, data source, grant, key-name secret), `status`,
  `ttl`, `created`, `accessed`, `expires` (epoch seconds), `bytes` (stored size of all values) and
  one `k:{token}` field per key (encrypted: key name, kind, size, dataset metadata).
- `{s:<id>}:data:{token}` the encrypted value; `token` is a keyed digest of the key name, so
  key names never appear in Redis and never reach a Redis pattern.
- `session:index:{user_id}` set of the session ids a user owns or was granted (a slot of its own).
Every change of a session runs as one Lua script on its slot (sessions/lua/session_*.lua), so concurrent
updates lose nothing and every key of a session gets the same expiry at the same moment. The index sets
are written apart from the session, idempotently: an id is added after its session is written (before the
caller learns the id) and removed only after the session is gone, so a crash between the writes leaves
either a session no caller knows of (it expires with its TTL) or an id without a session, which listing
drops. Key rotation is in sessions/rotation.py.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cachetools
import pandas as pd
import redis.asyncio as aioredis

from core.errors import Forbidden, InvalidInput, NotFound, Unavailable
from sessions import access, scripts
from sessions.access import Caller, Grants
from sessions.crypto import Cipher
from sessions.datasets import bytes_to_frame, frame_to_bytes, json_ready, preview_rows

KINDS = ("value", "analysis", "chart", "dataset")
PREVIEW_ROWS = 20
MAX_PREVIEW_ROWS = 1_000
KEY_FIELD = "k:"
_META_CACHE_SIZE = 4096
_INDEX_CACHE_SIZE = 4096
PRUNE_EVERY = 64  # a create that brings an index set to a multiple of this many ids drops expired ones
THREAD_THRESHOLD = 256 * 1024  # encrypt/encode bigger payloads off the event loop
INLINE_VALUE_BYTES = 32_000  # JSON size above which session_read gives a value's outline and a link
MAX_LINKED_BYTES = 900_000  # what one read of session://{id}/{key} may carry (a response stays < 1 MiB)


def _session_script(name: str) -> str:
    """A session script from sessions/lua, with the refresh() function it calls in front of it."""
    return scripts.load("sessions", "session_refresh") + scripts.load("sessions", name)


@dataclass(frozen=True)
class ArchivedSession:
    session_id: str
    owner_id: str
    archived_at: dt.datetime
    metadata: bytes
    payload: bytes


class ArchiveBackend(Protocol):
    """Where closed sessions go (PostgreSQL's mcp_internal.session_archive in production)."""

    async def save(self, session_id: str, owner_id: str, metadata: bytes, payload: bytes) -> None: ...

    async def fetch(self, session_id: str) -> ArchivedSession | None: ...

    async def remove(self, session_id: str) -> bool: ...

    async def list_for(self, owner_id: str | None) -> list[tuple[str, str, dt.datetime]]: ...

    async def session_ids(self) -> list[str]: ...

    async def replace(
        self, session_id: str, archived_at: dt.datetime, metadata: bytes, payload: bytes
    ) -> bool: ...


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def as_text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def outline(value: Any, depth: int = 0) -> Any:
    """A large JSON value in brief: numbers, flags and short strings as they are, two levels of objects,
    and every list or long string replaced by what it is ("list of 729 items")."""
    if isinstance(value, dict):
        if depth >= 2:
            return f"object of {len(value)} keys"
        return {key: outline(item, depth + 1) for key, item in list(value.items())[:50]}
    if isinstance(value, list):
        return f"list of {len(value)} items"
    if isinstance(value, str) and len(value) > 300:
        return value[:300] + f"... ({len(value):,} characters)"
    return value


@dataclass(frozen=True)
class _Meta:
    grants: Grants
    data_source: str
    created_at: float
    secret: bytes  # keys the digest that names each value's Redis key

    def token(self, key: str) -> str:
        return hmac.new(self.secret, key.encode(), hashlib.sha256).hexdigest()[:32]


class SessionStore:
    """Sessions in Redis, each value Fernet-encrypted, access checked on every call."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        key_prefix: str,
        encryption_keys: Sequence[str],
        archive: ArchiveBackend | None = None,
        max_value_bytes: int = 16_000_000,
        max_session_bytes: int = 64_000_000,
        max_ttl_seconds: int = 30 * 24 * 3600,
        max_session_keys: int = 1_000,
    ) -> None:
        self.redis = redis
        self.prefix = key_prefix
        self.cipher = Cipher(encryption_keys)
        self.archive = archive
        self.max_value_bytes = max_value_bytes
        self.max_session_bytes = max_session_bytes
        self.max_ttl_seconds = max_ttl_seconds
        self.max_session_keys = max_session_keys
        self._meta_cache: cachetools.LRUCache[str, _Meta] = cachetools.LRUCache(_META_CACHE_SIZE)
        # index set -> epoch until which this process made sure it lives (spares a call per refresh)
        self._index_until: cachetools.LRUCache[str, float] = cachetools.LRUCache(_INDEX_CACHE_SIZE)
        self._index_add = redis.register_script(scripts.load("sessions", "index_add"))
        self._write = redis.register_script(_session_script("session_write"))
        self._delete_key = redis.register_script(_session_script("session_delete_key"))
        self._read = redis.register_script(_session_script("session_read"))
        self._touch = redis.register_script(_session_script("session_touch"))
        self._put = redis.register_script(_session_script("session_put"))
        self._snapshot = redis.register_script(scripts.load("sessions", "session_snapshot"))
        self._set_status = redis.register_script(scripts.load("sessions", "session_set_status"))
        self._drop = redis.register_script(scripts.load("sessions", "session_drop"))

    # -- key names ---------------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _tag(self, session: str) -> str:
        return f"{self.prefix}{{s:{session}}}"

    def hash_key(self, session: str) -> str:
        return self._tag(session) + ":session"

    def data_prefix(self, session: str) -> str:
        return self._tag(session) + ":data:"

    async def live_session_ids(self) -> AsyncIterator[str]:
        """The id of every session in Redis, whoever owns it (a SCAN of every master: for admins and operators)."""
        base = self._tag("")[:-1]
        async for raw in self.redis.scan_iter(match=_glob_escape(base) + "*", count=1000, _type="HASH"):
            tail = as_text(raw)[len(base) :]
            if len(tail) == 36 + len("}:session") and tail.endswith("}:session"):
                yield tail[:36]

    async def move_untagged_sessions(self) -> int:
        """Move sessions an older version wrote as `session:<id>` (before hash tags) to their tagged keys;
        returns how many moved. Runs at start-up; such keys exist only on a single Redis."""
        base = self._key("session", "")
        move = self.redis.register_script(scripts.load("sessions", "session_move"))
        moved = 0
        async for raw in self.redis.scan_iter(match=_glob_escape(base) + "*", count=1000, _type="HASH"):
            session = as_text(raw)[len(base) :]
            if len(session) == 36 and ":" not in session:
                moved += int(
                    await move(
                        keys=[base + session, self.hash_key(session)],
                        args=[self._key("session", session, "data", ""), self.data_prefix(session)],
                    )
                )
        return moved

    def _index(self, user: str) -> str:
        return self._key("session", "index", user)

    def _indexes(self, grants: Grants) -> list[str]:
        users = [grants.owner_id] + ([grants.grant_user] if grants.grant_user else [])
        return [self._index(user) for user in dict.fromkeys(users)]

    async def _index_session(self, grants: Grants, session: str, ttl: int) -> None:
        """Add `session` to its users' index sets (idempotent, one slot each), living at least `ttl`."""
        until = time.time() + 2 * ttl
        for index in self._indexes(grants):
            size = await self._index_add(keys=[index], args=[2 * ttl, session])
            self._index_until[index] = until
            if int(size) % PRUNE_EVERY == 0:
                await self._prune(index)

    async def _keep_indexes(self, grants: Grants, session: str, ttl: int) -> None:
        """After a session's expiry moved to now + `ttl`: its index sets must outlive it. Twice the TTL
        at a time, so this costs a call about once per TTL per user and process, not once per call;
        the call adds the session again too (an add lost in a crash comes back here)."""
        now = time.time()
        for index in self._indexes(grants):
            if self._index_until.get(index, 0.0) < now + ttl:
                await self._index_add(keys=[index], args=[2 * ttl, session])
                self._index_until[index] = now + 2 * ttl

    async def _unindex(self, indexes: Sequence[str], session: str) -> None:
        """Remove a session that is gone from its users' index sets (after the session, never before)."""
        for index in indexes:
            await self.redis.srem(index, session)

    async def _prune(self, index: str) -> list[str]:
        """Drop the ids of sessions that no longer exist from one index set; returns the ids kept."""
        ids = sorted(as_text(raw) for raw in await self.redis.smembers(index))
        async with self.redis.pipeline(transaction=False) as pipe:
            for session in ids:
                pipe.exists(self.hash_key(session))
            found = await pipe.execute()
        gone = [session for session, exists in zip(ids, found, strict=True) if not exists]
        if gone:
            await self.redis.srem(index, *gone)
        return [session for session in ids if session not in gone]

    # -- metadata ----------------------------------------------------------------------------
    def _decode_meta(self, blob: bytes | str) -> _Meta:
        raw = self.cipher.decrypt_json(blob)
        grant = raw.get("grant") or {}
        return _Meta(
            grants=Grants(raw["owner_id"], grant.get("user_id"), grant.get("access_level", "read")),
            data_source=raw["data_source"],
            created_at=float(raw["created_at"]),
            secret=bytes.fromhex(raw["secret"]),
        )

    async def _meta(self, caller: Caller, session: str) -> _Meta:
        """The session's metadata, after checking the caller may see it (NotFound otherwise).

        Metadata never changes after creation (restore brings back the same), so it is cached by
        session id; the scripts that follow still check the session exists, so a cached entry
        never revives a closed or expired session.
        """
        meta: _Meta | None = self._meta_cache.get(session)
        if meta is None:
            blob = await self.redis.hget(self.hash_key(session), "meta")
            if blob is None:
                raise access.not_found(session)
            meta = self._meta_cache[session] = self._decode_meta(blob)
        meta.grants.require_read(caller, session)
        return meta

    def _entry(self, blob: bytes | str) -> dict[str, Any]:
        entry: dict[str, Any] = self.cipher.decrypt_json(blob)
        return entry

    # -- lifecycle ---------------------------------------------------------------------------
    def _ttl(self, ttl_seconds: int) -> int:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 1:
            raise InvalidInput(
                f"ttl_seconds must be a whole number of seconds from 1 to {self.max_ttl_seconds}"
            )
        if ttl_seconds > self.max_ttl_seconds:
            raise InvalidInput(
                f"ttl_seconds {ttl_seconds} is above the limit of {self.max_ttl_seconds}; "
                "ask for less and use session_extend later"
            )
        return ttl_seconds

    async def create(
        self,
        caller: Caller,
        data_source: str,
        access_level: str = "read",
        ttl_seconds: int = 3600,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        if caller.role == "viewer":
            raise Forbidden("viewers cannot create sessions; ask an analyst to grant you one")
        if not isinstance(data_source, str) or not data_source.strip() or len(data_source) > 500:
            raise InvalidInput(
                "data_source must be 1-500 characters, e.g. 'database' or what the session is about"
            )
        level = access.access_level(access_level)
        ttl = self._ttl(ttl_seconds)
        grantee = access.user_id(user_id) if user_id is not None else None
        session = str(uuid.uuid4())
        now = time.time()
        meta = {
            "owner_id": caller.user_id,
            "data_source": data_source,
            "grant": {"user_id": grantee, "access_level": level} if grantee else None,
            "created_at": now,
            "secret": secrets.token_hex(32),
        }
        grants = Grants(caller.user_id, grantee, level)
        fields = {
            "meta": self.cipher.encrypt_json(meta),
            "status": b"active",
            "ttl": str(ttl).encode(),
            "created": repr(now).encode(),
            "bytes": b"0",
        }
        args: list[Any] = [self.data_prefix(session), repr(now), session, len(fields)]
        for name, value in fields.items():
            args += [name, value]
        created = await self._put(keys=[self.hash_key(session)], args=args)
        if not created:  # a UUID4 collision: vanishingly rare, never silently merged
            raise Unavailable("could not allocate a session id; retry")
        # After the session exists, so listing never drops it as gone; before anyone learns its id, so a
        # crash in between leaves a session no one can name, which expires with its TTL.
        await self._index_session(grants, session, ttl)
        answer: dict[str, Any] = {
            "session_id": session,
            "created_at": _iso(now),
            "expires_at": _iso(now + ttl),
            "status": "active",
            "ttl_seconds": ttl,
            "data_source": data_source,
        }
        if grantee:
            answer["granted_to"] = {"user_id": grantee, "access_level": level}
        return answer

    async def extend(self, caller: Caller, session_id: str, ttl_seconds: int) -> dict[str, Any]:
        session = access.session_id(session_id)
        ttl = self._ttl(ttl_seconds)
        meta = await self._meta(caller, session)
        meta.grants.require_write(caller, session)
        now = time.time()
        result = await self._touch(
            keys=[self.hash_key(session)], args=[self.data_prefix(session), repr(now), str(ttl)]
        )
        if int(result) < 0:
            raise access.not_found(session)
        await self._index_session(meta.grants, session, ttl)
        return {"session_id": session, "ttl_seconds": ttl, "expires_at": _iso(now + ttl), "status": "active"}

    # -- values ------------------------------------------------------------------------------
    async def _store(
        self, caller: Caller, session: str, key: str, entry: dict[str, Any], value_blob: bytes
    ) -> int:
        """Write one encrypted value and its index entry atomically; returns the session's new size."""
        if len(value_blob) > self.max_value_bytes:
            raise InvalidInput(
                f"value for key '{key}' is {len(value_blob):,} bytes stored (compressed and encrypted); the "
                f"limit is {self.max_value_bytes:,} per value (SESSION_MAX_VALUE_BYTES): save less or split it"
            )
        meta = await self._meta(caller, session)
        meta.grants.require_write(caller, session)
        token = meta.token(key)
        entry = {**entry, "name": key, "size_bytes": len(value_blob), "updated_at": _iso(time.time())}
        code, total, *ttl = await self._write(
            keys=[self.hash_key(session), self.data_prefix(session) + token],
            args=[
                self.data_prefix(session),
                repr(time.time()),
                KEY_FIELD + token,
                self.cipher.encrypt_json(entry),
                value_blob,
                self.max_session_bytes,
                self.max_session_keys,
            ],
        )
        if code == -1:
            raise access.not_found(session)
        if code == -3:
            raise InvalidInput(f"session '{session}' is being closed; open a new session to keep working")
        if code == -2:
            raise InvalidInput(
                f"session '{session}' would hold {int(total):,} bytes, above its limit of "
                f"{self.max_session_bytes:,} (SESSION_MAX_BYTES); overwrite keys or open another session"
            )
        if code == -4:
            raise InvalidInput(
                f"session '{session}' has {int(total):,} keys (SESSION_MAX_KEYS); delete some with "
                "session_delete_key, overwrite an existing key or use a new session"
            )
        await self._keep_indexes(meta.grants, session, int(ttl[0]))
        return int(total)

    async def delete_key(self, caller: Caller, session_id: str, key: str) -> dict[str, Any]:
        """Remove one key (and its value) from a session; the caller needs write access."""
        session = access.session_id(session_id)
        key = access.key_name(key)
        meta = await self._meta(caller, session)
        meta.grants.require_write(caller, session)
        token = meta.token(key)
        code, total, *ttl = await self._delete_key(
            keys=[self.hash_key(session), self.data_prefix(session) + token],
            args=[self.data_prefix(session), repr(time.time()), KEY_FIELD + token],
        )
        if ttl:
            await self._keep_indexes(meta.grants, session, int(ttl[0]))
        if code == -1:
            raise access.not_found(session)
        if code == -3:
            raise InvalidInput(f"session '{session}' is being closed; open a new session to keep working")
        if code == 0:
            names = [item["name"] for item in await self._entries(session)]
            listed = ", ".join(names[:20]) + (f" (+{len(names) - 20} more)" if len(names) > 20 else "")
            raise NotFound(f"key '{key}' not in session '{session}'; keys: {listed or 'none'}")
        return {"session_id": session, "key": key, "status": "deleted", "session_bytes": int(total)}

    async def _encrypt_value(self, value: Any) -> bytes:
        try:
            raw = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError):
            raise InvalidInput(
                "value must be JSON (objects, arrays, strings, finite numbers, booleans, null)"
            ) from None
        if len(raw) > self.max_value_bytes * 4:  # hopeless even after compression: refuse before the work
            raise InvalidInput(
                f"value is {len(raw):,} bytes of JSON; the limit is {self.max_value_bytes:,} stored bytes "
                "per value (SESSION_MAX_VALUE_BYTES): save less or split it"
            )
        if len(raw) > THREAD_THRESHOLD:
            return await asyncio.to_thread(self.cipher.encrypt_json, value, True)
        return self.cipher.encrypt_json(value, compress=len(raw) > 1024)

    async def update(self, caller: Caller, session_id: str, key: str, value: Any) -> dict[str, Any]:
        """Store a JSON value under `key` (replacing what was there)."""
        return await self.save_value(caller, session_id, key, value, kind="value")

    async def save_value(
        self, caller: Caller, session_id: str, key: str, value: Any, kind: str = "value"
    ) -> dict[str, Any]:
        """Store a JSON value tagged with its kind ("analysis", "chart", "value"); `read` returns it."""
        session = access.session_id(session_id)
        key = access.key_name(key)
        if kind not in KINDS or kind == "dataset":
            raise InvalidInput(f"kind '{kind}' is not one of: value, analysis, chart")
        blob = await self._encrypt_value(json_ready(value))
        total = await self._store(caller, session, key, {"kind": kind}, blob)
        return {
            "session_id": session,
            "key": key,
            "kind": kind,
            "size_bytes": len(blob),
            "session_bytes": total,
            "status": "stored",
        }

    async def save_chart(
        self, caller: Caller, session_id: str, key: str, metadata: dict[str, Any], content: bytes
    ) -> dict[str, Any]:
        """Store a chart file and what it shows; session_read answers the metadata and a link
        (session://{id}/{key}), and the link reads the file itself."""
        value = {**metadata, "content_base64": base64.b64encode(content).decode("ascii")}
        saved = await self.save_value(caller, session_id, key, value, kind="chart")
        return {**saved, "uri": f"session://{saved['session_id']}/{saved['key']}"}

    async def save_dataset(
        self, caller: Caller, session_id: str, name: str, frame: pd.DataFrame, source: dict[str, Any]
    ) -> dict[str, Any]:
        """Store a DataFrame as zstd-compressed Arrow IPC, encrypted; returns its metadata."""
        session = access.session_id(session_id)
        name = access.key_name(name)
        # Check access before the (possibly large) encoding work.
        (await self._meta(caller, session)).grants.require_write(caller, session)

        def encode() -> tuple[bytes, list[dict[str, str]]]:
            data, columns = frame_to_bytes(frame)
            return self.cipher.encrypt(data), columns

        if frame.size > 20_000:
            blob, columns = await asyncio.to_thread(encode)
        else:
            blob, columns = encode()
        described = {"rows": len(frame), "columns": columns, "source": json_ready(source)}
        await self._store(caller, session, name, {"kind": "dataset", **described}, blob)
        return {"name": name, **described, "size_bytes": len(blob)}

    async def _fetch(
        self, caller: Caller, session: str, key: str
    ) -> tuple[dict[str, Any] | None, bytes | None]:
        """The key's index entry and encrypted value ((None, None) when the key is not in the session)."""
        meta = await self._meta(caller, session)
        token = meta.token(key)
        found = await self._read(
            keys=[self.hash_key(session), self.data_prefix(session) + token],
            args=[self.data_prefix(session), repr(time.time()), KEY_FIELD + token],
        )
        if found is None:
            raise access.not_found(session)
        await self._keep_indexes(meta.grants, session, int(found[0]))
        if len(found) < 2:
            return None, None
        return self._entry(found[1]), (found[2] if len(found) > 2 else None)

    async def read(
        self, caller: Caller, session_id: str, key: str, offset: int = 0, limit: int = PREVIEW_ROWS
    ) -> dict[str, Any]:
        """{session_id, key, kind, value}; a dataset's value is its metadata plus rows offset..offset+limit."""
        session = access.session_id(session_id)
        key = access.key_name(key)
        if offset < 0 or not 1 <= limit <= MAX_PREVIEW_ROWS:
            raise InvalidInput(f"offset must be >= 0 and limit 1-{MAX_PREVIEW_ROWS}")
        entry, blob = await self._fetch(caller, session, key)
        if entry is None or blob is None:
            names = [item["name"] for item in await self._entries(session)]
            listed = ", ".join(names[:20]) + (f" (+{len(names) - 20} more)" if len(names) > 20 else "")
            raise NotFound(
                f"key '{key}' not in session '{session}'; keys: {listed or 'none yet (session_update adds one)'}"
            )
        kind = entry.get("kind", "value")
        if kind != "dataset":
            value = (
                await asyncio.to_thread(self.cipher.decrypt_json, blob)
                if len(blob) > THREAD_THRESHOLD
                else (self.cipher.decrypt_json(blob))
            )
            answer = {
                "session_id": session,
                "key": key,
                "kind": kind,
                "value": value,
                "updated_at": entry["updated_at"],
            }
            # A chart's file, and any large value, is read by reference: metadata here, bytes at the link.
            if kind == "chart" and isinstance(value, dict):
                file = value.pop("content_base64", None) or value.pop("image", None)
                answer["link"] = {
                    "uri": f"session://{session}/{key}",
                    "mime_type": value.get("mime_type"),
                    "size_bytes": len(file) * 3 // 4 if isinstance(file, str) else None,
                }
            elif (size := len(blob)) > INLINE_VALUE_BYTES // 4 and (
                size := len(json.dumps(value, separators=(",", ":")))
            ) > INLINE_VALUE_BYTES:
                answer["value"] = outline(value)
                answer["link"] = {
                    "uri": f"session://{session}/{key}",
                    "mime_type": "application/json",
                    "size_bytes": size,
                }
                answer["note"] = "a large value: 'value' is its outline; read the link for all of it"
            return answer
        frame = await self._frame(blob)
        rows = len(frame)
        value = {
            "name": key,
            "rows": rows,
            "columns": entry["columns"],
            "source": entry.get("source"),
            "size_bytes": entry["size_bytes"],
            "preview": preview_rows(frame, offset, limit),
            "offset": offset,
            "limit": limit,
            "next_offset": offset + limit if offset + limit < rows else None,
        }
        return {
            "session_id": session,
            "key": key,
            "kind": "dataset",
            "value": value,
            "updated_at": entry["updated_at"],
        }

    async def read_linked(self, caller: Caller, session_id: str, key: str) -> tuple[str, bytes | str]:
        """What session://{id}/{key} serves: (MIME type, content). A chart is its file; a dataset its
        description and first rows; any other value its JSON, if one response can carry it."""
        session = access.session_id(session_id)
        key = access.key_name(key)
        entry, blob = await self._fetch(caller, session, key)
        if entry is None or blob is None or entry.get("kind") == "dataset":
            read = await self.read(caller, session, key)  # a missing key: NotFound naming the keys there
            return "application/json", json.dumps(read["value"], default=str)
        value = (
            await asyncio.to_thread(self.cipher.decrypt_json, blob)
            if len(blob) > THREAD_THRESHOLD
            else self.cipher.decrypt_json(blob)
        )
        if entry.get("kind") == "chart" and isinstance(value, dict):
            encoded = value.get("content_base64") or value.get("image") or ""
            return str(value.get("mime_type") or "application/octet-stream"), base64.b64decode(encoded)
        text = json.dumps(value)
        if len(text) > MAX_LINKED_BYTES:
            raise InvalidInput(
                f"key '{key}' holds {len(text):,} bytes of JSON, more than one response can carry "
                f"({MAX_LINKED_BYTES:,}); session_read shows its outline: save smaller parts under their own keys"
            )
        return "application/json", text

    async def _frame(self, blob: bytes) -> pd.DataFrame:
        if len(blob) > THREAD_THRESHOLD:
            return await asyncio.to_thread(lambda: bytes_to_frame(self.cipher.decrypt(blob)))
        return bytes_to_frame(self.cipher.decrypt(blob))

    async def load_dataset(self, caller: Caller, session_id: str, name: str) -> pd.DataFrame:
        session = access.session_id(session_id)
        name = access.key_name(name)
        entry, blob = await self._fetch(caller, session, name)
        if entry is None or entry.get("kind") != "dataset" or blob is None:
            datasets = [
                item["name"] for item in await self._entries(session) if item.get("kind") == "dataset"
            ]
            raise NotFound(
                f"dataset '{name}' not in session '{session}'; datasets: "
                f"{', '.join(datasets[:20]) or 'none (query_database with session_id and save_as saves one)'}"
            )
        return await self._frame(blob)

    async def _entries(self, session: str) -> list[dict[str, Any]]:
        fields = await self.redis.hgetall(self.hash_key(session))
        entries = [
            self._entry(blob) for field, blob in fields.items() if as_text(field).startswith(KEY_FIELD)
        ]
        return sorted(entries, key=lambda item: str(item["name"]))

    # -- listing -----------------------------------------------------------------------------
    def _describe(self, session: str, fields: Mapping[Any, Any], meta: _Meta) -> dict[str, Any]:
        entries = sorted(
            (self._entry(blob) for field, blob in fields.items() if as_text(field).startswith(KEY_FIELD)),
            key=lambda item: str(item["name"]),
        )
        grants = meta.grants
        return {
            "session_id": session,
            "owner_id": grants.owner_id,
            "data_source": meta.data_source,
            "status": as_text(fields.get(b"status")),
            "created_at": _iso(meta.created_at),
            "last_accessed": _iso(float(fields.get(b"accessed") or meta.created_at)),
            "expires_at": _iso(float(fields.get(b"expires") or 0)),
            "ttl_seconds": int(fields.get(b"ttl") or 0),
            "size_bytes": int(fields.get(b"bytes") or 0),
            "granted_to": {"user_id": grants.grant_user, "access_level": grants.grant_level}
            if grants.grant_user
            else None,
            "keys": [
                {"key": item["name"], "kind": item.get("kind"), "size_bytes": item.get("size_bytes")}
                | ({"rows": item.get("rows")} if item.get("kind") == "dataset" else {})
                for item in entries
            ],
        }

    async def list_sessions(self, caller: Caller, all_users: bool = False) -> dict[str, Any]:
        """The sessions the caller owns or was granted (every session for an admin with all_users)."""
        if all_users and caller.role != "admin":
            raise Forbidden("all_users=true needs role admin")
        if all_users:
            candidates = {session async for session in self.live_session_ids()}
        else:
            candidates = {as_text(raw) for raw in await self.redis.smembers(self._index(caller.user_id))}
        ids = sorted(candidates)  # one slot per session: a cluster pipeline sends each to its master
        async with self.redis.pipeline(transaction=False) as pipe:
            for session in ids:
                pipe.hgetall(self.hash_key(session))
            hashes = await pipe.execute()
        sessions, gone = [], []
        for session, fields in zip(ids, hashes, strict=True):
            if not fields or b"meta" not in fields:
                gone.append(session)
                continue
            meta = self._decode_meta(fields[b"meta"])
            if meta.grants.can_read(caller):
                sessions.append(self._describe(session, fields, meta))
        if gone and not all_users:  # expired sessions: clean the index set
            await self.redis.srem(self._index(caller.user_id), *gone)
        sessions.sort(key=lambda item: item["created_at"], reverse=True)
        return {"sessions": sessions, "count": len(sessions)}

    async def describe(self, caller: Caller, session_id: str) -> dict[str, Any]:
        session = access.session_id(session_id)
        fields = await self.redis.hgetall(self.hash_key(session))
        if not fields or b"meta" not in fields:
            raise access.not_found(session)
        meta = self._decode_meta(fields[b"meta"])
        meta.grants.require_read(caller, session)
        return self._describe(session, fields, meta)

    # -- closing, archiving, restoring -------------------------------------------------------
    async def delete(self, caller: Caller, session_id: str) -> dict[str, Any]:
        """Admin only: remove the live session and its archive, if any."""
        session = access.session_id(session_id)
        if caller.role != "admin":
            raise Forbidden("session_delete needs role admin; use session_close for your own sessions")
        blob = await self.redis.hget(self.hash_key(session), "meta")
        indexes = self._indexes(self._decode_meta(blob).grants) if blob is not None else []
        removed = await self._drop(keys=[self.hash_key(session)], args=[self.data_prefix(session), session])
        await self._unindex(indexes, session)
        archived = await self.archive.remove(session) if self.archive is not None else False
        if not removed and not archived:
            raise access.not_found(session)
        return {
            "session_id": session,
            "status": "deleted",
            "live_deleted": bool(removed),
            "archive_deleted": archived,
        }

    async def close(self, caller: Caller, session_id: str, archive: bool = True) -> dict[str, Any]:
        """End a session; with archive, it is first written (still encrypted) to the archive in one go."""
        session = access.session_id(session_id)
        meta = await self._meta(caller, session)
        meta.grants.require_manage(caller, session, "close")
        indexes = self._indexes(meta.grants)
        if not archive:
            dropped = await self._drop(
                keys=[self.hash_key(session)], args=[self.data_prefix(session), session]
            )
            await self._unindex(indexes, session)
            if not dropped:
                raise access.not_found(session)
            return {"session_id": session, "status": "closed", "archived": False}
        if self.archive is None:
            raise Unavailable(
                "no session archive is configured; close with archive=false or configure DATABASE_URL"
            )
        snapshot = await self._snapshot(keys=[self.hash_key(session)], args=[self.data_prefix(session)])
        if snapshot is None:
            raise access.not_found(session)
        fields, values = snapshot
        hash_fields = {as_text(fields[i]): as_text(fields[i + 1]) for i in range(0, len(fields), 2)}
        hash_fields["status"] = "active"
        payload = {as_text(values[i]): as_text(values[i + 1]) for i in range(0, len(values), 2)}
        try:
            await self.archive.save(
                session,
                meta.grants.owner_id,
                json.dumps({"format": 1, "hash": hash_fields}).encode(),
                json.dumps({"format": 1, "values": payload}).encode(),
            )
        except BaseException:
            # The archive did not take it: the live session stays exactly as it was.
            await self._set_status(keys=[self.hash_key(session)], args=["active"])
            raise
        await self._drop(keys=[self.hash_key(session)], args=[self.data_prefix(session), session])
        await self._unindex(indexes, session)
        return {
            "session_id": session,
            "status": "closed",
            "archived": True,
            "keys": len(payload),
            "size_bytes": int(hash_fields.get("bytes") or 0),
        }

    async def restore(self, caller: Caller, session_id: str) -> dict[str, Any]:
        """Bring an archived session back to Redis (owner or admin), with a fresh expiry."""
        session = access.session_id(session_id)
        live = await self.redis.hget(self.hash_key(session), "meta")
        if live is not None and self._decode_meta(live).grants.can_read(caller):
            raise InvalidInput(f"session '{session}' is active already; read it with session_read")
        if self.archive is None:
            raise Unavailable("no session archive is configured; sessions cannot be restored")
        archived = await self.archive.fetch(session)
        if archived is None or not (caller.role == "admin" or archived.owner_id == caller.user_id):
            raise NotFound(
                f"archived session '{session}' not found: only its owner or an admin can restore it; "
                "session_list with archived=true shows yours"
            )
        if await self.redis.exists(self.hash_key(session)):
            raise InvalidInput(f"session '{session}' is active already; read it with session_read")
        hash_fields: dict[str, str] = json.loads(archived.metadata)["hash"]
        values: dict[str, str] = json.loads(archived.payload)["values"]
        meta = self._decode_meta(hash_fields["meta"].encode())
        now = time.time()
        args: list[Any] = [self.data_prefix(session), repr(now), session, len(hash_fields)]
        for name, value in hash_fields.items():
            args += [name, value]
        for token, value in values.items():
            args += [token, value]
        ttl = int(hash_fields.get("ttl") or 0)
        put = await self._put(keys=[self.hash_key(session)], args=args)
        # Also when it was live already: a restore that failed after its put is finished by the next one.
        await self._index_session(meta.grants, session, ttl)
        if not put:
            raise InvalidInput(f"session '{session}' is active already; read it with session_read")
        await self.archive.remove(session)
        return {
            "session_id": session,
            "status": "active",
            "restored": True,
            "keys": len(values),
            "expires_at": _iso(now + ttl),
            "archived_at": archived.archived_at.isoformat(timespec="seconds"),
        }

    async def list_archived(self, caller: Caller) -> dict[str, Any]:
        if self.archive is None:
            return {"archived": [], "count": 0}
        rows = await self.archive.list_for(None if caller.role == "admin" else caller.user_id)
        archived = [
            {"session_id": session, "owner_id": owner, "archived_at": when.isoformat(timespec="seconds")}
            for session, owner, when in rows
        ]
        return {"archived": archived, "count": len(archived)}
