"""Analyses on the live tables: aggregation pushed into PostgreSQL, the small results finished by analytics/.

Agent-chosen segments are looked up in an allow-list (real columns quoted by `quote_identifier`, or
fixed expressions for derived bands); nothing an agent sends is ever spliced into SQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
import numpy as np
import pandas as pd

from analytics.anomalies import anomalies_from_buckets
from analytics.arpu import arpu_from_groups
from analytics.bands import AGE_BANDS, MISSING, SECONDS_PER_DAY, TENURE_BANDS
from analytics.churn import churn_rate_from_counts
from analytics.compare import segment_compare_from_values
from analytics.correlation import correlation_of_table
from analytics.describe import describe_outcome
from analytics.drivers import churn_drivers_of_table
from analytics.forecast import forecast_from_buckets
from analytics.frames import dates_asked
from analytics.network import network_quality_from_histogram
from analytics.parameters import (
    DRIVERS,
    FEATURES,
    AnomaliesParameters,
    ArpuParameters,
    ChurnDriversParameters,
    ChurnRateParameters,
    CorrelationParameters,
    DescribeParameters,
    ForecastParameters,
    NetworkQualityParameters,
    RetentionParameters,
    SegmentCompareParameters,
    TrendParameters,
    choices,
)
from analytics.summary import Outcome
from analytics.survival import retention_from_counts
from analytics.trend import trend_from_buckets
from core.errors import InvalidInput, Timeout
from warehouse import sql
from warehouse.catalog import describe_tables
from warehouse.db import ANALYTICS_TABLES, Database

STATEMENT_TIMEOUT_SECONDS = 120.0
CUSTOMERS_JOIN = "JOIN customers c ON c.customer_id = e.customer_id"


def quote_identifier(name: str) -> str:
    """A double-quoted SQL identifier; callers pass only names from the allow-lists below."""
    return '"' + name.replace('"', '""') + '"'


def _bands(value: str, bands: Sequence[tuple[float, str]]) -> str:
    # Built from our own constants (analytics.bands), never from input.
    steps = " ".join(f"WHEN {value} >= {bound!r} THEN '{label}'" for bound, label in reversed(bands[1:]))
    return f"CASE WHEN {value} IS NULL THEN NULL {steps} ELSE '{bands[0][1]}' END"


_TENURE_DAYS = (
    f"(extract(epoch FROM (coalesce(c.{quote_identifier('churn_date')}, s.as_of) - "
    f"c.{quote_identifier('created_at')})) / {SECONDS_PER_DAY!r})"
)
# Segment name -> (SQL expression, needs the customers table). Customer columns are read through `c`.
SEGMENTS: dict[str, tuple[str, bool]] = {
    "account_type": (f"c.{quote_identifier('account_type')}", True),
    "gender": (f"c.{quote_identifier('gender')}", True),
    "location": (f"c.{quote_identifier('location')}", True),
    "age_band": (_bands(f"c.{quote_identifier('age')}", AGE_BANDS), True),
    "tenure_band": (_bands(_TENURE_DAYS, TENURE_BANDS), True),
    "event_type": (f"e.{quote_identifier('event_type')}", False),
    "hour_of_day": (f"extract(hour FROM e.{quote_identifier('event_timestamp')})::int", False),
}


def segment_sql(name: str, allowed: Sequence[str]) -> tuple[str, bool]:
    if name not in allowed or name not in SEGMENTS:
        raise InvalidInput(f"cannot group by '{str(name)[:60]}'; allowed: {', '.join(allowed)}")
    return SEGMENTS[name]


def statement(name: str, **fragments: str) -> str:
    """sql/<name>.sql with its {placeholders} filled by allow-listed fragments."""
    return sql.load(name).format(**fragments)


def _naive(instant: dt.datetime | None) -> dt.datetime | None:
    if instant is not None and instant.tzinfo is not None:
        return instant.astimezone(dt.UTC).replace(tzinfo=None)
    return instant


def _day_bounds(start: dt.date | None, end: dt.date | None) -> tuple[dt.datetime | None, dt.datetime | None]:
    start_at = dt.datetime.combine(start, dt.time()) if start else None
    end_before = dt.datetime.combine(end + dt.timedelta(days=1), dt.time()) if end else None
    return start_at, end_before


async def fetch(db: Database, text: str, *args: Any) -> list[asyncpg.Record]:
    """Run one analysis statement on the read pool (its connections carry db.ANALYSIS_SETTINGS),
    cancelled server-side past the time limit."""
    async with db.connection(read=True) as conn:
        try:
            rows: list[asyncpg.Record] = await conn.fetch(text, *args, timeout=STATEMENT_TIMEOUT_SECONDS)
            return rows
        except (TimeoutError, asyncpg.QueryCanceledError):
            raise Timeout(
                f"the analysis query ran longer than {STATEMENT_TIMEOUT_SECONDS:g} s; narrow it with a "
                "date range or analyse a saved session dataset"
            ) from None


async def as_of(db: Database, given: dt.datetime | None) -> dt.datetime | None:
    if given is not None:
        return _naive(given)
    rows = await fetch(db, sql.load("analysis_as_of"))
    value = rows[0]["as_of"] if rows else None
    return value if isinstance(value, dt.datetime) else None


# What each dated table holds, as an answer names it; the dates filter revenue.transaction_date,
# network_events.event_timestamp and customers.created_at.
_DATED = {"revenue": "revenue", "events": "network events", "customers": "customers signed up"}
_TABLE_OF = {  # statement -> the dated table its dates filter
    "analysis_trend_revenue": "revenue",
    "analysis_trend_events": "events",
    "analysis_segment_revenue": "revenue",
    "analysis_segment_events": "events",
    "analysis_segment_customers": "customers",
}


async def require_rows_in_dates(db: Database, parameters: Any, table: str, found: bool) -> None:
    """When start_date/end_date left no rows: an InvalidInput naming the days the data covers."""
    start, end = parameters.start_date, parameters.end_date
    if found or not (start or end):
        return
    (spans,) = await fetch(db, sql.load("analysis_date_spans"))
    first, last = spans[f"{table}_first"], spans[f"{table}_last"]
    asked = dates_asked(start, end)
    if first is None:
        raise InvalidInput(f"no {_DATED[table]} {asked}: there is no {_DATED[table]} data at all")
    raise InvalidInput(
        f"no {_DATED[table]} {asked}; the data covers {first} to {last}: pick dates in that range "
        "or drop start_date/end_date"
    )


async def churn_rate(db: Database, parameters: ChurnRateParameters) -> Outcome:
    segment, _ = segment_sql(parameters.group_by, choices(ChurnRateParameters, "group_by"))
    reference = await as_of(db, parameters.as_of) if parameters.group_by == "tenure_band" else None
    by_segment = statement("analysis_churn_segments", segment=segment)
    statements = [by_segment]
    jobs = [fetch(db, by_segment, reference)]
    if parameters.monthly:
        statements.append(sql.load("analysis_churn_monthly"))
        jobs.append(fetch(db, statements[-1]))
    answers = await asyncio.gather(*jobs)
    rows = answers[0]
    monthly = None
    if parameters.monthly:
        monthly = pd.DataFrame(
            [dict(row) for row in answers[1]], columns=["month", "new_customers", "churned"]
        )
    outcome = churn_rate_from_counts(
        [row["segment"] for row in rows],
        [row["customers"] for row in rows],
        [row["churned"] for row in rows],
        parameters,
        monthly,
        reference,
    )
    outcome.sql = statements
    return outcome


async def arpu(db: Database, parameters: ArpuParameters) -> Outcome:
    segment, _ = segment_sql(parameters.group_by, choices(ArpuParameters, "group_by"))
    reference = await as_of(db, parameters.as_of) if parameters.group_by == "tenure_band" else None
    bounds = _day_bounds(parameters.start_date, parameters.end_date)
    statements = {
        "segment": statement("analysis_arpu_segments", segment=segment),
        "month": sql.load("analysis_arpu_months"),
        "service_type": sql.load("analysis_arpu_services"),
    }
    # Three independent scans of revenue, each on its own connection, so PostgreSQL runs them side by side.
    answers = await asyncio.gather(
        fetch(db, statements["segment"], reference, *bounds),
        fetch(db, statements["month"], *bounds),
        fetch(db, statements["service_type"], *bounds),
    )
    await require_rows_in_dates(db, parameters, "revenue", any(answers))
    groups = pd.DataFrame(
        [
            (level, row["key"], row["customers"], float(row["revenue"]), row["variance"])
            for level, rows in zip(statements, answers, strict=True)
            for row in rows
        ],
        columns=["level", "key", "customers", "revenue", "variance"],
    )
    groups["variance"] = groups["variance"].map(lambda v: None if v is None else float(v)).astype(float)
    transactions = sum(int(row["transactions"]) for row in answers[0])
    outcome = arpu_from_groups(groups, parameters, transactions, reference)
    outcome.sql = list(statements.values())
    return outcome


async def network_quality(db: Database, parameters: NetworkQualityParameters) -> Outcome:
    allowed = choices(NetworkQualityParameters, "group_by")
    segment, needs_customers = segment_sql(parameters.group_by, allowed)
    text = statement("analysis_network", segment=segment, join=CUSTOMERS_JOIN if needs_customers else "")
    rows = await fetch(db, text, None, *_day_bounds(parameters.start_date, parameters.end_date))
    await require_rows_in_dates(db, parameters, "events", bool(rows))
    histogram = pd.DataFrame(
        [(row["segment"], row["score"], row["events"]) for row in rows],
        columns=["segment", "score", "events"],
    )
    outcome = network_quality_from_histogram(histogram, parameters)
    outcome.sql = [text]
    return outcome


async def correlation(db: Database, parameters: CorrelationParameters) -> Outcome:
    columns = list(parameters.columns or FEATURES)
    unknown = [name for name in columns if name not in FEATURES]
    if unknown or len(set(columns)) != len(columns):
        raise InvalidInput(
            f"correlation on the database takes columns from: {', '.join(FEATURES)}; got "
            f"{', '.join(repr(name)[:40] for name in unknown) or 'a column twice'}"
        )
    reference = await as_of(db, parameters.as_of)
    text = sql.load("analysis_customer_features")
    (row,) = await fetch(db, text, reference)  # one array per feature, all in the same customer order
    table = pd.DataFrame({name: np.array(row[name] or [], dtype=float) for name in FEATURES})
    outcome = correlation_of_table(table[columns], parameters)
    outcome.results["as_of"] = reference.isoformat() if reference else None
    outcome.sql = [text]
    return outcome


# -- trend, anomalies, segment_compare (issue 12) ------------------------------------------------

_TREND_SOURCES = {
    "arpu": ("analysis_trend_revenue", ["bucket", "revenue", "customers", "transactions"]),
    "quality": ("analysis_trend_events", ["bucket", "events", "scored_events", "mean_quality", "usage_mb"]),
    "usage": ("analysis_trend_events", ["bucket", "events", "scored_events", "mean_quality", "usage_mb"]),
    "churn": ("analysis_trend_churn", ["bucket", "new_customers", "churned"]),
}


def _frame(rows: list[asyncpg.Record], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame([tuple(row) for row in rows], columns=columns)
    for name in columns[1:]:
        frame[name] = pd.to_numeric(
            frame[name].map(lambda v: None if v is None else float(v)), errors="coerce"
        )
    return frame


async def trend(db: Database, parameters: TrendParameters) -> Outcome:
    """Per-bucket totals by date_trunc in PostgreSQL; the trend fit and decomposition on those few rows."""
    name, columns = _TREND_SOURCES[parameters.metric]
    text = sql.load(name)
    if parameters.metric == "churn":
        rows = await fetch(db, text, parameters.grain)
    else:
        rows = await fetch(
            db, text, parameters.grain, *_day_bounds(parameters.start_date, parameters.end_date)
        )
        await require_rows_in_dates(db, parameters, _TABLE_OF[name], bool(rows))
    totals = _frame(rows, columns)
    outcome = await asyncio.to_thread(trend_from_buckets, totals, parameters)
    outcome.sql = [text]
    return outcome


async def anomalies(db: Database, parameters: AnomaliesParameters) -> Outcome:
    """Per-hour or per-day totals in PostgreSQL; the rolling robust z-scores on those rows."""
    text = sql.load("analysis_trend_events")
    rows = await fetch(db, text, parameters.grain, *_day_bounds(parameters.start_date, parameters.end_date))
    await require_rows_in_dates(db, parameters, "events", bool(rows))
    totals = _frame(rows, _TREND_SOURCES["quality"][1])
    outcome = await asyncio.to_thread(anomalies_from_buckets, totals, parameters)
    outcome.sql = [text]
    return outcome


async def forecast(db: Database, parameters: ForecastParameters) -> Outcome:
    """The trend's per-bucket totals from PostgreSQL; the exponential smoothing on those few rows."""
    name, columns = _TREND_SOURCES[parameters.metric]
    text = sql.load(name)
    if parameters.metric == "churn":
        rows = await fetch(db, text, parameters.grain)
    else:
        bounds = _day_bounds(parameters.start_date, parameters.end_date)
        rows = await fetch(db, text, parameters.grain, *bounds)
        await require_rows_in_dates(db, parameters, _TABLE_OF[name], bool(rows))
    outcome = await asyncio.to_thread(forecast_from_buckets, _frame(rows, columns), parameters)
    outcome.sql = [text]
    return outcome


