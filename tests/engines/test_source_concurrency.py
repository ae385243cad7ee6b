"""Each source runs at most its `max_concurrent` queries at once: a slow PostgreSQL source saturated by
pg_sleep never delays the MariaDB and files sources, and its excess is refused in one line. Through MCP."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from core.errors import Unavailable
from mcp_server.runtime import Runtime
from tests.engines.test_sources_mcp import DATABASE, HOST, PORT, READER, _client, _toml, folder, mariadb
from tests.engines.test_sources_mcp import PASSWORD as SHOP_PASSWORD
from tests.support import call, refusal
from warehouse.engines import GuardedStatement
from warehouse.engines import mysql as mysql_engine
from warehouse.sources import SourceConfigError, parse_sources

__all__ = ["folder", "mariadb"]  # fixtures shared with test_sources_mcp

SLOW_READER = f"amcp_slow_reader_{secrets.token_hex(4)}"
SLOW_PASSWORD = secrets.token_urlsafe(12)
LIMIT = 2
SLEEP = "SELECT 1 AS n FROM pg_sleep(%(seconds)s)"


@pytest.fixture(scope="module")
async def slow_url(create_database: Callable[[], Any]) -> AsyncIterator[str]:
    """The admin URL of a second PostgreSQL database, with a plain login role for the source."""
    url = await create_database()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE ROLE {SLOW_READER} LOGIN PASSWORD '{SLOW_PASSWORD}'")
    finally:
        await conn.close()
    yield url
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP ROLE IF EXISTS {SLOW_READER}")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def sourced(
    mariadb: None, folder: Path, slow_url: str, make_runtime: Callable[..., Any]
) -> AsyncIterator[Runtime]:
    parts = urlsplit(slow_url)
    reader_url = urlunsplit(
        parts._replace(netloc=f"{SLOW_READER}:${{SLOW_PASSWORD}}@{parts.hostname}:{parts.port or 5432}")
    )
    toml = folder / "concurrency.toml"
    toml.write_text(
        _toml(folder / "data", extra=f'[sources.slow]\nurl = "{reader_url}"\nmax_concurrent = {LIMIT}\n')
    )
    env = {"SHOP_PASSWORD": SHOP_PASSWORD, "SLOW_PASSWORD": SLOW_PASSWORD}
    async with make_runtime(customers=None, sources_path=toml, sources_env=env) as runtime:
        assert runtime.profiler is not None
        await runtime.profiler.wait()  # the start-up profiles hold slots too: let them end first
        yield runtime


async def _sleeping(slow_url: str) -> int:
    """pg_sleep calls running now on the slow source's database (seen by the admin, not the server)."""
    conn = await asyncpg.connect(slow_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND query ILIKE '%pg\\_sleep%' AND pid <> pg_backend_pid()"
            )
        )
    finally:
        await conn.close()


async def _saturate(runtime: Runtime, slow_url: str, seconds: float) -> list[asyncio.Task[dict[str, Any]]]:
    """LIMIT slow queries on the slow source, from two users, running once this returns."""

    async def sleep(user: str) -> dict[str, Any]:
        async with _client(runtime, user) as client:
            return await call(
                client, "query_database", query=SLEEP, parameters={"seconds": seconds}, source="slow"
            )

    load = [asyncio.create_task(sleep(user)) for user in ("analyst", "analyst2")[:LIMIT]]
    deadline = time.perf_counter() + 10
    while await _sleeping(slow_url) < LIMIT:
        assert time.perf_counter() < deadline, "the slow queries never started"
        assert not any(task.done() for task in load), [task.result() for task in load if task.done()]
        await asyncio.sleep(0.05)
    return load


