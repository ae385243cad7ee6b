"""Metric models (issue 22): YAML validated at load with one-line errors; the shop model's analyses compiled
to PostgreSQL, MariaDB and DuckDB give the numbers an independent pandas/scipy computation on the raw rows
gives, identically on all three; the telecom model on main gives the hard-wired runners' numbers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import math
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from analytics.parameters import parse_parameters
from core.errors import InvalidInput, QueryRefused
from mcp_server.runtime import Runtime
from tests.engines.mariadb import HOST, PORT, scratch
from warehouse import aggregates
from warehouse.engines import RelationRules
from warehouse.engines.duckdb_files import FilesEngine
from warehouse.engines.mysql import MySQLEngine
from warehouse.engines.postgres import PostgresEngine
from warehouse.models import ModelError, parse_model, shipped_model
from warehouse.models.run import MainDatabase, model_support, run_modelled
from warehouse.sources import SourceConfigError, load_sources, parse_sources, watch

TOLERANCE = 1e-6

# -- model validation ----------------------------------------------------------------------------

GOOD = """
name: tiny
version: 3
customer: {relation: people, key: id, signup_time: joined, segments: [region]}
activity: {relation: visits, customer_key: person_id, time: at}
churn: {inactive_days: 30}
"""


def test_the_shipped_models_load_for_every_dialect() -> None:
    telecom, shop = shipped_model("telecom"), shipped_model("shop")
    assert (telecom.name, telecom.version, telecom.customer.relation) == ("telecom", "1", "customers")
    assert (
        telecom.churn is not None and telecom.revenue is not None and telecom.revenue.kind == "service_type"
    )
    assert shop.customer.segments == ("country", "city", "first_payment_method")
    assert shop.revenue is not None and shop.revenue.is_select()
    assert getattr(shop.churn, "inactive_days", None) == 90


def test_a_good_model_loads() -> None:
    model = parse_model(GOOD, "'tiny.yaml'")
    assert model.version == "3" and model.revenue is None and model.customer.segments == ("region",)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("relation: people, ", ""), "customer.relation: is required"),
        (GOOD.replace("{inactive_days: 30}", "{after: 30}"), "churn: unknown churn form (after)"),
        (GOOD.replace("customer: {", "customer: [{"), "not valid YAML at line"),
        (
            GOOD.replace(
                "relation: visits",
                'relation: "WITH gone AS (DELETE FROM visits RETURNING *) SELECT * FROM gone"',
            ),
            "activity.relation: the postgres guard refuses it",
        ),
        (
            GOOD.replace("relation: visits", 'relation: "DELETE FROM visits"'),
            "activity.relation: 'DELETE FROM visits' is neither",
        ),
        (
            GOOD.replace("relation: visits", 'relation: "SELECT * FROM visits; DROP TABLE visits"'),
            "activity.relation:",
        ),
        (
            GOOD.replace("activity: {relation: visits, customer_key: person_id, time: at}\n", ""),
            "churn.inactive_days needs an activity",
        ),
        (GOOD.replace("key: id", "key: id; drop"), "customer.key: 'id; drop' is not a column name"),
        (GOOD + "colour: red\n", "colour: unknown field"),
    ],
)
def test_each_bad_model_is_one_line_naming_the_field(text: str, expected: str) -> None:
    with pytest.raises(ModelError) as caught:
        parse_model(text, "'tiny.yaml'")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("model 'tiny.yaml': ")
    assert expected in message, message


def test_a_source_names_its_model_and_a_bad_one_is_one_line_naming_source_and_field(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(GOOD)
    (tmp_path / "bad.yaml").write_text(GOOD.replace("{inactive_days: 30}", "{flag: gone}"))
    folder = tmp_path / "files"
    folder.mkdir()
    registry = parse_sources(
        b'[sources.a]\nurl = "files://files"\nmodel = "shop"\n[sources.b]\nurl = "files://files"\nmodel = "mine.yaml"\n',
        {},
        base=tmp_path,
    )
    assert registry.get("a").metric_model == shipped_model("shop")
    assert hash(registry.get("a")) == hash(registry.get("a").model_copy())  # sources stay hashable
    assert registry.get("b").metric_model is not None and registry.get("b").metric_model.name == "tiny"
    with pytest.raises(SourceConfigError) as caught:
        parse_sources(b'[sources.c]\nurl = "files://files"\nmodel = "bad.yaml"\n', {}, base=tmp_path)
    assert str(caught.value).startswith(
        "ANALYTICS_MCP_SOURCES: [sources.c] model: model 'bad.yaml': churn.date"
    )
    with pytest.raises(SourceConfigError, match=r"\[sources.c\] model: model 'nope.yaml': cannot read"):
        parse_sources(b'[sources.c]\nurl = "files://files"\nmodel = "nope.yaml"\n', {}, base=tmp_path)


async def test_an_edit_of_a_model_file_reloads_the_sources_and_a_bad_one_keeps_them(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    (tmp_path / "mine.yaml").write_text(GOOD)
    toml = tmp_path / "sources.toml"
    toml.write_text('[sources.a]\nurl = "files://files"\nmodel = "mine.yaml"\n')
    current = load_sources(toml, {})
    seen: list[Any] = []
    watcher = asyncio.create_task(watch(toml, seen.append, env={}, current=current, interval=0.02))
    try:
        (tmp_path / "mine.yaml").write_text(GOOD.replace("version: 3", "version: 4"))
        async with asyncio.timeout(10):
            while not seen:
                await asyncio.sleep(0.02)
        assert seen[0].get("a").metric_model.version == "4"
        (tmp_path / "mine.yaml").write_text(GOOD.replace("{inactive_days: 30}", "{after: 30}"))
        await asyncio.sleep(0.3)
        assert len(seen) == 1  # a model that does not load keeps the sources as they were
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


def test_what_a_model_supports_is_listed_per_analysis() -> None:
    support = model_support(shipped_model("shop"))
    assert support["churn_rate"] == {
        "segments": ["country", "city", "first_payment_method"],
        "supported": True,
    }
    assert support["correlation"]["columns"] == [
        "tenure_days",
        "event_count",
        "total_revenue",
        "is_churned",
        "order_total",
    ]
    bare = model_support(parse_model(GOOD.replace("churn: {inactive_days: 30}\n", ""), "'tiny.yaml'"))
    assert bare["retention"] == {
        "segments": ["region"],
        "supported": False,
        "missing": "the model's churn definition",
    }
    assert bare["segment_compare"]["metrics"] == ["event_count"] and bare["segment_compare"]["supported"]
    assert bare["arpu"]["missing"] == "the model's revenue definition"


# -- a small shop, the same rows in every engine ---------------------------------------------------

COUNTRIES = {"DE": ["Berlin", "Hamburg"], "FR": ["Paris", "Lyon"], "IT": ["Rome", "Milan"]}
METHODS = ["card", "paypal", "bank_transfer"]
START = dt.datetime(2024, 1, 1)
END = dt.datetime(2025, 6, 30, 23, 59, 59)


def shop_rows(customers: int = 360, seed: int = 11) -> dict[str, pd.DataFrame]:
    """customers, orders, payments with the issue's columns; Italians order again less often."""
    rng = np.random.default_rng(seed)
    people, orders, payments = [], [], []
    order_id = payment_id = 0
    for customer_id in range(1, customers + 1):
        country = list(COUNTRIES)[customer_id % 3]
        city = COUNTRIES[country][int(rng.integers(2))]
        created = START + dt.timedelta(seconds=int(rng.integers(0, 300 * 86_400)))
        people.append(
            (
                customer_id,
                f"c{customer_id}@example.com",
                f"F{customer_id}",
                f"L{customer_id}",
                city,
                country,
                created,
            )
        )
        repeat = 0.55 if country == "IT" else 0.8
        when = created
        method = METHODS[int(rng.integers(3))]
        while True:
            when = when + dt.timedelta(seconds=int(rng.integers(3_600, 120 * 86_400)))
            if when > END:
                break
            order_id += 1
            cancelled = rng.random() < 0.1
            subtotal = decimal.Decimal(int(rng.integers(500, 20_000))) / 100
            tax = (subtotal * decimal.Decimal("0.2")).quantize(decimal.Decimal("0.01"))
            fee = decimal.Decimal("4.90")
            total = subtotal + tax + fee
            orders.append(
                (
                    order_id,
                    customer_id,
                    when,
                    "CANCELLED" if cancelled else "DELIVERED",
                    subtotal,
                    tax,
                    fee,
                    total,
                )
            )
            if not cancelled:
                payment_id += 1
                paid = when + dt.timedelta(seconds=int(rng.integers(60, 3 * 86_400)))
                payments.append((payment_id, order_id, method, total, "EUR", paid, f"T{payment_id:08d}"))
            if rng.random() > repeat:
                break
    return {
        "customers": pd.DataFrame(
            people,
            columns=["customer_id", "email", "first_name", "last_name", "city", "country", "created_at"],
        ),
        "orders": pd.DataFrame(
            orders,
            columns=[
                "order_id",
                "customer_id",
                "order_date",
                "status",
                "subtotal",
                "tax",
                "shipping_fee",
                "total",
            ],
        ),
        "payments": pd.DataFrame(
            payments, columns=["payment_id", "order_id", "method", "amount", "currency", "paid_at", "txn_ref"]
        ),
    }


