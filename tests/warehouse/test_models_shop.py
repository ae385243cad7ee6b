"""The shop model on the generated shop (warehouse/shop.py, loaded by warehouse/shop_store.py) in PostgreSQL,
MariaDB and DuckDB files: churn by country, ARPU by month, retention and orders per customer equal pandas on
the generated rows, and the planted effects (Italy churns more; bank transfer payers order less) are found."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np
import pandas as pd
import pytest
from pydantic import SecretStr

from analytics.bands import MISSING
from tests.engines.mariadb import HOST, PORT, scratch
from tests.warehouse.test_models import TOLERANCE, _as_of, _churn_frame, _differences, _paid
from warehouse.engines.duckdb_files import FilesEngine
from warehouse.engines.mysql import MySQLEngine
from warehouse.engines.postgres import PostgresEngine
from warehouse.models import shipped_model
from warehouse.models.run import run_modelled
from warehouse.shop import CHURNING_COUNTRY, LOW_REPEAT_METHOD, NULL_TIME, generate_shop, shop_plan
from warehouse.shop_store import load_shop
from warehouse.sources import Source

PLAN = shop_plan(customers=4_000, seed=22)
ENGINES = ["postgresql", "mariadb", "duckdb"]


def _frames() -> dict[str, pd.DataFrame]:
    """The generated rows the analyses read, as an analyst would load them: times, money in currency units."""
    tables = generate_shop(PLAN)
    frames = {}
    for table in ("customers", "orders", "payments"):
        columns = {}
        for name, values in tables[table].items():
            if name in ("created_at", "order_date", "paid_at"):
                seconds = np.where(values == NULL_TIME, np.nan, values.astype(float))
                columns[name] = pd.to_datetime(seconds, unit="s")
            elif name in ("amount", "total", "subtotal", "tax", "shipping_fee"):
                columns[name] = values / 100
            else:
                columns[name] = values
        frames[table] = pd.DataFrame(columns)
    return frames


@pytest.fixture(scope="module")
def rows() -> dict[str, pd.DataFrame]:
    return _frames()


def _source(name: str, kind: str, url: str, schemas: tuple[str, ...] = ()) -> Source:
    return Source(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        url=SecretStr(url),
        redacted_url=name,
        schemas=schemas,
        write_url=SecretStr(url) if kind != "files" else None,
    )


@pytest.fixture(scope="module")
async def postgres_engine(create_database: Callable[[], Any]) -> AsyncIterator[PostgresEngine]:
    url = await create_database()
    await load_shop(_source("shop_pg", "postgresql", url, ("shop",)), PLAN)
    reader, password = f"amcp_models_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE ROLE {reader} LOGIN PASSWORD '{password}'")
        await conn.execute(f"GRANT USAGE ON SCHEMA shop TO {reader}")
        await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA shop TO {reader}")
    finally:
        await conn.close()
    parts = urlsplit(url)
    engine = PostgresEngine(
        urlunsplit(parts._replace(netloc=f"{reader}:{password}@{parts.hostname}:{parts.port or 5432}")),
        name="shop_pg",
        schemas=("shop",),
    )
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(f"DROP OWNED BY {reader}")
            await conn.execute(f"DROP ROLE IF EXISTS {reader}")
        finally:
            await conn.close()


@pytest.fixture(scope="module")
async def mariadb_engine() -> AsyncIterator[MySQLEngine]:
    database = f"amcp_models_{uuid.uuid4().hex[:10]}"
    url = f"mysql://root@{HOST}:{PORT}/{database}"
    async with scratch([f"CREATE DATABASE {database}"], [f"DROP DATABASE IF EXISTS {database}"]):
        await load_shop(_source("shop_mariadb", "mysql", url, (database,)), PLAN)
        engine = MySQLEngine(url, name="shop_mariadb")
        await engine.start()
        try:
            yield engine
        finally:
            await engine.close()


@pytest.fixture(scope="module")
async def duckdb_engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[FilesEngine]:
    folder = tmp_path_factory.mktemp("generated_shop")
    await load_shop(_source("shop_files", "files", f"files://{folder}"), PLAN)
    engine = FilesEngine("shop_files", folder)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def engines(
    postgres_engine: PostgresEngine, mariadb_engine: MySQLEngine, duckdb_engine: FilesEngine
) -> dict[str, Any]:
    return {"postgresql": postgres_engine, "mariadb": mariadb_engine, "duckdb": duckdb_engine}


async def _run(engine: Any, analysis: str, **parameters: Any) -> Any:
    return await run_modelled(engine, shipped_model("shop"), analysis, parameters, source="shop")


@pytest.mark.parametrize("name", ENGINES)
async def test_churn_by_country_on_the_generated_shop_matches_pandas_and_italy_churns_most(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(engines[name], "churn_rate", group_by="country")
    expected = _churn_frame(rows).groupby("country")["churned"].agg(["size", "sum"])
    by_segment = outcome.results["by_segment"]
    assert {key: (value["customers"], value["churned"]) for key, value in by_segment.items()} == {
        country: (int(row["size"]), int(row["sum"])) for country, row in expected.iterrows()
    }
    rates = {key: value["churn_rate"] for key, value in by_segment.items()}
    assert max(rates, key=rates.__getitem__) == CHURNING_COUNTRY
    assert outcome.results["test"]["p_value"] < 0.001


@pytest.mark.parametrize("name", ENGINES)
async def test_arpu_by_month_on_the_generated_shop_matches_pandas(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(engines[name], "arpu", group_by="country")
    paid = _paid(rows)
    paid["month"] = paid["paid_at"].dt.strftime("%Y-%m")
    per_customer = paid.groupby(["month", "customer_id"])["amount"].sum().groupby(level=0)
    assert set(outcome.results["by_month"]) == set(per_customer.groups)
    for month, values in per_customer:
        found = outcome.results["by_month"][month]
        assert found["paying_customers"] == len(values)
        assert found["arpu"] == pytest.approx(values.mean(), abs=TOLERANCE)


@pytest.mark.parametrize("name", ENGINES)
async def test_retention_on_the_generated_shop_matches_pandas(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(engines[name], "retention", group_by="country", curve_step_days=60)
    frame = _churn_frame(rows)
    days = np.floor(
        (frame["churn_time"].fillna(_as_of(rows)) - frame["created_at"]).dt.total_seconds() / 86_400
    )
    events = frame["churned"].to_numpy(dtype=bool)
    for point in outcome.results["overall"]["curve"]:
        survival = 1.0
        for moment in np.unique(days[events & (days <= point["day"])]):
            survival *= 1 - (events & (days == moment)).sum() / (days >= moment).sum()
        assert point["survival"] == pytest.approx(survival, abs=TOLERANCE)
        assert point["at_risk"] == int((days >= point["day"]).sum())


async def test_bank_transfer_payers_order_least_and_every_engine_agrees(
    engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    answers = [
        (
            await _run(
                engines[name], "segment_compare", metric="event_count", group_by="first_payment_method"
            )
        ).results
        for name in ENGINES
    ]
    assert _differences(answers[1], answers[0]) == [] and _differences(answers[2], answers[0]) == []
    means = {key: value["mean"] for key, value in answers[0]["segments"].items()}
    paying = {key: value for key, value in means.items() if key != MISSING}  # MISSING: never paid
    assert min(paying, key=paying.__getitem__) == LOW_REPEAT_METHOD
    assert answers[0]["test"]["p_value"] < 0.001
    orders = rows["orders"].groupby("customer_id").size()
    payments = _paid(rows).sort_values(["paid_at", "payment_id"])
    first = payments.groupby("customer_id")["method"].first()
    expected = orders.groupby(first.reindex(orders.index)).mean()
    for method, value in expected.items():
        assert means[method] == pytest.approx(value, abs=TOLERANCE)