async def test_a_saturated_source_delays_no_other_source_and_refuses_its_excess_in_one_line(
    sourced: Runtime, slow_url: str
) -> None:
    sourced.sources.wait_seconds = 1.0  # the refusal comes sooner than the 5 s default
    load = await _saturate(sourced, slow_url, seconds=4)
    try:
        async with _client(sourced, "admin") as client:
            started = time.perf_counter()
            shop = await call(
                client, "query_database", query="SELECT COUNT(*) AS n FROM orders", source="shop"
            )
            files = await call(
                client, "query_database", query="SELECT COUNT(*) AS n FROM plans", source="files"
            )
            elapsed = time.perf_counter() - started
            excess = await refusal(client, "query_database", query="SELECT 2 AS n", source="slow")
        assert shop["rows"] == [{"n": 5}] and files["rows"] == [{"n": 4}]
        assert elapsed < 2, f"other sources answered in {elapsed:.1f} s while 'slow' was saturated"
        assert f"source 'slow' already runs {LIMIT} queries (max_concurrent); retry shortly" in excess
        assert not any(task.done() for task in load)  # refused while the load still ran, not after
        assert all(answer["rows"] == [{"n": 1}] for answer in await asyncio.gather(*load))
        async with _client(sourced, "admin") as client:  # the slots came back
            after = await call(client, "query_database", query="SELECT 3 AS n", source="slow")
        assert after["rows"] == [{"n": 3}]
    finally:
        sourced.sources.wait_seconds = 5.0
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)


async def test_a_query_over_the_limit_runs_when_a_slot_frees_within_the_wait(
    sourced: Runtime, slow_url: str
) -> None:
    load = await _saturate(sourced, slow_url, seconds=2)
    try:
        async with _client(sourced, "admin") as client:
            assert not any(task.done() for task in load)  # every slot taken when the call is made
            waited = await call(client, "query_database", query="SELECT 4 AS n", source="slow")
        assert waited["rows"] == [{"n": 4}]
        assert any(task.done() for task in load)  # it ran once one of the sleeps had ended, not before
        await asyncio.gather(*load)
    finally:
        for task in load:
            task.cancel()
        await asyncio.gather(*load, return_exceptions=True)


def test_max_concurrent_defaults_to_4_and_a_bad_value_stops_start_up_in_one_line(tmp_path: Path) -> None:
    def source(extra: str) -> Any:
        text = f'[sources.exports]\nurl = "files://{tmp_path}"\n{extra}'
        return parse_sources(text.encode(), {}, base=tmp_path).get("exports")

    assert source("").max_concurrent == 4
    assert source("max_concurrent = 16\n").max_concurrent == 16
    for bad in ("0", "65", "2.5", '"4"', "true"):
        with pytest.raises(SourceConfigError) as refused:
            source(f"max_concurrent = {bad}\n")
        assert str(refused.value) == (
            "ANALYTICS_MCP_SOURCES: [sources.exports] max_concurrent must be a whole number from 1 to 64, "
            "e.g. max_concurrent = 8"
        )


async def test_each_engine_has_a_connection_beyond_its_source_limit(sourced: Runtime) -> None:
    for name in ("shop", "files"):
        assert sourced.sources.engine_now(name).pool_size == 4 + 1
    assert sourced.sources.engine_now("slow").pool_size == LIMIT + 1


async def test_a_mysql_query_waits_for_a_pooled_connection_only_so_long(
    mariadb: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mysql_engine, "ACQUIRE_SECONDS", 0.5)
    url = f"mysql://{READER}:{SHOP_PASSWORD}@{HOST}:{PORT}/{DATABASE}"
    engine = mysql_engine.MySQLEngine(url, name="shop", pool_size=1)
    await engine.start()
    try:
        # SLEEP is refused by the guard; forged past it, it holds the only connection for a while.
        holding = GuardedStatement(
            sql="SELECT SLEEP(2)", names=(), relations=(), volatile=True, canonical=None
        )
        held = asyncio.create_task(engine.run(holding, {}, timeout=10))
        await asyncio.sleep(0.3)
        count = await engine.guarded("SELECT COUNT(*) FROM orders", {})
        started = time.perf_counter()
        with pytest.raises(Unavailable) as refused:
            await engine.run(count, {}, timeout=10)
        assert time.perf_counter() - started < 1.5
        assert str(refused.value) == (
            "source 'shop' has no free connection after 0.5 s (all 1 in use); retry shortly"
        )
        await held
        assert (await engine.run(count, {}, timeout=10)).rows == [(5,)]
    finally:
        await engine.close()