COLUMN_TYPES = {
    "customer_id": "BIGINT",
    "order_id": "BIGINT",
    "payment_id": "BIGINT",
    "email": "VARCHAR(200)",
    "first_name": "VARCHAR(100)",
    "last_name": "VARCHAR(100)",
    "city": "VARCHAR(100)",
    "country": "VARCHAR(100)",
    "status": "VARCHAR(20)",
    "method": "VARCHAR(40)",
    "currency": "VARCHAR(3)",
    "txn_ref": "VARCHAR(40)",
    "created_at": "TIMESTAMP",
    "order_date": "TIMESTAMP",
    "paid_at": "TIMESTAMP",
    "subtotal": "DECIMAL(12,2)",
    "tax": "DECIMAL(12,2)",
    "shipping_fee": "DECIMAL(12,2)",
    "total": "DECIMAL(12,2)",
    "amount": "DECIMAL(12,2)",
}


def _create(table: str, frame: pd.DataFrame, mysql: bool = False) -> str:
    columns = ", ".join(
        f"{name} {'DATETIME' if mysql and COLUMN_TYPES[name] == 'TIMESTAMP' else COLUMN_TYPES[name]}"
        for name in frame.columns
    )
    return f"CREATE TABLE {table} ({columns}, PRIMARY KEY ({frame.columns[0]}))"