_COMPARE_SOURCES = {
    "arpu": "analysis_segment_revenue",
    "quality": "analysis_segment_events",
    "usage": "analysis_segment_events",
    "event_count": "analysis_segment_events",
    "churn": "analysis_segment_customers",
    "age": "analysis_segment_customers",
    "tenure_days": "analysis_segment_customers",
}


async def segment_compare(db: Database, parameters: SegmentCompareParameters) -> Outcome:
    """One (segment, value) row per customer, aggregated in PostgreSQL; the tests need per-customer values."""
    segment, _ = segment_sql(parameters.group_by, choices(SegmentCompareParameters, "group_by"))
    needs_as_of = parameters.group_by == "tenure_band" or parameters.metric == "tenure_days"
    reference = await as_of(db, parameters.as_of) if needs_as_of else None
    text = statement(_COMPARE_SOURCES[parameters.metric], segment=segment)
    rows = await fetch(db, text, reference, *_day_bounds(parameters.start_date, parameters.end_date))
    found = any(row[parameters.metric] is not None for row in rows)
    await require_rows_in_dates(db, parameters, _TABLE_OF[_COMPARE_SOURCES[parameters.metric]], found)
    segments = pd.Series([row["segment"] for row in rows], dtype=object)
    values = pd.Series([row[parameters.metric] for row in rows], dtype=float)
    outcome = await asyncio.to_thread(
        segment_compare_from_values, segments.where(segments.notna(), MISSING), values, parameters, reference
    )
    outcome.sql = [text]
    return outcome


