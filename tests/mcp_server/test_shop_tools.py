"""The shop dataset through MCP: generate_data(dataset=shop) into the built-in database (schema shop) and into
a MariaDB source, with progress notifications; reset_data; summary_snapshot(source); every count checked
against plain SQL on the engine, and refusals (no confirm, not an admin, no write_url) change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pytest
from fastmcp import Client

from mcp_server.runtime import Runtime, start_demo_shop, start_sources
from tests.conftest import app_for
from tests.engines.mariadb import HOST, PORT, reader_database, root_fetch, scratch
from tests.support import call, refusal
from warehouse.demo_shop import CUSTOMERS as DEMO_CUSTOMERS
from warehouse.shop import TABLES

DATABASE, READER, PASSWORD, SETUP, TEARDOWN = reader_database("shoptools")
WINDOW = {"start_date": "2024-01-01", "end_date": "2024-06-30"}


@pytest.fixture(scope="module")
async def shop_runtime(
    tmp_path_factory: pytest.TempPathFactory, make_runtime: Callable[..., Any]
) -> AsyncIterator[Runtime]:
    """A runtime on its own database with two MariaDB sources on one scratch database: `store` (reads as a
    SELECT-only user, writes as root) and `readonly` (no write_url); a files source `folder`."""
    folder = tmp_path_factory.mktemp("shop_tools")
    toml = folder / "sources.toml"
    reader = f"mysql://{READER}:${{READER_PASSWORD}}@{HOST}:{PORT}/{DATABASE}"
    toml.write_text(
        f'[sources.store]\nurl = "{reader}"\nwrite_url = "mysql://root@{HOST}:{PORT}/{DATABASE}"\n'
        f'[sources.readonly]\nurl = "{reader}"\n'
        f'[sources.folder]\nurl = "files://{folder / "data"}"\n'
    )
    (folder / "data").mkdir()
    async with scratch(SETUP, TEARDOWN):
        async with make_runtime(
            customers=None, sources_path=toml, sources_env={"READER_PASSWORD": PASSWORD}
        ) as runtime:
            yield runtime


def _client(runtime: Runtime, user: str = "admin", **options: Any) -> Client:
    return Client(app_for(runtime, user).mcp, **options)


async def _pg_counts(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        counts = {}
        for table in TABLES:
            exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"shop.{table}")
            counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM shop.{table}")) if exists else 0
        return counts
    finally:
        await conn.close()


async def _mariadb_counts() -> dict[str, int]:
    present = {row[0] for row in await root_fetch(DATABASE, "SHOW TABLES")}
    return {
        table: int((await root_fetch(DATABASE, f"SELECT count(*) FROM `{table}`"))[0][0])
        if table in present
        else 0
        for table in TABLES
    }


async def test_generate_data_loads_the_shop_into_main_with_progress_and_counts_equal_to_sql(
    shop_runtime,
) -> None:
    url = shop_runtime.settings.database_url
    assert url is not None
    notes: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append((progress, total, message))

    async with _client(shop_runtime, progress_handler=on_progress) as client:
        first = await call(
            client, "generate_data", dataset="shop", source="main", customers=400, seed=5, **WINDOW
        )
        again = await call(
            client, "generate_data", dataset="shop", source="main", customers=400, seed=5, **WINDOW
        )
        summary = await call(client, "summary_snapshot", source="main", dataset="shop")
        telecom = await call(client, "summary_snapshot")
    counts = await _pg_counts(url)
    assert first["tables"] == counts and again["tables"] == counts  # re-running replaces, never adds
    assert counts["customers"] == 400 and all(counts.values())
    assert first["rows"] == sum(counts.values()) and first["rows_per_second"] > 0
    assert (first["seed"], first["start_date"], first["end_date"]) == (5, "2024-01-01", "2024-06-30")
    # Progress: the opening note, then each table as it lands, counting up to all the rows.
    messages = [message for _, _, message in notes]
    assert "generating" in messages and {f"loaded {table}" for table in TABLES} <= set(messages)
    last = [(done, total) for done, total, message in notes if message == "loaded shipments"][-1]
    assert last == (sum(counts.values()), sum(counts.values()))
    assert summary["tables"] == counts and summary["rows"] == sum(counts.values())
    window = summary["window"]
    assert (window["seed"], window["customers"], window["start_date"], window["end_date"]) == (
        5,
        400,
        "2024-01-01",
        "2024-06-30",
    )
    assert set(telecom["tables"]) == {"customers", "network_events", "revenue"}  # main's default: telecom


async def test_generate_data_loads_the_shop_into_a_mariadb_source_and_reset_empties_it(shop_runtime) -> None:
    notes: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append(message)

    async with _client(shop_runtime, progress_handler=on_progress) as admin:
        loaded = await call(
            admin, "generate_data", dataset="shop", source="store", customers=300, seed=8, **WINDOW
        )
        counts = await _mariadb_counts()
        assert loaded["tables"] == counts and counts["customers"] == 300 and all(counts.values())
        assert loaded["profiles_refreshed"] == ["store"]
        assert "loaded orders" in notes

        async with _client(shop_runtime, "analyst") as analyst:
            summary = await call(analyst, "summary_snapshot", source="store")
            through_reader = await call(analyst, "summary_snapshot", source="readonly")
        assert summary["tables"] == counts and through_reader["tables"] == counts
        assert summary["window"]["seed"] == 8 and summary["window"]["end_date"] == "2024-06-30"

        refused = await refusal(admin, "reset_data", source="store")
        assert "confirm=true" in refused and "nothing was changed" in refused
        assert await _mariadb_counts() == counts

        emptied = await call(admin, "reset_data", source="store", confirm=True)
        assert emptied["tables"] == {table: {"before": counts[table], "after": 0} for table in TABLES}
        assert await _mariadb_counts() == dict.fromkeys(TABLES, 0)
        after = await call(admin, "summary_snapshot", source="store")
    assert after["rows"] == 0 and after["window"] is None


async def test_reset_data_on_main_empties_schema_shop_and_reports_before_and_after(shop_runtime) -> None:
    url = shop_runtime.settings.database_url
    async with _client(shop_runtime) as admin:
        await call(admin, "generate_data", dataset="shop", customers=150, seed=3, **WINDOW)
        before = await _pg_counts(url)
        emptied = await call(admin, "reset_data", source="main", dataset="shop", confirm=True)
        summary = await call(admin, "summary_snapshot", dataset="shop")
    assert all(before.values())
    assert emptied["tables"] == {table: {"before": before[table], "after": 0} for table in TABLES}
    assert await _pg_counts(url) == dict.fromkeys(TABLES, 0)
    assert summary["rows"] == 0 and summary["window"] is None


async def test_an_analyst_may_neither_generate_nor_reset(shop_runtime) -> None:
    before = await _mariadb_counts()
    async with _client(shop_runtime, "analyst") as analyst:
        for tool, arguments in (
            ("generate_data", {"dataset": "shop", "source": "store", "customers": 10}),
            ("reset_data", {"source": "store", "confirm": True}),
        ):
            assert "admin" in await refusal(analyst, tool, **arguments)
    assert await _mariadb_counts() == before


async def test_a_source_without_write_url_and_bad_arguments_are_refused_in_one_line(shop_runtime) -> None:
    before = await _mariadb_counts()
    async with _client(shop_runtime) as admin:
        no_write = await refusal(admin, "generate_data", dataset="shop", source="readonly", customers=10)
        no_reset = await refusal(admin, "reset_data", source="readonly", confirm=True)
        telecom = await refusal(admin, "generate_data", dataset="telecom", source="readonly", customers=10)
        unknown = await refusal(admin, "generate_data", dataset="shop", source="nowhere", customers=10)
        too_many = await refusal(admin, "generate_data", dataset="shop", source="store", customers=1_500_000)
        backwards = await refusal(
            admin,
            "generate_data",
            dataset="shop",
            source="store",
            start_date="2025-01-01",
            end_date="2024-01-01",
        )
        telecom_reset = await refusal(admin, "reset_data", source="readonly", dataset="telecom", confirm=True)
    assert "write_url" in no_write and "write_url" in no_reset and "readonly" in no_write
    # telecom on a MariaDB source with a write_url loads: tests/mcp_server/test_telecom_tools.py
    assert "write_url" in telecom and "write_url" in telecom_reset
    assert "nowhere" in unknown and "store" in unknown
    assert "1,000,000" in too_many
    assert "end-date" in backwards
    assert await _mariadb_counts() == before


async def test_the_demo_shop_loads_once_and_is_read_as_the_query_role(make_runtime, tmp_path: Path) -> None:
    async with make_runtime(customers=None) as runtime:
        url = runtime.settings.database_url
        source = await start_demo_shop(runtime.db, url)
        counts = await _pg_counts(url)
        again = await start_demo_shop(runtime.db, url)  # a restart: nothing loaded again
        assert await _pg_counts(url) == counts and again == source
        assert counts["customers"] == DEMO_CUSTOMERS and all(counts.values())
        assert source.schemas == ("shop",) and source.model == "shop" and source.metric_model is not None
        # The embedded default (no DATABASE_URL, no sources file) registers it beside main and exports.
        embedded = runtime.settings.with_changes(database_url=None, home=tmp_path)
        sources = await start_sources(embedded, url, shop=source)
        try:
            assert sources.registry.names == ["main", "exports", "shop"]
            engine = sources.engine_now("shop")
            assert {table.name for table in await engine.tables()} == set(TABLES)
            statement = await engine.guarded("SELECT count(*) AS n FROM orders", {})
            result = await engine.run(statement, {}, timeout=10, max_rows=10, max_bytes=100_000)
        finally:
            await sources.close()
        assert result.rows == [(counts["orders"],)]


async def test_reset_data_empties_mains_telecom_tables_and_bumps_the_data_version(make_runtime) -> None:
    async with make_runtime(customers=120, seed=4) as runtime:
        conn = await asyncpg.connect(runtime.settings.database_url)
        try:
            tables = ("customers", "network_events", "revenue")
            before = {table: int(await conn.fetchval(f"SELECT count(*) FROM {table}")) for table in tables}
            version = await conn.fetchval("SELECT version FROM mcp_internal.data_version")
            async with _client(runtime) as admin:
                refused = await refusal(admin, "reset_data", source="main", dataset="telecom")
                assert "telecom" in refused and "confirm=true" in refused
                assert int(await conn.fetchval("SELECT count(*) FROM customers")) == before["customers"]
                emptied = await call(admin, "reset_data", source="main", dataset="telecom", confirm=True)
                snapshot = await call(admin, "summary_snapshot")
            after = {table: int(await conn.fetchval(f"SELECT count(*) FROM {table}")) for table in tables}
            assert await conn.fetchval("SELECT version FROM mcp_internal.data_version") == version + 1
        finally:
            await conn.close()
    assert before["customers"] == 120 and all(before.values())
    assert emptied["tables"] == {table: {"before": before[table], "after": 0} for table in tables}
    assert after == dict.fromkeys(tables, 0)
    assert snapshot["tables"]["customers"]["rows"] == 0 and snapshot["data_version"] == version + 1


async def test_generate_data_writes_the_shop_as_parquet_files_into_a_files_source(shop_runtime) -> None:
    notes: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append(message)

    async with _client(shop_runtime, progress_handler=on_progress) as admin:
        loaded = await call(
            admin, "generate_data", dataset="shop", source="folder", customers=120, seed=2, **WINDOW
        )
        summary = await call(admin, "summary_snapshot", source="folder")
    folder = shop_runtime.sources.source("folder").directory
    with duckdb.connect() as conn:
        counts = {
            table: conn.execute(
                "SELECT count(*) FROM read_parquet(?)", [str(folder / f"{table}.parquet")]
            ).fetchone()[0]
            for table in TABLES
        }
    assert loaded["tables"] == counts and summary["tables"] == counts and counts["customers"] == 120
    assert {f"loaded {table}" for table in TABLES} <= set(notes)  # reported from the writer's thread
