"""The telecom dataset through MCP on other sources: generate_data(dataset=telecom) into a MariaDB source and a
files source, with progress notifications, loads the very rows the built-in database holds for the same
arguments (compared row by row with PostgreSQL's); summary_snapshot counts them as plain SQL does; reset_data
empties them children first; refusals (no confirm, no write_url, PostgreSQL, a folder holding the shop, the shop over
telecom's customers, an analyst) change nothing; `analytics-mcp seed --dataset telecom --source NAME` loads a source too."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import pytest
from fastmcp import Client
from pydantic import SecretStr

from core.errors import InvalidInput
from mcp_server.cli import main as cli_main
from mcp_server.datasets import check_telecom_source
from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.engines.mariadb import HOST, PORT, reader_database, root_fetch, scratch
from tests.support import call, refusal
from warehouse.generator import generate, make_plan
from warehouse.sources import Source
from warehouse.telecom_store import load_telecom

CUSTOMERS, SEED = 150, 11
DATABASE, READER, PASSWORD, SETUP, TEARDOWN = reader_database("teltools")
TABLES = ("customers", "revenue", "network_events")
COLUMNS = {
    "customers": (
        "customer_id",
        "created_at",
        "age",
        "gender",
        "location",
        "account_type",
        "is_churned",
        "churn_date",
    ),
    "revenue": (
        "transaction_id",
        "customer_id",
        "transaction_date",
        "amount",
        "service_type",
        "payment_method",
    ),
    "network_events": (
        "event_id",
        "customer_id",
        "event_timestamp",
        "event_type",
        "network_quality_score",
        "duration_seconds",
        "data_usage_mb",
    ),
}


@pytest.fixture(scope="module")
async def telecom_runtime(
    tmp_path_factory: pytest.TempPathFactory, make_runtime: Callable[..., Any]
) -> AsyncIterator[Runtime]:
    """main seeded with (CUSTOMERS, SEED); a MariaDB source `tel` (reads as a SELECT-only user, writes as
    root, model telecom) and `telro` on it without write_url; files sources `telfiles` (model telecom) and
    `shopfiles`."""
    folder = tmp_path_factory.mktemp("telecom_tools")
    toml = folder / "sources.toml"
    reader = f"mysql://{READER}:${{READER_PASSWORD}}@{HOST}:{PORT}/{DATABASE}"
    toml.write_text(
        f'[sources.tel]\nurl = "{reader}"\nwrite_url = "mysql://root@{HOST}:{PORT}/{DATABASE}"\n'
        'model = "telecom"\n'
        f'[sources.telro]\nurl = "{reader}"\n'
        f'[sources.telfiles]\nurl = "files://{folder / "telecom"}"\nmodel = "telecom"\n'
        f'[sources.shopfiles]\nurl = "files://{folder / "shop"}"\n'
    )
    (folder / "telecom").mkdir()
    (folder / "shop").mkdir()
    async with scratch(SETUP, TEARDOWN):
        async with make_runtime(
            customers=CUSTOMERS, seed=SEED, sources_path=toml, sources_env={"READER_PASSWORD": PASSWORD}
        ) as runtime:
            yield runtime


def _client(runtime: Runtime, user: str = "admin", **options: Any) -> Client:
    return Client(app_for(runtime, user).mcp, **options)


def _canonical(value: Any) -> Any:
    """One form per value whatever the engine's driver returns: UUIDs as text, instants naive UTC, money as
    Decimal, flags as bool."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC).replace(tzinfo=None)
    if isinstance(value, Decimal | float | int | str | dt.datetime) or value is None:
        return value
    return str(value)  # uuid.UUID


def _rows(table: str, records: list[Any]) -> list[tuple[Any, ...]]:
    flag = COLUMNS[table].index("is_churned") if table == "customers" else None
    out = []
    for record in records:
        row = [_canonical(value) for value in record]
        if flag is not None:
            row[flag] = bool(row[flag])
        out.append(tuple(row))
    return out


def _select(table: str) -> str:
    return f"SELECT {', '.join(COLUMNS[table])} FROM {table} ORDER BY {COLUMNS[table][0]}"


