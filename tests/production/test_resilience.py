"""Dependencies that are dead or hung give one clear error within the call's bounds, never a hang; the read
replica (DATABASE_READ_URL) really serves reads, and reads move to the primary while it refuses
connections; first-start seeding runs once."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.exceptions
from fastmcp import Client

from core.errors import Unavailable
from mcp_server.runtime import redis_client
from tests.conftest import app_for
from tests.production.services import ROOT
from tests.support import call
from warehouse.db import Database
from warehouse.generator import generate, make_plan
from warehouse.replica import READING_FROM_PRIMARY

BOUND = 15  # seconds: a hang fails the test here instead of stalling the suite


class Listener:
    """A loopback TCP server that either never answers (hung) or drops every connection (dead)."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.accepted = 0
        self.held: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.behaviour == "drop":
            writer.close()
        else:
            self.held.append(writer)

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.held:
            writer.close()
        self.server.close()


async def test_a_hung_postgres_gives_unavailable_at_the_acquire_timeout_instead_of_a_hang():
    async with Listener("hang") as hung:
        db = Database(f"postgresql://u:p@127.0.0.1:{hung.port}/db", min_size=0, max_size=2)
        await db.start()  # min_size 0: no connection yet
        try:
            with pytest.raises(Unavailable, match="PostgreSQL is not reachable right now"):
                async with asyncio.timeout(BOUND):
                    async with db.connection(timeout=1):
                        pass
        finally:
            await db.close()
    assert hung.accepted >= 1


async def test_a_postgres_that_refuses_connections_gives_unavailable_at_start():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        db = Database(f"postgresql://u:p@127.0.0.1:{port}/db", min_size=1, max_size=2)
        with pytest.raises(Unavailable, match="PostgreSQL does not answer"):
            async with asyncio.timeout(BOUND):
                await db.start()


async def test_a_dead_redis_fails_a_call_with_a_connection_error_after_a_few_bounded_attempts():
    async with Listener("drop") as dead:
        client = redis_client(f"redis://127.0.0.1:{dead.port}/0")
        try:
            with pytest.raises(redis.exceptions.ConnectionError):
                async with asyncio.timeout(BOUND):
                    await client.get("anything")
        finally:
            await client.aclose()
    assert 1 < dead.accepted <= 9  # retried (connect and command, 3 tries each), then given up


async def test_a_pooled_redis_connection_that_died_in_a_restart_is_replaced_without_an_error(private_redis):
    client = redis_client(private_redis.url)
    try:
        await client.set("amcp-restart-probe", "kept")
        private_redis.stop()
        private_redis.start()
        assert await client.get("amcp-restart-probe") == b"kept"  # and append-only kept the value
    finally:
        await client.aclose()


async def test_a_runtime_with_a_read_replica_reads_there_and_writes_to_the_primary(
    make_runtime, create_database
):
    replica_url = await create_database()
    replica = Database(replica_url, min_size=1, max_size=2)
    await replica.start()
    try:
        await replica.apply_schema()
        await replica.replace_data(await asyncio.to_thread(generate, make_plan(40, 3)))
    finally:
        await replica.close()

    async with make_runtime(customers=120, seed=5, database_read_url=replica_url) as runtime:
        async with runtime.db.connection(read=True) as conn:
            assert await conn.fetchval("SELECT count(*) FROM customers") == 40
        async with runtime.db.connection() as conn:
            assert await conn.fetchval("SELECT count(*) FROM customers") == 120
        async with Client(app_for(runtime, "analyst").mcp) as client:
            snapshot = await call(client, "summary_snapshot")
        assert snapshot["tables"]["customers"]["rows"] == 40


async def test_health_names_a_read_replica_that_refuses_connections_reads_move_to_the_primary_and_back(
    make_runtime, create_database
):
    replica_url = await create_database()
    name = urlsplit(replica_url).path.lstrip("/")
    admin_url = urlunsplit(urlsplit(replica_url)._replace(path="/postgres"))

    async def replica_allows_connections(allowed: bool) -> None:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
                )
        finally:
            await admin.close()

    async def postgres_read_is(state: str) -> None:
        async with asyncio.timeout(BOUND):  # the replica watch probes every few seconds
            while (await runtime.health())["postgres_read"] != state:
                await asyncio.sleep(0.1)

    async with make_runtime(customers=None, database_read_url=replica_url) as runtime:
        assert await runtime.health() == {"postgres": "ok", "postgres_read": "ok", "redis": "ok"}
        await replica_allows_connections(False)
        try:
            await postgres_read_is(READING_FROM_PRIMARY)  # tests/warehouse/test_replica.py: a real one
            assert (await runtime.health())["postgres"] == "ok"
            async with Client(app_for(runtime, "analyst").mcp) as client:
                assert (await call(client, "summary_snapshot"))["tables"]["customers"]["rows"] == 0
        finally:
            await replica_allows_connections(True)
        await postgres_read_is("ok")  # dead pooled connections are dropped; new ones open without a restart
        assert await runtime.health() == {"postgres": "ok", "postgres_read": "ok", "redis": "ok"}


def _seed_script(database_url: str, home: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DEMO_CUSTOMERS": "60",
        "DEMO_SEED": "9",
        "ANALYTICS_MCP_HOME": home,
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "seed_if_empty.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_first_start_seeding_loads_demo_data_once_and_never_overwrites(create_database, tmp_path):
    url = await create_database()
    # Two replicas starting at once: exactly one loads, the other waits and finds the data.
    together = await asyncio.gather(*(asyncio.to_thread(_seed_script, url, str(tmp_path)) for _ in range(2)))
    assert all(run.returncode == 0 for run in together), [run.stderr for run in together]
    assert sorted("seeded 60 customers" in run.stderr for run in together) == [False, True]
    second = await asyncio.to_thread(_seed_script, url, str(tmp_path))
    assert second.returncode == 0, second.stderr
    assert "not seeding" in second.stderr
    db = Database(url, min_size=1, max_size=1)
    await db.start()
    try:
        assert await db.row_count("customers") == 60
        assert await db.data_version() == 1  # loaded once
    finally:
        await db.close()