# -- describe, churn_drivers, retention (issue 12) -----------------------------------------------

# Which summary template serves a column, by the type the catalog reports (format_type output).
_TEMPLATES = {"integer": "numeric", "float": "numeric", "boolean": "boolean", "datetime": "datetime"}
# For the few big scans (describe, the per-customer matrix): hash and sort in memory instead of spilling.


def column_kind(data_type: str) -> str:
    """The type an analyst would name (as analytics.describe.column_type does for DataFrames)."""
    if data_type in ("smallint", "integer", "bigint"):
        return "integer"
    if data_type in ("real", "double precision") or data_type.startswith("numeric"):
        return "float"
    if data_type == "boolean":
        return "boolean"
    if data_type.startswith("timestamp") or data_type == "date":
        return "datetime"
    return "string"


async def describe_table(db: Database, parameters: DescribeParameters) -> Outcome:
    """Per-column summaries of one analytics table, each computed by its own statement, run concurrently."""
    if parameters.table not in ANALYTICS_TABLES:  # any name is a valid table of a source, not here
        raise InvalidInput(
            f"parameter 'table' of describe must be one of {', '.join(ANALYTICS_TABLES)}; "
            f"got {parameters.table[:60]!r}"
        )
    (table,) = await describe_tables(db, [parameters.table])
    known = {column.name: column for column in table.columns}
    names = list(dict.fromkeys(parameters.columns)) if parameters.columns else list(known)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise InvalidInput(
            f"column '{unknown[0][:60]}' is not in table {table.name}; columns: {', '.join(known)}"
        )
    unique = {
        c.columns[0] for c in table.constraints if c.kind in ("primary key", "unique") and len(c.columns) == 1
    }
    quoted_table = quote_identifier(table.name)
    statements = [statement("analysis_describe_rows", table=quoted_table)]
    keys = [
        name
        for name in names
        if name in unique and known[name].data_type == "uuid" and not known[name].nullable
    ]
    for name in names:
        template = _TEMPLATES.get(column_kind(known[name].data_type), "unique" if name in unique else "text")
        if name in keys:
            template = "key"
        statements.append(
            statement(f"analysis_describe_{template}", table=quoted_table, column=quote_identifier(name))
        )
    answers = await asyncio.gather(*(fetch(db, text) for text in statements))
    rows = int(answers[0][0]["rows"])
    columns = []
    for name, answer in zip(names, answers[1:], strict=True):
        found = dict(answer[0])
        if name in keys:  # every value present, distinct and 36 characters long
            found.update(present=rows, distinct_values=rows, min_length=36, max_length=36)
        columns.append(_described_column(name, known[name].data_type, rows, found))
    described = {"table": table.name, "rows": rows, "column_count": len(columns), "columns": columns}
    outcome = describe_outcome(described, f"Table {table.name}")
    outcome.sql = statements
    return outcome


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _described_column(name: str, data_type: str, rows: int, row: dict[str, Any]) -> dict[str, Any]:
    kind = column_kind(data_type)
    present = int(row["present"])
    entry: dict[str, Any] = {
        "name": name,
        "type": kind,
        "sql_type": data_type,
        "nulls": rows - present,
        "null_fraction": (rows - present) / rows if rows else 0.0,
        "distinct": int(row["distinct_values"]),
    }
    if not present:
        return entry
    if kind in ("integer", "float"):
        low, median, high = (float(value) for value in row["quartiles"])
        entry["summary"] = {
            "mean": _float(row["mean"]),
            "std": _float(row["std"]),
            "min": _float(row["minimum"]),
            "p25": low,
            "median": median,
            "p75": high,
            "max": _float(row["maximum"]),
            "sum": _float(row["total"]),
        }
    elif kind == "boolean":
        true = int(row["true_count"])
        entry["summary"] = {"true": true, "false": present - true, "true_fraction": true / present}
    elif kind == "datetime":
        entry["summary"] = {"min": row["minimum"].isoformat(), "max": row["maximum"].isoformat()}
    else:
        counts = row.get("top_counts") or [1] * len(row["top_values"])
        entry["summary"] = {
            "top_values": [
                {"value": value, "count": int(count)}
                for value, count in zip(row["top_values"], counts, strict=True)
            ],
            "min_length": int(row["min_length"]),
            "max_length": int(row["max_length"]),
        }
    return entry


