"""analyze_data on a registered source: the same seeded orders table in MariaDB, a Parquet file (DuckDB) and a
second PostgreSQL database, analysed on named columns through MCP; every figure checked against pandas,
scipy or plain SQL on the raw rows, and bad names refused in one line before any SQL runs."""

from __future__ import annotations

import datetime as dt
import json
import math
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import numpy as np
import pandas as pd
import pytest
from fastmcp import Client
from scipy import stats as scipy_stats

from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.engines.mariadb import root_fetch, scratch
from tests.support import refusal
from warehouse import source_analysis

SUFFIX = secrets.token_hex(4)
DATABASE = f"amcp_an_{SUFFIX}"
READER = f"amcp_an_reader_{SUFFIX}"
PASSWORD = secrets.token_urlsafe(12)
ROWS = 3_000
SOURCES = ("shop", "files", "ledger")  # MariaDB, DuckDB files, PostgreSQL
TOLERANCE = 1e-9


def _orders() -> pd.DataFrame:
    """A deterministic orders table over 24 months: four countries with different amount levels, some
    amounts missing."""
    rng = np.random.default_rng(21)
    countries = np.array(["DE", "FR", "IT", "ES"])
    country = countries[rng.integers(0, 4, ROWS)]
    level = pd.Series(country).map({"DE": 60.0, "FR": 50.0, "IT": 45.0, "ES": 40.0}).to_numpy()
    amount = np.round(level + rng.gamma(2.0, 10.0, ROWS), 2)
    seconds = rng.integers(0, 730 * 86_400, ROWS)
    ordered_at = pd.Timestamp("2023-01-01") + pd.to_timedelta(np.sort(seconds), unit="s")
    frame = pd.DataFrame(
        {
            "order_id": np.arange(1, ROWS + 1),
            "customer_id": rng.integers(1, 400, ROWS),
            "country": country,
            "amount": amount,
            "ordered_at": ordered_at,
        }
    )
    frame.loc[frame.index % 97 == 5, "amount"] = np.nan
    return frame


ORDERS = _orders()


def _mysql_rows() -> list[str]:
    statements = []
    for start in range(0, ROWS, 500):
        values = ", ".join(
            f"({r.order_id}, {r.customer_id}, '{r.country}', "
            f"{'NULL' if math.isnan(r.amount) else f'{r.amount:.2f}'}, '{r.ordered_at:%Y-%m-%d %H:%M:%S}')"
            for r in ORDERS.iloc[start : start + 500].itertuples()
        )
        statements.append(f"INSERT INTO {DATABASE}.orders VALUES {values}")
    return statements


SETUP = [
    f"CREATE DATABASE {DATABASE}",
    f"CREATE TABLE {DATABASE}.orders (order_id INT PRIMARY KEY, customer_id INT, country VARCHAR(8), "
    "amount DECIMAL(10,2), ordered_at DATETIME)",
    *_mysql_rows(),
    f"CREATE USER '{READER}'@'%' IDENTIFIED BY '{PASSWORD}'",
    f"GRANT SELECT ON {DATABASE}.* TO '{READER}'@'%'",
]
TEARDOWN = [f"DROP USER IF EXISTS '{READER}'@'%'", f"DROP DATABASE IF EXISTS {DATABASE}"]


