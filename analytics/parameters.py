"""The analysis registry: every analysis type, its validated parameters (defaults, allowed values) and an example.

Adding an analysis type takes one module and one entry here:
1. write `analytics/<type>.py` with a pydantic parameter model (subclass `AnalysisParameters`) and a pure
   function `(frame: pandas.DataFrame, parameters) -> Outcome` for session datasets;
2. optionally an async `(database, parameters) -> Outcome` in a `warehouse/` module for the live tables;
3. add an `AnalysisType(...)` to `ANALYSES` below, naming the two functions as "module:function".
The analyze_data tool, the parameter checks and `templates://analysis/{type}` pick it up from here.
"""

from __future__ import annotations

import datetime as dt
import importlib
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import InvalidInput

CUSTOMER_SEGMENTS = ("account_type", "gender", "location", "age_band", "tenure_band")
FEATURES = (
    "age",
    "tenure_days",
    "avg_network_quality",
    "event_count",
    "total_data_usage_mb",
    "total_revenue",
    "is_churned",
)


class AnalysisParameters(BaseModel):
    """Shared by every analysis: unknown keys are errors, and `dataset` names a session dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str | None = Field(
        None,
        max_length=128,
        description="name of a dataset saved in the session given as data_source (required then; "
        "ignored for data_source 'database')",
    )


# -- named columns: the same analyses on a table of a registered source (issue 21) ---------------

NAME_LENGTH = 128  # longest table or column name an agent may pass (checked against the catalog anyway)
SOURCE_ONLY = "data_source naming a source other than 'database'"


def _table_field() -> Any:
    return Field(
        None,
        max_length=NAME_LENGTH,
        description=f"a table of the source (list_sources names them); {SOURCE_ONLY} only",
    )


def _column_field(what: str) -> Any:
    return Field(None, max_length=NAME_LENGTH, description=f"{what}; {SOURCE_ONLY} only")


class SeriesColumns(BaseModel):
    """A time series of any table: `aggregate` of `value_column` per `time_column` bucket."""

    table: str | None = _table_field()
    time_column: str | None = _column_field("date or timestamp column of the table, bucketed by grain")
    value_column: str | None = _column_field(
        "numeric column aggregated per bucket (any column for count or count_distinct; omit for count(*))"
    )
    aggregate: Literal["sum", "mean", "count", "count_distinct"] | None = Field(
        None,
        description=f"what each bucket holds: sum or mean of value_column, count of rows (or of non-null "
        f"value_column), count_distinct of value_column (default sum); {SOURCE_ONLY} only",
    )


class DateRange(AnalysisParameters):
    start_date: dt.date | None = Field(None, description="first day included, YYYY-MM-DD")
    end_date: dt.date | None = Field(None, description="last day included, YYYY-MM-DD")

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        return self


class ChurnRateParameters(AnalysisParameters):
    group_by: Literal["account_type", "gender", "location", "age_band", "tenure_band"] = Field(
        "account_type", description="customer attribute to segment by (age_band and tenure_band are derived)"
    )
    monthly: bool = Field(False, description="also return churned customers and churn rate per month")
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="confidence level of the Wilson intervals")
    as_of: dt.datetime | None = Field(
        None, description="reference instant for tenure_band (default: the latest timestamp in the data)"
    )


class ArpuParameters(DateRange):
    group_by: Literal["account_type", "gender", "location", "age_band", "tenure_band"] = Field(
        "account_type", description="customer attribute for by_segment"
    )
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="confidence level of the t intervals")
    as_of: dt.datetime | None = Field(
        None, description="reference instant for tenure_band (default: the latest timestamp in the data)"
    )


class NetworkQualityParameters(DateRange):
    group_by: Literal["event_type", "account_type", "gender", "location", "age_band", "hour_of_day"] = Field(
        "event_type", description="what to compare quality across"
    )
    percentiles: list[float] = Field(
        [5.0, 25.0, 50.0, 75.0, 95.0],
        min_length=1,
        max_length=20,
        description="percentiles of the quality score to report, each 0-100",
    )
    poor_threshold: float = Field(2.5, ge=1.0, le=5.0, description="scores below this count as poor")

    @model_validator(mode="after")
    def _percentiles_in_range(self) -> NetworkQualityParameters:
        for value in self.percentiles:
            if not 0 <= value <= 100:
                raise ValueError(f"percentile {value} is outside 0-100")
        return self


class CorrelationParameters(AnalysisParameters):
    table: str | None = _table_field()
    method: Literal["pearson", "spearman", "kendall"] = Field(
        "pearson", description="correlation coefficient"
    )
    columns: list[str] | None = Field(
        None,
        min_length=2,
        max_length=30,
        description="columns to correlate (default: the per-customer features " + ", ".join(FEATURES) + "; "
        "numeric columns of parameters.table, required, on a source)",
    )
    top_pairs: int = Field(5, ge=1, le=50, description="how many of the strongest pairs to describe")
    as_of: dt.datetime | None = Field(
        None, description="reference instant for tenure_days (default: the latest timestamp in the data)"
    )


# -- trend, anomalies, segment_compare (issue 12) ------------------------------------------------


class TrendParameters(SeriesColumns, DateRange):
    metric: Literal["arpu", "churn", "quality", "usage"] = Field(
        "arpu",
        description="arpu: revenue / paying customers; churn: churned / customers active at the bucket's "
        "start; quality: mean network quality score; usage: total data usage (MB)",
    )
    grain: Literal["day", "week", "month"] = Field("month", description="time bucket (date_trunc)")
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="confidence level of the slope interval")
    seasonal_period: int | None = Field(
        None,
        ge=2,
        le=400,
        description="buckets per seasonal cycle (default 7 for day, 52 for week, 12 for month)",
    )
    decomposition: Literal["stl", "classical"] = Field(
        "stl", description="seasonal decomposition: STL (LOESS) or classical moving averages, both additive"
    )


class AnomaliesParameters(SeriesColumns, DateRange):
    metric: Literal["quality", "usage"] = Field(
        "quality", description="quality: mean network quality score; usage: total data usage (MB)"
    )
    grain: Literal["day", "hour"] = Field("day", description="time bucket (date_trunc)")
    window: int | None = Field(
        None, ge=5, le=2000, description="buckets in the trailing baseline (default 28 for day, 168 for hour)"
    )
    threshold: float = Field(
        3.5,
        gt=0,
        le=100,
        description="flag buckets whose robust z-score is beyond this (3.5: Iglewicz-Hoaglin)",
    )
    direction: Literal["both", "low", "high"] = Field("both", description="which departures to flag")
    max_anomalies: int = Field(100, ge=1, le=1000, description="list at most this many, the largest first")


class SegmentCompareParameters(DateRange):
    metric: Literal["arpu", "churn", "quality", "usage", "event_count", "tenure_days", "age"] = Field(
        "arpu",
        description="per-customer value to compare: arpu (revenue per paying customer), churn (churned or "
        "not), quality (mean score), usage (MB), event_count, tenure_days, age",
    )
    group_by: Literal["account_type", "gender", "location", "age_band", "tenure_band"] = Field(
        "account_type", description="customer attribute that defines the segments"
    )
    segments: list[str] | None = Field(
        None, min_length=2, max_length=30, description="segment values to compare (default: every segment)"
    )
    test: Literal[
        "auto", "welch_t", "mann_whitney", "anova", "welch_anova", "kruskal_wallis", "chi_square"
    ] = Field("auto", description="auto picks by metric type, group count, normality and equal variances")
    correction: Literal["holm", "bonferroni", "fdr_bh", "none"] = Field(
        "holm", description="multiple-comparison correction of the pairwise p-values"
    )
    alpha: float = Field(0.05, gt=0, lt=0.5, description="significance level for the decisions")
    as_of: dt.datetime | None = Field(
        None, description="reference instant for tenure (default: the latest timestamp in the data)"
    )
    table: str | None = _table_field()
    value_column: str | None = _column_field("numeric column compared between the segments (one value a row)")
    group_column: str | None = _column_field("column whose values are the segments")
    time_column: str | None = _column_field("date or timestamp column that start_date and end_date filter")


class ForecastParameters(SeriesColumns, DateRange):
    metric: Literal["arpu", "churn", "quality", "usage"] = Field(
        "arpu", description="the metric to forecast, defined as in trend"
    )
    grain: Literal["day", "week", "month"] = Field("month", description="time bucket (date_trunc)")
    horizon: int | None = Field(
        None, ge=1, le=365, description="buckets ahead to forecast (default 14 days, 8 weeks or 6 months)"
    )
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="coverage of the prediction intervals")
    seasonal_period: int | None = Field(
        None,
        ge=2,
        le=400,
        description="buckets per seasonal cycle (default 7 for day, 52 for week, 12 for month)",
    )


# -- describe, churn_drivers, retention (issue 12) -----------------------------------------------

DRIVERS = (
    "age",
    "tenure_days",
    "account_type",
    "avg_network_quality",
    "event_count",
    "total_data_usage_mb",
    "total_revenue",
)


class DescribeParameters(AnalysisParameters):
    table: str = Field(
        "customers",
        max_length=NAME_LENGTH,
        description="table to describe: customers, network_events or revenue on data_source 'database'; "
        "any table of a source (required there); a session dataset describes itself",
    )
    columns: list[str] | None = Field(
        None, min_length=1, max_length=100, description="columns to describe (default: every column)"
    )


class ChurnDriversParameters(AnalysisParameters):
    features: (
        list[
            Literal[
                "age",
                "tenure_days",
                "account_type",
                "avg_network_quality",
                "event_count",
                "total_data_usage_mb",
                "total_revenue",
            ]
        ]
        | None
    ) = Field(
        None,
        min_length=1,
        max_length=7,
        description="per-customer features of the model (default: " + ", ".join(DRIVERS) + ")",
    )
    confidence: float = Field(
        0.95, ge=0.5, le=0.999, description="confidence level of the odds-ratio intervals"
    )
    cv_folds: int = Field(5, ge=2, le=10, description="folds of the stratified cross-validated AUC")
    gradient_boosting: bool = Field(
        False, description="also fit gradient boosting and report permutation feature importances"
    )
    vif_threshold: float = Field(5.0, ge=1.0, le=100.0, description="warn when a feature's VIF exceeds this")
    random_state: int = Field(0, ge=0, le=2**31 - 1, description="seed of the fold split and the boosting")
    as_of: dt.datetime | None = Field(
        None, description="reference instant for tenure_days (default: the latest timestamp in the data)"
    )

    @model_validator(mode="after")
    def _distinct_features(self) -> ChurnDriversParameters:
        if self.features is not None and len(set(self.features)) != len(self.features):
            raise ValueError("features lists a feature twice")
        return self


class RetentionParameters(AnalysisParameters):
    group_by: Literal["account_type", "gender", "location", "age_band"] = Field(
        "account_type", description="customer attribute whose survival curves are compared (log-rank test)"
    )
    cohort_months: int = Field(
        12, ge=1, le=60, description="months after sign-up shown in the monthly cohort retention table"
    )
    curve_step_days: int = Field(
        30, ge=1, le=365, description="spacing in days of the reported survival curve"
    )
    confidence: float = Field(0.95, ge=0.5, le=0.999, description="confidence level of survival intervals")
    as_of: dt.datetime | None = Field(
        None,
        description="end of observation: later churn is censored (default: the latest timestamp in the data)",
    )


@dataclass(frozen=True)
class AnalysisType:
    name: str
    description: str
    parameters: type[AnalysisParameters]
    # "module:function" of this package computing on a session dataset (pure); the same analysis on a
    # database is warehouse.aggregates.RUNNERS[name], which warehouse registers itself.
    frame_runner: str
    example: dict[str, Any] = field(default_factory=dict)

    def on_frame(self) -> Any:
        """The function computing this analysis on a DataFrame (its module imported on first use)."""
        module, _, function = self.frame_runner.partition(":")
        return getattr(importlib.import_module(module), function)


ANALYSES: dict[str, AnalysisType] = {
    analysis.name: analysis
    for analysis in (
        AnalysisType(
            "churn_rate",
            "Share of customers who churned, overall and per segment, with Wilson intervals, a chi-square "
            "test of independence (Cramér's V) and optionally a monthly series.",
            ChurnRateParameters,
            "analytics.churn:churn_rate_of_frame",
            {"group_by": "account_type", "monthly": True},
        ),
        AnalysisType(
            "arpu",
            "Average revenue per paying customer (total revenue / distinct paying customers), overall, per "
            "segment, per month and per service type, with t intervals; optional date range.",
            ArpuParameters,
            "analytics.arpu:arpu_of_frame",
            {"group_by": "account_type", "start_date": "2024-01-01", "end_date": "2024-12-31"},
        ),
        AnalysisType(
            "network_quality",
            "Network quality score: mean, median, percentiles and share of poor events, per segment, with "
            "one-way ANOVA and Kruskal-Wallis tests across segments.",
            NetworkQualityParameters,
            "analytics.network:network_quality_of_frame",
            {"group_by": "event_type", "percentiles": [5, 50, 95]},
        ),
        AnalysisType(
            "correlation",
            "Correlation matrix with p-values over per-customer features (or chosen columns of a session "
            "dataset), and the strongest pairs in plain words.",
            CorrelationParameters,
            "analytics.correlation:correlation_of_frame",
            {"method": "spearman"},
        ),
        AnalysisType(
            "trend",
            "A metric (ARPU, churn, quality, usage) per day, week or month with an OLS trend (slope, "
            "interval, p-value) and a seasonal decomposition when the series spans two cycles.",
            TrendParameters,
            "analytics.trend:trend_of_frame",
            {"metric": "quality", "grain": "week"},
        ),
        AnalysisType(
            "anomalies",
            "Days or hours whose network quality or usage departs from the trailing baseline (robust "
            "z-score from the rolling median and MAD), with the size of each departure.",
            AnomaliesParameters,
            "analytics.anomalies:anomalies_of_frame",
            {"metric": "quality", "grain": "day", "threshold": 3.5},
        ),
        AnalysisType(
            "segment_compare",
            "A per-customer metric between segments with the fitting test (Welch t, Mann-Whitney, ANOVA, "
            "Kruskal-Wallis, chi-square), effect sizes and Holm-corrected pairwise comparisons.",
            SegmentCompareParameters,
            "analytics.compare:segment_compare_of_frame",
            {"metric": "quality", "group_by": "account_type"},
        ),
        AnalysisType(
            "forecast",
            "A metric's next days, weeks or months by exponential smoothing (ETS with a damped trend and, "
            "given two cycles, seasonality), with prediction intervals and a holdout backtest.",
            ForecastParameters,
            "analytics.forecast:forecast_of_frame",
            {"metric": "quality", "grain": "week", "horizon": 8},
        ),
        AnalysisType(
            "describe",
            "Per-column summaries of a table or session dataset: type, nulls, distinct values; mean, std, "
            "quartiles, min, max, sum of numbers; top values and lengths of text; range of dates.",
            DescribeParameters,
            "analytics.describe:describe_of_frame",
            {"table": "network_events"},
        ),
        AnalysisType(
            "churn_drivers",
            "Logistic regression of churn on standardised per-customer features: odds ratios with "
            "intervals and p-values, cross-validated AUC, VIF collinearity warnings, drivers ranked in "
            "plain words; optional gradient-boosting permutation importances.",
            ChurnDriversParameters,
            "analytics.drivers:churn_drivers_of_frame",
            {
                "features": ["account_type", "avg_network_quality", "age", "total_data_usage_mb"],
                "cv_folds": 5,
            },
        ),
        AnalysisType(
            "retention",
            "Kaplan-Meier survival of customer lifetime per segment (median and quantile lifetimes, curve "
            "with intervals, log-rank test) and a monthly sign-up cohort retention table.",
            RetentionParameters,
            "analytics.survival:retention_of_frame",
            {"group_by": "account_type", "cohort_months": 6},
        ),
    )
}


# The analyses that also run on a table of a registered source, on named columns: an example of each,
# published in their templates (data_source is then the source's name, e.g. from list_sources).
SOURCE_EXAMPLES: dict[str, dict[str, Any]] = {
    "describe": {"table": "orders", "columns": ["amount", "country", "ordered_at"]},
    "correlation": {"table": "orders", "columns": ["amount", "quantity", "discount"], "method": "spearman"},
    "segment_compare": {"table": "orders", "value_column": "amount", "group_column": "country"},
    "trend": {
        "table": "orders",
        "time_column": "ordered_at",
        "value_column": "amount",
        "aggregate": "sum",
        "grain": "month",
    },
    "anomalies": {"table": "orders", "time_column": "ordered_at", "aggregate": "count", "grain": "day"},
    "forecast": {
        "table": "orders",
        "time_column": "ordered_at",
        "value_column": "amount",
        "aggregate": "mean",
        "grain": "week",
        "horizon": 8,
    },
}
_SOURCE_PARAMETERS = ("table", "time_column", "value_column", "aggregate", "group_column", "columns")


def choices(model: type[AnalysisParameters], key: str) -> tuple[str, ...]:
    """The allowed values of a Literal parameter (e.g. every group_by an analysis accepts)."""
    return tuple(str(value) for value in get_args(model.model_fields[key].annotation))


def analysis_type(name: str) -> AnalysisType:
    try:
        return ANALYSES[name]
    except KeyError:
        raise InvalidInput(
            f"unknown analysis_type '{str(name)[:60]}'; available: {', '.join(sorted(ANALYSES))}"
        ) from None


def parse_parameters(name: str, raw: dict[str, Any] | None) -> AnalysisParameters:
    """Validated parameters for analysis `name`; any problem is one InvalidInput line listing what is allowed."""
    analysis = analysis_type(name)
    model = analysis.parameters
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidInput(f"parameters must be an object, e.g. {analysis.example}")
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as error:
        raise InvalidInput(_explain(name, model, error)) from None


def _explain(name: str, model: type[AnalysisParameters], error: pydantic.ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem.get("loc", ()))
    kind = problem.get("type", "")
    allowed_keys = ", ".join(model.model_fields)
    if kind == "extra_forbidden":
        return f"unknown parameter '{where[:60]}' for {name}; allowed: {allowed_keys}"
    choices = _allowed_values(model, where.split(".")[0]) if where else None
    got = repr(problem.get("input"))[:60]
    if choices is not None:
        return f"parameter '{where}' of {name} must be one of {', '.join(map(str, choices))}; got {got}"
    message = problem.get("msg", "invalid value").removeprefix("Value error, ")
    return f"parameter '{where or 'parameters'}' of {name}: {message}; got {got}"


def _allowed_values(model: type[AnalysisParameters], key: str) -> list[Any] | None:
    schema = model.model_json_schema()["properties"].get(key, {})
    if "enum" in schema:
        return list(schema["enum"])
    return None


def _describe_field(schema: dict[str, Any]) -> dict[str, Any]:
    kinds = [option.get("type") for option in schema.get("anyOf", [schema]) if option.get("type") != "null"]
    described: dict[str, Any] = {
        "type": kinds[0] if len(kinds) == 1 else kinds,
        "default": schema.get("default"),
    }
    if schema.get("format"):
        described["format"] = schema["format"]
    if "enum" in schema:
        described["allowed"] = schema["enum"]
    for bound in ("minimum", "maximum", "minItems", "maxItems"):
        if bound in schema:
            described[bound] = schema[bound]
    if schema.get("anyOf") and any(option.get("format") for option in schema["anyOf"]):
        described["format"] = next(option["format"] for option in schema["anyOf"] if option.get("format"))
    described["description"] = schema.get("description", "")
    return described


def template(name: str) -> dict[str, Any]:
    """What `templates://analysis/{name}` publishes: parameters with types, defaults, allowed values; an example."""
    analysis = analysis_type(name)
    properties = analysis.parameters.model_json_schema()["properties"]
    described = {
        "analysis_type": analysis.name,
        "description": analysis.description,
        "parameters": {key: _describe_field(schema) for key, schema in properties.items()},
        "example": {
            "tool": "analyze_data",
            "arguments": {
                "data_source": "database",
                "analysis_type": analysis.name,
                "parameters": analysis.example,
            },
        },
    }
    if name in SOURCE_EXAMPLES:
        described["on_a_source"] = {
            "note": "with data_source naming a registered source (list_sources), name a table and its "
            "columns; names are checked against the source's catalog (schema://{source}/{table})",
            "parameters": [key for key in _SOURCE_PARAMETERS if key in properties],
            "example": {
                "tool": "analyze_data",
                "arguments": {
                    "data_source": "shop",
                    "analysis_type": analysis.name,
                    "parameters": SOURCE_EXAMPLES[name],
                },
            },
        }
    return described


def templates() -> dict[str, dict[str, Any]]:
    return {name: template(name) for name in sorted(ANALYSES)}


def preload() -> None:
    """Import every analysis's code now (pandas, scipy, statsmodels, sklearn take seconds to import), so
    the first call after a start is as fast as the rest; the server calls it before it says ready."""
    for analysis in ANALYSES.values():
        analysis.on_frame()