def _records(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    return [
        tuple(value.to_pydatetime() if isinstance(value, pd.Timestamp) else value for value in row)
        for row in frame.itertuples(index=False)
    ]


@pytest.fixture(scope="module")
def rows() -> dict[str, pd.DataFrame]:
    return shop_rows()


@pytest.fixture(scope="module")
async def postgres_shop(
    rows: dict[str, pd.DataFrame], create_database: Callable[[], Any]
) -> AsyncIterator[PostgresEngine]:
    """The shop in schema `shop` of a scratch database, read by a login role that may only SELECT."""
    url = await create_database()
    reader, password = f"amcp_models_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE SCHEMA shop")
        for table, frame in rows.items():
            await conn.execute(_create(f"shop.{table}", frame))
            await conn.copy_records_to_table(table, schema_name="shop", records=_records(frame))
        await conn.execute(f"CREATE ROLE {reader} LOGIN PASSWORD '{password}'")
        await conn.execute(f"GRANT USAGE ON SCHEMA shop TO {reader}")
        await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA shop TO {reader}")
    finally:
        await conn.close()
    parts = urlsplit(url)
    reader_url = urlunsplit(
        parts._replace(netloc=f"{reader}:{password}@{parts.hostname}:{parts.port or 5432}")
    )
    engine = PostgresEngine(reader_url, name="shop_pg", schemas=("shop",))
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
async def mariadb_shop(rows: dict[str, pd.DataFrame]) -> AsyncIterator[MySQLEngine]:
    """The shop in a scratch MariaDB database."""
    database = f"amcp_models_{uuid.uuid4().hex[:10]}"
    setup = [f"CREATE DATABASE {database}"] + [
        _create(f"{database}.{table}", frame, mysql=True) for table, frame in rows.items()
    ]
    async with scratch(setup, [f"DROP DATABASE IF EXISTS {database}"]):
        from tests.engines.mariadb import root

        conn = await root(database)
        try:
            async with conn.cursor() as cursor:
                for table, frame in rows.items():
                    marks = ", ".join(["%s"] * len(frame.columns))
                    await cursor.executemany(f"INSERT INTO {table} VALUES ({marks})", _records(frame))
        finally:
            conn.close()
        engine = MySQLEngine(f"mysql://root@{HOST}:{PORT}/{database}", name="shop_mariadb")
        await engine.start()
        try:
            yield engine
        finally:
            await engine.close()