@pytest.fixture(scope="module")
async def ledger_url(create_database: Callable[[], Any]) -> AsyncIterator[str]:
    """A second PostgreSQL database holding the same orders, read by a login role made here (the URL)."""
    url = await create_database()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE orders (order_id int PRIMARY KEY, customer_id int, country text, "
            "amount numeric(10,2), ordered_at timestamp)"
        )
        await conn.copy_records_to_table(
            "orders",
            records=[
                (
                    int(r.order_id),
                    int(r.customer_id),
                    r.country,
                    None if math.isnan(r.amount) else round(float(r.amount), 2),
                    r.ordered_at.to_pydatetime(),
                )
                for r in ORDERS.itertuples()
            ],
        )
        await conn.execute(f"CREATE ROLE {READER} LOGIN PASSWORD '{PASSWORD}'")
        await conn.execute(f"GRANT USAGE ON SCHEMA public TO {READER}")
        await conn.execute(f"GRANT SELECT ON orders TO {READER}")
    finally:
        await conn.close()
    parts = urlsplit(url)
    yield urlunsplit(parts._replace(netloc=f"{READER}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP OWNED BY {READER}")
        await conn.execute(f"DROP ROLE IF EXISTS {READER}")
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def sourced(
    ledger_url: str, tmp_path_factory: pytest.TempPathFactory, make_runtime: Callable[..., Any]
) -> AsyncIterator[Runtime]:
    folder = tmp_path_factory.mktemp("analyze_sources")
    (folder / "data").mkdir()
    ORDERS.to_parquet(folder / "data" / "orders.parquet", index=False)
    toml = folder / "sources.toml"
    toml.write_text(
        "[sources.shop]\n"
        f'url = "mysql://{READER}:${{SHOP_PASSWORD}}@127.0.0.1:3306/{DATABASE}"\n'
        "[sources.files]\n"
        f'url = "files://{folder / "data"}"\n'
        "[sources.ledger]\n"
        f'url = "{ledger_url}"\n'
    )
    async with scratch(SETUP, TEARDOWN):
        async with make_runtime(
            customers=None, sources_path=toml, sources_env={"SHOP_PASSWORD": PASSWORD}
        ) as runtime:
            yield runtime


def _client(runtime: Runtime, user: str = "analyst") -> Client:
    return Client(app_for(runtime, user).mcp)


async def _analyze(client: Client, source: str, analysis: str, **parameters: Any) -> dict[str, Any]:
    result = await client.call_tool(
        "analyze_data",
        {"data_source": source, "analysis_type": analysis, "parameters": parameters, "detail": "full"},
    )
    return result.structured_content


def _close(actual: Any, expected: float) -> bool:
    return actual is not None and math.isclose(
        float(actual), float(expected), rel_tol=TOLERANCE, abs_tol=TOLERANCE
    )


def _monthly(aggregate: str) -> pd.Series:
    month = ORDERS["ordered_at"].dt.to_period("M").dt.start_time
    grouped = ORDERS.groupby(month)["amount"]
    return grouped.sum() if aggregate == "sum" else grouped.mean()


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("aggregate", ["sum", "mean"])
async def test_a_monthly_trend_on_a_source_equals_pandas_on_the_raw_rows(sourced, source, aggregate) -> None:
    async with _client(sourced) as client:
        answer = await _analyze(
            client,
            source,
            "trend",
            table="orders",
            time_column="ordered_at",
            value_column="amount",
            aggregate=aggregate,
            grain="month",
        )
    expected = _monthly(aggregate)
    series = answer["results"]["series"]
    assert [pd.Timestamp(point["bucket"]) for point in series] == list(expected.index)
    for point, value in zip(series, expected, strict=True):
        assert _close(point["value"], value), (point, value)
    assert answer["results"]["metric"] == f"{aggregate}(amount)"
    metadata = answer["metadata"]
    assert metadata["data_source"] == source and metadata["table"] == "orders"
    assert metadata["columns"] == ["ordered_at", "amount"] and metadata["aggregate"] == aggregate


async def test_a_mariadb_trend_equals_plain_sql_on_the_server(sourced) -> None:
    async with _client(sourced) as client:
        answer = await _analyze(
            client,
            "shop",
            "trend",
            table="orders",
            time_column="ordered_at",
            value_column="amount",
            aggregate="sum",
            grain="week",
            start_date="2023-03-01",
            end_date="2023-08-31",
        )
    rows = await root_fetch(
        DATABASE,
        "SELECT DATE_SUB(DATE(ordered_at), INTERVAL WEEKDAY(ordered_at) DAY), SUM(amount) FROM orders "
        "WHERE ordered_at >= '2023-03-01' AND ordered_at < '2023-09-01' GROUP BY 1 ORDER BY 1",
    )
    series = answer["results"]["series"]
    assert [pd.Timestamp(point["bucket"]).date() for point in series] == [row[0] for row in rows]
    assert all(_close(p["value"], row[1]) for p, row in zip(series, rows, strict=True))


@pytest.mark.parametrize("source", SOURCES)
async def test_segment_compare_on_a_source_equals_scipy_on_the_raw_rows(sourced, source) -> None:
    groups = {country: rows["amount"].dropna().to_numpy() for country, rows in ORDERS.groupby("country")}
    async with _client(sourced) as client:
        kruskal = await _analyze(
            client,
            source,
            "segment_compare",
            table="orders",
            value_column="amount",
            group_column="country",
            test="kruskal_wallis",
        )
        welch = await _analyze(
            client,
            source,
            "segment_compare",
            table="orders",
            value_column="amount",
            group_column="country",
            segments=["DE", "ES"],
            test="welch_t",
        )
    h, p_value = scipy_stats.kruskal(*(groups[name] for name in sorted(groups)))
    assert _close(kruskal["results"]["test"]["statistic"], h)
    assert _close(kruskal["results"]["test"]["p_value"], p_value)
    t = scipy_stats.ttest_ind(groups["DE"], groups["ES"], equal_var=False)
    assert _close(abs(welch["results"]["test"]["statistic"]), abs(t.statistic))
    assert math.isclose(welch["results"]["test"]["p_value"], t.pvalue, rel_tol=1e-6, abs_tol=1e-300)
    assert kruskal["metadata"]["columns"] == ["country", "amount"]
    assert kruskal["metadata"]["sampled"] is False


@pytest.mark.parametrize("source", SOURCES)
async def test_correlation_on_a_source_equals_pandas_corr(sourced, source) -> None:
    columns = ["amount", "customer_id", "order_id"]
    async with _client(sourced) as client:
        pearson = await _analyze(client, source, "correlation", table="orders", columns=columns)
        spearman = await _analyze(
            client, source, "correlation", table="orders", columns=columns, method="spearman"
        )
    for answer, method in ((pearson, "pearson"), (spearman, "spearman")):
        expected = ORDERS[columns].astype(float).corr(method=method)
        matrix = answer["results"]["matrix"]
        for left in columns:
            for right in columns:
                if left != right:
                    assert _close(matrix[left][right], expected.loc[left, right]), (method, left, right)


@pytest.mark.parametrize("source", SOURCES)
async def test_describe_on_a_source_equals_plain_counts_nulls_and_ranges(sourced, source) -> None:
    async with _client(sourced) as client:
        answer = await _analyze(
            client, source, "describe", table="orders", columns=["amount", "ordered_at", "country"]
        )
    results = answer["results"]
    columns = {column["name"]: column for column in results["columns"]}
    assert results["rows"] == ROWS
    missing = int(ORDERS["amount"].isna().sum())
    assert columns["amount"]["nulls"] == missing
    assert _close(columns["amount"]["null_fraction"], missing / ROWS)
    assert _close(columns["amount"]["summary"]["min"], ORDERS["amount"].min())
    assert _close(columns["amount"]["summary"]["max"], ORDERS["amount"].max())
    assert _close(columns["amount"]["summary"]["sum"], ORDERS["amount"].sum())
    assert pd.Timestamp(columns["ordered_at"]["summary"]["min"]) == ORDERS["ordered_at"].min()
    assert pd.Timestamp(columns["ordered_at"]["summary"]["max"]) == ORDERS["ordered_at"].max()
    assert columns["country"]["distinct"] == 4 and columns["country"]["nulls"] == 0
    if source == "shop":  # and the server's own figures
        ((count, non_null, low, high),) = await root_fetch(
            DATABASE, "SELECT COUNT(*), COUNT(amount), MIN(amount), MAX(amount) FROM orders"
        )
        assert results["rows"] == count and ROWS - columns["amount"]["nulls"] == non_null
        assert _close(columns["amount"]["summary"]["min"], low) and _close(
            columns["amount"]["summary"]["max"], high
        )


@pytest.mark.parametrize("source", SOURCES)
async def test_anomalies_and_forecast_run_on_a_source_with_the_right_buckets(sourced, source) -> None:
    async with _client(sourced) as client:
        anomalies = await _analyze(
            client,
            source,
            "anomalies",
            table="orders",
            time_column="ordered_at",
            aggregate="count",
            grain="day",
        )
        hourly = await _analyze(
            client,
            source,
            "anomalies",
            table="orders",
            time_column="ordered_at",
            value_column="amount",
            aggregate="mean",
            grain="hour",
            start_date="2024-06-01",
            end_date="2024-06-30",
        )
        forecast = await _analyze(
            client,
            source,
            "forecast",
            table="orders",
            time_column="ordered_at",
            value_column="amount",
            grain="month",
            horizon=3,
        )
    days = ORDERS["ordered_at"].dt.floor("D")
    assert anomalies["results"]["buckets"] == (days.max() - days.min()).days + 1
    per_day = days.value_counts()
    listed = {pd.Timestamp(point["bucket"]): point["value"] for point in anomalies["results"]["series"]}
    assert all(listed[day] == count for day, count in per_day.items())
    june = ORDERS[(ORDERS["ordered_at"] >= "2024-06-01") & (ORDERS["ordered_at"] < "2024-07-01")]
    hours = june.groupby(june["ordered_at"].dt.floor("h"))["amount"].mean()
    assert (
        hourly["results"]["buckets"] == (hours.index.max() - hours.index.min()) // pd.Timedelta(hours=1) + 1
    )
    means = {
        pd.Timestamp(p["bucket"]): p["value"] for p in hourly["results"]["series"] if p["value"] is not None
    }
    assert set(means) == set(hours.dropna().index)
    assert all(_close(means[hour], value) for hour, value in hours.dropna().items())
    assert forecast["results"]["observed_buckets"] == 24
    assert len(forecast["results"]["forecast"]) == 3
    assert pd.Timestamp(forecast["results"]["forecast"][0]["bucket"]) == pd.Timestamp("2025-01-01")


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({"table": "customers", "time_column": "ordered_at", "value_column": "amount"}, "is not in source"),
        ({"table": "orders", "time_column": "ordered_at", "value_column": "revenue"}, "is not a column"),
        ({"table": "orders", "time_column": "ordered_at", "value_column": "country"}, "not numeric"),
        ({"table": "orders", "time_column": "amount", "value_column": "amount"}, "not date or timestamp"),
        (
            {"table": "orders", "time_column": "ordered_at", "value_column": "amount; DROP TABLE x"},
            "is not a column",
        ),
        ({"table": "orders", "time_column": "ordered_at", "value_column": '"a"."b"'}, "is not a column"),
        ({"table": "orders", "time_column": "ordered_at", "value_column": "`amount`"}, "is not a column"),
        (
            {"table": "orders; DROP TABLE orders", "time_column": "ordered_at", "value_column": "amount"},
            "is not in source",
        ),
        (
            {"table": "orders", "value_column": "amount"},
            "needs parameters.table, time_column and value_column",
        ),
        (
            {"table": "orders", "time_column": "ordered_at", "value_column": "amount", "metric": "usage"},
            "metric",
        ),
    ],
)
async def test_bad_names_on_a_source_are_one_line_errors_and_run_nothing(
    sourced, source, parameters, expected
) -> None:
    async with _client(sourced) as client:
        text = await refusal(
            client, "analyze_data", data_source=source, analysis_type="trend", parameters=parameters
        )
    assert expected in text
    if source == "shop":
        assert (await root_fetch(DATABASE, "SELECT COUNT(*) FROM orders"))[0][0] == ROWS


