"""The analyses that work on any table (describe, correlation, segment_compare, trend, anomalies, forecast)
on a registered source: table and column names checked against the source's catalog before any SQL is
built, the SQL built once with sqlglot in the engine's dialect and run through the engine's own guard and
bounds, the statistics computed by the same pure functions as on the built-in tables."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
import sqlglot
from sqlglot import exp

from analytics.anomalies import anomalies_from_buckets
from analytics.bands import MISSING
from analytics.compare import segment_compare_from_values
from analytics.correlation import correlation_of_table
from analytics.describe import describe, describe_outcome
from analytics.forecast import forecast_from_buckets
from analytics.parameters import AnalysisParameters, SeriesColumns
from analytics.summary import Outcome
from analytics.trend import Measure, trend_from_buckets
from core.errors import InvalidInput
from warehouse.engines import Engine
from warehouse.engines.active import run_on
from warehouse.query import Column, QueryResult, to_frame
from warehouse.shares import Shares

ANALYSES: Final = ("describe", "correlation", "segment_compare", "trend", "anomalies", "forecast")
SERIES: Final = ("trend", "anomalies", "forecast")
DIALECTS: Final = {"postgresql": "postgres", "mysql": "mysql", "duckdb": "duckdb"}
NUMBERS: Final = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8"})
TIMES: Final = frozenset({"date", "timestamp", "timestamptz"})
ROW_CAP: Final = 1_000_000  # rows fetched for segment_compare, correlation and describe; beyond: capped
TIMEOUT_SECONDS: Final = 60.0  # each statement's timeout on the source
SHOWN_NAMES: Final = 12  # valid names an error lists
# Parameters with a meaning on the built-in telecom tables only: refused on a source when given.
TELECOM_ONLY: Final = {
    "trend": ("metric",),
    "anomalies": ("metric",),
    "forecast": ("metric",),
    "segment_compare": ("metric", "group_by", "as_of"),
    "correlation": ("as_of",),
}
# Parameters with a meaning on a source only: refused on data_source 'database' and on sessions.
SOURCE_ONLY: Final = ("table", "time_column", "value_column", "aggregate", "group_column")
# MySQL has no date_trunc (sqlglot's stand-in counts from year 0, whose weeks do not start on Monday):
# the bucket there is written in MySQL and parsed by sqlglot; `x` stands for the time column.
MYSQL_BUCKETS: Final = {
    "hour": "DATE_ADD(CAST(CAST(x AS DATE) AS DATETIME), INTERVAL HOUR(x) HOUR)",
    "day": "CAST(CAST(x AS DATE) AS DATETIME)",
    "week": "CAST(DATE_SUB(CAST(x AS DATE), INTERVAL WEEKDAY(x) DAY) AS DATETIME)",
    "month": "CAST(DATE_SUB(CAST(x AS DATE), INTERVAL (DAYOFMONTH(x) - 1) DAY) AS DATETIME)",
}


# describe in the engine: the kind a column is described as, by its engine-neutral type name (as
# warehouse.query.to_frame reads them); columns of other types (json, uuid, interval, bytes...) are
# fetched and described in Python as before.
DESCRIBED_KINDS: Final = {
    **{name: "integer" for name in ("int2", "int4", "int8", "oid")},
    **{name: "float" for name in ("float4", "float8", "numeric")},
    "bool": "boolean",
    **{name: "datetime" for name in ("date", "timestamp", "timestamptz")},
    **{name: "string" for name in ("text", "varchar", "bpchar", "char", "name", "citext", "unknown")},
}
QUARTILES: Final = (0.25, 0.5, 0.75)
QUANTILE_METHOD: Final = (
    "p25, median and p75 by linear interpolation between the two nearest values (numpy's and pandas' "
    "default 'linear'): percentile_cont in PostgreSQL, quantile_cont in DuckDB, the ranked values in MariaDB"
)
# One quartile in each dialect's aggregate; `x` stands for the column. MariaDB has PERCENTILE_CONT as a
# window function only (a minute on 1,000,000 rows): there the two values around each quartile are read
# by rank (ROW_NUMBER) and interpolated here as numpy does.
QUARTILE_SQL: Final = {
    "postgres": "PERCENTILE_CONT({share}) WITHIN GROUP (ORDER BY CAST(x AS DOUBLE PRECISION))",
    "duckdb": "QUANTILE_CONT(CAST(x AS DOUBLE), {share})",
}
TOP_VALUES: Final = 5  # most frequent values of a text column described
COLUMNS_PER_STATEMENT: Final = 100  # columns described by one aggregate statement (9 outputs at most each)


def refuse_misplaced(analysis: str, parameters: AnalysisParameters, source: str | None) -> None:
    """One line when a parameter does not belong where the analysis runs: a telecom-only one given for a
    source (`source` named), a source-only one given for the built-in tables or a session (None)."""
    given = parameters.model_fields_set
    if source is not None:
        if analysis not in ANALYSES:
            raise InvalidInput(
                f"analysis '{analysis}' runs on data_source 'database' or a session dataset; on source "
                f"'{source}' run one of {', '.join(ANALYSES)}"
            )
        wrong = [name for name in TELECOM_ONLY.get(analysis, ()) if name in given]
        if wrong:
            raise InvalidInput(
                f"parameters.{wrong[0]} applies to data_source 'database' only; on source '{source}' name "
                f"the columns instead (templates://analysis/{analysis})"
            )
        if "dataset" in given:
            raise InvalidInput(f"parameters.dataset names a session dataset; source '{source}' has tables")
        return
    wrong = [name for name in SOURCE_ONLY if name in given and name in type(parameters).model_fields]
    if analysis == "describe":
        wrong = [name for name in wrong if name != "table"]
    if wrong:
        raise InvalidInput(
            f"parameters.{wrong[0]} applies to a registered source (data_source=<source name>); "
            f"templates://analysis/{analysis} lists the parameters of data_source 'database'"
        )


@dataclass(frozen=True)
class SourceReader:
    """Runs this module's SELECTs on one source's engine as the engine runs an agent's SQL: its dialect
    guard, then a read-only transaction with a timeout and row and byte caps, within the caller's share."""

    source: str
    engine: Engine
    shares: Shares
    max_bytes: int
    timeout: float = TIMEOUT_SECONDS

    @property
    def dialect(self) -> str:
        return DIALECTS[self.engine.kind]

    async def fetch(
        self, query: exp.Select, parameters: Mapping[str, Any], max_rows: int
    ) -> tuple[str, QueryResult]:
        text = query.sql(dialect=self.dialect)
        statement = await self.engine.guarded(text, parameters)
        result = await run_on(
            self.engine,
            statement,
            parameters,
            shares=self.shares,
            timeout=self.timeout,
            max_rows=max_rows,
            max_bytes=self.max_bytes,
        )
        return text, result


