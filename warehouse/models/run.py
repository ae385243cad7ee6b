"""Analyses on any modelled source: the model's compiled aggregate queries run through the source engine's
guard and read-only path (READ ONLY transaction, statement timeout, rolled back), and the small results
finished by the same pure functions of analytics/ the hard-wired telecom runners use.

    outcome = await run_modelled(engine, model, "churn_rate", {"group_by": "country"}, source="shop")

`engine` is any source engine (warehouse.engines: PostgresEngine, MySQLEngine, FilesEngine) or, for the
built-in database, `MainDatabase(db)`. `parameters` is the agent's raw parameter object: it is validated
here (group_by must be one of the model's segments).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any, Protocol

import pandas as pd

from analytics.anomalies import anomalies_from_buckets
from analytics.arpu import arpu_from_groups
from analytics.bands import MISSING
from analytics.churn import churn_rate_from_counts
from analytics.compare import segment_compare_from_values
from analytics.correlation import correlation_of_table
from analytics.drivers import churn_drivers_of_table
from analytics.forecast import forecast_from_buckets
from analytics.parameters import analysis_type, parse_parameters
from analytics.summary import Outcome
from analytics.survival import retention_from_counts
from analytics.trend import Measure, trend_from_buckets
from core.errors import InvalidInput
from warehouse.models.compile import Compiler, Statement, as_parameter, feature_names, render
from warehouse.models.spec import DIALECT_OF_KIND, FlagChurn, MetricModel

# Same bounds as the hard-wired analyses (warehouse.aggregates.STATEMENT_TIMEOUT_SECONDS); answers are
# aggregates or one row per customer, so the row cap is only a backstop.
TIMEOUT_SECONDS = 120.0
MOST_ROWS = 5_000_000
MOST_BYTES = 1 << 31

# The analyses a model serves, and which part of the model each needs.
MODELLED = (
    "churn_rate",
    "arpu",
    "retention",
    "segment_compare",
    "trend",
    "forecast",
    "correlation",
    "churn_drivers",
    "anomalies",
)
TREND_METRICS = {"arpu": "revenue", "churn": "churn"}
COMPARED_METRICS = {"arpu": "revenue", "churn": "churn", "tenure_days": "churn", "event_count": "activity"}
# anomalies: per-bucket metrics every model part gives (the customer part always exists), and what they are.
ANOMALY_METRICS = {
    "revenue": "revenue",
    "activity": "activity",
    "active_customers": "activity",
    "signups": "customer",
}
ANOMALY_DEFINITIONS = {
    "revenue": "revenue of the bucket (sum of the model's revenue amount)",
    "activity": "activity rows of the bucket (the model's activity, e.g. orders or events)",
    "active_customers": "distinct customers with activity in the bucket",
    "signups": "customers who signed up in the bucket (the model's customer sign-up time)",
}
_NEEDS = {"churn_rate": "churn", "arpu": "revenue", "retention": "churn", "churn_drivers": "churn"}


class ModelEngine(Protocol):
    """What run_modelled needs of an engine: its kind (the SQL dialect), its guard, its read-only run."""

    kind: str

    async def guarded(self, sql: str, parameters: Mapping[str, Any]) -> Any: ...

    async def run(
        self, statement: Any, parameters: Mapping[str, Any], *, timeout: float, max_rows: int, max_bytes: int
    ) -> Any: ...


class MainDatabase:
    """The built-in database as a ModelEngine: the agent query guard and the read-only query role
    (warehouse.query.run_select), as query_database uses them on `main`."""

    kind = "postgresql"

    def __init__(self, db: Any) -> None:
        self.db = db

    async def guarded(self, sql: str, parameters: Mapping[str, Any]) -> Any:
        from warehouse.query import guard_in_thread

        return await guard_in_thread(sql, parameters)

    async def run(
        self, statement: Any, parameters: Mapping[str, Any], *, timeout: float, max_rows: int, max_bytes: int
    ) -> Any:
        from warehouse.query import run_select

        return await run_select(
            self.db, statement, parameters, timeout=timeout, max_rows=max_rows, max_bytes=max_bytes
        )


async def run_modelled(
    engine: ModelEngine,
    model: MetricModel,
    analysis_name: str,
    parameters: Mapping[str, Any] | None,
    *,
    source: str = "",
) -> Outcome:
    """Run `analysis_name` on a source described by `model`; the Outcome the hard-wired runner would give,
    with `metadata` naming the model and its version. Raises InvalidInput (one line) for parameters the
    model cannot serve or an analysis needing a part the model lacks."""
    runner = _RUNNERS.get(analysis_name)
    where = f" on source '{source}'" if source else ""
    if runner is None:
        raise InvalidInput(
            f"{str(analysis_name)[:40]}{where} is not available for modelled sources; "
            f"available: {', '.join(MODELLED)}"
        )
    raw = dict(parameters or {})
    needed = _NEEDS.get(analysis_name)
    if analysis_name == "segment_compare":
        metric = raw.get("metric", "arpu")
        needed = COMPARED_METRICS.get(metric) if isinstance(metric, str) else None
        if needed is None:
            raise InvalidInput(
                f"segment_compare{where} compares metric {', '.join(COMPARED_METRICS)}; got {str(metric)[:40]!r}"
            )
    if analysis_name in ("trend", "forecast"):
        metric = raw.get("metric", "arpu")
        needed = TREND_METRICS.get(metric) if isinstance(metric, str) else None
        if needed is None:
            raise InvalidInput(
                f"{analysis_name}{where} follows metric {', '.join(TREND_METRICS)}; got {str(metric)[:40]!r}"
            )
    anomaly_metric = None
    if analysis_name == "anomalies":  # the parameter model lists the telecom metrics; a model has its own
        anomaly_metric = raw.pop("metric", _anomaly_metrics(model)[0])
        needed = ANOMALY_METRICS.get(anomaly_metric) if isinstance(anomaly_metric, str) else None
        if needed is None:
            raise InvalidInput(
                f"anomalies{where} follows metric {', '.join(ANOMALY_METRICS)}; got {str(anomaly_metric)[:40]!r}"
            )
    if needed is not None and getattr(model, needed) is None:
        raise InvalidInput(
            f"{analysis_name}{where} needs the model's {needed} definition; model '{model.name}' has none"
        )
    segments = model.customer.segments
    grouped = "group_by" in analysis_type(analysis_name).parameters.model_fields
    group_by = raw.pop("group_by", segments[0] if segments else None) if grouped else None
    if grouped and group_by not in segments:
        raise InvalidInput(
            f"cannot group by '{str(group_by)[:60]}'{where}; the model's segments: {', '.join(segments) or 'none'}"
        )
    features = raw.pop("features", None) if analysis_name == "churn_drivers" else None
    checked = parse_parameters(analysis_name, raw)
    if (
        analysis_name == "churn_drivers"
    ):  # the parameter model lists the telecom features; a model has its own
        checked = checked.model_copy(update={"features": _driver_features(model, features)})
    if grouped:  # the parameter models list the telecom segments; a model has its own
        checked = checked.model_copy(update={"group_by": group_by})
    dialect = DIALECT_OF_KIND.get(engine.kind)
    if dialect is None:
        raise InvalidInput(f"source{where} has an engine ({engine.kind}) that models do not compile to")
    run = _Run(engine, Compiler(model, dialect))
    # A runner's third argument: the segment column, or for anomalies the model's metric.
    outcome = await runner(run, checked, str(anomaly_metric) if anomaly_metric else str(group_by))
    outcome.sql = [statement.sql for statement in run.statements]
    outcome.metadata.update({"model": model.name, "model_version": model.version})
    return outcome


def _driver_features(model: MetricModel, given: Any) -> list[str]:
    """churn_drivers' numeric features: the model's per-customer features but the target itself."""
    available = [name for name in feature_names(model) if name != "is_churned"]
    if given is None:
        return available
    if not isinstance(given, list) or not given or not all(isinstance(name, str) for name in given):
        raise InvalidInput(f"parameter 'features' of churn_drivers must be a list of: {', '.join(available)}")
    unknown = [name for name in given if name not in available]
    if unknown or len(set(given)) != len(given):
        raise InvalidInput(
            f"churn_drivers on this model takes features from: {', '.join(available)}; got "
            f"{', '.join(repr(name)[:40] for name in unknown) or 'a feature twice'}"
        )
    return list(given)


def _anomaly_metrics(model: MetricModel) -> list[str]:
    """The anomaly metrics `model` has the parts for (signups always: every model has customers)."""
    return [metric for metric, part in ANOMALY_METRICS.items() if getattr(model, part) is not None]


def model_support(model: MetricModel) -> dict[str, dict[str, Any]]:
    """Per modelled analysis: whether `model` serves it, the segments it groups by and, when it does not,
    the part it lacks (for templates://analysis/{type} per source)."""
    support: dict[str, dict[str, Any]] = {}
    for name in MODELLED:
        entry: dict[str, Any] = {}
        if "group_by" in analysis_type(name).parameters.model_fields:
            entry["segments"] = list(model.customer.segments)
        if name == "segment_compare":
            entry["metrics"] = [
                metric for metric, part in COMPARED_METRICS.items() if getattr(model, part) is not None
            ]
        elif name in ("trend", "forecast"):
            entry["metrics"] = [
                metric for metric, part in TREND_METRICS.items() if getattr(model, part) is not None
            ]
        elif name == "anomalies":
            entry["metrics"] = _anomaly_metrics(model)
        elif name == "correlation":
            entry["columns"] = feature_names(model)
        elif name == "churn_drivers":
            entry["features"] = [feature for feature in feature_names(model) if feature != "is_churned"]
        needed = _NEEDS.get(name)
        missing = needed if needed is not None and getattr(model, needed) is None else None
        if "metrics" in entry and not entry["metrics"]:  # no metric of the analysis has its part
            parts = COMPARED_METRICS if name == "segment_compare" else TREND_METRICS
            missing = " or ".join(dict.fromkeys(parts.values()))
        entry["supported"] = missing is None
        if missing is not None:
            entry["missing"] = f"the model's {missing} definition"
        support[name] = entry
    return support


class _Run:
    """One analysis's statements on one engine, in order (and kept for the answer's metadata)."""

    def __init__(self, engine: ModelEngine, compiler: Compiler) -> None:
        self.engine = engine
        self.compiler = compiler
        self.statements: list[Statement] = []

    async def fetch(self, name: str, query: Any, **values: Any) -> list[dict[str, Any]]:
        statement = render(name, query, self.compiler.dialect, values)
        self.statements.append(statement)
        guarded = await self.engine.guarded(statement.sql, statement.parameters)
        result = await self.engine.run(
            guarded, statement.parameters, timeout=TIMEOUT_SECONDS, max_rows=MOST_ROWS, max_bytes=MOST_BYTES
        )
        if result.truncated:
            raise InvalidInput(f"the {name} query of this analysis returned too much; narrow it with dates")
        return list(result.records())

    async def as_of(self, given: dt.datetime | None) -> dt.datetime | None:
        """`given`, the model's fixed as_of (inactivity churn), or the latest instant in the data."""
        if given is not None:
            return as_parameter(given)
        churn = self.compiler.model.churn
        fixed = getattr(churn, "as_of", None)
        if fixed is not None:
            return as_parameter(fixed)
        (row,) = await self.fetch("as_of", self.compiler.as_of())
        found = [_instant(value) for value in row.values() if value is not None]
        return max(found) if found else None


def _instant(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return as_parameter(value) or value
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    instant: dt.datetime = pd.Timestamp(value).to_pydatetime()
    return instant


def _bounds(parameters: Any) -> dict[str, dt.datetime | None]:
    start, end = parameters.start_date, parameters.end_date
    return {
        "start_at": dt.datetime.combine(start, dt.time()) if start else None,
        "end_before": dt.datetime.combine(end + dt.timedelta(days=1), dt.time()) if end else None,
    }


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


async def _churn_rate(run: _Run, parameters: Any, segment: str) -> Outcome:
    needs_as_of = not isinstance(run.compiler.model.churn, FlagChurn)
    reference = await run.as_of(parameters.as_of) if needs_as_of else None
    rows = await run.fetch("churn_segments", run.compiler.churn_segments(segment), as_of=reference)
    monthly = None
    if parameters.monthly:
        found = await run.fetch("churn_monthly", run.compiler.churn_monthly(), as_of=reference)
        monthly = pd.DataFrame(
            [(row["month"], int(row["new_customers"]), int(row["churned"])) for row in found],
            columns=["month", "new_customers", "churned"],
        )
    outcome = churn_rate_from_counts(
        [row["segment"] for row in rows],
        [int(row["customers"]) for row in rows],
        [int(row["churned"] or 0) for row in rows],
        parameters,
        monthly,
        reference,
    )
    return outcome


async def _arpu(run: _Run, parameters: Any, segment: str) -> Outcome:
    bounds = _bounds(parameters)
    levels = ["segment", "month"] + (
        ["kind"] if run.compiler.model.revenue and run.compiler.model.revenue.kind else []
    )
    groups = []
    transactions = 0
    for level in levels:
        rows = await run.fetch(f"arpu_{level}", run.compiler.arpu_level(level, segment), **bounds)
        name = (
            "service_type" if level == "kind" else level
        )  # the level analytics.arpu reports as by_service_type
        for row in rows:
            groups.append(
                (name, row["key"], int(row["customers"]), float(row["revenue"]), _number(row["variance"]))
            )
        if level == "segment":
            transactions = sum(int(row["transactions"]) for row in rows)
    if not transactions and (parameters.start_date or parameters.end_date):
        raise InvalidInput(
            "no revenue in the dates given; pick dates in the data's range or drop start_date/end_date"
        )
    frame = pd.DataFrame(groups, columns=["level", "key", "customers", "revenue", "variance"])
    frame["variance"] = frame["variance"].astype(float)
    outcome = arpu_from_groups(frame, parameters, transactions)
    if run.compiler.model.revenue and run.compiler.model.revenue.kind:  # what by_service_type groups by
        outcome.metadata["revenue_kind"] = run.compiler.model.revenue.kind
    return outcome


async def _retention(run: _Run, parameters: Any, segment: str) -> Outcome:
    reference = await run.as_of(parameters.as_of)
    if reference is None:
        raise InvalidInput("the source holds no customers yet, so there is no lifetime to analyse")
    lifetime_rows = await run.fetch("retention_lifetimes", run.compiler.lifetimes(segment), as_of=reference)
    cohort_rows = await run.fetch("retention_cohorts", run.compiler.cohorts(), as_of=reference)
    lifetimes = pd.DataFrame(
        [
            (row["segment"], float(row["lifetime_days"]), int(row["churned"]), int(row["customers"]))
            for row in lifetime_rows
        ],
        columns=["segment", "lifetime_days", "churned", "customers"],
    )
    cohorts = pd.DataFrame(
        [(row["cohort"], _number(row["months_lived"]), int(row["customers"])) for row in cohort_rows],
        columns=["cohort", "months_lived", "customers"],
    )
    cohorts["months_lived"] = cohorts["months_lived"].astype(float)
    return await asyncio.to_thread(
        retention_from_counts, lifetimes, cohorts, pd.Timestamp(reference), parameters
    )


async def _segment_compare(run: _Run, parameters: Any, segment: str) -> Outcome:
    metric = parameters.metric
    needs_as_of = metric in ("churn", "tenure_days") and not isinstance(run.compiler.model.churn, FlagChurn)
    reference = await run.as_of(parameters.as_of) if needs_as_of or metric == "tenure_days" else None
    rows = await run.fetch(
        f"per_customer_{metric}",
        run.compiler.per_customer(metric, segment),
        as_of=reference,
        **_bounds(parameters),
    )
    segments = pd.Series([row["segment"] for row in rows], dtype=object)
    values = pd.Series([_number(row["value"]) for row in rows], dtype=float)
    return await asyncio.to_thread(
        segment_compare_from_values, segments.where(segments.notna(), MISSING), values, parameters, reference
    )


def _buckets(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame([[row[name] for name in columns] for row in rows], columns=columns)
    frame["bucket"] = pd.to_datetime(frame["bucket"])
    for name in columns[1:]:
        frame[name] = pd.to_numeric(frame[name].map(_number), errors="coerce")
    return frame.sort_values("bucket", ignore_index=True)


async def _series(run: _Run, parameters: Any) -> pd.DataFrame:
    """Per-bucket totals of the trend's metric: arpu from revenue, churn from the churn definition."""
    if parameters.metric == "arpu":
        rows = await run.fetch(
            "trend_revenue", run.compiler.revenue_buckets(parameters.grain), **_bounds(parameters)
        )
        if not rows and (parameters.start_date or parameters.end_date):
            raise InvalidInput(
                "no revenue in the dates given; pick dates in the data's range or drop start_date/end_date"
            )
        return _buckets(rows, ["bucket", "revenue", "customers", "transactions"])
    needs_as_of = not isinstance(run.compiler.model.churn, FlagChurn)
    reference = await run.as_of(None) if needs_as_of else None
    rows = await run.fetch("trend_churn", run.compiler.churn_buckets(parameters.grain), as_of=reference)
    return _buckets(rows, ["bucket", "new_customers", "churned"])


async def _trend(run: _Run, parameters: Any, segment: str) -> Outcome:
    return await asyncio.to_thread(trend_from_buckets, await _series(run, parameters), parameters)


async def _forecast(run: _Run, parameters: Any, segment: str) -> Outcome:
    return await asyncio.to_thread(forecast_from_buckets, await _series(run, parameters), parameters)


async def _correlation(run: _Run, parameters: Any, segment: str) -> Outcome:
    available = feature_names(run.compiler.model)
    names = list(parameters.columns or available)
    unknown = [name for name in names if name not in available]
    if unknown or len(set(names)) != len(names):
        raise InvalidInput(
            f"correlation on this model takes columns from: {', '.join(available)}; got "
            f"{', '.join(repr(name)[:40] for name in unknown) or 'a column twice'}"
        )
    reference = await run.as_of(parameters.as_of)
    rows = await run.fetch("features", run.compiler.features(names), as_of=reference)
    table = pd.DataFrame({name: [_number(row[name]) for row in rows] for name in names}, dtype=float)
    outcome = await asyncio.to_thread(correlation_of_table, table, parameters)
    outcome.results["as_of"] = reference.isoformat() if reference else None
    return outcome


async def _churn_drivers(run: _Run, parameters: Any, segment: str) -> Outcome:
    names = list(parameters.features)
    reference = await run.as_of(parameters.as_of)
    rows = await run.fetch("driver_features", run.compiler.features(["is_churned", *names]), as_of=reference)
    table = pd.DataFrame(
        {name: [_number(row[name]) for row in rows] for name in ["is_churned", *names]}, dtype=float
    )
    outcome = await asyncio.to_thread(churn_drivers_of_table, table, parameters)
    outcome.results["as_of"] = reference.isoformat() if reference else None
    return outcome


async def _anomalies(run: _Run, parameters: Any, metric: str) -> Outcome:
    """Per-bucket totals of `metric` in one GROUP BY, judged by the pure robust z-score of analytics."""
    rows = await run.fetch(
        f"anomalies_{metric}", run.compiler.anomaly_buckets(metric, parameters.grain), **_bounds(parameters)
    )
    if not rows and (parameters.start_date or parameters.end_date):
        raise InvalidInput(
            f"no {metric} in the dates given; pick dates in the data's range or drop start_date/end_date"
        )
    totals = _buckets(rows, ["bucket", "value", "entries"]).rename(columns={"entries": "rows"})
    measure = Measure(metric, ANOMALY_DEFINITIONS[metric], 0.0)
    return await asyncio.to_thread(anomalies_from_buckets, totals, parameters, measure)


_RUNNERS = {
    "anomalies": _anomalies,
    "churn_drivers": _churn_drivers,
    "correlation": _correlation,
    "trend": _trend,
    "forecast": _forecast,
    "churn_rate": _churn_rate,
    "arpu": _arpu,
    "retention": _retention,
    "segment_compare": _segment_compare,
}