async def test_other_analyses_refuse_bad_names_on_a_source(sourced) -> None:
    async with _client(sourced) as client:
        for analysis, parameters, expected in (
            ("correlation", {"table": "orders", "columns": ["amount", "country"]}, "not numeric"),
            ("correlation", {"table": "orders", "columns": ["amount", "x`; DROP"]}, "is not a column"),
            ("segment_compare", {"table": "orders", "value_column": "amount"}, "needs parameters.table"),
            (
                "segment_compare",
                {"table": "orders", "value_column": "amount", "group_column": "nope"},
                "nope",
            ),
            ("describe", {"columns": ["amount"]}, "needs parameters.table; tables: orders"),
            ("describe", {"table": "orders", "columns": ['amount" FROM pg_user --']}, "is not a column"),
            ("churn_rate", {}, "runs on data_source 'database' or a session dataset"),
        ):
            text = await refusal(
                client, "analyze_data", data_source="ledger", analysis_type=analysis, parameters=parameters
            )
            assert expected in text, (analysis, text)


async def test_source_parameters_are_refused_on_the_database(sourced) -> None:
    async with _client(sourced) as client:
        text = await refusal(
            client,
            "analyze_data",
            data_source="database",
            analysis_type="trend",
            parameters={"time_column": "event_timestamp"},
        )
    assert "applies to a registered source" in text


