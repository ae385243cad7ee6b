"""REDIS_CLUSTER_NODES: sessions, index sets, rate limits, caches and notices on a real 3-master Redis Cluster
(redis-server processes on loopback), driven through the MCP tools."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastmcp import Client
from prometheus_client import CollectorRegistry

from core.errors import RateLimited
from mcp_server.budget import QuerySeconds
from mcp_server.cache import Cache
from mcp_server.ratelimit import RateLimiter
from mcp_server.runtime import Runtime
from sessions.access import Caller
from sessions.artifacts import ArtifactStore
from sessions.rotation import rotate_keys
from sessions.store import SessionStore
from tests.conftest import app_for
from tests.sessions.redis_processes import PASSWORD, REDIS_CLI, REDIS_SERVER, RedisProcesses, node
from tests.support import call, refusal
from warehouse.notices import SourceNotices

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REDIS_SERVER is None or REDIS_CLI is None, reason="needs redis-server and redis-cli"),
]


class User:
    def __init__(self, user_id: str, role: str) -> None:
        self.user_id, self.role = user_id, role


@pytest.fixture(scope="module")
def cluster_ports() -> Iterator[list[int]]:
    processes = RedisProcesses()
    try:
        yield processes.cluster(masters=3)
    finally:
        processes.stop()


@pytest.fixture(scope="module")
async def cluster_runtime(
    make_runtime: Callable[..., Any], cluster_ports: list[int]
) -> AsyncIterator[Runtime]:
    nodes = tuple(("127.0.0.1", port) for port in cluster_ports)
    changes = {"redis_url": None, "redis_cluster_nodes": nodes, "redis_password": PASSWORD}
    async with make_runtime(customers=None, **changes) as runtime:
        yield runtime


def keys_per_master(ports: list[int], pattern: str) -> dict[int, list[bytes]]:
    found = {}
    for port in ports:
        client = node(port)
        found[port] = list(client.scan_iter(match=pattern, count=1000))
        client.close()
    return found


async def test_the_runtime_talks_to_the_cluster_and_starts_no_embedded_redis(
    cluster_runtime: Runtime,
) -> None:
    assert cluster_runtime.embedded is None
    assert type(cluster_runtime.redis).__name__ == "RedisCluster"
    assert (await cluster_runtime.health())["redis"] == "ok"


async def test_sessions_are_created_updated_shared_listed_and_closed_through_the_tools_on_a_cluster(
    cluster_runtime: Runtime, cluster_ports: list[int]
) -> None:
    async with (
        Client(app_for(cluster_runtime, "analyst").mcp) as analyst,
        Client(app_for(cluster_runtime, "viewer").mcp) as viewer,
    ):
        sessions = []
        for i in range(24):
            grant = {"user_id": "viewer"} if i % 3 == 0 else {}
            created = await call(analyst, "session_create", data_source=f"cluster {i}", **grant)
            session = created["session_id"]
            await call(analyst, "session_update", session_id=session, key="n", value={"i": i, "sq": i * i})
            await call(analyst, "session_update", session_id=session, key="label", value=f"s{i}")
            sessions.append(session)
        for i, session in enumerate(sessions):
            assert (await call(analyst, "session_read", session_id=session, key="n"))["value"] == {
                "i": i,
                "sq": i * i,
            }
        listed = {item["session_id"]: item for item in (await call(analyst, "session_list"))["sessions"]}
        assert set(sessions) <= set(listed)
        assert sorted(k["key"] for k in listed[sessions[1]]["keys"]) == ["label", "n"]
        shared = {item["session_id"] for item in (await call(viewer, "session_list"))["sessions"]}
        assert shared & set(sessions) == {s for i, s in enumerate(sessions) if i % 3 == 0}
        assert (await call(viewer, "session_read", session_id=sessions[0], key="label"))["value"] == "s0"
        assert "not found" in await refusal(viewer, "session_read", session_id=sessions[1], key="label")

        # every session's keys share one slot, and the sessions spread over all three masters
        store = cluster_runtime.services.session_store
        per_master = keys_per_master(cluster_ports, store.prefix + "{s:*")
        assert all(per_master[port] for port in cluster_ports), {p: len(k) for p, k in per_master.items()}
        for session in sessions:
            holders = [p for p, keys in per_master.items() if any(session.encode() in k for k in keys)]
            assert len(holders) == 1, (session, holders)
            assert sum(session.encode() in k for k in per_master[holders[0]]) == 3  # hash and two values

        await call(analyst, "session_delete_key", session_id=sessions[2], key="label")
        await call(analyst, "session_extend", session_id=sessions[2], ttl_seconds=7200)
        closed = await call(analyst, "session_close", session_id=sessions[3])
        assert closed["archived"] is True and closed["keys"] == 2
        await call(analyst, "session_close", session_id=sessions[4], archive=False)
        restored = await call(analyst, "session_restore", session_id=sessions[3])
        assert restored["keys"] == 2
        assert (await call(analyst, "session_read", session_id=sessions[3], key="n"))["value"]["i"] == 3
        after = {item["session_id"] for item in (await call(analyst, "session_list"))["sessions"]}
        assert sessions[4] not in after and sessions[3] in after
        index = store._index("analyst")
        assert not await cluster_runtime.redis.sismember(index, sessions[4])
        assert await cluster_runtime.redis.ttl(index) >= 7200

        admin_ids = {item["session_id"] for item in (await call(analyst, "session_list"))["sessions"]}
        async with Client(app_for(cluster_runtime, "admin").mcp) as admin:
            every = {s["session_id"] for s in (await call(admin, "session_list", all_users=True))["sessions"]}
        assert admin_ids <= every  # the admin's SCAN reads every master


async def test_an_index_entry_whose_session_is_gone_is_dropped_on_list_and_a_lost_one_comes_back(
    cluster_runtime: Runtime,
) -> None:
    store = cluster_runtime.services.session_store
    async with Client(app_for(cluster_runtime, "analyst2").mcp) as analyst:
        kept = (await call(analyst, "session_create", data_source="kept"))["session_id"]
        crashed = (await call(analyst, "session_create", data_source="crashed"))["session_id"]
        # a close that crashed after dropping the session, before the index write: an id without a session
        await cluster_runtime.redis.delete(store.hash_key(crashed))
        listed = [item["session_id"] for item in (await call(analyst, "session_list"))["sessions"]]
        assert kept in listed and crashed not in listed
        assert not await cluster_runtime.redis.sismember(store._index("analyst2"), crashed)
        # an index add that was lost (say the grantee's, in a create that failed half way): the next
        # write of the session that extends the index set, from any instance, adds it again
        await cluster_runtime.redis.srem(store._index("analyst2"), kept)
        store._index_until.clear()
        await call(analyst, "session_update", session_id=kept, key="k", value=1)
        listed = [item["session_id"] for item in (await call(analyst, "session_list"))["sessions"]]
        assert kept in listed


async def test_rate_limits_query_seconds_caches_and_artifacts_work_on_a_cluster(
    cluster_runtime: Runtime,
) -> None:
    settings = cluster_runtime.settings.with_changes(rate_limit_per_minute=3, query_seconds_per_minute=2)
    limiter = RateLimiter(cluster_runtime.redis, settings, CollectorRegistry())
    for _ in range(3):
        await limiter.admit("cluster-key")
    with pytest.raises(RateLimited):
        await limiter.admit("cluster-key")
    assert await limiter.retry_after("cluster-key") is not None
    assert await limiter.retry_after("other-key") is None

    seconds = QuerySeconds(cluster_runtime.redis, settings, CollectorRegistry())
    await seconds.check("cluster-user")
    await seconds.charge("cluster-user", 1.5)
    await seconds.check("cluster-user")
    await seconds.charge("cluster-user", 1.0)
    with pytest.raises(RateLimited):
        await seconds.check("cluster-user")

    cache = Cache(cluster_runtime, "cluster-test", 60)
    for i in range(20):
        await cache.put_each([({"user": "analyst", "q": i}, {"answer": i * 7})], version=1)
    assert [await cache.get({"user": "analyst", "q": i}, version=1) for i in range(20)] == [
        {"answer": i * 7} for i in range(20)
    ]
    assert await cache.get({"user": "analyst", "q": 0}, version=2) is None

    artifacts = ArtifactStore(
        cluster_runtime.redis,
        key_prefix=cluster_runtime.settings.redis_key_prefix,
        encryption_keys=cluster_runtime.encryption_keys,
        max_per_user=2,
    )
    owner: Caller = User("artist", "analyst")
    made = [
        (await artifacts.put(owner, f"chart {i}".encode(), "image/svg+xml", f"c{i}"))["artifact_id"]
        for i in range(3)
    ]
    assert (await artifacts.get(owner, made[2]))[1] == b"chart 2"
    with pytest.raises(Exception, match="not found"):
        await artifacts.get(owner, made[0])  # the oldest was dropped: at most two per user
    with pytest.raises(Exception, match="not found"):
        await artifacts.get(User("someone", "analyst"), made[2])


async def test_source_notices_reach_another_instance_over_cluster_pubsub(cluster_runtime: Runtime) -> None:
    heard: list[str | None] = []
    channel = cluster_runtime.key("cluster-notices")
    sender = SourceNotices(
        cluster_runtime.redis,
        channel,
        on_sources_changed=lambda _: None,
        on_profiles_refreshed=lambda _: None,
    )
    hearer = SourceNotices(
        cluster_runtime.redis, channel, on_sources_changed=lambda _: None, on_profiles_refreshed=heard.append
    )
    hearer.start()
    try:
        async with asyncio.timeout(10):
            while not hearer.listening:
                await asyncio.sleep(0.05)
            while not heard:
                await sender.profiles_refreshed("shop")
                await asyncio.sleep(0.2)
        assert heard[0] == "shop"
    finally:
        await hearer.close()
        await sender.close()


async def test_key_rotation_scans_every_master_and_re_encrypts_each_session(cluster_runtime: Runtime) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    prefix = cluster_runtime.key("rotation", uuid.uuid4().hex[:8], "")
    before = SessionStore(cluster_runtime.redis, key_prefix=prefix, encryption_keys=[old_key])
    owner: Caller = User("rotator", "analyst")
    sessions = []
    for i in range(12):
        session = (await before.create(owner, f"rotate {i}"))["session_id"]
        await before.update(owner, session, "v", {"i": i})
        sessions.append(session)
    after = SessionStore(cluster_runtime.redis, key_prefix=prefix, encryption_keys=[new_key, old_key])
    counts = await rotate_keys(after)
    assert counts["sessions_rotated"] == 12
    assert counts["items_reencrypted"] == 36  # per session: its metadata, the key's entry, the value
    only_new = SessionStore(cluster_runtime.redis, key_prefix=prefix, encryption_keys=[new_key])
    for i, session in enumerate(sessions):
        assert (await only_new.read(owner, session, "v"))["value"] == {"i": i}
