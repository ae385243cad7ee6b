"""The data version learnt from PostgreSQL notifications: another instance's change is heard (no stale
cached answer), and while the listener is lost the version is read per call, then re-read on reconnect."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import asyncpg
import pytest
from fastmcp import Client

from mcp_server.runtime import Runtime, start_runtime
from tests.conftest import app_for
from tests.support import call, version_heard
from warehouse.generator import generate, make_plan

COUNTS = "SELECT account_type, count(*) AS n FROM customers GROUP BY 1 ORDER BY 1"
LISTENER = "analytics-mcp data version"


@pytest.fixture
async def rt(make_runtime, base_settings) -> AsyncIterator[Runtime]:
    prefix = f"{base_settings.redis_key_prefix}versions-{uuid.uuid4().hex[:8]}:"
    async with make_runtime(customers=80, seed=3, redis_key_prefix=prefix) as runtime:
        yield runtime


async def plain_counts(runtime: Runtime) -> list[dict]:
    async with runtime.db.connection() as conn:
        return [dict(row) for row in await conn.fetch(COUNTS)]


async def row_version(runtime: Runtime) -> int:
    async with runtime.db.connection() as conn:
        return int(await conn.fetchval("SELECT version FROM mcp_internal.data_version"))


async def until(condition, seconds: float = 10) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


def database_of(runtime: Runtime) -> str:
    return urlsplit(runtime.settings.database_url).path.lstrip("/")


async def test_a_runtime_listens_and_its_version_is_the_rows(rt):
    assert rt.db.versions is not None and rt.db.versions.listening
    assert await rt.db.data_version() == await row_version(rt) > 0


async def test_a_bare_update_from_another_connection_is_heard_without_reading_the_row(rt, pg_admin_url):
    before = await rt.db.data_version()
    outside = await asyncpg.connect(rt.settings.database_url)  # not the runtime's pools: a stranger
    try:
        bumped = await outside.fetchval(
            "UPDATE mcp_internal.data_version SET version = version + 1 RETURNING version"
        )
    finally:
        await outside.close()
    await until(lambda: rt.db.versions is not None and rt.db.versions.current == bumped)
    assert bumped == before + 1 and await rt.db.data_version() == bumped


async def test_a_stray_notice_on_the_channel_is_only_a_signal_never_a_version(rt):
    outside = await asyncpg.connect(rt.settings.database_url)
    try:
        await outside.execute("SELECT pg_notify('analytics_mcp_data_version', '999999')")
        await outside.execute("SELECT pg_notify('analytics_mcp_data_version', 'not a number')")
        bumped = await outside.fetchval(
            "UPDATE mcp_internal.data_version SET version = version + 1 RETURNING version"
        )
    finally:
        await outside.close()
    await until(lambda: rt.db.versions is not None and rt.db.versions.current == bumped)
    assert rt.db.versions.listening and await rt.db.data_version() == bumped == await row_version(rt)


async def test_another_instances_load_is_seen_and_no_answer_cached_before_it_is_served(rt):
    other = await start_runtime(rt.settings, seed_demo=False)  # its own pools and listener
    try:
        async with Client(app_for(rt, "analyst").mcp) as client:
            first = await call(client, "query_database", query=COUNTS)
            assert (await call(client, "query_database", query=COUNTS))["cached"] is True
            await other.db.replace_data(await asyncio.to_thread(generate, make_plan(50, 9)))
            await version_heard(rt)  # the notification of the other instance's commit
            after = await call(client, "query_database", query=COUNTS)
    finally:
        await other.close()
    expected = await plain_counts(rt)
    assert sum(row["n"] for row in expected) == 50
    assert after["cached"] is False and after["rows"] == expected != first["rows"]


async def test_a_load_by_this_instance_is_used_at_once(rt):
    before = await rt.db.data_version()
    await rt.db.replace_data(await asyncio.to_thread(generate, make_plan(40, 4)))
    assert await rt.db.data_version() == before + 1 == await row_version(rt)  # no waiting


async def test_a_lost_listener_falls_back_to_reading_and_rereads_the_row_when_it_is_back(rt, pg_admin_url):
    """Connections to the database are refused while the listener is cut off, so it cannot come back;
    the pools keep their open connections, on which the version is then read per call."""
    name = database_of(rt)
    admin = await asyncpg.connect(pg_admin_url)
    try:
        async with Client(app_for(rt, "analyst").mcp) as client:
            cached = await call(client, "query_database", query=COUNTS)
            assert (await call(client, "query_database", query=COUNTS))["cached"] is True
            await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                cut = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = $1 AND application_name = $2",
                    name,
                    LISTENER,
                )
                assert cut == 1
                await until(lambda: rt.db.versions is not None and not rt.db.versions.listening)

                # A change made while nothing is heard: read per call, so the cached answer is not served.
                async with rt.db.connection() as conn:
                    await conn.execute("DELETE FROM customers WHERE account_type = 'Basic'")
                    missed = await conn.fetchval(
                        "UPDATE mcp_internal.data_version SET version = version + 1 RETURNING version"
                    )
                assert rt.db.versions.current is None and await rt.db.data_version() == missed
                fallen_back = await call(client, "query_database", query=COUNTS)
            finally:
                await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            # Back: the row is read again on reconnect (its change was never notified to a listener).
            await until(lambda: rt.db.versions is not None and rt.db.versions.listening)
            assert rt.db.versions.current == missed
            again = await call(client, "query_database", query=COUNTS)
    finally:
        await admin.close()
    expected = await plain_counts(rt)
    assert "Basic" not in [row["account_type"] for row in expected]
    assert fallen_back["cached"] is False and fallen_back["rows"] == expected != cached["rows"]
    assert again["cached"] is True and again["rows"] == expected