@pytest.fixture(scope="module")
async def duckdb_shop(
    rows: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FilesEngine]:
    """The shop as <table>.parquet files (money as DECIMAL(12,2), times as timestamps)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path_factory.mktemp("shop_files")
    for table, frame in rows.items():
        fields = []
        for name in frame.columns:
            kind = COLUMN_TYPES[name]
            if kind.startswith("DECIMAL"):
                fields.append(pa.field(name, pa.decimal128(12, 2)))
            elif kind == "TIMESTAMP":
                fields.append(pa.field(name, pa.timestamp("us")))
            elif kind == "BIGINT":
                fields.append(pa.field(name, pa.int64()))
            else:
                fields.append(pa.field(name, pa.string()))
        pq.write_table(
            pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False),
            folder / f"{table}.parquet",
        )
    engine = FilesEngine("shop_files", folder)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def engines(
    postgres_shop: PostgresEngine, mariadb_shop: MySQLEngine, duckdb_shop: FilesEngine
) -> dict[str, Any]:
    return {"postgresql": postgres_shop, "mariadb": mariadb_shop, "duckdb": duckdb_shop}


ENGINES = ["postgresql", "mariadb", "duckdb"]


async def _run(engine: Any, analysis: str, **parameters: Any) -> Any:
    return await run_modelled(engine, shipped_model("shop"), analysis, parameters, source="shop")


# -- independent computations on the raw rows ----------------------------------------------------


def _as_of(rows: dict[str, pd.DataFrame]) -> pd.Timestamp:
    return max(
        rows["customers"]["created_at"].max(),
        rows["orders"]["order_date"].max(),
        rows["payments"]["paid_at"].max(),
    )


def _churn_frame(rows: dict[str, pd.DataFrame], as_of: pd.Timestamp | None = None) -> pd.DataFrame:
    """Per customer: churned (no order in the 90 days before as_of) and the churn instant (last order)."""
    as_of = _as_of(rows) if as_of is None else as_of
    customers = rows["customers"][rows["customers"]["created_at"] <= as_of].copy()
    last = rows["orders"][rows["orders"]["order_date"] <= as_of].groupby("customer_id")["order_date"].max()
    seen = customers["customer_id"].map(last).fillna(customers["created_at"])
    customers["churned"] = (as_of - seen) >= pd.Timedelta(days=90)
    customers["churn_time"] = seen.where(customers["churned"])
    return customers


def _paid(rows: dict[str, pd.DataFrame]) -> pd.DataFrame:
    paid = rows["payments"].merge(rows["orders"][["order_id", "customer_id"]], on="order_id")
    paid["amount"] = paid["amount"].astype(float)
    return paid


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    mean, n = values.mean(), len(values)
    half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return mean - half, mean + half


# -- the shop on three engines ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ENGINES)
async def test_churn_rate_by_country_matches_pandas(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(engines[name], "churn_rate", group_by="country")
    frame = _churn_frame(rows)
    expected = frame.groupby("country")["churned"].agg(["size", "sum"])
    by_segment = outcome.results["by_segment"]
    assert set(by_segment) == set(expected.index)
    for country, row in expected.iterrows():
        found = by_segment[country]
        assert (found["customers"], found["churned"]) == (row["size"], row["sum"])
        low, high = proportion_confint(row["sum"], row["size"], alpha=0.05, method="wilson")
        assert found["churn_rate"] == pytest.approx(row["sum"] / row["size"], abs=TOLERANCE)
        assert (found["ci_low"], found["ci_high"]) == pytest.approx((low, high), abs=TOLERANCE)
    table = np.array([[row["sum"], row["size"] - row["sum"]] for _, row in expected.iterrows()])
    chi2, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    assert outcome.results["test"]["p_value"] == pytest.approx(p_value, abs=TOLERANCE)
    assert by_segment["IT"]["churn_rate"] > max(
        by_segment["DE"]["churn_rate"], by_segment["FR"]["churn_rate"]
    )
    assert outcome.metadata == {"model": "shop", "model_version": "1"}
    assert outcome.results["as_of"] == _as_of(rows).isoformat()


@pytest.mark.parametrize("name", ENGINES)
async def test_arpu_by_month_matches_pandas(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(engines[name], "arpu", group_by="country")
    paid = _paid(rows)
    paid["month"] = paid["paid_at"].dt.strftime("%Y-%m")
    per_customer = paid.groupby(["month", "customer_id"])["amount"].sum()
    by_month = outcome.results["by_month"]
    assert list(by_month) == sorted(per_customer.index.get_level_values(0).unique())
    for month, values in per_customer.groupby(level=0):
        found = by_month[month]
        assert found["paying_customers"] == len(values)
        assert found["revenue"] == pytest.approx(values.sum(), abs=TOLERANCE)
        assert found["arpu"] == pytest.approx(values.mean(), abs=TOLERANCE)
        if len(values) > 1:
            assert (found["ci_low"], found["ci_high"]) == pytest.approx(
                _t_interval(values.to_numpy()), abs=TOLERANCE
            )
    totals = paid.groupby("customer_id")["amount"].sum()
    assert outcome.results["paying_customers"] == len(totals)
    assert outcome.results["overall_arpu"] == pytest.approx(totals.mean(), abs=TOLERANCE)
    assert outcome.row_count == len(paid)
    methods = paid.groupby(["method", "customer_id"])["amount"].sum().groupby(level=0).mean()
    for method, value in methods.items():
        assert outcome.results["by_service_type"][method]["arpu"] == pytest.approx(value, abs=TOLERANCE)


def _kaplan_meier(days: np.ndarray, events: np.ndarray, day: int) -> float:
    """Product-limit survival at `day`: the product of (1 - deaths / at risk) over event days <= day."""
    survival = 1.0
    for moment in np.unique(days[events & (days <= day)]):
        at_risk = (days >= moment).sum()
        survival *= 1 - (events & (days == moment)).sum() / at_risk
    return survival


@pytest.mark.parametrize("name", ENGINES)
async def test_kaplan_meier_retention_and_cohorts_match_pandas(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(engines[name], "retention", group_by="country", curve_step_days=30, cohort_months=6)
    frame = _churn_frame(rows)
    as_of = _as_of(rows)
    ends = frame["churn_time"].fillna(as_of)
    frame["days"] = np.floor((ends - frame["created_at"]).dt.total_seconds() / 86_400)
    for country, group in [("(all)", frame), *frame.groupby("country")]:
        found = outcome.results["overall"] if country == "(all)" else outcome.results["by_segment"][country]
        days, events = group["days"].to_numpy(), group["churned"].to_numpy(dtype=bool)
        assert (found["customers"], found["churned"]) == (len(group), int(events.sum()))
        for point in found["curve"]:
            assert point["survival"] == pytest.approx(
                _kaplan_meier(days, events, point["day"]), abs=TOLERANCE
            )
            assert point["at_risk"] == int((days >= point["day"]).sum())
    cohorts = {row["cohort"]: row for row in outcome.results["cohorts"]["rows"]}
    frame["cohort"] = frame["created_at"].dt.strftime("%Y-%m")
    for cohort, group in frame.groupby("cohort"):
        start = pd.Timestamp(f"{cohort}-01")
        observable = (as_of.year - (start + pd.DateOffset(months=1)).year) * 12 + (
            as_of.month - (start + pd.DateOffset(months=1)).month
        )
        retained = []
        for k in range(1, max(0, min(6, observable)) + 1):
            gone = sum(
                1
                for created, churn in zip(group["created_at"], group["churn_time"], strict=True)
                if pd.notna(churn) and created + pd.DateOffset(months=k) > churn
            )
            retained.append(len(group) - gone)
        assert cohorts[cohort]["customers"] == len(group)
        assert cohorts[cohort]["retained"] == retained


@pytest.mark.parametrize("name", ENGINES)
async def test_segment_compare_of_arpu_by_country_matches_scipy(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(
        engines[name], "segment_compare", metric="arpu", group_by="country", test="kruskal_wallis"
    )
    totals = _paid(rows).merge(rows["customers"][["customer_id", "country"]], on="customer_id")
    groups = totals.groupby(["country", "customer_id"])["amount"].sum().groupby(level=0)
    statistic, p_value = stats.kruskal(*[values.to_numpy() for _, values in groups])
    results = outcome.results
    assert results["test"]["statistic"] == pytest.approx(statistic, abs=TOLERANCE)
    assert results["test"]["p_value"] == pytest.approx(p_value, abs=TOLERANCE)
    for country, values in groups:
        segment = results["segments"][country]
        assert segment["customers"] == len(values)
        assert segment["mean"] == pytest.approx(values.mean(), abs=TOLERANCE)


@pytest.mark.parametrize("name", ENGINES)
async def test_the_monthly_arpu_trend_matches_pandas(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(engines[name], "trend", metric="arpu", grain="month")
    paid = _paid(rows)
    paid["bucket"] = paid["paid_at"].dt.to_period("M").dt.start_time
    months = paid.groupby("bucket").agg(revenue=("amount", "sum"), customers=("customer_id", "nunique"))
    expected = (months["revenue"] / months["customers"]).reindex(
        pd.date_range(months.index.min(), months.index.max(), freq="MS")
    )
    series = outcome.results["series"]
    assert [pd.Timestamp(point["bucket"]) for point in series] == list(expected.index)
    for point, value in zip(series, expected, strict=True):
        assert point["value"] == pytest.approx(value, abs=TOLERANCE)
    x = np.arange(len(expected), dtype=float)
    fit = stats.linregress(x, expected.to_numpy())
    assert outcome.results["trend"]["slope"] == pytest.approx(fit.slope, abs=TOLERANCE)


@pytest.mark.parametrize("name", ENGINES)
async def test_correlation_of_per_customer_features_matches_pandas(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(engines[name], "correlation", method="pearson")
    frame = _churn_frame(rows).set_index("customer_id")
    as_of = _as_of(rows)
    features = pd.DataFrame(
        {
            "tenure_days": (frame["churn_time"].fillna(as_of) - frame["created_at"]).dt.total_seconds()
            / 86_400,
            "event_count": rows["orders"].groupby("customer_id").size().reindex(frame.index, fill_value=0),
            "total_revenue": _paid(rows)
            .groupby("customer_id")["amount"]
            .sum()
            .reindex(frame.index, fill_value=0.0),
            "is_churned": frame["churned"].astype(float),
            "order_total": rows["orders"]
            .assign(total=rows["orders"]["total"].astype(float))
            .groupby("customer_id")["total"]
            .mean(),
        }
    )
    matrix = outcome.results["matrix"]
    assert set(matrix) == set(features.columns)
    for left in features.columns:
        for right in features.columns:
            if left != right:
                complete = features[[left, right]].dropna()
                r, _ = stats.pearsonr(complete[left], complete[right])
                assert matrix[left][right] == pytest.approx(r, abs=TOLERANCE)


@pytest.mark.parametrize("name", ENGINES)
async def test_churn_drivers_odds_ratios_match_statsmodels(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    import statsmodels.api as sm

    outcome = await _run(
        engines[name], "churn_drivers", features=["event_count", "total_revenue"], cv_folds=3
    )
    frame = _churn_frame(rows).set_index("customer_id")
    design = pd.DataFrame(
        {
            "event_count": rows["orders"].groupby("customer_id").size().reindex(frame.index, fill_value=0),
            "total_revenue": _paid(rows)
            .groupby("customer_id")["amount"]
            .sum()
            .reindex(frame.index, fill_value=0.0),
        }
    ).astype(float)
    standardised = (design - design.mean()) / design.std(ddof=1)
    fit = sm.Logit(frame["churned"].astype(float), sm.add_constant(standardised)).fit(disp=0)
    found = {entry["term"]: entry for entry in outcome.results["coefficients"]}
    for term in ("event_count", "total_revenue"):
        assert found[term]["odds_ratio"] == pytest.approx(math.exp(fit.params[term]), rel=1e-5)
        assert found[term]["p_value"] == pytest.approx(fit.pvalues[term], abs=TOLERANCE)
    assert outcome.results["customers"] == len(frame)


async def test_the_three_engines_give_identical_answers(engines: dict[str, Any]) -> None:
    for analysis, parameters in [
        ("churn_rate", {"group_by": "city", "monthly": True}),
        ("arpu", {"group_by": "first_payment_method", "start_date": "2024-03-01", "end_date": "2025-02-28"}),
        ("retention", {"group_by": "first_payment_method"}),
        ("segment_compare", {"metric": "churn", "group_by": "country"}),
        ("segment_compare", {"metric": "tenure_days", "group_by": "city"}),
        ("segment_compare", {"metric": "event_count", "group_by": "country"}),
        ("trend", {"metric": "churn", "grain": "month"}),
        ("trend", {"metric": "arpu", "grain": "week", "start_date": "2024-06-01"}),
        ("forecast", {"metric": "arpu", "grain": "month", "horizon": 3}),
        ("correlation", {"method": "spearman"}),
        ("churn_drivers", {"features": ["event_count", "total_revenue", "order_total"]}),
    ]:
        answers = [(await _run(engines[name], analysis, **parameters)).results for name in ENGINES]
        assert _differences(answers[1], answers[0]) == [], (analysis, "mariadb")
        assert _differences(answers[2], answers[0]) == [], (analysis, "duckdb")


def _differences(left: Any, right: Any, path: str = "") -> list[str]:
    """Where two answers differ: numbers by more than TOLERANCE (relative for large ones), anything else at all."""
    if isinstance(left, dict) and isinstance(right, dict):
        if set(left) != set(right):
            return [f"{path}: keys {sorted(set(left) ^ set(right))}"]
        return [found for key in left for found in _differences(left[key], right[key], f"{path}.{key}")]
    if isinstance(left, list) and isinstance(right, list):
        if len(left) != len(right):
            return [f"{path}: {len(left)} != {len(right)} items"]
        return [
            found
            for index, pair in enumerate(zip(left, right))
            for found in _differences(*pair, f"{path}[{index}]")
        ]
    numbers = (int, float)
    if isinstance(left, numbers) and isinstance(right, numbers) and not isinstance(left, bool):
        if math.isnan(left) and math.isnan(right):
            return []
        return (
            []
            if math.isclose(left, right, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
            else [f"{path}: {left} != {right}"]
        )
    return [] if left == right else [f"{path}: {left!r} != {right!r}"]


@pytest.mark.parametrize("name", ENGINES)
async def test_an_earlier_as_of_counts_churn_at_that_instant(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    as_of = pd.Timestamp("2024-08-15 12:00:00")
    outcome = await _run(engines[name], "churn_rate", group_by="country", as_of=as_of.isoformat())
    expected = _churn_frame(rows, as_of).groupby("country")["churned"].agg(["size", "sum"])
    assert {
        key: (value["customers"], value["churned"]) for key, value in outcome.results["by_segment"].items()
    } == {country: (int(row["size"]), int(row["sum"])) for country, row in expected.iterrows()}
    assert outcome.results["customers"] < len(rows["customers"])  # later sign-ups are not counted
    text = (resources.files("warehouse.models") / "shop.yaml").read_text()
    fixed = parse_model(
        text.replace("inactive_days: 90", f"inactive_days: 90\n  as_of: {as_of.isoformat()}"), "'fixed'"
    )
    again = await run_modelled(engines[name], fixed, "churn_rate", {"group_by": "country"})
    assert again.results["by_segment"] == outcome.results["by_segment"]


async def test_a_model_reading_a_table_its_source_excludes_is_refused_by_the_engine_guard(
    duckdb_shop: FilesEngine,
) -> None:
    engine = FilesEngine("no_payments", duckdb_shop.directory, rules=RelationRules(("*",), ("payments",)))
    await engine.start()
    try:
        with pytest.raises(QueryRefused) as caught:
            await run_modelled(engine, shipped_model("shop"), "churn_rate", {"group_by": "country"})
    finally:
        await engine.close()
    assert "payments" in str(caught.value) and "\n" not in str(caught.value)


async def test_an_analysis_without_its_part_of_the_model_is_refused_in_one_line(
    engines: dict[str, Any],
) -> None:
    bare = parse_model(
        "name: bare\nversion: 1\ncustomer: {relation: customers, key: customer_id, signup_time: created_at, segments: [country]}\n",
        "'bare'",
    )
    with pytest.raises(
        InvalidInput,
        match=r"^churn_rate on source 'shop' needs the model's churn definition; model 'bare' has none$",
    ):
        await run_modelled(engines["duckdb"], bare, "churn_rate", {}, source="shop")
    with pytest.raises(InvalidInput, match=r"^arpu on source 'shop' needs the model's revenue definition"):
        await run_modelled(engines["duckdb"], bare, "arpu", {}, source="shop")
    with pytest.raises(
        InvalidInput,
        match=r"cannot group by 'account_type' on source 'shop'; the model's segments: country, city",
    ):
        await _run(engines["duckdb"], "churn_rate", group_by="account_type")
    with pytest.raises(
        InvalidInput,
        match=r"^segment_compare on source 'shop' compares metric arpu, churn, tenure_days, event_count; got 'quality'$",
    ):
        await _run(engines["duckdb"], "segment_compare", metric="quality")
    with pytest.raises(
        InvalidInput, match=r"^trend on source 'shop' follows metric arpu, churn; got 'usage'$"
    ):
        await _run(engines["duckdb"], "trend", metric="usage")
    with pytest.raises(InvalidInput, match=r"^correlation on this model takes columns from: tenure_days, "):
        await _run(engines["duckdb"], "correlation", columns=["age", "tenure_days"])
    with pytest.raises(InvalidInput, match=r"^unknown parameter 'colour' for arpu"):
        await _run(engines["duckdb"], "arpu", colour="red")
    with pytest.raises(
        InvalidInput, match=r"^network_quality on source 'shop' is not available for modelled sources"
    ):
        await _run(engines["duckdb"], "network_quality")


# -- the telecom model on main against the hard-wired runners --------------------------------------


@pytest.mark.parametrize(
    ("analysis", "parameters"),
    [
        ("churn_rate", {"group_by": "account_type", "monthly": True}),
        ("churn_rate", {"group_by": "location"}),
        ("arpu", {"group_by": "account_type"}),
        ("arpu", {"group_by": "gender", "start_date": "2024-02-01", "end_date": "2024-09-30"}),
        ("retention", {"group_by": "account_type"}),
        ("segment_compare", {"metric": "arpu", "group_by": "location"}),
        ("segment_compare", {"metric": "churn", "group_by": "account_type"}),
        ("trend", {"metric": "arpu", "grain": "month"}),
        ("trend", {"metric": "churn", "grain": "week"}),
        ("forecast", {"metric": "arpu", "grain": "month", "horizon": 4}),
        ("correlation", {"columns": ["tenure_days", "event_count", "total_revenue", "is_churned"]}),
        ("churn_drivers", {"features": ["tenure_days", "event_count", "total_revenue"]}),
    ],
)
async def test_the_telecom_model_on_main_gives_the_hard_wired_numbers(
    runtime: Runtime, analysis: str, parameters: dict[str, Any]
) -> None:
    hard_wired = await aggregates.RUNNERS[analysis](runtime.db, parse_parameters(analysis, parameters))
    modelled = await run_modelled(
        MainDatabase(runtime.db), shipped_model("telecom"), analysis, parameters, source="main"
    )
    assert _differences(modelled.results, hard_wired.results) == []
    assert modelled.row_count == hard_wired.row_count
    assert modelled.summary == hard_wired.summary


# -- anomalies on a modelled source ----------------------------------------------------------------


def _daily(
    rows: dict[str, pd.DataFrame], metric: str, grain: str = "day", start: str | None = None
) -> pd.DataFrame:
    """value and rows per bucket of an anomaly metric, from the raw rows, over every bucket in range."""
    if metric == "revenue":
        frame = _paid(rows).rename(columns={"paid_at": "at"})
    elif metric == "signups":
        frame = rows["customers"].rename(columns={"created_at": "at"})
    else:
        frame = rows["orders"].rename(columns={"order_date": "at"})
    if start is not None:
        frame = frame[(frame["at"] >= start) & (frame["at"] < pd.Timestamp(start) + pd.DateOffset(months=1))]
    frame = frame.assign(bucket=frame["at"].dt.floor("h" if grain == "hour" else "D"))
    grouped = frame.groupby("bucket")
    if metric == "revenue":
        value = grouped["amount"].sum()
    elif metric == "active_customers":
        value = grouped["customer_id"].nunique()
    else:
        value = grouped.size()
    totals = pd.DataFrame({"value": value.astype(float), "rows": grouped.size()})
    index = pd.date_range(totals.index.min(), totals.index.max(), freq="h" if grain == "hour" else "D")
    return totals.reindex(index).fillna(0.0)


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("metric", ["revenue", "activity", "active_customers", "signups"])
async def test_anomaly_series_of_each_metric_match_pandas(
    name: str, metric: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(engines[name], "anomalies", metric=metric, grain="day", threshold=3.0)
    expected = _daily(rows, metric)
    results = outcome.results
    assert (results["metric"], results["grain"], results["buckets"]) == (metric, "day", len(expected))
    assert [pd.Timestamp(point["bucket"]) for point in results["series"]] == list(expected.index)
    for point, (value, count) in zip(results["series"], expected.itertuples(index=False), strict=True):
        assert point["value"] == pytest.approx(value, abs=TOLERANCE)
        assert point["events"] == count
    assert results["empty_bucket_count"] == int((expected["rows"] == 0).sum())
    assert outcome.row_count == int(expected["rows"].sum())
    assert outcome.metadata["model"] == "shop"


@pytest.mark.parametrize("name", ENGINES)
async def test_hourly_revenue_buckets_match_pandas(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    outcome = await _run(
        engines[name],
        "anomalies",
        metric="revenue",
        grain="hour",
        start_date="2024-09-01",
        end_date="2024-09-30",
    )
    expected = _daily(rows, "revenue", grain="hour", start="2024-09-01")
    series = outcome.results["series"]
    assert [pd.Timestamp(point["bucket"]) for point in series] == list(expected.index)
    assert [point["value"] for point in series] == pytest.approx(list(expected["value"]), abs=TOLERANCE)


@pytest.mark.parametrize("name", ENGINES)
async def test_a_planted_revenue_spike_is_the_top_anomaly(
    name: str, engines: dict[str, Any], rows: dict[str, pd.DataFrame]
) -> None:
    paid = _paid(rows)
    planted = paid[paid["paid_at"] >= "2025-01-15"].iloc[0]
    text = (resources.files("warehouse.models") / "shop.yaml").read_text()
    spiked = parse_model(
        text.replace(
            "SELECT o.customer_id, p.amount, p.paid_at",
            f"SELECT o.customer_id, p.amount * CASE WHEN p.payment_id = {int(planted['payment_id'])} "
            "THEN 200 ELSE 1 END AS amount, p.paid_at",
        ),
        "'spiked'",
    )
    outcome = await run_modelled(
        engines[name], spiked, "anomalies", {"metric": "revenue", "direction": "high"}, source="shop"
    )
    day = planted["paid_at"].floor("D")
    paid.loc[paid["payment_id"] == planted["payment_id"], "amount"] *= 200
    expected = paid[paid["paid_at"].dt.floor("D") == day]["amount"].sum()
    top = outcome.results["anomalies"][0]
    assert pd.Timestamp(top["bucket"]) == day and top["direction"] == "high"
    assert top["value"] == pytest.approx(expected, abs=TOLERANCE)
    assert outcome.summary.startswith(f"{outcome.results['anomaly_count']} of ")


async def test_anomalies_refuse_a_metric_the_model_lacks_in_one_line(engines: dict[str, Any]) -> None:
    with pytest.raises(
        InvalidInput,
        match=r"^anomalies on source 'shop' follows metric revenue, activity, active_customers, signups; "
        r"got 'quality'$",
    ):
        await _run(engines["duckdb"], "anomalies", metric="quality")
    bare = parse_model(GOOD, "'tiny'")
    with pytest.raises(
        InvalidInput, match=r"^anomalies on source 'shop' needs the model's revenue definition; model 'tiny'"
    ):
        await run_modelled(engines["duckdb"], bare, "anomalies", {"metric": "revenue"}, source="shop")
    assert model_support(bare)["anomalies"] == {
        "metrics": ["activity", "active_customers", "signups"],
        "supported": True,
    }


async def test_revenue_anomalies_of_the_telecom_model_on_main_follow_plain_sql(runtime: Runtime) -> None:
    outcome = await run_modelled(
        MainDatabase(runtime.db),
        shipped_model("telecom"),
        "anomalies",
        {"metric": "revenue", "grain": "day"},
        source="main",
    )
    async with runtime.db.pool.acquire() as conn:
        found = await conn.fetch(
            "SELECT date_trunc('day', transaction_date) AS bucket, sum(amount)::float8 AS value, "
            "count(*) AS n FROM revenue GROUP BY 1 ORDER BY 1"
        )
    plain = pd.DataFrame([dict(row) for row in found]).set_index("bucket")
    plain = plain.reindex(pd.date_range(plain.index.min(), plain.index.max(), freq="D")).fillna(0.0)
    series = outcome.results["series"]
    assert [pd.Timestamp(point["bucket"]) for point in series] == list(plain.index)
    assert [point["value"] for point in series] == pytest.approx(list(plain["value"]), abs=TOLERANCE)
    assert [point["events"] for point in series] == [int(n) for n in plain["n"]]
    assert outcome.metadata["model"] == "telecom" and outcome.results["metric"] == "revenue"