@dataclass(frozen=True)
class CheckedTable:
    """A table of the source and its columns, as the source's catalog names them."""

    source: str
    name: str
    columns: Mapping[str, Column]
    engine_kind: str

    def relation(self) -> exp.Table:
        if self.engine_kind == "postgresql" and "." in self.name:  # schema.table outside the first schema
            schema, _, table = self.name.partition(".")
            return exp.table_(table, db=schema, quoted=True)
        return exp.table_(self.name, quoted=True)

    def column(self, name: str, role: str, kinds: frozenset[str] | None = None, what: str = "") -> str:
        """The catalog's spelling of column `name`; unknown or of the wrong kind: one line of valid ones."""
        found = _match(name, list(self.columns))
        if found is None:
            raise InvalidInput(
                f"{role} {name[:60]!r} is not a column of table '{self.name}' in source '{self.source}'; "
                f"columns: {_few(list(self.columns))}"
            )
        if kinds is not None and self.columns[found].type not in kinds:
            fitting = [column for column, info in self.columns.items() if info.type in kinds]
            raise InvalidInput(
                f"{role} '{found}' of table '{self.name}' is {self.columns[found].type}, not {what}; "
                f"{what} columns: {_few(fitting) if fitting else 'none'}"
            )
        return found


async def checked_table(engine: Engine, source: str, table: str | None, analysis: str) -> CheckedTable:
    """The table named by parameters.table, checked against the source's allowed tables."""
    names = [found.name for found in await engine.tables()]
    if not table:
        raise InvalidInput(
            f"{analysis} on source '{source}' needs parameters.table; tables: {_few(names) or 'none'}"
        )
    found = _match(table, names)
    if found is None:
        raise InvalidInput(
            f"table {table[:60]!r} is not in source '{source}'; tables: {_few(names) or 'none'}"
        )
    columns = {column.name: column for column in await engine.columns(found)}
    return CheckedTable(source, found, columns, engine.kind)