async def _main_rows(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(runtime.settings.database_url)
    try:
        return {table: _rows(table, await conn.fetch(_select(table))) for table in TABLES}
    finally:
        await conn.close()


async def _mariadb_rows() -> dict[str, list[tuple[Any, ...]]]:
    return {table: _rows(table, await root_fetch(DATABASE, _select(table))) for table in TABLES}


async def _mariadb_counts() -> dict[str, int]:
    present = {row[0] for row in await root_fetch(DATABASE, "SHOW TABLES")}
    return {
        table: int((await root_fetch(DATABASE, f"SELECT count(*) FROM `{table}`"))[0][0])
        if table in present
        else 0
        for table in TABLES
    }


def _file_rows(folder: Path) -> dict[str, list[tuple[Any, ...]]]:
    with duckdb.connect() as conn:
        return {
            table: _rows(
                table,
                conn.execute(
                    _select(table).replace(f"FROM {table}", "FROM read_parquet(?)"),
                    [str(folder / f"{table}.parquet")],
                ).fetchall(),
            )
            for table in TABLES
        }


def _parquet_count(path: Path) -> int:
    with duckdb.connect() as conn:
        row = conn.execute("SELECT count(*) FROM read_parquet(?)", [str(path)]).fetchone()
    assert row is not None
    return int(row[0])


async def test_generate_data_loads_mains_telecom_rows_into_mariadb_with_progress(telecom_runtime) -> None:
    notes: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append((progress, total, message))

    async with _client(telecom_runtime, progress_handler=on_progress) as admin:
        first = await call(
            admin, "generate_data", dataset="telecom", source="tel", customers=CUSTOMERS, seed=SEED
        )
        again = await call(
            admin, "generate_data", dataset="telecom", source="tel", customers=CUSTOMERS, seed=SEED
        )
    expected = await _main_rows(telecom_runtime)
    loaded = await _mariadb_rows()
    counts = await _mariadb_counts()
    for table in TABLES:
        assert loaded[table] == expected[table], table  # the same rows, ids and instants as main
    assert counts == {table: len(expected[table]) for table in TABLES} and counts["customers"] == CUSTOMERS
    assert first["tables"] == counts and again["tables"] == counts  # re-running replaces, never adds
    assert first["rows"] == sum(counts.values()) and first["rows_per_second"] > 0
    assert first["profiles_refreshed"] == ["tel"] and (first["seed"], first["customers"]) == (SEED, CUSTOMERS)
    messages = [message for _, _, message in notes]
    assert "generating" in messages and {f"loaded {table}" for table in TABLES} <= set(messages)
    last = [(done, total) for done, total, message in notes if message == "loaded network_events"][-1]
    assert last == (sum(counts.values()), sum(counts.values()))


async def test_generate_data_writes_mains_telecom_rows_as_parquet_files(telecom_runtime) -> None:
    notes: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        notes.append(message)

    async with _client(telecom_runtime, progress_handler=on_progress) as admin:
        answer = await call(
            admin, "generate_data", dataset="telecom", source="telfiles", customers=CUSTOMERS, seed=SEED
        )
        summary = await call(admin, "summary_snapshot", source="telfiles")
    folder = telecom_runtime.sources.source("telfiles").directory
    expected = await _main_rows(telecom_runtime)
    written = _file_rows(folder)
    for table in TABLES:
        assert written[table] == expected[table], table
    counts = {table: len(written[table]) for table in TABLES}
    assert answer["tables"] == counts and summary["tables"] == counts and summary["dataset"] == "telecom"
    assert summary["window"]["seed"] == SEED and summary["window"]["customers"] == CUSTOMERS
    assert {f"loaded {table}" for table in TABLES} <= set(notes)  # reported from the writer's thread
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{table}.parquet" for table in TABLES)


async def test_summary_and_reset_on_mariadb_count_as_sql_does(telecom_runtime) -> None:
    async with _client(telecom_runtime) as admin:
        await call(admin, "generate_data", dataset="telecom", source="tel", customers=60, seed=3)
        counts = await _mariadb_counts()
        async with _client(telecom_runtime, "analyst") as analyst:
            summary = await call(analyst, "summary_snapshot", source="tel")  # model telecom: the default
            through_reader = await call(analyst, "summary_snapshot", source="telro", dataset="telecom")
        assert (
            summary["tables"] == counts and through_reader["tables"] == counts and counts["customers"] == 60
        )
        assert summary["rows"] == sum(counts.values()) and summary["window"]["seed"] == 3

        refused = await refusal(admin, "reset_data", source="tel", dataset="telecom")
        assert "confirm=true" in refused and await _mariadb_counts() == counts
        emptied = await call(admin, "reset_data", source="tel", dataset="telecom", confirm=True)
        after = await call(admin, "summary_snapshot", source="tel")
    assert list(emptied["tables"]) == ["network_events", "revenue", "customers"]  # children first
    assert emptied["tables"] == {table: {"before": counts[table], "after": 0} for table in TABLES}
    assert emptied["profiles_refreshed"] == ["tel"]
    assert await _mariadb_counts() == dict.fromkeys(TABLES, 0)
    assert after["rows"] == 0 and after["window"] is None


async def test_reset_data_empties_the_telecom_files(telecom_runtime) -> None:
    folder = telecom_runtime.sources.source("telfiles").directory
    async with _client(telecom_runtime) as admin:
        await call(admin, "generate_data", dataset="telecom", source="telfiles", customers=40, seed=9)
        before = {table: len(rows) for table, rows in _file_rows(folder).items()}
        emptied = await call(admin, "reset_data", source="telfiles", dataset="telecom", confirm=True)
        summary = await call(admin, "summary_snapshot", source="telfiles")
    assert before["customers"] == 40 and all(before.values())
    assert emptied["tables"] == {table: {"before": before[table], "after": 0} for table in TABLES}
    assert {table: len(rows) for table, rows in _file_rows(folder).items()} == dict.fromkeys(TABLES, 0)
    assert summary["rows"] == 0 and summary["window"] is None


async def test_refusals_are_one_line_and_change_nothing(telecom_runtime) -> None:
    shop_folder = telecom_runtime.sources.source("shopfiles").directory
    async with _client(telecom_runtime) as admin:
        await call(admin, "generate_data", dataset="telecom", source="tel", customers=30, seed=1)
        await call(admin, "generate_data", dataset="shop", source="shopfiles", customers=50, seed=2)
        counts = await _mariadb_counts()
        shop_customers = _parquet_count(shop_folder / "customers.parquet")
        no_write = await refusal(admin, "generate_data", dataset="telecom", source="telro", customers=10)
        no_reset = await refusal(admin, "reset_data", source="telro", dataset="telecom", confirm=True)
        over_shop = await refusal(admin, "generate_data", dataset="telecom", source="shopfiles", customers=10)
        reset_shop = await refusal(admin, "reset_data", source="shopfiles", dataset="telecom", confirm=True)
        unknown = await refusal(admin, "generate_data", dataset="telecom", source="nowhere", customers=10)
        shop_over = await refusal(admin, "generate_data", dataset="shop", source="tel", customers=10)
        shop_reset = await refusal(admin, "reset_data", source="tel", dataset="shop", confirm=True)
        async with _client(telecom_runtime, "analyst") as analyst:
            not_admin = await refusal(analyst, "reset_data", source="tel", dataset="telecom", confirm=True)
    for message in (no_write, no_reset, over_shop, reset_shop, unknown, not_admin, shop_over, shop_reset):
        assert "\n" not in message
    assert "telecom dataset's customers" in shop_over and "telecom dataset's customers" in shop_reset
    assert "write_url" in no_write and "telro" in no_write and "write_url" in no_reset
    assert "another dataset" in over_shop and "another dataset" in reset_shop
    assert "nowhere" in unknown and "tel" in unknown
    assert "admin" in not_admin
    assert await _mariadb_counts() == counts
    assert _parquet_count(shop_folder / "customers.parquet") == shop_customers == 50


async def test_a_postgresql_source_other_than_main_is_refused_in_one_line(tmp_path: Path) -> None:
    url = SecretStr("postgresql://reader@127.0.0.1:5432/elsewhere")
    source = Source(name="pg", kind="postgresql", url=url, redacted_url="pg", write_url=url)
    with pytest.raises(InvalidInput) as checked:
        check_telecom_source(source)
    with pytest.raises(InvalidInput) as loaded:
        await load_telecom(source, generate(make_plan(5, 1)))
    for error in (checked.value, loaded.value):
        assert "postgresql" in error.message and "main" in error.message and "\n" not in error.message
    check_telecom_source(source.model_copy(update={"name": "main"}))  # main's telecom is the built-in one


def test_the_seed_command_loads_telecom_into_a_files_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "telecom"
    folder.mkdir()
    sources = tmp_path / "sources.toml"
    sources.write_text(f'[sources.telfiles]\nurl = "files://{folder}"\n')
    monkeypatch.setenv("ANALYTICS_MCP_SOURCES", str(sources))
    monkeypatch.setenv("ANALYTICS_MCP_HOME", str(tmp_path / "home"))
    argv = ["seed", "--dataset", "telecom", "--source", "telfiles", "--customers", "70", "--seed", "4"]
    assert cli_main([*argv, "--no-progress"]) == 0
    assert "loaded 70 customers" in capsys.readouterr().out
    written = _file_rows(folder)
    assert len(written["customers"]) == 70 and all(written.values())
    assert (
        cli_main(["seed", "--dataset", "telecom", "--source", "nosuch", "--customers", "5", "--seed", "1"])
        == 1
    )
    assert "source 'nosuch' not found" in capsys.readouterr().err
