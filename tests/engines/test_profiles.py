"""Profiles (metadata cards) of the sources' tables: their figures equal plain SQL's (MariaDB) and
pandas' (files), large tables are sampled and say so, and they reach the agent through MCP."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncmy
import pandas as pd
import pytest
from fastmcp import Client

from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.support import refusal
from warehouse.engines.duckdb_files import FilesEngine
from warehouse.engines.mysql import MySQLEngine
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
    conn = await asyncmy.connect(host=HOST, port=PORT, user="root", password="", autocommit=True)
    try:
        async with conn.cursor() as cursor:
            try:
                for statement in SETUP:
                    await cursor.execute(statement)
                yield
            finally:
                for statement in TEARDOWN:
                    await cursor.execute(statement)
    finally:
        conn.close()


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
