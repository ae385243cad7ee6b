"""REDIS_SENTINELS: sessions on Sentinel's master survive a failover (a primary, a replica and one
sentinel as real redis-server processes on loopback); calls during the switch fail fast with one line.
And the Redis settings that cannot go together stop the server with one line each."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis
from fastmcp import Client

from mcp_server.config import ConfigError, Settings
from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.sessions.redis_processes import PASSWORD, REDIS_SERVER, RedisProcesses, free_port, node, wait_for
from tests.support import call, error_text

pytestmark = [pytest.mark.slow, pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server")]

MASTER = "amcp"
FAILOVER_SECONDS = 30  # sessions written before the failover are readable again within this
CALL_SECONDS = 12  # no call during the switch waits longer than this


class Topology:
    def __init__(self) -> None:
        self.processes = RedisProcesses()
        self.primary, self.replica, self.sentinel = free_port(), free_port(), free_port()

    def start(self) -> None:
        self.processes.start(self.primary)
        self.processes.start(self.replica, "--replicaof", "127.0.0.1", str(self.primary))
        replica = node(self.replica)
        wait_for(lambda: replica.info("replication")["master_link_status"] == "up", "replica in sync")
        replica.close()
        config = (
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary} 1\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 4000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
            f"sentinel auth-pass {MASTER} {PASSWORD}\n"
        )
        self.processes.start(self.sentinel, "--sentinel", config=config, password=False)
        sentinel = redis.Redis(port=self.sentinel, socket_timeout=1)
        wait_for(lambda: sentinel.sentinel_slaves(MASTER), "the sentinel to see the replica")
        sentinel.close()

    def master_port(self) -> int:
        sentinel = redis.Redis(port=self.sentinel, socket_timeout=1)
        try:
            return int(sentinel.sentinel_get_master_addr_by_name(MASTER)[1])
        finally:
            sentinel.close()


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    topology = Topology()
    try:
        topology.start()
        yield topology
    finally:
        topology.processes.stop()


@pytest.fixture(scope="module")
async def sentinel_runtime(make_runtime: Callable[..., Any], topology: Topology) -> AsyncIterator[Runtime]:
    changes = {
        "redis_url": None,
        "redis_sentinels": (("127.0.0.1", topology.sentinel),),
        "redis_sentinel_master": MASTER,
        "redis_password": PASSWORD,
    }
    async with make_runtime(customers=None, **changes) as runtime:
        yield runtime


async def test_sessions_written_before_a_failover_are_readable_after_it_and_no_call_hangs(
    sentinel_runtime: Runtime, topology: Topology
) -> None:
    assert sentinel_runtime.embedded is None
    async with Client(app_for(sentinel_runtime, "analyst").mcp) as analyst:
        sessions = []
        for i in range(10):
            session = (await call(analyst, "session_create", data_source=f"before {i}"))["session_id"]
            await call(analyst, "session_update", session_id=session, key="v", value={"i": i, "half": i / 2})
            sessions.append(session)
        primary = node(topology.primary)
        assert primary.execute_command("WAIT", 1, 5000) == 1  # the replica holds every write
        primary.close()

        topology.processes.kill(topology.primary)
        killed = time.monotonic()
        slowest, failures = 0.0, []
        while True:
            started = time.monotonic()
            result = await analyst.call_tool(
                "session_read", {"session_id": sessions[0], "key": "v"}, raise_on_error=False
            )
            slowest = max(slowest, time.monotonic() - started)
            if not result.is_error:
                break
            failures.append(error_text(result))
            assert time.monotonic() - killed < FAILOVER_SECONDS, failures[-3:]
        recovered = time.monotonic() - killed
        assert recovered < FAILOVER_SECONDS
        assert slowest < CALL_SECONDS, slowest
        assert all("\n" not in text and "Redis" in text for text in failures), failures[:3]
        assert topology.master_port() == topology.replica

        for i, session in enumerate(sessions):
            value = (await call(analyst, "session_read", session_id=session, key="v"))["value"]
            assert value == {"i": i, "half": i / 2}
        await call(analyst, "session_update", session_id=sessions[1], key="after", value="written")
        listed = {item["session_id"] for item in (await call(analyst, "session_list"))["sessions"]}
        assert set(sessions) <= listed
    print(
        f"failover: readable again after {recovered:.1f} s, {len(failures)} failed calls, slowest {slowest:.2f} s"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_CLUSTER_NODES": "127.0.0.1:7000"},
            "REDIS_URL and REDIS_CLUSTER_NODES are set together",
        ),
        (
            {"REDIS_URL": "redis://127.0.0.1:6379/0", "REDIS_SENTINELS": "127.0.0.1:26379"},
            "REDIS_URL and REDIS_SENTINELS are set together",
        ),
        (
            {"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "REDIS_SENTINELS": "127.0.0.1:26379"},
            "REDIS_CLUSTER_NODES and REDIS_SENTINELS are set together",
        ),
        ({"REDIS_SENTINELS": "127.0.0.1:26379"}, "REDIS_SENTINELS needs REDIS_SENTINEL_MASTER"),
        ({"REDIS_CLUSTER_NODES": "127.0.0.1"}, "REDIS_CLUSTER_NODES must be host:port"),
        (
            {"REDIS_SENTINELS": "a:1,b:99999", "REDIS_SENTINEL_MASTER": "m"},
            "REDIS_SENTINELS must be host:port",
        ),
        (
            {"REDIS_CLUSTER_NODES": "127.0.0.1:7000", "REDIS_KEY_PREFIX": "app{1}:"},
            "REDIS_KEY_PREFIX must not hold { or }",
        ),
    ],
)
def test_redis_settings_that_cannot_go_together_stop_the_server_with_one_line(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_cluster_and_sentinel_settings_are_read() -> None:
    cluster = Settings.from_env({"REDIS_CLUSTER_NODES": " 127.0.0.1:7000, 127.0.0.1:7001 ,"})
    assert cluster.redis_cluster_nodes == (("127.0.0.1", 7000), ("127.0.0.1", 7001))
    assert cluster.redis_url is None and cluster.redis_sentinels == ()
    sentinel = Settings.from_env(
        {"REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "main", "REDIS_PASSWORD": "s3cret-pw"}
    )
    assert sentinel.redis_sentinels == (("127.0.0.1", 26379),) and sentinel.redis_sentinel_master == "main"
    assert sentinel.redis_password == "s3cret-pw" and "s3cret-pw" not in repr(sentinel)
