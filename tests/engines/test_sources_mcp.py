"""Sources reach the agent: a TOML with a MariaDB source (its own database and SELECT-only account) and
a files source, driven through MCP with the in-memory client; hot reload seen by two instances."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncmy
import pandas as pd
import pytest
from fastmcp import Client

from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.engines.mariadb import scratch
from tests.support import refusal
from warehouse.demo_exports import FILES, demo_frames, with_demo_exports
from warehouse.engines.duckdb_files import FilesEngine
from warehouse.sources import Registry, SourceConfigError

HOST, PORT = "127.0.0.1", 3306
SUFFIX = secrets.token_hex(4)
DATABASE = f"amcp_src_{SUFFIX}"
READER = f"amcp_src_reader_{SUFFIX}"
PASSWORD = secrets.token_urlsafe(12)

SETUP = [
    f"CREATE DATABASE {DATABASE}",
    f"CREATE TABLE {DATABASE}.orders (id INT PRIMARY KEY, status VARCHAR(20), amount DECIMAL(10,2))",
    f"INSERT INTO {DATABASE}.orders VALUES (1,'paid',10.50),(2,'paid',20.00),(3,'refunded',5.25),"
    "(4,'paid',99.99),(5,'open',1.00)",
    f"CREATE USER '{READER}'@'%' IDENTIFIED BY '{PASSWORD}'",
    f"GRANT SELECT ON {DATABASE}.* TO '{READER}'@'%'",
]
TEARDOWN = [f"DROP USER IF EXISTS '{READER}'@'%'", f"DROP DATABASE IF EXISTS {DATABASE}"]


async def _root_fetch(sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncmy.connect(host=HOST, port=PORT, user="root", password="", db=DATABASE, autocommit=True)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())
    finally:
        conn.close()


def _toml(folder: Path, *, extra: str = "") -> str:
    return (
        "[sources.shop]\n"
        f'url = "mysql://{READER}:${{SHOP_PASSWORD}}@{HOST}:{PORT}/{DATABASE}"\n'
        'description = "Web shop orders"\n'
        "[sources.files]\n"
        f'url = "files://{folder}"\n' + extra
    )


@pytest.fixture(scope="module")
async def mariadb() -> AsyncIterator[None]:
    async with scratch(SETUP, TEARDOWN):
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sources")
    (path / "data").mkdir()
    pd.DataFrame({"plan": ["a", "b", "c", "a"], "fee": [1.5, 2.5, 4.0, 1.5]}).to_csv(
        path / "data" / "plans.csv", index=False
    )
    pd.DataFrame({"day": [1, 2, 3], "mb": [10.0, 20.0, 40.0]}).to_parquet(path / "data" / "usage.parquet")
    (path / "later").mkdir()
    pd.DataFrame({"x": [1, 2]}).to_csv(path / "later" / "extra.csv", index=False)
    return path


@pytest.fixture(scope="module")
async def sourced(
    mariadb: None, folder: Path, make_runtime: Callable[..., Any]
) -> AsyncIterator[tuple[Runtime, Path]]:
    toml = folder / "sources.toml"
    toml.write_text(_toml(folder / "data"))
    async with make_runtime(customers=None, sources_path=toml, sources_env={"SHOP_PASSWORD": PASSWORD}) as rt:
        yield rt, toml


def _client(runtime: Runtime, user: str = "analyst") -> Client:
    return Client(app_for(runtime, user).mcp)


async def _sources(client: Client) -> dict[str, Any]:
    result = await client.call_tool("list_sources", {})
    return {source["name"]: source for source in result.structured_content["sources"]}


async def test_list_sources_shows_main_and_each_configured_source_with_its_tables(sourced) -> None:
    runtime, _ = sourced
    async with _client(runtime, "viewer") as client:
        sources = await _sources(client)
    assert list(sources) == ["main", "shop", "files"]
    assert sources["shop"]["engine"] == "mysql" and sources["shop"]["description"] == "Web shop orders"
    assert [t["name"] for t in sources["shop"]["tables"]] == ["orders"]
    assert {t["name"] for t in sources["files"]["tables"]} == {"plans", "usage"}
    assert {t["name"] for t in sources["main"]["tables"]} == {"customers", "network_events", "revenue"}
    assert PASSWORD not in json.dumps(sources)


async def test_query_database_on_a_mariadb_source_answers_as_plain_sql_does(sourced) -> None:
    runtime, _ = sourced
    sql = "SELECT status, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY status ORDER BY status"
    async with _client(runtime) as client:
        result = await client.call_tool("query_database", {"query": sql, "source": "shop"})
        bound = await client.call_tool(
            "query_database",
            {
                "query": "SELECT id FROM orders WHERE amount > %(low)s ORDER BY id",
                "parameters": {"low": 15},
                "source": "shop",
            },
        )
    expected = await _root_fetch(sql)
    rows = result.structured_content["rows"]
    assert [(r["status"], r["n"], float(r["total"])) for r in rows] == [
        (status, n, float(total)) for status, n, total in expected
    ]
    assert [r["id"] for r in bound.structured_content["rows"]] == [2, 4]
    assert result.structured_content["truncated"] is False


async def test_query_database_on_a_files_source_answers_as_pandas_does(sourced, folder: Path) -> None:
    runtime, _ = sourced
    sql = "SELECT plan, SUM(fee) AS total FROM plans GROUP BY plan ORDER BY plan"
    async with _client(runtime) as client:
        result = await client.call_tool("query_database", {"query": sql, "source": "files"})
        again = await client.call_tool("query_database", {"query": sql, "source": "files"})
        limited = await client.call_tool(
            "query_database", {"query": "SELECT * FROM usage ORDER BY day", "source": "files", "max_rows": 2}
        )
    expected = pd.read_csv(folder / "data" / "plans.csv").groupby("plan")["fee"].sum()
    assert {r["plan"]: r["total"] for r in result.structured_content["rows"]} == expected.to_dict()
    assert result.structured_content["cached"] is False and again.structured_content["cached"] is True
    assert limited.structured_content["row_count"] == 2 and limited.structured_content["truncated"] is True


async def test_save_as_stores_a_source_result_in_a_session(sourced) -> None:
    runtime, _ = sourced
    async with _client(runtime) as client:
        session = (await client.call_tool("session_create", {"data_source": "database"})).structured_content
        saved = await client.call_tool(
            "query_database",
            {
                "query": "SELECT * FROM orders ORDER BY id",
                "source": "shop",
                "session_id": session["session_id"],
                "save_as": "orders",
            },
        )
    assert saved.structured_content["dataset"]["shape"] == [5, 3]


async def test_attacks_on_each_source_are_refused_in_one_line_and_change_nothing(sourced) -> None:
    runtime, _ = sourced
    before = await _root_fetch("SELECT id, status, amount FROM orders ORDER BY id")
    attacks = {
        "shop": [
            "SELECT LOAD_FILE('/etc/passwd')",
            "SELECT 1; DELETE FROM orders",
            "SELECT * FROM mysql.user",
            "/*!50000 DELETE FROM orders */ SELECT 1",
            "SET PASSWORD = PASSWORD('x')",
        ],
        "files": [
            "SELECT * FROM read_csv('/etc/passwd')",
            "COPY plans TO '/tmp/out.csv'",
            "ATTACH ':memory:' AS other",
            "SELECT getenv('HOME')",
            "DROP VIEW plans",
        ],
    }
    async with _client(runtime) as client:
        for source, queries in attacks.items():
            for sql in queries:
                await refusal(client, "query_database", query=sql, source=source)
        still = await client.call_tool(
            "query_database", {"query": "SELECT COUNT(*) AS n FROM plans", "source": "files"}
        )
    assert await _root_fetch("SELECT id, status, amount FROM orders ORDER BY id") == before
    assert still.structured_content["rows"] == [{"n": 4}]


async def test_an_unknown_source_is_refused_naming_the_sources(sourced) -> None:
    runtime, _ = sourced
    async with _client(runtime) as client:
        text = await refusal(client, "query_database", query="SELECT 1", source="warehouse")
    assert "warehouse" in text and "main, shop, files" in text


async def test_query_log_names_the_source(sourced) -> None:
    runtime, _ = sourced
    marker = f"SELECT {secrets.randbelow(10**6) + 7} AS marker FROM orders LIMIT 1"
    async with _client(runtime) as client:
        await client.call_tool("query_database", {"query": marker, "source": "shop"})
    await runtime.services.query_log.flush()
    async with runtime.db.connection() as conn:
        sources = await conn.fetch("SELECT DISTINCT source FROM mcp_internal.query_log")
    assert "shop" in {row["source"] for row in sources}


async def test_schema_resource_describes_a_source_tables_and_columns(sourced) -> None:
    runtime, _ = sourced
    async with _client(runtime, "viewer") as client:
        shop = (await client.read_resource("schema://shop"))[0].text
        files = (await client.read_resource("schema://files"))[0].text
        with pytest.raises(Exception, match="needs role analyst"):
            await client.read_resource("schema://main")
    async with _client(runtime, "analyst") as client:
        main = (await client.read_resource("schema://main"))[0].text
    assert "## orders" in shop and "| amount | numeric |" in shop
    assert "## plans" in files and "| fee |" in files and "## usage" in files
    assert "customers" in main


async def test_an_edited_sources_file_reaches_two_instances_within_5_seconds(
    sourced, folder: Path, make_runtime: Callable[..., Any]
) -> None:
    runtime, toml = sourced
    async with make_runtime(
        customers=None, sources_path=toml, sources_env={"SHOP_PASSWORD": PASSWORD}
    ) as second:
        try:
            toml.write_text(
                _toml(folder / "data", extra=f'[sources.later]\nurl = "files://{folder / "later"}"\n')
            )
            started = time.monotonic()
            seen: dict[str, bool] = {}
            while time.monotonic() - started < 5 and not all(seen.get(n) for n in ("first", "second")):
                for name, instance in (("first", runtime), ("second", second)):
                    async with _client(instance) as client:
                        seen[name] = "later" in await _sources(client)
                await asyncio.sleep(0.2)
            assert seen == {"first": True, "second": True}
            async with _client(second) as client:
                answer = await client.call_tool(
                    "query_database", {"query": "SELECT SUM(x) AS s FROM extra", "source": "later"}
                )
            assert answer.structured_content["rows"] == [{"s": 3}]
            # A bad edit keeps the sources that work.
            toml.write_text(toml.read_text() + '[sources.broken]\nurl = "nosuch://x"\n')
            await asyncio.sleep(2.5)
            async with _client(runtime) as client:
                assert "later" in await _sources(client)
        finally:
            toml.write_text(_toml(folder / "data"))


async def test_a_bad_sources_file_stops_start_up_with_one_line(
    folder: Path, make_runtime: Callable[..., Any]
) -> None:
    toml = folder / "bad.toml"
    toml.write_text('[sources.shop]\nurl = "mysql://u:${MISSING_PASSWORD}@h/db"\n')
    with pytest.raises(SourceConfigError) as raised:
        async with make_runtime(customers=None, sources_path=toml, sources_env={}):
            pass
    assert "[sources.shop]" in str(raised.value) and "MISSING_PASSWORD" in str(raised.value)
    assert "\n" not in str(raised.value)


async def test_demo_exports_are_generated_deterministically_and_registered(tmp_path: Path) -> None:
    first = with_demo_exports(Registry({}), tmp_path / "one")
    with_demo_exports(Registry({}), tmp_path / "two")
    assert first.names == ["exports"]
    for name in FILES:
        assert (tmp_path / "one" / "exports" / name).read_bytes() == (
            tmp_path / "two" / "exports" / name
        ).read_bytes()
    engine = FilesEngine("exports", first.get("exports").directory)
    await engine.start()
    try:
        assert [t.name for t in await engine.tables()] == ["plans", "tickets", "usage"]
        statement = await engine.guarded("SELECT COUNT(*) AS n, SUM(minutes) AS m FROM usage", {})
        result = await engine.run(statement, {}, timeout=10, max_rows=10, max_bytes=100_000)
    finally:
        await engine.close()
    usage = demo_frames()["usage.parquet"]
    assert result.rows == [(len(usage), int(usage["minutes"].sum()))]


async def test_the_embedded_default_registers_the_demo_exports_source(
    base_settings: Any, tmp_path: Path
) -> None:
    from mcp_server.runtime import start_sources

    settings = base_settings.with_changes(database_url=None, home=tmp_path)
    sources = await start_sources(settings, "postgresql://127.0.0.1/unused")
    try:
        assert sources.registry.names == ["main", "exports"]
        assert {t.name for t in await sources.engine_now("exports").tables()} == {"plans", "tickets", "usage"}
    finally:
        await sources.close()


async def test_a_reload_closes_a_removed_source_only_after_its_in_flight_query(folder: Path) -> None:
    from warehouse.engines.active import ActiveSources
    from warehouse.sources import parse_sources

    with_files = parse_sources(
        f'[sources.files]\nurl = "files://{folder / "data"}"\n'.encode(), {}, base=folder
    )
    sources = await ActiveSources.start(with_files)
    try:
        async with sources.use("files") as engine:
            await sources.replace(parse_sources(b"", {}, base=folder))
            assert "files" not in sources.registry
            statement = await engine.guarded("SELECT COUNT(*) AS n FROM plans", {})
            result = await engine.run(statement, {}, timeout=10, max_rows=10, max_bytes=10_000)
            assert result.rows == [(4,)]
        with pytest.raises(Exception):  # noqa: B017 - closed now: any error from the closed engine
            await engine.run(statement, {}, timeout=10, max_rows=10, max_bytes=10_000)
    finally:
        await sources.close()
