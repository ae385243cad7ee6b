"""Profiles (metadata cards) of the sources' tables: their figures equal plain SQL's (MariaDB,
PostgreSQL) and pandas' (files), large tables are sampled and say so, and they reach the agent through MCP."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncmy
import asyncpg
import pandas as pd
import pytest
from fastmcp import Client

from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.engines.mariadb import scratch
from tests.support import refusal
from warehouse.engines.duckdb_files import FilesEngine
from warehouse.engines.mysql import MySQLEngine
from warehouse.engines.postgres import PostgresEngine
from warehouse.profiles import ColumnStats, guess_role

HOST, PORT = "127.0.0.1", 3306
SUFFIX = secrets.token_hex(4)
DATABASE = f"amcp_prof_{SUFFIX}"
READER = f"amcp_prof_reader_{SUFFIX}"
PASSWORD = secrets.token_urlsafe(12)

SETUP = [
    f"CREATE DATABASE {DATABASE}",
    f"CREATE TABLE {DATABASE}.customers (id INT PRIMARY KEY, email VARCHAR(80) UNIQUE, "
    "city VARCHAR(20), spend DECIMAL(10,2), signed_up DATETIME, is_active TINYINT(1))",
    f"INSERT INTO {DATABASE}.customers VALUES "
    "(1,'a@x.io','Oslo',10.50,'2024-01-03 10:00:00',1),(2,'b@x.io','Oslo',NULL,'2024-02-01 09:30:00',0),"
    "(3,'c@x.io',NULL,99.99,'2023-12-24 18:00:00',1),(4,'d@x.io','Bergen',5.25,NULL,1),"
    "(5,NULL,'Oslo',NULL,'2024-03-15 00:00:00',0)",
    f"CREATE TABLE {DATABASE}.orders (id INT PRIMARY KEY, customer_id INT, amount DOUBLE, "
    f"FOREIGN KEY (customer_id) REFERENCES {DATABASE}.customers (id))",
    f"INSERT INTO {DATABASE}.orders VALUES (1,1,3.5),(2,1,NULL),(3,4,7.25)",
    f"CREATE TABLE {DATABASE}.big (n INT, bucket VARCHAR(4))",
    f"INSERT INTO {DATABASE}.big SELECT seq, IF(seq % 10 = 0, NULL, CONCAT('b', seq % 3)) "
    f"FROM {DATABASE}.seq_1_to_5000",
    f"CREATE USER '{READER}'@'%' IDENTIFIED BY '{PASSWORD}'",
    f"GRANT SELECT ON {DATABASE}.* TO '{READER}'@'%'",
]
TEARDOWN = [f"DROP USER IF EXISTS '{READER}'@'%'", f"DROP DATABASE IF EXISTS {DATABASE}"]
URL = f"mysql://{READER}:{PASSWORD}@{HOST}:{PORT}/{DATABASE}"


async def _root_fetch(sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncmy.connect(host=HOST, port=PORT, user="root", password="", db=DATABASE, autocommit=True)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql)
            return list(await cursor.fetchall())
    finally:
        conn.close()


@pytest.fixture(scope="module")
async def mariadb() -> AsyncIterator[None]:
    async with scratch(SETUP, TEARDOWN):
        yield


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("profiles")
    pd.DataFrame(
        {
            "plan": ["a", "b", None, "a", "c", "a"],
            "fee": [1.5, None, 4.0, 1.5, 9.25, None],
            "day": pd.to_datetime(
                ["2024-01-01", "2024-01-05", None, "2023-12-31", "2024-02-29", "2024-01-02"]
            ),
        }
    ).to_parquet(path / "plans.parquet")
    pd.DataFrame({"n": range(1, 3001), "kind": [f"k{i % 4}" for i in range(3000)]}).to_csv(
        path / "many.csv", index=False
    )
    return path


@pytest.fixture
async def shop(mariadb: None) -> AsyncIterator[MySQLEngine]:
    engine = MySQLEngine(URL, name="shop")
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture
async def files(folder: Path) -> AsyncIterator[FilesEngine]:
    engine = FilesEngine("exports", folder)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def _columns(profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {column["name"]: column for column in profile["columns"]}


async def test_a_mariadb_profile_has_the_row_count_null_shares_and_ranges_plain_sql_computes(shop) -> None:
    profile = await shop.profile("customers", 100_000)
    columns = _columns(profile)
    (expected,) = await _root_fetch(
        "SELECT COUNT(*), SUM(city IS NULL), SUM(spend IS NULL), SUM(signed_up IS NULL), SUM(email IS NULL), "
        "MIN(spend), MAX(spend), MIN(signed_up), MAX(signed_up), MIN(city), MAX(city), COUNT(DISTINCT city) "
        "FROM customers"
    )
    rows = expected[0]
    assert profile["row_count"] == rows == 5 and profile["sample_size"] == 5 and not profile["sampled"]
    assert columns["city"]["null_share"] == pytest.approx(float(expected[1]) / rows)
    assert columns["spend"]["null_share"] == pytest.approx(float(expected[2]) / rows)
    assert columns["signed_up"]["null_share"] == pytest.approx(float(expected[3]) / rows)
    assert columns["email"]["null_share"] == pytest.approx(float(expected[4]) / rows)
    assert columns["id"]["null_share"] == 0
    assert (columns["spend"]["min"], columns["spend"]["max"]) == (float(expected[5]), float(expected[6]))
    assert (columns["signed_up"]["min"], columns["signed_up"]["max"]) == (
        expected[7].isoformat(),
        expected[8].isoformat(),
    )
    assert (columns["city"]["min"], columns["city"]["max"]) == (expected[9], expected[10])
    assert columns["city"]["distinct"] == expected[11]
    assert columns["city"]["top_values"][0] == {"value": "Oslo", "count": 3}
    assert columns["id"]["key"] == "primary" and columns["email"]["key"] == "unique"
    assert columns["id"]["role"] == "identifier" and columns["signed_up"]["role"] == "timestamp"
    assert columns["spend"]["role"] == "amount" and columns["city"]["role"] == "category"
    assert columns["is_active"]["role"] == "flag"
    orders = _columns(await shop.profile("orders", 100_000))
    assert orders["customer_id"]["references"] == "customers.id"
    assert orders["amount"]["null_share"] == pytest.approx(1 / 3)


async def test_a_large_mariadb_table_is_profiled_on_a_sample_whose_size_is_stated(shop) -> None:
    profile = await shop.profile("big", 1_000)
    (expected,) = await _root_fetch("SELECT COUNT(*) FROM big")
    assert profile["row_count"] == expected[0] == 5000  # counted exactly, whatever the sample
    assert profile["sampled"] is True and 500 < profile["sample_size"] < 1_500
    bucket = _columns(profile)["bucket"]
    assert bucket["null_share"] == pytest.approx(0.1, abs=0.06)  # 10% null in the table


async def test_a_files_profile_has_the_row_count_null_shares_and_ranges_pandas_computes(
    files, folder: Path
) -> None:
    profile = await files.profile("plans", 100_000)
    frame = pd.read_parquet(folder / "plans.parquet")
    columns = _columns(profile)
    assert profile["row_count"] == len(frame) and profile["sample_size"] == len(frame)
    for name in ("plan", "fee", "day"):
        assert columns[name]["null_share"] == pytest.approx(frame[name].isna().mean())
    assert (columns["fee"]["min"], columns["fee"]["max"]) == (frame["fee"].min(), frame["fee"].max())
    assert (columns["plan"]["min"], columns["plan"]["max"]) == (frame["plan"].min(), frame["plan"].max())
    assert columns["day"]["min"] == frame["day"].min().isoformat()
    assert columns["day"]["max"] == frame["day"].max().isoformat()
    assert columns["plan"]["distinct"] == frame["plan"].nunique()
    assert columns["plan"]["top_values"][0] == {"value": "a", "count": 3}
    assert columns["day"]["role"] == "timestamp" and columns["fee"]["role"] == "amount"


async def test_a_large_file_is_profiled_on_a_sample_whose_size_is_stated(files, folder: Path) -> None:
    profile = await files.profile("many", 1_000)
    frame = pd.read_csv(folder / "many.csv")
    assert profile["row_count"] == len(frame) == 3000
    assert profile["sampled"] is True and profile["sample_size"] == 1_000
    assert _columns(profile)["kind"]["distinct"] == 4


PG_READER = f"amcp_prof_pg_{SUFFIX}"
PG_SETUP = [
    "CREATE SCHEMA sales",
    "CREATE TABLE sales.customers (id int PRIMARY KEY, region varchar(10), vip boolean, joined date)",
    "CREATE TABLE sales.orders (id int PRIMARY KEY, customer_id int REFERENCES sales.customers, "
    "amount numeric(10,2), placed timestamptz)",
    "INSERT INTO sales.customers VALUES (1,'north',true,'2024-01-02'),(2,'south',false,NULL),"
    "(3,NULL,NULL,'2023-11-30'),(4,'north',true,'2024-05-01')",
    "INSERT INTO sales.orders SELECT g, 1 + g % 4, CASE WHEN g % 5 = 0 THEN NULL ELSE g * 1.25 END, "
    "timestamptz '2024-01-01 00:00+00' + g * interval '1 hour' FROM generate_series(1, 4000) AS g",
    f"CREATE ROLE {PG_READER} LOGIN PASSWORD '{PASSWORD}'",
    f"GRANT USAGE ON SCHEMA sales TO {PG_READER}",
    f"GRANT SELECT ON ALL TABLES IN SCHEMA sales TO {PG_READER}",
]


@pytest.fixture(scope="module")
async def postgres_source(create_database: Callable[[], Any]) -> AsyncIterator[tuple[PostgresEngine, str]]:
    """A second PostgreSQL database (its admin URL) and a source engine logged in as a SELECT-only role."""
    url = await create_database()
    conn = await asyncpg.connect(url)
    try:
        for statement in PG_SETUP:
            await conn.execute(statement)
    finally:
        await conn.close()
    parts = urlsplit(url)
    reader = urlunsplit(
        parts._replace(netloc=f"{PG_READER}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}")
    )
    engine = PostgresEngine(reader, name="finance", schemas=("sales",))
    await engine.start()
    try:
        yield engine, url
    finally:
        await engine.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"DROP OWNED BY {PG_READER}")
            await conn.execute(f"DROP ROLE IF EXISTS {PG_READER}")
        finally:
            await conn.close()


async def test_a_postgres_profile_has_the_row_count_null_shares_and_ranges_plain_sql_computes(
    postgres_source,
) -> None:
    engine, url = postgres_source
    conn = await asyncpg.connect(url)
    try:
        expected = await conn.fetchrow(
            "SELECT count(*) AS n, count(*) FILTER (WHERE region IS NULL) AS region_nulls, "
            "count(*) FILTER (WHERE joined IS NULL) AS joined_nulls, min(joined) AS low, max(joined) AS high, "
            "min(region) AS first, max(region) AS last FROM sales.customers"
        )
        orders = await conn.fetchrow("SELECT count(*) AS n FROM sales.orders")
    finally:
        await conn.close()
    profile = await engine.profile("customers", 100_000)
    columns = _columns(profile)
    assert profile["row_count"] == expected["n"] == profile["sample_size"]
    assert columns["region"]["null_share"] == pytest.approx(expected["region_nulls"] / expected["n"])
    assert columns["joined"]["null_share"] == pytest.approx(expected["joined_nulls"] / expected["n"])
    assert (columns["joined"]["min"], columns["joined"]["max"]) == (
        expected["low"].isoformat(),
        expected["high"].isoformat(),
    )
    assert (columns["region"]["min"], columns["region"]["max"]) == (expected["first"], expected["last"])
    assert (columns["vip"]["min"], columns["vip"]["max"], columns["vip"]["role"]) == (False, True, "flag")
    assert columns["id"]["key"] == "primary" and columns["region"]["role"] == "category"
    sampled = await engine.profile("orders", 1_000)
    assert sampled["row_count"] == orders["n"] == 4000
    assert sampled["sampled"] is True and 500 < sampled["sample_size"] < 1_500
    assert _columns(sampled)["customer_id"]["references"] == "customers.id"
    assert _columns(sampled)["amount"]["null_share"] == pytest.approx(0.2, abs=0.08)


def test_roles_are_guessed_from_type_name_and_figures() -> None:
    assert guess_role(ColumnStats("is_vip", "bool", 10, 2, False, True), 10) == "flag"
    assert guess_role(ColumnStats("churned", "int4", 10, 2, 0, 1), 10) == "flag"
    assert (
        guess_role(ColumnStats("created_at", "text", 10, 10, "2024-01-01", "2024-02-01"), 10) == "timestamp"
    )
    assert guess_role(ColumnStats("customer_id", "text", 10, 3, "a", "c"), 10) == "identifier"
    assert guess_role(ColumnStats("price", "numeric", 100, 80, 1, 99), 100) == "amount"
    assert guess_role(ColumnStats("plan", "text", 1000, 3, "a", "c"), 1000) == "category"
    assert guess_role(ColumnStats("note", "text", 1000, 990, "a b c", "z y"), 1000) == "free text"


# --- through MCP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def sourced(
    mariadb: None, folder: Path, tmp_path_factory: pytest.TempPathFactory, make_runtime: Callable[..., Any]
) -> AsyncIterator[Runtime]:
    toml = tmp_path_factory.mktemp("profiles_toml") / "sources.toml"
    toml.write_text(
        "[sources.shop]\n"
        f'url = "mysql://{READER}:${{SHOP_PASSWORD}}@{HOST}:{PORT}/{DATABASE}"\n'
        "[sources.exports]\n"
        f'url = "files://{folder}"\n'
    )
    async with make_runtime(customers=None, sources_path=toml, sources_env={"SHOP_PASSWORD": PASSWORD}) as rt:
        yield rt


def _client(runtime: Runtime, user: str) -> Client:
    return Client(app_for(runtime, user).mcp)


async def test_sources_are_profiled_in_the_background_and_list_sources_says_when(sourced) -> None:
    async with _client(sourced, "viewer") as client:
        for _ in range(100):
            result = await client.call_tool("list_sources", {})
            times = {s["name"]: s["profiled_at"] for s in result.structured_content["sources"]}
            if times["shop"] and times["exports"]:
                break
            await asyncio.sleep(0.1)
    assert times["shop"] and times["exports"], times


async def test_refresh_source_answers_the_profiles_and_is_for_admins_only(sourced) -> None:
    async with _client(sourced, "admin") as client:
        result = await client.call_tool("refresh_source", {"source": "shop"})
    answer = result.structured_content
    assert answer["source"] == "shop"
    tables = {profile["table"]: profile for profile in answer["tables"]}
    assert set(tables) == {"customers", "orders", "big"}
    assert tables["customers"]["row_count"] == 5 and tables["customers"]["profiled_at"]
    for user in ("analyst", "viewer"):
        async with _client(sourced, user) as client:
            await refusal(client, "refresh_source", source="shop")


async def test_the_table_resource_shows_the_profile_as_markdown(sourced) -> None:
    async with _client(sourced, "admin") as client:
        await client.call_tool("refresh_source", {"source": "exports"})
    async with _client(sourced, "viewer") as client:
        shop = (await client.read_resource("schema://shop/customers"))[0].text
        plans = (await client.read_resource("schema://exports/plans"))[0].text
        many = (await client.read_resource("schema://exports/many"))[0].text
    assert "5 rows, all profiled" in shop
    assert "| city | text | category | 20.0% | 2 | Bergen | Oslo | Oslo (3), Bergen (1) |  |" in shop
    assert "| id | int4 | identifier | 0.0% | 5 | 1 | 5 |  | primary |" in shop
    assert "| fee | float8 | amount | 33.3% |" in plans
    assert "3,000 rows, all profiled" in many  # under the default sample size


async def test_a_source_added_to_the_toml_is_profiled_without_a_restart(
    mariadb: None, folder: Path, tmp_path: Path, make_runtime: Callable[..., Any]
) -> None:
    toml = tmp_path / "sources.toml"
    toml.write_text(f'[sources.exports]\nurl = "files://{folder}"\n')
    async with make_runtime(customers=None, sources_path=toml, sources_env={"SHOP_PASSWORD": PASSWORD}) as rt:
        toml.write_text(
            toml.read_text()
            + f'[sources.shop]\nurl = "mysql://{READER}:${{SHOP_PASSWORD}}@{HOST}:{PORT}/{DATABASE}"\n'
        )
        async with _client(rt, "viewer") as client:
            times: dict[str, Any] = {}
            for _ in range(150):
                result = await client.call_tool("list_sources", {})
                times = {s["name"]: s["profiled_at"] for s in result.structured_content["sources"]}
                if times.get("shop"):
                    break
                await asyncio.sleep(0.1)
            card = (await client.read_resource("schema://shop/big"))[0].text
    assert times.get("shop"), times
    assert "5,000 rows, all profiled" in card