async def churn_drivers(db: Database, parameters: ChurnDriversParameters) -> Outcome:
    """Per-customer features aggregated in PostgreSQL; only that matrix (one row per customer) is fitted here."""
    reference = await as_of(db, parameters.as_of)
    text = sql.load("analysis_driver_features")
    rows = await fetch(db, text, reference)
    table = pd.DataFrame([tuple(row) for row in rows], columns=["is_churned", *DRIVERS])
    for name in ("is_churned", *DRIVERS):
        if name != "account_type":
            table[name] = table[name].astype(float)
    outcome = await asyncio.to_thread(churn_drivers_of_table, table, parameters)
    outcome.results["as_of"] = reference.isoformat() if reference else None
    outcome.sql = [text]
    return outcome


async def retention(db: Database, parameters: RetentionParameters) -> Outcome:
    """Lifetimes counted per (segment, day, churned) and cohorts per (month, months lived) in PostgreSQL."""
    segment, _ = segment_sql(parameters.group_by, choices(RetentionParameters, "group_by"))
    reference = await as_of(db, parameters.as_of)
    if reference is None:
        raise InvalidInput("the database holds no customers yet; load data with generate_data or seed")
    lifetimes_sql = statement("analysis_retention_lifetimes", segment=segment)
    cohorts_sql = sql.load("analysis_retention_cohorts")
    lifetime_rows, cohort_rows = await asyncio.gather(
        fetch(db, lifetimes_sql, reference), fetch(db, cohorts_sql, reference)
    )
    lifetimes = pd.DataFrame(
        [tuple(row) for row in lifetime_rows], columns=["segment", "lifetime_days", "churned", "customers"]
    )
    cohorts = pd.DataFrame(
        [tuple(row) for row in cohort_rows], columns=["cohort", "months_lived", "customers"]
    )
    cohorts["months_lived"] = cohorts["months_lived"].astype(float)
    outcome = await asyncio.to_thread(
        retention_from_counts, lifetimes, cohorts, pd.Timestamp(reference), parameters
    )
    outcome.sql = [lifetimes_sql, cohorts_sql]
    return outcome


# Each analysis computed on the live tables, by its name in analytics.parameters.ANALYSES.
Runner = Callable[[Database, Any], Awaitable[Outcome]]
RUNNERS: dict[str, Runner] = {
    "churn_rate": churn_rate,
    "arpu": arpu,
    "network_quality": network_quality,
    "correlation": correlation,
    "trend": trend,
    "anomalies": anomalies,
    "segment_compare": segment_compare,
    "forecast": forecast,
    "describe": describe_table,
    "churn_drivers": churn_drivers,
    "retention": retention,
}
