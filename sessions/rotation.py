"""Key rotation: re-encrypt every live and archived session under the first SESSION_ENCRYPTION_KEY, so the
old keys can be dropped (`analytics-mcp rotate-keys` and the admin tool session_rotate_keys run it)."""

from __future__ import annotations

import asyncio
import json

from redis.commands.core import AsyncScript

from core.errors import Unavailable
from sessions import scripts
from sessions.crypto import Cipher
from sessions.store import KEY_FIELD, THREAD_THRESHOLD, ArchiveBackend, SessionStore, as_text

COUNTS = (
    "sessions_rotated",
    "items_reencrypted",
    "archived_sessions_rotated",
    "archived_items_reencrypted",
    "unreadable",
)


async def rotate_keys(store: SessionStore) -> dict[str, int]:
    """Re-encrypt every live and archived session of `store` under its first key; returns counts.

    A session no configured key decrypts is left as it is and counted in `unreadable`; the other
    sessions are rotated all the same. Running it twice is harmless (the second run changes nothing).
    """
    replace = store.redis.register_script(scripts.load("sessions", "session_replace"))
    counts = dict.fromkeys(COUNTS, 0)
    async for session in store.live_session_ids():
        try:
            changed = await _rotate_live(store, replace, session)
        except Unavailable:
            counts["unreadable"] += 1
            continue
        if changed:
            counts["sessions_rotated"] += 1
            counts["items_reencrypted"] += changed
    if store.archive is not None:
        for session in await store.archive.session_ids():
            try:
                changed = await _rotate_archived(store.cipher, store.archive, session)
            except Unavailable:
                counts["unreadable"] += 1
                continue
            if changed:
                counts["archived_sessions_rotated"] += 1
                counts["archived_items_reencrypted"] += changed
    return counts


async def _rotated(cipher: Cipher, blob: bytes | str) -> bytes | None:
    """`blob` under the first key, or None when it is there already."""
    if len(blob) > THREAD_THRESHOLD:
        current = await asyncio.to_thread(cipher.is_current, blob)
        return None if current else await asyncio.to_thread(cipher.rotate, blob)
    return None if cipher.is_current(blob) else cipher.rotate(blob)


def _encrypted(field: str) -> bool:
    """Is this field of a session's hash encrypted (its metadata and its keys' entries)?"""
    return field == "meta" or field.startswith(KEY_FIELD)


async def _rotate_live(store: SessionStore, replace: AsyncScript, session: str) -> int:
    """Re-encrypt one session in Redis by compare-and-set, so a value written meanwhile is kept."""
    fields = await store.redis.hgetall(store.hash_key(session))
    if not fields:
        return 0
    triples: list[bytes | str] = []
    for field, blob in fields.items():
        name = as_text(field)
        if _encrypted(name):
            rotated = await _rotated(store.cipher, blob)
            if rotated is not None:
                triples += [name, blob, rotated]
    data_keys: list[str] = []
    pairs: list[bytes | str] = []
    tokens = [as_text(field)[len(KEY_FIELD) :] for field in fields if as_text(field).startswith(KEY_FIELD)]
    if tokens:
        prefix = store.data_prefix(session)
        blobs = await store.redis.mget([prefix + token for token in tokens])
        for token, value in zip(tokens, blobs, strict=True):
            if value is None:  # expired or overwritten meanwhile
                continue
            rotated = await _rotated(store.cipher, value)
            if rotated is not None:
                data_keys.append(prefix + token)
                pairs += [value, rotated]
    if not triples and not data_keys:
        return 0
    changed = await replace(
        keys=[store.hash_key(session), *data_keys], args=[len(triples) // 3, *triples, *pairs]
    )
    return int(changed)


async def _rotate_archived(cipher: Cipher, archive: ArchiveBackend, session: str) -> int:
    """Re-encrypt one archived session; the archive replaces it only if it was not restored meanwhile."""
    archived = await archive.fetch(session)
    if archived is None:  # restored or deleted meanwhile
        return 0
    hash_fields: dict[str, str] = json.loads(archived.metadata)["hash"]
    values: dict[str, str] = json.loads(archived.payload)["values"]
    changed = 0
    for name, blob in hash_fields.items():
        if _encrypted(name):
            rotated = await _rotated(cipher, blob)
            if rotated is not None:
                hash_fields[name] = rotated.decode()
                changed += 1
    for token, blob in values.items():
        rotated = await _rotated(cipher, blob)
        if rotated is not None:
            values[token] = rotated.decode()
            changed += 1
    if not changed:
        return 0
    replaced = await archive.replace(
        session,
        archived.archived_at,
        json.dumps({"format": 1, "hash": hash_fields}).encode(),
        json.dumps({"format": 1, "values": values}).encode(),
    )
    return changed if replaced else 0
