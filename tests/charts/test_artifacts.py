"""The short-lived artifact store: encrypted in Redis, readable by its maker only, bounded per user."""

from __future__ import annotations

import uuid

import pytest

from core.errors import NotFound
from mcp_server.auth import Identity
from sessions.artifacts import ArtifactStore

ANN = Identity("ann", "analyst", "k-ann")
BOB = Identity("bob", "analyst", "k-bob")


@pytest.fixture
async def store(runtime):
    prefix = f"{runtime.settings.redis_key_prefix}artifacts-{uuid.uuid4().hex[:8]}:"
    yield ArtifactStore(
        runtime.redis, key_prefix=prefix, encryption_keys=runtime.encryption_keys, max_per_user=3
    )
    async for key in runtime.redis.scan_iter(match=prefix + "*"):
        await runtime.redis.delete(key)


async def test_an_artifact_is_encrypted_expires_and_is_its_makers_only(store, runtime):
    marker = b"<svg>a-very-recognisable-marker</svg>"
    stored = await store.put(ANN, marker, "image/svg+xml", "chart")
    meta, content = await store.get(ANN, stored["artifact_id"])
    assert content == marker and meta["mime_type"] == "image/svg+xml"
    raw = await runtime.redis.hgetall(store._key(ANN.user_id, stored["artifact_id"]))
    assert all(b"recognisable" not in value for value in raw.values()), "stored in clear"
    assert 0 < await runtime.redis.ttl(store._key(ANN.user_id, stored["artifact_id"])) <= 3600
    with pytest.raises(NotFound, match="not found"):
        await store.get(BOB, stored["artifact_id"])
    with pytest.raises(NotFound, match="not found"):
        await store.get(ANN, "../" + stored["artifact_id"])


async def test_a_user_keeps_only_the_latest_artifacts(store):
    made = [(await store.put(ANN, f"chart {i}".encode(), "text/html", "c"))["artifact_id"] for i in range(5)]
    other = (await store.put(BOB, b"bob's", "text/html", "c"))["artifact_id"]
    for oldest in made[:2]:
        with pytest.raises(NotFound, match="your latest 3"):
            await store.get(ANN, oldest)
    assert [(await store.get(ANN, kept))[1] for kept in made[2:]] == [b"chart 2", b"chart 3", b"chart 4"]
    assert (await store.get(BOB, other))[1] == b"bob's", "one user's charts never push out another's"