async def test_a_viewer_cannot_analyze_a_source(sourced) -> None:
    async with _client(sourced, "viewer") as client:
        result = await client.call_tool(
            "analyze_data",
            {"data_source": "shop", "analysis_type": "describe", "parameters": {"table": "orders"}},
            raise_on_error=False,
        )
    assert result.is_error


async def test_a_repeated_analysis_on_a_versioned_source_is_cached(sourced) -> None:
    parameters = {"table": "orders", "columns": ["amount", "customer_id"]}
    async with _client(sourced) as client:
        first = await _analyze(client, "files", "correlation", **parameters)
        second = await _analyze(client, "files", "correlation", **parameters)
    assert first["metadata"]["cached"] is False and second["metadata"]["cached"] is True
    assert second["results"]["matrix"] == first["results"]["matrix"]


def test_the_seed_spans_two_years() -> None:
    assert ORDERS["ordered_at"].min() >= pd.Timestamp("2023-01-01")
    assert ORDERS["ordered_at"].max() < pd.Timestamp(dt.date(2025, 1, 1))


@pytest.mark.parametrize("source", SOURCES)
async def test_a_date_range_on_a_source_keeps_the_rows_pandas_keeps(sourced, source) -> None:
    dates = {"start_date": "2023-03-01", "end_date": "2023-08-31"}
    async with _client(sourced) as client:
        trend = await _analyze(
            client,
            source,
            "trend",
            table="orders",
            time_column="ordered_at",
            value_column="amount",
            aggregate="count_distinct",
            grain="week",
            **dates,
        )
        compared = await _analyze(
            client,
            source,
            "segment_compare",
            table="orders",
            value_column="amount",
            group_column="country",
            time_column="ordered_at",
            test="anova",
            **dates,
        )
    kept = ORDERS[(ORDERS["ordered_at"] >= "2023-03-01") & (ORDERS["ordered_at"] < "2023-09-01")]
    day = kept["ordered_at"].dt.floor("D")
    weekly = kept.groupby(day - pd.to_timedelta(day.dt.dayofweek, unit="D"))["amount"].nunique()
    series = trend["results"]["series"]
    assert [pd.Timestamp(point["bucket"]) for point in series] == list(weekly.index)
    assert [point["value"] for point in series] == list(weekly)
    groups = [rows["amount"].dropna().to_numpy() for _, rows in sorted(kept.groupby("country"))]
    f, p_value = scipy_stats.f_oneway(*groups)
    assert _close(compared["results"]["test"]["statistic"], f)
    assert _close(compared["results"]["test"]["p_value"], p_value)
    assert compared["metadata"]["columns"] == ["country", "amount", "ordered_at"]