def _match(name: str, names: Sequence[str]) -> str | None:
    """`name` as spelled in `names`: exactly, else the one name equal but for case."""
    if name in names:
        return name
    folded = [candidate for candidate in names if candidate.lower() == name.lower()]
    return folded[0] if len(folded) == 1 else None


def _few(names: Sequence[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f" ... ({len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else "")


def _quoted(name: str) -> exp.Column:
    return exp.column(name, quoted=True)


def _in_dates(time: str | None, parameters: Any) -> tuple[list[exp.Expression], dict[str, Any]]:
    """Conditions (bound parameters) keeping rows whose `time` falls in start_date .. end_date."""
    start, end = getattr(parameters, "start_date", None), getattr(parameters, "end_date", None)
    if not (start or end):
        return [], {}
    if time is None:
        raise InvalidInput("start_date and end_date on a source filter parameters.time_column; name it")
    when = exp.cast(_quoted(time), "timestamp")
    conditions: list[exp.Expression] = []
    values: dict[str, Any] = {}
    if start:
        conditions.append(exp.GTE(this=when, expression=exp.cast(exp.var("%(start)s"), "timestamp")))
        values["start"] = dt.datetime.combine(start, dt.time()).isoformat(sep=" ")
    if end:
        conditions.append(exp.LT(this=when.copy(), expression=exp.cast(exp.var("%(end)s"), "timestamp")))
        values["end"] = dt.datetime.combine(end + dt.timedelta(days=1), dt.time()).isoformat(sep=" ")
    return conditions, values


def bucket_expression(time: str, grain: str, dialect: str) -> exp.Expression:
    """The start of `time`'s day, week (Monday), month or hour, as a timestamp, in `dialect`."""
    column = exp.cast(_quoted(time), "timestamp")
    if dialect == "mysql":
        return _filled(MYSQL_BUCKETS[grain], dialect, time)
    return exp.TimestampTrunc(this=column, unit=exp.var(grain.upper()))


def _filled(template: str, dialect: str, column: str) -> exp.Expression:
    """`template` (SQL of `dialect` over a column `x`) parsed by sqlglot, with `column` for x."""
    return sqlglot.parse_one(template, read=dialect).transform(
        lambda node: _quoted(column) if isinstance(node, exp.Column) and node.name == "x" else node
    )


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _floats(values: list[Any]) -> pd.Series:
    """Numbers as the drivers return them (int, float, Decimal, None) as floats, None as NaN."""
    return pd.Series(values, dtype=object).astype(float)


# --- the analyses -------------------------------------------------------------------------------------


Used = dict[str, Any]  # what an analysis read: table, columns (for the answer's metadata)


async def series(reader: SourceReader, analysis: str, parameters: Any) -> tuple[Outcome, Used]:
    """trend, anomalies or forecast of `aggregate(value_column)` per `time_column` bucket: one GROUP BY
    in the engine, the statistics on those few rows."""
    named: SeriesColumns = parameters
    aggregate = named.aggregate or "sum"
    if not (named.table and named.time_column and (named.value_column or aggregate == "count")):
        raise InvalidInput(
            f"{analysis} on source '{reader.source}' needs parameters.table, time_column and value_column"
            + (" (value_column may be left out with aggregate='count')" if aggregate != "count" else "")
        )
    table = await checked_table(reader.engine, reader.source, named.table, analysis)
    time = table.column(named.time_column, "time_column", TIMES, "date or timestamp")
    value = None
    if named.value_column:
        kinds = NUMBERS if aggregate in ("sum", "mean") else None
        value = table.column(named.value_column, "value_column", kinds, "numeric")
    bucket = bucket_expression(time, parameters.grain, reader.dialect)
    counted: exp.Expression = exp.Count(this=exp.Star())
    if value is not None:
        counted = exp.Count(
            this=exp.Distinct(expressions=[_quoted(value)])
            if aggregate == "count_distinct"
            else _quoted(value)
        )
    outputs = [
        exp.alias_(bucket, "bucket", quoted=True),
        exp.alias_(counted, "n_values", quoted=True),
        exp.alias_(exp.Count(this=exp.Star()), "n_rows", quoted=True),
    ]
    if aggregate in ("sum", "mean") and value is not None:  # value is required for these
        outputs.append(exp.alias_(exp.Sum(this=_quoted(value)), "total", quoted=True))
    conditions, values = _in_dates(time, parameters)
    query = (
        exp.select(*outputs)
        .from_(table.relation())
        .where(exp.and_(exp.Not(this=exp.Is(this=_quoted(time), expression=exp.Null())), *conditions))
        .group_by(exp.Literal.number(1))
        .order_by(exp.Literal.number(1))
    )
    text, result = await reader.fetch(query, values, max_rows=ROW_CAP)
    if result.truncated:
        raise InvalidInput(
            f"{analysis} on source '{reader.source}' has more than {ROW_CAP:,} buckets; use a coarser grain "
            "or a date range"
        )
    totals = _totals(result, aggregate)
    if totals.empty:
        raise InvalidInput(
            f"table '{table.name}' has no rows with a {time} value"
            + (" in the date range" if values else "")
            + "; pick another time_column or widen the dates"
        )
    described = f"{aggregate}({value or '*'})"
    measure = Measure(
        described,
        f"{described} of table {table.name} per {parameters.grain} of {time}",
        None if aggregate == "mean" else 0.0,
    )
    finish: dict[str, Callable[[pd.DataFrame, Any, Measure], Outcome]] = {
        "trend": trend_from_buckets,
        "anomalies": anomalies_from_buckets,
        "forecast": forecast_from_buckets,
    }
    outcome: Outcome = await asyncio.to_thread(finish[analysis], totals, parameters, measure)
    outcome.sql = [text]
    return outcome, {
        "table": table.name,
        "columns": [time, *([value] if value else [])],
        "aggregate": aggregate,
    }


def _totals(result: QueryResult, aggregate: str) -> pd.DataFrame:
    records = result.records()
    n_values = [_number(row["n_values"]) for row in records]
    n_rows = [_number(row["n_rows"]) for row in records]
    if aggregate == "sum":
        values = [_number(row["total"]) for row in records]
    elif aggregate == "mean":  # the exact sum over the count: no rounding of a database's own average
        values = [
            _number(row["total"]) / n if n else math.nan for row, n in zip(records, n_values, strict=True)
        ]
    else:
        values = n_values
    when = pd.to_datetime(pd.Series([row["bucket"] for row in records], dtype=object))
    if getattr(when.dt, "tz", None) is not None:
        when = when.dt.tz_localize(None)
    return pd.DataFrame({"bucket": when, "value": values, "count": n_values, "rows": n_rows})


async def _rows(
    reader: SourceReader,
    table: CheckedTable,
    columns: Sequence[str],
    parameters: Any,
    time: str | None = None,
) -> tuple[str, QueryResult]:
    """The named columns of the table, at most ROW_CAP rows (a date range on `time` applied)."""
    conditions, values = _in_dates(time, parameters)
    query = exp.select(*(_quoted(name) for name in columns)).from_(table.relation())
    if conditions:
        query = query.where(exp.and_(*conditions))
    return await reader.fetch(query, values, max_rows=ROW_CAP)


def _capped(
    outcome: Outcome, result: QueryResult, table: CheckedTable, columns: Sequence[str]
) -> tuple[Outcome, Used]:
    used: Used = {"table": table.name, "columns": list(columns), "sampled": result.truncated}
    if result.truncated:
        used["sample_note"] = (
            f"the first {len(result.rows):,} rows the source returned ({result.truncated_by} cap), not the "
            "whole table"
        )
    return outcome, used


async def segment_compare(reader: SourceReader, parameters: Any) -> tuple[Outcome, Used]:
    if not (parameters.table and parameters.value_column and parameters.group_column):
        raise InvalidInput(
            f"segment_compare on source '{reader.source}' needs parameters.table, value_column and group_column"
        )
    table = await checked_table(reader.engine, reader.source, parameters.table, "segment_compare")
    value = table.column(parameters.value_column, "value_column", NUMBERS, "numeric")
    group = table.column(parameters.group_column, "group_column")
    time = None
    if parameters.time_column:
        time = table.column(parameters.time_column, "time_column", TIMES, "date or timestamp")
    text, result = await _rows(reader, table, [group, value], parameters, time)
    segments = pd.Series([MISSING if row[0] is None else str(row[0]) for row in result.rows], dtype=object)
    values = _floats([row[1] for row in result.rows])
    outcome = await asyncio.to_thread(
        segment_compare_from_values, segments, values, parameters, None, (value, group)
    )
    outcome.sql = [text]
    return _capped(outcome, result, table, [group, value, *([time] if time else [])])


async def correlation(reader: SourceReader, parameters: Any) -> tuple[Outcome, Used]:
    if not (parameters.table and parameters.columns):
        raise InvalidInput(
            f"correlation on source '{reader.source}' needs parameters.table and columns (two or more numeric)"
        )
    table = await checked_table(reader.engine, reader.source, parameters.table, "correlation")
    names = [table.column(name, "column", NUMBERS, "numeric") for name in parameters.columns]
    if len(set(names)) != len(names):
        raise InvalidInput("parameters.columns lists a column twice")
    text, result = await _rows(reader, table, names, parameters)
    frame = pd.DataFrame(
        {name: _floats([row[index] for row in result.rows]) for index, name in enumerate(names)}
    )
    outcome = await asyncio.to_thread(correlation_of_table, frame, parameters)
    outcome.sql = [text]
    return _capped(outcome, result, table, names)


async def describe_table(reader: SourceReader, parameters: Any) -> tuple[Outcome, Used]:
    """Per-column figures computed in the engine (one aggregate statement, the quartiles, a top-values
    statement per text column), so only aggregates reach Python; columns of other types are fetched."""
    if "table" not in parameters.model_fields_set:
        names = [found.name for found in await reader.engine.tables()]
        raise InvalidInput(
            f"describe on source '{reader.source}' needs parameters.table; tables: {_few(names) or 'none'}"
        )
    table = await checked_table(reader.engine, reader.source, parameters.table, "describe")
    names = list(table.columns)
    if parameters.columns:
        names = list(dict.fromkeys(table.column(name, "column") for name in parameters.columns))
    kinds = {name: DESCRIBED_KINDS.get(table.columns[name].type) for name in names}
    dialect = reader.dialect
    found: dict[str, dict[str, Any]] = {name: {} for name in names}
    statements = []
    rows = 0
    # One aggregate statement per COLUMNS_PER_STATEMENT columns (a select list has a length limit).
    for start in range(0, max(len(names), 1), COLUMNS_PER_STATEMENT):
        figures = [
            (name, key, expression)
            for name in names[start : start + COLUMNS_PER_STATEMENT]
            for key, expression in _figures(name, kinds[name], dialect)
        ]
        outputs = [exp.Count(this=exp.Star()), *(expression for _, _, expression in figures)]
        query = exp.select(
            *(exp.alias_(item, f"f{index}", quoted=True) for index, item in enumerate(outputs))
        )
        text, result = await reader.fetch(query.from_(table.relation()), {}, max_rows=1)
        statements.append(text)
        row = iter(result.rows[0])
        rows = int(next(row))
        for (name, key, _), value in zip(figures, row, strict=True):
            found[name][key] = value
    if dialect == "mysql":  # MariaDB's PERCENTILE_CONT is a window function only, slow on big tables
        for name in names:
            if kinds[name] in ("integer", "float") and found[name]["present"]:
                text, found[name]["quartiles"] = await _ranked_quartiles(
                    reader, table, name, int(found[name]["present"])
                )
                statements.append(text)
    for name in names:
        if kinds[name] == "string" and found[name]["present"]:
            text, result = await reader.fetch(_top_values(table, name, dialect), {}, max_rows=TOP_VALUES)
            statements.append(text)
            found[name]["top_values"] = result.rows
    columns = {
        name: _described(name, kind, table.columns[name].type, rows, found[name])
        for name, kind in kinds.items()
        if kind is not None
    }
    used: Used = {"table": table.name, "columns": names, "sampled": False}
    others = [name for name in names if kinds[name] is None]
    if others:  # described from their values, at most ROW_CAP rows of them
        text, result = await _rows(reader, table, others, parameters)
        statements.append(text)
        fetched = await asyncio.to_thread(describe, to_frame(result))
        columns.update((column["name"], column) for column in fetched["columns"])
        if result.truncated:
            used["sampled"] = True
            used["sample_note"] = (
                f"columns {', '.join(others)}: the first {len(result.rows):,} rows the source returned "
                f"({result.truncated_by} cap), not the whole table"
            )
    described = {
        "rows": rows,
        "column_count": len(names),
        "columns": [columns[name] for name in names],
        "table": table.name,
        "quantiles": QUANTILE_METHOD,
    }
    outcome = describe_outcome(described, f"Table {table.name} of source '{reader.source}'")
    outcome.sql = statements
    return outcome, used


def _figures(name: str, kind: str | None, dialect: str) -> list[tuple[str, exp.Expression]]:
    """The aggregates describing column `name` of kind `kind`, by the key they are read under."""
    if kind is None:
        return []
    column = _quoted(name)
    # MariaDB compares text by a collation (case and trailing spaces ignored): distinct by its bytes.
    exact = exp.cast(column.copy(), "BINARY") if dialect == "mysql" and kind == "string" else column.copy()
    figures: list[tuple[str, exp.Expression]] = [
        ("present", exp.Count(this=column.copy())),
        ("distinct", exp.Count(this=exp.Distinct(expressions=[exact]))),
    ]
    if kind in ("integer", "float"):
        figures += [
            ("min", exp.Min(this=column.copy())),
            ("max", exp.Max(this=column.copy())),
            ("sum", exp.Sum(this=column.copy())),
            # as a double, as pandas computes it (MariaDB rounds the deviation of a DECIMAL or an
            # integer to 4 decimals on the wire)
            ("std", exp.StddevSamp(this=exp.cast(column.copy(), "DOUBLE"))),
        ]
        if dialect != "mysql":
            figures += [
                (f"q{share}", _filled(QUARTILE_SQL[dialect].format(share=share), dialect, name))
                for share in QUARTILES
            ]
    elif kind == "boolean":
        counted = exp.Case().when(column.copy(), exp.Literal.number(1)).else_(exp.Literal.number(0))
        figures.append(("true", exp.Sum(this=counted)))
    elif kind == "datetime":
        figures += [("min", exp.Min(this=column.copy())), ("max", exp.Max(this=column.copy()))]
    else:
        figures += [
            ("min_length", exp.Min(this=exp.Length(this=column.copy()))),
            ("max_length", exp.Max(this=exp.Length(this=column.copy()))),
        ]
    return figures


async def _ranked_quartiles(
    reader: SourceReader, table: CheckedTable, name: str, count: int
) -> tuple[str, list[float]]:
    """The quartiles of a numeric column with `count` values, as numpy's 'linear' method computes them:
    the values ranked around (count - 1) * share, read by ROW_NUMBER, interpolated here."""
    around = {share: math.floor((count - 1) * share) + 1 for share in QUARTILES}  # 1-based rank below
    wanted = sorted({rank + step for rank in around.values() for step in (0, 1) if rank + step <= count})
    column, position = _quoted(name), exp.column("position", quoted=True)
    order = exp.Order(expressions=[exp.Ordered(this=column.copy(), nulls_first=True)])
    ranked = (
        exp.select(
            exp.alias_(column.copy(), "value", quoted=True),
            exp.alias_(exp.Window(this=exp.RowNumber(), order=order), "position", quoted=True),
        )
        .from_(table.relation())
        .where(exp.Not(this=exp.Is(this=column.copy(), expression=exp.Null())))
    )
    query = (
        exp.select(exp.column("value", quoted=True), position.copy())
        .from_(ranked.subquery("ranked"))
        .where(position.copy().isin(*(exp.Literal.number(rank) for rank in wanted)))
        .order_by(position.copy())
    )
    text, result = await reader.fetch(query, {}, max_rows=len(wanted))
    value = {int(rank): _number(found) for found, rank in result.rows}
    quartiles = []
    for share, rank in around.items():
        fraction = (count - 1) * share - (rank - 1)
        pair = [value[rank], value.get(rank + 1, value[rank])]
        quartiles.append(float(np.quantile(pair, fraction)))  # numpy's own interpolation of the two
    return text, quartiles


def _top_values(table: CheckedTable, name: str, dialect: str) -> exp.Select:
    """The TOP_VALUES most frequent values of a text column with their counts (ties by value)."""
    column = _quoted(name)
    value: exp.Expression = column.copy()
    group: exp.Expression = column.copy()
    if dialect == "mysql":  # values equal byte for byte, as pandas counts them
        value, group = exp.Min(this=column.copy()), exp.cast(column.copy(), "BINARY")
    return (
        exp.select(
            exp.alias_(value, "value", quoted=True), exp.alias_(exp.Count(this=exp.Star()), "n", quoted=True)
        )
        .from_(table.relation())
        .where(exp.Not(this=exp.Is(this=column.copy(), expression=exp.Null())))
        .group_by(group)
        .order_by(exp.Ordered(this=exp.Literal.number(2), desc=True), exp.Literal.number(1))
        .limit(TOP_VALUES)
    )


def _finite(value: Any) -> float | None:
    number = _number(value)
    return number if math.isfinite(number) else None


def _instant(value: Any, type_name: str) -> str:
    """A date or timestamp as pandas shows it (dates at midnight; timestamptz in UTC)."""
    stamp = pd.Timestamp(value)
    if type_name == "timestamptz":
        stamp = stamp.tz_convert("UTC") if stamp.tzinfo is not None else stamp.tz_localize("UTC")
    return str(stamp.isoformat())


def _described(name: str, kind: str, type_name: str, rows: int, found: Mapping[str, Any]) -> dict[str, Any]:
    """One column's entry, shaped as analytics.describe.describe shapes it from a DataFrame."""
    present = int(found["present"])
    entry: dict[str, Any] = {
        "name": name,
        "type": kind,
        "nulls": rows - present,
        "null_fraction": (rows - present) / rows if rows else 0.0,
        "distinct": int(found["distinct"]),
    }
    if not present:
        return entry
    if kind in ("integer", "float"):
        quartiles = found.get("quartiles") or [found[f"q{share}"] for share in QUARTILES]
        entry["summary"] = {
            "mean": _finite(_number(found["sum"]) / present),
            "std": _finite(found["std"]) if present > 1 else None,
            "min": _finite(found["min"]),
            "p25": _finite(quartiles[0]),
            "median": _finite(quartiles[1]),
            "p75": _finite(quartiles[2]),
            "max": _finite(found["max"]),
            "sum": _finite(found["sum"]),
        }
    elif kind == "boolean":
        true = int(found["true"])
        entry["summary"] = {"true": true, "false": present - true, "true_fraction": true / present}
    elif kind == "datetime":
        entry["summary"] = {
            "min": _instant(found["min"], type_name),
            "max": _instant(found["max"], type_name),
        }
    else:
        entry["summary"] = {
            "top_values": [
                {"value": str(value), "count": int(count)} for value, count in found["top_values"]
            ],
            "min_length": int(found["min_length"]),
            "max_length": int(found["max_length"]),
        }
    return entry


async def run(reader: SourceReader, analysis: str, parameters: Any) -> tuple[Outcome, Used]:
    """Analysis `analysis` on the source `reader` reads (refuse_misplaced has checked the parameters)."""
    if analysis in SERIES:
        return await series(reader, analysis, parameters)
    runners = {"segment_compare": segment_compare, "correlation": correlation, "describe": describe_table}
    return await runners[analysis](reader, parameters)
