"""A full query pool is reported as a busy server (retry in a few seconds), not as PostgreSQL being down
(that line stays for a server that does not answer: tests/production/test_resilience.py)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from fastmcp import Client

from core.errors import Unavailable
from tests.conftest import app_for
from tests.support import error_text, refusal

BUSY = "the server is busy: all 1 database connections are in use; retry in a few seconds"


async def _query_role_connections(dsn: str, role: str) -> int:
    """Connections PostgreSQL has open for the query role, counted by PostgreSQL itself."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE usename = $1", role))
    finally:
        await conn.close()


async def test_a_second_call_on_a_query_pool_of_one_held_by_the_first_is_told_the_server_is_busy(
    make_runtime,
):
    async with make_runtime(customers=None, pool_min_size=1, pool_max_size=1) as rt:
        db = rt.db
        async with db.connection(read=True, query=True) as held:
            assert await _query_role_connections(rt.settings.database_url, db.query_role) == 1

            async def second() -> None:
                async with db.connection(read=True, query=True, timeout=0.5):
                    pass

            with pytest.raises(Unavailable) as refused:
                await asyncio.create_task(second())
            assert refused.value.message == BUSY
            assert await held.fetchval("SELECT 1") == 1  # busy, not broken: the held connection still works
        async with db.connection(read=True, query=True, timeout=0.5) as again:  # its turn now
            assert await again.fetchval("SELECT 2") == 2


@pytest.mark.slow
async def test_an_agent_whose_query_waits_on_a_full_pool_gets_the_busy_line_as_its_tool_error(make_runtime):
    async with make_runtime(customers=None, pool_min_size=1, pool_max_size=1) as rt:
        async with (
            Client(app_for(rt, "analyst").mcp) as first,
            Client(app_for(rt, "analyst2").mcp) as second,
        ):
            sleeping = asyncio.create_task(
                first.call_tool(
                    "query_database", {"query": "SELECT pg_sleep(12) AS slept"}, raise_on_error=False
                )
            )
            await asyncio.sleep(0.5)  # the sleep holds the only connection of the query pool
            message = await refusal(second, "query_database", query="SELECT 1 AS one")
            slept = await sleeping
    assert message == BUSY
    assert not slept.is_error, error_text(slept)