async def test_the_summary_names_the_measure_and_the_template_shows_source_parameters(sourced) -> None:
    async with _client(sourced) as client:
        result = await client.call_tool(
            "analyze_data",
            {
                "data_source": "files",
                "analysis_type": "trend",
                "parameters": {
                    "table": "orders",
                    "time_column": "ordered_at",
                    "value_column": "amount",
                    "aggregate": "mean",
                },
            },
        )
        template = json.loads((await client.read_resource("templates://analysis/trend"))[0].text)
    assert result.structured_content["summary"].startswith("mean(amount) ")
    assert template["on_a_source"]["parameters"] == ["table", "time_column", "value_column", "aggregate"]
    assert template["on_a_source"]["example"]["arguments"]["parameters"]["time_column"] == "ordered_at"


async def test_rows_beyond_the_cap_are_left_out_and_the_answer_says_sampled(sourced, monkeypatch) -> None:
    monkeypatch.setattr(source_analysis, "ROW_CAP", 1_000)
    columns = ["amount", "customer_id"]
    async with _client(sourced) as client:
        answer = await _analyze(client, "shop", "correlation", table="orders", columns=columns)
        described = await _analyze(client, "shop", "describe", table="orders", columns=["customer_id"])
    expected = ORDERS[columns].head(1_000).astype(float).corr()
    assert _close(answer["results"]["matrix"]["amount"]["customer_id"], expected.loc["amount", "customer_id"])
    assert answer["metadata"]["sampled"] is True and "1,000 rows" in answer["metadata"]["sample_note"]
    # describe aggregates in the engine: every row, whatever the cap on fetched rows
    assert described["results"]["rows"] == ROWS and described["metadata"]["sampled"] is False


