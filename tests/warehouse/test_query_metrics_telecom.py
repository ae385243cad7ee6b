"""query_metrics on the telecom demo in PostgreSQL (the built-in database), MariaDB and DuckDB files, the same
generated rows in each (warehouse/telecom_store.py loads MariaDB and Parquet): every telecom question of the
catalogue (docs/metrics.md) equals a hand-written SQL run on the same engine, and get_record finds a
subscriber with their events and payments as SQL does."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from pydantic import SecretStr

from core.errors import InvalidInput
from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.engines.mariadb import HOST, PORT, scratch
from tests.support import call
from tests.warehouse.test_query_metrics import (
    TOLERANCE,
    _assert_equal,
    _assert_rows,
    _by_key,
    _expected,
    _sql,
)
from warehouse.engines.duckdb_files import FilesEngine
from warehouse.engines.mysql import MySQLEngine
from warehouse.generator import Dataset, generate, make_plan
from warehouse.models import shipped_model
from warehouse.models.metrics import MetricQuery, query_metrics
from warehouse.models.records import get_record
from warehouse.models.run import MainDatabase
from warehouse.sources import Source
from warehouse.telecom_store import load_telecom

CUSTOMERS, SEED = 500, 25
ENGINES = ["postgresql", "mariadb", "duckdb"]
MODEL = shipped_model("telecom")
BILLED = "revenue r JOIN customers c ON c.customer_id = r.customer_id"
EVENTS = "network_events e JOIN customers c ON c.customer_id = e.customer_id"
IN_2025 = "'2025-01-01' AND {column} < '2026-01-01'"


def _in_2025(column: str) -> str:
    return f"{column} >= " + IN_2025.format(column=column)


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return generate(make_plan(CUSTOMERS, SEED))


@pytest.fixture(scope="module")
async def postgres_runtime(make_runtime: Callable[..., Any]) -> AsyncIterator[Runtime]:
    async with make_runtime(customers=CUSTOMERS, seed=SEED) as runtime:  # generate(make_plan(500, 25))
        yield runtime


@pytest.fixture(scope="module")
async def mariadb_engine(dataset: Dataset) -> AsyncIterator[MySQLEngine]:
    database = f"amcp_telecom_{uuid.uuid4().hex[:10]}"
    url = f"mysql://root@{HOST}:{PORT}/{database}"
    source = Source(
        name="telecom_mariadb",
        kind="mysql",
        url=SecretStr(url),
        redacted_url="telecom_mariadb",
        schemas=(database,),
        write_url=SecretStr(url),
    )
    async with scratch([f"CREATE DATABASE {database}"], [f"DROP DATABASE IF EXISTS {database}"]):
        await load_telecom(source, dataset)
        engine = MySQLEngine(url, name="telecom_mariadb")
        await engine.start()
        try:
            yield engine
        finally:
            await engine.close()


@pytest.fixture(scope="module")
def telecom_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("telecom")


@pytest.fixture(scope="module")
async def duckdb_engine(dataset: Dataset, telecom_folder: Path) -> AsyncIterator[FilesEngine]:
    source = Source(
        name="telecom_files", kind="files", url=SecretStr(f"files://{telecom_folder}"), redacted_url="t"
    )
    await load_telecom(source, dataset)
    engine = FilesEngine("telecom_files", telecom_folder)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def engines(
    postgres_runtime: Runtime, mariadb_engine: MySQLEngine, duckdb_engine: FilesEngine
) -> dict[str, Any]:
    return {
        "postgresql": MainDatabase(postgres_runtime.db),
        "mariadb": mariadb_engine,
        "duckdb": duckdb_engine,
    }


async def _ask(engine: Any, **question: Any) -> dict[str, Any]:
    return await query_metrics(engine, MODEL, MetricQuery.model_validate(question), source="telecom")


def _period(grain: str, year: Any, part: Any) -> str:
    month = int(part) if grain == "month" else 3 * int(part) - 2
    return dt.date(int(year), month, 1).isoformat()


async def test_every_engine_holds_the_generated_rows(engines: dict[str, Any], dataset: Dataset) -> None:
    counts = {
        "customers": len(dataset.customers.created_at),
        "network_events": len(dataset.events.event_timestamp),
        "revenue": len(dataset.transactions.transaction_date),
    }
    for name in ENGINES:
        for table, count in counts.items():
            ((found,),) = await _sql(engines[name], f"SELECT COUNT(*) FROM {table}")
            assert int(found) == count, (name, table)
        # The same ids and instants everywhere: the earliest sign-up and its customer.
        ((first, when),) = await _sql(
            engines[name], "SELECT customer_id, created_at FROM customers ORDER BY created_at LIMIT 1"
        )
        index = int(dataset.customers.created_at.argmin())
        assert str(first) == str(uuid.UUID(bytes=dataset.customers.customer_id[index].tobytes()))
        assert when == dt.datetime(2000, 1, 1) + dt.timedelta(
            microseconds=int(dataset.customers.created_at[index])
        )


# The telecom catalogue questions (docs/metrics.md): the call, and SQL whose columns are the group keys, then
# one column per metric in the call's order.
CATALOGUE: list[tuple[dict[str, Any], str]] = [
    (  # #15 revenue, ARPU and churn rate by account type
        {"metrics": ["revenue", "arpu", "churn_rate"], "group_by": ["account_type"]},
        "SELECT b.account_type, b.revenue, b.arpu, CAST(k.churned AS DOUBLE) / k.customers FROM "
        "(SELECT c.account_type, SUM(r.amount) AS revenue, CAST(SUM(r.amount) AS DOUBLE) / COUNT(DISTINCT r.customer_id) "
        f"AS arpu FROM {BILLED} GROUP BY c.account_type) b JOIN "
        "(SELECT account_type, SUM(CASE WHEN is_churned THEN 1 ELSE 0 END) AS churned, COUNT(*) AS customers "
        "FROM customers GROUP BY account_type) k ON k.account_type = b.account_type",
    ),
    (  # #16 network quality and data usage by event type
        {"metrics": ["avg_quality", "data_usage"], "group_by": ["event_type"]},
        "SELECT event_type, AVG(network_quality_score), SUM(data_usage_mb) FROM network_events GROUP BY event_type",
    ),
    (  # #36 churn rate by region, customers who signed up in 2025
        {
            "metrics": ["churn_rate", "customers"],
            "group_by": ["location"],
            "time_range": {"start": "2025-01-01", "end": "2025-12-31"},
        },
        "SELECT location, CAST(SUM(CASE WHEN is_churned THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*), COUNT(*) "
        f"FROM customers WHERE {_in_2025('created_at')} GROUP BY location",
    ),
    (  # #40 share of poor-quality events by account type and event type, 2025
        {
            "metrics": ["poor_quality_share", "poor_quality_events"],
            "group_by": ["account_type", "event_type"],
            "time_range": {"start": "2025-01-01", "end": "2025-12-31"},
        },
        "SELECT c.account_type, e.event_type, "
        "CAST(SUM(CASE WHEN e.network_quality_score < 2.5 THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*), "
        "SUM(CASE WHEN e.network_quality_score < 2.5 THEN 1 ELSE 0 END) "
        f"FROM {EVENTS} WHERE {_in_2025('e.event_timestamp')} GROUP BY c.account_type, e.event_type",
    ),
]


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("number", range(len(CATALOGUE)))
async def test_telecom_catalogue_question_equals_its_sql(
    name: str, number: int, engines: dict[str, Any]
) -> None:
    question, sql = CATALOGUE[number]
    answer = await _ask(engines[name], limit=1000, **question)
    rows = await _sql(engines[name], sql)
    assert rows
    _assert_rows(answer, question["group_by"], question["metrics"], rows)


@pytest.mark.parametrize("name", ENGINES)
async def test_arpu_and_data_usage_by_month_equal_sql(name: str, engines: dict[str, Any]) -> None:
    engine = engines[name]
    arpu = await _ask(
        engine,
        metrics=["arpu", "paying_customers"],
        grain="month",
        time_range={"start": "2025-01-01", "end": "2025-12-31"},
    )
    month = "EXTRACT(YEAR FROM transaction_date), EXTRACT(MONTH FROM transaction_date)"
    rows = await _sql(
        engine,
        f"SELECT {month}, CAST(SUM(amount) AS DOUBLE) / COUNT(DISTINCT customer_id), COUNT(DISTINCT customer_id) "
        f"FROM revenue WHERE {_in_2025('transaction_date')} GROUP BY {month}",
    )
    assert len(rows) == 12
    _assert_rows(
        arpu,
        ["month"],
        ["arpu", "paying_customers"],
        [(_period("month", *row[:2]), *row[2:]) for row in rows],
    )
    usage = await _ask(engine, metrics=["data_usage", "events"], grain="month", limit=1000)
    month = "EXTRACT(YEAR FROM event_timestamp), EXTRACT(MONTH FROM event_timestamp)"
    rows = await _sql(
        engine, f"SELECT {month}, SUM(data_usage_mb), COUNT(*) FROM network_events GROUP BY {month}"
    )
    _assert_rows(
        usage, ["month"], ["data_usage", "events"], [(_period("month", *row[:2]), *row[2:]) for row in rows]
    )


@pytest.mark.parametrize("name", ENGINES)
async def test_churns_per_quarter_by_account_type_are_dated_when_customers_left(
    name: str, engines: dict[str, Any]
) -> None:
    answer = await _ask(
        engines[name],
        metrics=["churns"],
        group_by=["account_type"],
        grain="quarter",
        time_range={"start": "2025-01-01", "end": "2025-12-31"},
    )
    quarter = "EXTRACT(YEAR FROM churn_date), EXTRACT(QUARTER FROM churn_date)"
    rows = await _sql(
        engines[name],
        f"SELECT account_type, {quarter}, COUNT(*) FROM customers WHERE is_churned AND {_in_2025('churn_date')} "
        f"GROUP BY account_type, {quarter}",
    )
    assert rows
    _assert_rows(
        answer,
        ["account_type", "quarter"],
        ["churns"],
        [(kind, _period("quarter", y, q), n) for kind, y, q, n in rows],
    )
    assert answer["notes"] == [
        "'churns' is dated by customers.churn_date (the model's default); it could also be dated by customers.created_at"
    ]


@pytest.mark.parametrize("name", ENGINES)
async def test_revenue_by_service_last_quarter_against_the_quarter_before_equals_sql(
    name: str, engines: dict[str, Any]
) -> None:
    answer = await _ask(
        engines[name],
        metrics=["revenue"],
        group_by=["service_type"],
        time_range="last_quarter",
        as_of="2025-10-20",
        compare_to="previous_period",
    )
    assert answer["time_range"]["start"] == "2025-07-01" and answer["time_range"]["end"] == "2025-09-30"
    # 92 days before 2025-07-01: 2025-03-31 to 2025-06-30.
    assert answer["compare_to"] == {"kind": "previous_period", "start": "2025-03-31", "end": "2025-06-30"}

    async def window(start: str, end: str) -> dict[Any, Any]:
        sql = (
            "SELECT service_type, SUM(amount) FROM revenue "
            f"WHERE transaction_date >= '{start}' AND transaction_date < '{end}' GROUP BY service_type"
        )
        return _expected(await _sql(engines[name], sql))

    now, before = await window("2025-07-01", "2025-10-01"), await window("2025-03-31", "2025-07-01")
    _assert_equal(_by_key(answer, ["service_type"], "revenue"), now)
    _assert_equal(_by_key(answer, ["service_type"], "revenue_previous"), before)
    for row in answer["rows"]:
        change = float(now[row["service_type"]]) - float(before[row["service_type"]])
        assert row["revenue_change"] == pytest.approx(change, abs=TOLERANCE)


@pytest.mark.parametrize("name", ENGINES)
async def test_a_subscriber_comes_with_their_events_and_payments_as_sql_has_them(
    name: str, engines: dict[str, Any]
) -> None:
    engine = engines[name]
    ((customer_id,),) = await _sql(
        engine,
        "SELECT customer_id FROM revenue GROUP BY customer_id ORDER BY COUNT(*) DESC, customer_id LIMIT 1",
    )
    answer = await get_record(engine, MODEL, "customers", str(customer_id), source="telecom")
    assert str(answer["record"]["customer_id"]) == str(customer_id)
    for table, key in (("network_events", "event_id"), ("revenue", "transaction_id")):
        rows = await _sql(
            engine, f"SELECT {key} FROM {table} WHERE customer_id = '{customer_id}' ORDER BY {key}"
        )
        found = answer["children"][table]
        assert [str(row[key]) for row in found["rows"]] == [str(value) for (value,) in rows][:100]
        assert found["truncated"] is (len(rows) > 100)
    ((total,),) = await _sql(engine, f"SELECT SUM(amount) FROM revenue WHERE customer_id = '{customer_id}'")
    paid = sum(row["amount"] for row in answer["children"]["revenue"]["rows"])
    assert paid == pytest.approx(float(total), abs=TOLERANCE)


async def test_the_telecom_loader_refuses_a_postgresql_source_in_one_line(dataset: Dataset) -> None:
    source = Source(
        name="warehouse",
        kind="postgresql",
        url=SecretStr("postgresql://u@h/db"),
        redacted_url="warehouse",
        write_url=SecretStr("postgresql://u@h/db"),
    )
    with pytest.raises(InvalidInput) as refused:
        await load_telecom(source, dataset)
    assert "writes MySQL/MariaDB and files sources" in refused.value.message


async def test_a_telecom_files_source_answers_query_metrics_through_mcp(
    telecom_folder: Path, duckdb_engine: FilesEngine, tmp_path: Path, make_runtime: Callable[..., Any]
) -> None:
    toml = tmp_path / "sources.toml"
    toml.write_text(f'[sources.telecom]\nurl = "files://{telecom_folder}"\nmodel = "telecom"\n')
    async with make_runtime(customers=None, sources_path=toml) as runtime:
        async with Client(app_for(runtime, "analyst").mcp) as client:
            answer = await call(
                client, "query_metrics", source="telecom", metrics=["churn_rate"], group_by=["account_type"]
            )
    rows = await _sql(
        duckdb_engine,
        "SELECT account_type, CAST(SUM(CASE WHEN is_churned THEN 1 ELSE 0 END) AS DOUBLE) / COUNT(*) "
        "FROM customers GROUP BY account_type",
    )
    _assert_equal(_by_key(answer, ["account_type"], "churn_rate"), _expected(rows))
    assert answer["dialect"] == "duckdb"
