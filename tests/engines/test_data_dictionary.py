"""docs://{source}/data_dictionary: each source's tables and columns with rows, roles, null shares, ranges
and descriptions from database comments and the operator's YAML file (which wins), read over MCP."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pandas as pd
import pytest
from fastmcp import Client
from fastmcp.exceptions import McpError

from mcp_server.runtime import Runtime
from resources.dictionary import render_dictionary
from tests.conftest import app_for
from tests.engines.mariadb import HOST, PORT, root_fetch, scratch
from warehouse.descriptions import TableDescription
from warehouse.engines import RelationRules
from warehouse.engines.postgres import PostgresEngine
from warehouse.sources import SourceConfigError, parse_sources

SUFFIX = secrets.token_hex(4)
DATABASE = f"amcp_dict_{SUFFIX}"
READER = f"amcp_dict_reader_{SUFFIX}"
PASSWORD = secrets.token_urlsafe(12)

SETUP = [
    f"CREATE DATABASE {DATABASE}",
    f"CREATE TABLE {DATABASE}.orders (id INT PRIMARY KEY COMMENT 'Order number', "
    "status VARCHAR(20) COMMENT 'paid, open or refunded', amount DECIMAL(10,2) COMMENT 'from the comment') "
    "COMMENT = 'One row per web order'",
    f"INSERT INTO {DATABASE}.orders VALUES (1,'paid',10.50),(2,NULL,20.00),(3,'refunded',5.25),(4,'paid',NULL)",
    f"CREATE USER '{READER}'@'%' IDENTIFIED BY '{PASSWORD}'",
    f"GRANT SELECT ON {DATABASE}.* TO '{READER}'@'%'",
]
TEARDOWN = [f"DROP USER IF EXISTS '{READER}'@'%'", f"DROP DATABASE IF EXISTS {DATABASE}"]

YAML = """
tables:
  orders:
    columns:
      amount: Order total in euros, VAT included
  plans:
    description: Price plans exported from billing