@pytest.mark.parametrize("source", SOURCES)
async def test_describe_on_a_source_computes_its_figures_in_the_engine_as_pandas_and_numpy_do(
    sourced, source
) -> None:
    names = ["order_id", "customer_id", "country", "amount", "ordered_at"]
    async with _client(sourced) as client:
        result = await client.call_tool(
            "analyze_data",
            {
                "data_source": source,
                "analysis_type": "describe",
                "parameters": {"table": "orders", "columns": names},
                "detail": "full",
                "include_sql": True,
            },
        )
    answer = result.structured_content
    results = answer["results"]
    columns = {column["name"]: column for column in results["columns"]}
    assert [column["name"] for column in results["columns"]] == names
    assert "linear" in results["quantiles"]
    for name, kind in (("order_id", "integer"), ("customer_id", "integer"), ("amount", "float")):
        values = ORDERS[name].dropna().astype(float)
        summary = columns[name]["summary"]
        assert columns[name]["type"] == kind and columns[name]["distinct"] == values.nunique()
        assert _close(summary["mean"], values.mean()) and _close(summary["std"], values.std(ddof=1))
        assert _close(summary["sum"], values.sum())
        quartiles = np.quantile(values.to_numpy(), [0.25, 0.5, 0.75], method="linear")
        for key, expected in zip(("p25", "median", "p75"), quartiles, strict=True):
            assert _close(summary[key], expected), (name, key)
    country = columns["country"]
    counts = ORDERS["country"].value_counts()
    assert country["type"] == "string" and country["distinct"] == len(counts)
    assert [(top["value"], top["count"]) for top in country["summary"]["top_values"]] == list(counts.items())
    assert country["summary"]["min_length"] == country["summary"]["max_length"] == 2
    assert columns["ordered_at"]["type"] == "datetime" and columns["ordered_at"]["distinct"] == ROWS
    # Only aggregates come back (and, on MariaDB, the few ranked values around each quartile): no
    # statement selects the bare rows.
    for statement in answer["metadata"]["sql"]:
        assert "COUNT(" in statement.upper() or "ROW_NUMBER()" in statement.upper(), statement


async def test_describe_of_many_columns_splits_its_aggregates_over_statements(sourced, monkeypatch) -> None:
    names = ["order_id", "customer_id", "country", "amount", "ordered_at"]

    async def described(columns: list[str]) -> dict[str, Any]:
        result = await client.call_tool(
            "analyze_data",
            {
                "data_source": "ledger",
                "analysis_type": "describe",
                "parameters": {"table": "orders", "columns": columns},
                "detail": "full",
                "include_sql": True,
            },
        )
        return result.structured_content

    async with _client(sourced) as client:
        whole = await described(names)
        monkeypatch.setattr(source_analysis, "COLUMNS_PER_STATEMENT", 2)
        split = await described([*names, "amount"])  # the same columns, asked differently: not cached
    assert split["metadata"]["cached"] is False
    assert split["results"]["columns"] == whole["results"]["columns"]
    assert len(split["metadata"]["sql"]) == len(whole["metadata"]["sql"]) + 2  # 3 aggregate statements, not 1
