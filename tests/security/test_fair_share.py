"""Fair shares: one analyst's long queries cannot take the pool from everyone else, query seconds are
budgeted per key, and the audit trail and query log lose no row while their database is away."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import pytest
from fastmcp import Client
from prometheus_client.parser import text_string_to_metric_families

from core.batching import BatchWriter
from core.errors import RateLimited
from mcp_server.config import Settings
from tests.conftest import app_for
from tests.security.conftest import instance
from tests.support import call, error_text, refusal, serving
from warehouse.db import Database
from warehouse.shares import bind_owner, reset_owner

SHARE_ERROR = "you already run 4 queries at once (QUERY_MAX_CONCURRENT_PER_KEY); wait for one to finish"


def _metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


async def _sleeping_queries(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND query ILIKE '%pg_sleep%' AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def test_twenty_long_queries_of_one_analyst_leave_the_pool_to_everyone_else(make_runtime):
    async with make_runtime(customers=None, pool_max_size=8, query_max_concurrent_per_key=4) as rt:
        async with (
            Client(app_for(rt, "analyst").mcp) as attacker,
            Client(app_for(rt, "analyst2").mcp) as other,
        ):
            attack = [
                asyncio.create_task(
                    attacker.call_tool(
                        "query_database", {"query": f"SELECT pg_sleep(4), {n} AS n"}, raise_on_error=False
                    )
                )
                for n in range(20)
            ]
            await asyncio.sleep(0.7)  # the attack holds its share and the rest of it waits
            started = time.perf_counter()
            answer = await other.call_tool(
                "query_database", {"query": "SELECT 1 AS one"}, raise_on_error=False
            )
            elapsed = time.perf_counter() - started
            sleeping = await _sleeping_queries(rt.settings.database_url)
            results = await asyncio.gather(*attack)
    assert not answer.is_error, error_text(answer)
    assert answer.structured_content["rows"] == [{"one": 1}]
    assert elapsed < 2.0, f"another analyst waited {elapsed:.2f} s"
    assert sleeping <= 4
    refused = [error_text(result) for result in results if result.is_error]
    assert len(results) - len(refused) >= 4  # its share ran
    assert refused, "the calls over the share must be refused"
    for text in refused:
        assert text == SHARE_ERROR
        assert "not reachable" not in text


async def test_a_share_is_per_owner_nests_within_one_task_and_never_limits_internal_work(runtime):
    # Three connections: a share of one (never more than half the pool).
    db = Database(runtime.settings.database_url, min_size=0, max_size=3, share_per_owner=4)
    await db.start()
    db.shares.wait_seconds = 0.3
    release = asyncio.Event()
    holding = asyncio.Event()

    async def hold() -> None:
        token = bind_owner("alice")
        try:
            # A second connection in the same task (a data version, then the query) uses the same slot.
            async with db.connection(read=True), db.connection(read=True) as inner:
                assert await inner.fetchval("SELECT 1") == 1
                holding.set()
                await release.wait()
        finally:
            reset_owner(token)

    async def take(owner: str | None) -> int:
        token = bind_owner(owner)
        try:
            async with db.connection(read=owner is not None) as conn:
                return int(await conn.fetchval("SELECT 2"))
        finally:
            reset_owner(token)

    try:
        assert db.shares.limit == 1
        holder = asyncio.create_task(hold())
        await holding.wait()
        with pytest.raises(RateLimited, match="you already run 1 queries at once"):
            await take("alice")
        assert await take(None) == 2  # internal work (no owner) is not limited
        release.set()
        await holder
        assert await take("alice") == 2  # the slot is back
        assert await take("bob") == 2
        assert db.shares.owners() == 0  # idle owners are forgotten
    finally:
        release.set()
        await db.close()


async def test_the_query_seconds_budget_refuses_once_spent_and_says_when_to_retry(runtime, fresh_prefix):
    rt = instance(runtime, fresh_prefix, query_seconds_per_minute=1)
    async with Client(app_for(rt, "analyst").mcp) as analyst, Client(app_for(rt, "analyst2").mcp) as other:
        await call(analyst, "query_database", query="SELECT pg_sleep(0.6), 1 AS n")
        await call(analyst, "query_database", query="SELECT pg_sleep(0.6), 2 AS n")
        message = await refusal(analyst, "query_database", query="SELECT 3 AS n")
        assert message.startswith("query time budget spent: 1 database seconds per 60 s for this API key")
        seconds = int(message.split("retry after ")[1].split(" s")[0])
        assert 1 <= seconds <= 60
        assert (await call(other, "query_database", query="SELECT 4 AS n"))["rows"] == [{"n": 4}]


async def test_defaults_bound_a_query_to_two_minutes_and_a_call_to_three(connect):
    assert Settings().call_timeout_seconds == 180 and Settings.from_env({}).call_timeout_seconds == 180
    async with connect("analyst") as client:
        tools = {tool.name: tool for tool in await client.list_tools()}
    timeout = tools["query_database"].inputSchema["properties"]["timeout"]
    assert timeout["maximum"] == 120 and timeout["default"] == 30


async def _count(dsn: str, table: str, user: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM mcp_internal.{table} WHERE user_id = $1", user))
    finally:
        await conn.close()


async def _rename(dsn: str, pairs: list[tuple[str, str]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for old, new in pairs:
            await conn.execute(f"ALTER TABLE mcp_internal.{old} RENAME TO {new}")
    finally:
        await conn.close()


async def _eventually(predicate, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_audit_and_query_log_rows_wait_out_a_database_outage_and_none_is_lost(make_runtime, api_keys):
    async with make_runtime(customers=None) as rt:
        dsn = rt.settings.database_url
        audit, queries = rt.services.auditor.writer, rt.services.query_log
        # The tables vanish (as in a failover to a node without them, or a botched migration).
        await _rename(dsn, [("audit_log", "audit_log_away"), ("query_log", "query_log_away")])
        async with Client(app_for(rt, "analyst").mcp) as client:
            for n in range(5):
                await call(client, "query_database", query=f"SELECT {n} AS n")
        await _eventually(lambda: audit.failing_since is not None and queries.failing_since is not None)
        async with serving(rt) as url, httpx.AsyncClient() as http:
            health = (await http.get(f"{url}/health")).json()
            scraped = (await http.get(f"{url}/metrics", headers={"X-API-Key": api_keys["admin"]})).text
        assert health["status"] == "degraded"
        assert health["writers"]["audit"]["status"] == "failing"
        assert health["writers"]["audit"]["last_error"] == "UndefinedTableError"
        assert health["writers"]["audit"]["queued"] >= 5
        assert health["writers"]["query_log"]["queued"] == 5
        assert _metric(scraped, "analytics_mcp_writer_failures_total", writer="audit") >= 1
        assert _metric(scraped, "analytics_mcp_writer_failing", writer="query_log") == 1
        assert _metric(scraped, "analytics_mcp_writer_dropped_total", writer="audit") == 0

        await _rename(dsn, [("audit_log_away", "audit_log"), ("query_log_away", "query_log")])
        await _eventually(lambda: audit.queued == 0 and queries.queued == 0 and audit.failing_since is None)
        assert await _count(dsn, "audit_log", "analyst") == 5
        assert await _count(dsn, "query_log", "analyst") == 5
        assert audit.dropped == queries.dropped == 0
        async with serving(rt) as url, httpx.AsyncClient() as http:
            assert (await http.get(f"{url}/health")).json()["status"] == "ok"


async def _probe_writer(dsn: str, **options) -> tuple[asyncpg.Pool, BatchWriter[int]]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    await pool.execute("CREATE TABLE IF NOT EXISTS mcp_internal.probe (id serial, n int)")

    async def write(items: list[int]) -> None:
        await pool.executemany("INSERT INTO mcp_internal.probe (n) VALUES ($1)", [(n,) for n in items])

    return pool, BatchWriter("probe", write, **options)


async def test_a_full_queue_makes_callers_wait_and_keeps_every_row_in_order(make_runtime):
    async with make_runtime(customers=None) as rt:
        dsn = rt.settings.database_url
        pool, writer = await _probe_writer(dsn, capacity=3, batch_size=2, interval=0.05, max_backoff=0.2)
        try:
            await _rename(dsn, [("probe", "probe_away")])
            for n in range(3):
                await writer.put(n)
            waiting = asyncio.create_task(writer.put(3))  # the queue is full and its store is away
            await asyncio.sleep(0.5)
            assert not waiting.done() and writer.queued == 3 and writer.failures >= 1
            await _rename(dsn, [("probe_away", "probe")])
            await asyncio.wait_for(waiting, timeout=5)
            assert await writer.flush()
            numbers = [row["n"] for row in await pool.fetch("SELECT n FROM mcp_internal.probe ORDER BY id")]
        finally:
            await writer.close(retry_seconds=0)
            await pool.close()
    assert numbers == [0, 1, 2, 3]
    assert writer.dropped == 0


async def test_at_shutdown_a_writer_retries_for_a_bounded_time_then_counts_what_it_could_not_write(
    make_runtime,
):
    async with make_runtime(customers=None) as rt:
        dsn = rt.settings.database_url
        pool, writer = await _probe_writer(dsn, interval=0.05, max_backoff=0.1)
        try:
            await _rename(dsn, [("probe", "probe_away")])
            await writer.put(1)
            started = time.perf_counter()
            await writer.close(retry_seconds=0.5)
            assert time.perf_counter() - started < 3
        finally:
            await pool.close()
    assert writer.dropped == 1 and writer.queued == 0 and writer.last_error == "UndefinedTableError"