"""


@pytest.fixture(scope="module")
async def dictionary_runtime(
    tmp_path_factory: pytest.TempPathFactory, make_runtime: Callable[..., Any]
) -> AsyncIterator[Runtime]:
    folder = tmp_path_factory.mktemp("dictionary")
    (folder / "data").mkdir()
    pd.DataFrame({"plan": ["a", "b", None], "fee": [1.5, 2.5, 4.0]}).to_csv(
        folder / "data" / "plans.csv", index=False
    )
    (folder / "shop.yaml").write_text(YAML)
    toml = folder / "sources.toml"
    toml.write_text(
        "[sources.shop]\n"
        f'url = "mysql://{READER}:${{SHOP_PASSWORD}}@{HOST}:{PORT}/{DATABASE}"\n'
        'description = "Web shop orders"\n'
        'descriptions = "shop.yaml"\n'
        "[sources.files]\n"
        f'url = "files://{folder / "data"}"\n'
        'description = "Billing exports"\n'
    )
    async with scratch(SETUP, TEARDOWN):
        async with make_runtime(
            customers=None, sources_path=toml, sources_env={"SHOP_PASSWORD": PASSWORD}
        ) as rt:
            yield rt


async def _read(runtime: Runtime, uri: str, user: str = "viewer") -> str:
    async with Client(app_for(runtime, user).mcp) as client:
        return (await client.read_resource(uri))[0].text


def _row(text: str, column: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if line.startswith(f"| {column} |")]
    return [cell.strip() for cell in line.strip("|").split("|")]


async def test_a_mariadb_dictionary_shows_column_comments_with_the_operators_yaml_winning(
    dictionary_runtime,
) -> None:
    text = await _read(dictionary_runtime, "docs://shop/data_dictionary")
    (rows,) = await root_fetch(
        DATABASE, "SELECT COUNT(*), SUM(amount IS NULL), MIN(amount), MAX(amount) FROM orders"
    )
    assert "Web shop orders" in text
    assert f"## orders ({rows[0]:,} rows)" in text and "One row per web order" in text
    assert _row(text, "id")[-1] == "Order number"
    assert _row(text, "status")[-1] == "paid, open or refunded"
    amount = _row(text, "amount")
    assert amount[-1] == "Order total in euros, VAT included" and "from the comment" not in text
    assert amount[3] == f"{rows[1] / rows[0]:.1%}"
    assert [float(end) for end in amount[4].split(" to ")] == [float(rows[2]), float(rows[3])]
    assert _row(text, "id")[2] == "identifier"


async def test_a_files_dictionary_renders_without_comments_and_takes_no_yaml_of_another_source(
    dictionary_runtime,
) -> None:
    text = await _read(dictionary_runtime, "docs://files/data_dictionary")
    assert "Billing exports" in text and "## plans (3 rows)" in text
    assert "Price plans exported from billing" not in text  # that YAML belongs to shop only
    plan, fee = _row(text, "plan"), _row(text, "fee")
    assert plan[3] == f"{1 / 3:.1%}" and plan[-1] == ""
    assert fee[4] == "1.5 to 4.0"


async def test_main_answers_the_built_in_dictionary_to_analysts_only(dictionary_runtime) -> None:
    assert await _read(dictionary_runtime, "docs://main/data_dictionary", "analyst") == render_dictionary()
    with pytest.raises(McpError, match="needs role analyst or admin"):
        await _read(dictionary_runtime, "docs://main/data_dictionary", "viewer")


async def test_an_unknown_source_is_refused_naming_the_sources(dictionary_runtime) -> None:
    with pytest.raises(McpError, match="source 'nope' not found; sources: main, shop, files"):
        await _read(dictionary_runtime, "docs://nope/data_dictionary")


@pytest.mark.parametrize(
    ("yaml", "problem"),
    [
        ("tables: [orders]", "tables must map each table name"),
        (
            "tables:\n  orders:\n    columns:\n      amount: [1, 2]",
            "tables.orders.columns.amount must be text",
        ),
        ("tables:\n  orders:\n    descripton: x", "tables.orders must be"),
        ("tables: {orders: [", "not valid YAML at line"),
        ("orders: {}", "must hold one key, tables"),
    ],
)
def test_a_malformed_descriptions_file_stops_the_sources_with_one_line(
    tmp_path: Path, yaml: str, problem: str
) -> None:
    (tmp_path / "shop.yaml").write_text(yaml)
    toml = f'[sources.files]\nurl = "files://{tmp_path}"\ndescriptions = "shop.yaml"\n'
    with pytest.raises(SourceConfigError) as caught:
        parse_sources(toml.encode(), {}, base=tmp_path)
    message = str(caught.value)
    assert message.startswith("ANALYTICS_MCP_SOURCES: [sources.files] descriptions: ") and problem in message
    assert "\n" not in message and str(tmp_path) not in message


def test_a_missing_descriptions_file_is_named_as_a_setting_to_fix(tmp_path: Path) -> None:
    toml = f'[sources.files]\nurl = "files://{tmp_path}"\ndescriptions = "absent.yaml"\n'
    with pytest.raises(SourceConfigError, match=r"\[sources.files\] descriptions: cannot read"):
        parse_sources(toml.encode(), {}, base=tmp_path)


async def test_postgresql_comments_are_read_for_the_allowed_relations_only(
    create_database: Callable[[], Any],
) -> None:
    url = await create_database()
    reader = f"amcp_dict_pg_{SUFFIX}"
    conn = await asyncpg.connect(url)
    try:
        for statement in [
            "CREATE SCHEMA sales",
            "CREATE SCHEMA hr",
            "CREATE TABLE sales.orders (id int PRIMARY KEY, amount numeric)",
            "CREATE TABLE sales.internal_notes (body text)",
            "CREATE TABLE hr.salaries (salary int)",
            "COMMENT ON TABLE sales.orders IS 'One row per order'",
            "COMMENT ON COLUMN sales.orders.amount IS 'Total in euros'",
            "COMMENT ON TABLE sales.internal_notes IS 'not for agents'",
            "COMMENT ON COLUMN hr.salaries.salary IS 'not for agents either'",
            f"CREATE ROLE {reader} LOGIN PASSWORD '{PASSWORD}'",
            f"GRANT USAGE ON SCHEMA sales, hr TO {reader}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA sales, hr TO {reader}",
        ]:
            await conn.execute(statement)
        parts = urlsplit(url)
        login = f"{reader}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"
        engine = PostgresEngine(
            urlunsplit(parts._replace(netloc=login)),
            name="warehouse",
            schemas=("sales",),
            rules=RelationRules(exclude=("sales.internal_*",)),
        )
        await engine.start()
        try:
            comments = await engine.comments()
        finally:
            await engine.close()
    finally:
        await conn.execute(f"DROP OWNED BY {reader}")
        await conn.execute(f"DROP ROLE IF EXISTS {reader}")
        await conn.close()
    assert comments == {"orders": TableDescription("One row per order", {"amount": "Total in euros"})}
