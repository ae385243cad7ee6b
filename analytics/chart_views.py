"""The default chart of each analysis result: the analysis's own headline figures, drawn the way they read.

`analysis_view` recognises an analyze_data answer (or its `results`) and returns the PlotPlan of its
view: churn rate by segment with its confidence intervals, ARPU by month as a line, Kaplan-Meier
curves as steps with interval bands, a trend with its fitted line, a forecast after its history with
the prediction band, anomalies marked on their series, correlations as a heatmap. Every number drawn
is copied from the result, never recomputed, so the chart and the analysis cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from analytics.chart_data import (
    AUTO,
    MAX_SERIES,
    BoxStats,
    ChartSpec,
    PlotPlan,
    Series,
    _category_order,
)
from core.errors import InvalidInput

View = Callable[[Mapping[str, Any], ChartSpec], PlotPlan]

# Keys that only one analysis's results have (an answer without its analysis_type is still known).
_SIGNATURES = (
    ("churn_rate", ("overall_churn_rate",)),
    ("arpu", ("overall_arpu",)),
    ("network_quality", ("overall_mean_quality",)),
    ("churn_drivers", ("coefficients", "drivers")),
    ("forecast", ("forecast", "observed")),
    ("anomalies", ("anomaly_count",)),
    ("segment_compare", ("segments", "pairwise")),
    ("trend", ("trend", "series")),
    ("retention", ("overall", "lifetime")),
    ("correlation", ("matrix", "method")),
    ("describe", ("column_count", "columns")),
)
# Chart types an agent may ask for that mean one of a view's kinds.
_KINDS = {"grouped_bar": "bar", "stacked_bar": "bar", "correlation_heatmap": "heatmap"}


def _results_of(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """An answer's `results`, or the mapping itself when it is the results."""
    results = data.get("results")
    return results if isinstance(results, Mapping) else data


def analysis_type_of(data: Any) -> str | None:
    """The analysis a result comes from: its `analysis_type`, else recognised by its keys."""
    if not isinstance(data, Mapping):
        return None
    named = data.get("analysis_type")
    if isinstance(named, str) and named in VIEWS:
        return named
    results = _results_of(data)
    if results and all(isinstance(value, list) for value in results.values()):
        return None  # a column map {column: [values]}, whatever its column names
    for name, keys in _SIGNATURES:
        if all(key in results for key in keys):
            return name
    return None


def analysis_view(data: Any, spec: ChartSpec, part: str | None) -> PlotPlan | None:
    """The plan of an analysis result's view for `spec.chart_type` (AUTO: its default view); None when
    `data` is not an analysis result or the caller chose columns (x/y/hue/value) or a part to draw."""
    analysis = analysis_type_of(data)
    if analysis is None or part is not None or spec.x or spec.y or spec.hue or spec.value:
        return None
    assert isinstance(data, Mapping)
    results = _results_of(data)
    views = VIEWS[analysis]
    kind = _KINDS.get(spec.chart_type, spec.chart_type)
    if kind == AUTO:
        kind = next(iter(views))
    if kind not in views:
        raise InvalidInput(
            f"a {analysis} result charts as {' or '.join(views)} (default {next(iter(views))}); leave "
            "chart_type out for its default view, or pass part= and x_axis/y_axis to chart its columns"
        )
    plan = views[kind](results, spec)
    if spec.title:
        plan.title = spec.title
    metadata = data.get("metadata")
    omitted = metadata.get("omitted") if isinstance(metadata, Mapping) else None
    if omitted:
        plan.notes.append(
            "drawn from a summarised answer (left out: "
            + "; ".join(str(item) for item in omitted)[:300]
            + "): chart the analysis saved in a session ({session_id, key}) or an answer with detail='full' "
            "for every point"
        )
    return plan


# ---------------------------------------------------------------- helpers


def _table(results: Mapping[str, Any], name: str, analysis: str) -> Mapping[str, Any]:
    table = results.get(name)
    if not isinstance(table, Mapping) or not table:
        raise InvalidInput(f"the {analysis} result has no '{name}' to chart; run the analysis again")
    return table


def _ordered(labels: list[str]) -> list[str]:
    """Known ordinals in their order (basic, premium, enterprise), else natural order."""
    series = pd.Series(labels, dtype="object")
    return _category_order(series, series)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def _maybe(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _stamp(text: Any) -> pd.Timestamp:
    return pd.Timestamp(str(text))


def _label(name: str) -> str:
    return name.replace("_", " ")


def _segment_bars(
    results: Mapping[str, Any],
    table_name: str,
    value: str,
    *,
    title: str,
    y_label: str,
    analysis: str,
    intervals: bool = True,
    reference: float | None = None,
) -> PlotPlan:
    """One bar per segment of results[table_name], its `value` (with ci_low/ci_high as error bars)."""
    table = _table(results, table_name, analysis)
    order = _ordered([str(key) for key in table])
    rows = {str(key): row for key, row in table.items() if isinstance(row, Mapping)}
    heights = [_number(rows[label].get(value)) for label in order]
    low = high = None
    if intervals and all("ci_low" in rows[label] for label in order):
        low = [_maybe(rows[label].get("ci_low")) for label in order]
        high = [_maybe(rows[label].get("ci_high")) for label in order]
    group_by = str(results.get("group_by") or "segment")
    notes = []
    if reference is not None:
        notes.append(f"the dashed line is the overall figure, {reference:.4g}")
    longest = max((len(label) for label in order), default=0)
    return PlotPlan(
        chart_type="bar",
        title=title,
        x_label=_label(group_by),
        y_label=y_label,
        series=[Series(None, order, heights, low=low, high=high)],
        categories=order,
        notes=notes,
        points=len(order),
        orientation="h" if len(order) > 12 or longest > 14 else "v",
        reference=reference,
        x_column=group_by,
        y_column=value,
        aggregation=f"none: results.{table_name}[*].{value} as the analysis computed it",
    )


def _confidence(results: Mapping[str, Any]) -> str:
    level = results.get("confidence")
    return f"{float(level):.0%}" if isinstance(level, (int, float)) else "95%"


# ---------------------------------------------------------------- one function per view


def _churn_by_segment(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    group_by = _label(str(results.get("group_by") or "segment"))
    return _segment_bars(
        results,
        "by_segment",
        "churn_rate",
        title=f"Churn rate by {group_by} ({_confidence(results)} CI)",
        y_label="churn rate (share of customers)",
        analysis="churn_rate",
        reference=_maybe(results.get("overall_churn_rate")),
    )


def _churn_by_month(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    monthly = results.get("monthly")
    if not isinstance(monthly, list) or not monthly:
        raise InvalidInput(
            "this churn_rate result has no monthly series; run it with parameters.monthly=true"
        )
    points = [
        row for row in monthly if isinstance(row, Mapping) and _maybe(row.get("churn_rate")) is not None
    ]
    labels = [str(row["month"]) for row in points]
    return PlotPlan(
        chart_type="line",
        title="Monthly churn rate (churned / active at the month's start)",
        x_label="month",
        y_label="churn rate",
        series=[
            Series(None, [_stamp(m) for m in labels], [float(r["churn_rate"]) for r in points], labels=labels)
        ],
        x_kind="datetime",
        points=len(points),
        x_column="month",
        y_column="churn_rate",
        aggregation="none: results.monthly[*].churn_rate as the analysis computed it",
    )


def _arpu_by_month(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    table = _table(results, "by_month", "arpu")
    labels = sorted(str(key) for key in table)
    rows = [table[label] for label in labels]
    return PlotPlan(
        chart_type="line",
        title=f"ARPU by month ({_confidence(results)} CI band)",
        x_label="month",
        y_label="ARPU (revenue per paying customer)",
        series=[
            Series(
                "ARPU",
                [_stamp(label) for label in labels],
                [_number(row.get("arpu")) for row in rows],
                low=[_maybe(row.get("ci_low")) for row in rows],
                high=[_maybe(row.get("ci_high")) for row in rows],
                labels=labels,
            )
        ],
        x_kind="datetime",
        points=len(labels),
        x_column="month",
        y_column="arpu",
        aggregation="none: results.by_month[*].arpu as the analysis computed it",
    )


def _arpu_by_segment(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    group_by = _label(str(results.get("group_by") or "segment"))
    return _segment_bars(
        results,
        "by_segment",
        "arpu",
        title=f"ARPU by {group_by} ({_confidence(results)} CI)",
        y_label="ARPU (revenue per paying customer)",
        analysis="arpu",
        reference=_maybe(results.get("overall_arpu")),
    )


def _quality_by_segment(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    group_by = _label(str(results.get("group_by") or "segment"))
    return _segment_bars(
        results,
        "by_segment",
        "mean",
        title=f"Mean network quality score by {group_by}",
        y_label="mean quality score (1 worst, 5 best)",
        analysis="network_quality",
        intervals=False,
        reference=_maybe(results.get("overall_mean_quality")),
    )


def _quality_boxes(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    table = _table(results, "by_segment", "network_quality")
    order = _ordered([str(key) for key in table])
    boxes = []
    for label in order:
        row = table[label]
        cuts = row.get("percentiles") or {}
        needed = ("p5", "p25", "p50", "p75", "p95")
        if not all(_maybe(cuts.get(p)) is not None for p in needed):
            raise InvalidInput(
                "a box view needs percentiles 5, 25, 50, 75 and 95; run network_quality with them"
            )
        boxes.append(
            BoxStats(
                label,
                q1=float(cuts["p25"]),
                median=float(cuts["p50"]),
                q3=float(cuts["p75"]),
                low=float(cuts["p5"]),
                high=float(cuts["p95"]),
                mean=_number(row.get("mean")),
                count=int(row.get("events") or 0),
                fliers=[],
            )
        )
    group_by = str(results.get("group_by") or "segment")
    return PlotPlan(
        chart_type="box",
        title=f"Network quality score by {_label(group_by)} (box p25-p75, whiskers p5-p95)",
        x_label=_label(group_by),
        y_label="quality score (1 worst, 5 best)",
        boxes=boxes,
        points=len(boxes),
        x_column=group_by,
        y_column="percentiles",
        aggregation="none: results.by_segment[*].percentiles as the analysis computed them",
    )


def _correlation_matrix(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    matrix = _table(results, "matrix", "correlation")
    columns = [str(c) for c in results.get("columns") or matrix if str(c) in matrix]
    cells = [[_maybe(matrix[row].get(column)) for column in columns] for row in columns]
    method = str(results.get("method") or "pearson")
    return PlotPlan(
        chart_type="heatmap",
        title=f"{method.capitalize()} correlation matrix",
        x_label="",
        y_label="",
        rows=columns,
        columns=columns,
        cells=cells,
        diverging=True,
        hue_label=f"{method} correlation",
        points=len(columns),
        x_column="column",
        y_column="column",
        aggregation="none: results.matrix as the analysis computed it",
    )


def _metric_name(results: Mapping[str, Any]) -> str:
    metric = str(results.get("metric") or "value")
    return {
        "arpu": "ARPU",
        "churn": "churn rate",
        "quality": "network quality",
        "usage": "data usage (MB)",
    }.get(metric, _label(metric))


def _trend_line(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    rows = [
        r
        for r in results.get("series") or []
        if isinstance(r, Mapping) and _maybe(r.get("value")) is not None
    ]
    if not rows:
        raise InvalidInput("the trend result has no series to chart; run the analysis again")
    labels = [str(r["bucket"]) for r in rows]
    stamps = [_stamp(label) for label in labels]
    metric, grain = _metric_name(results), str(results.get("grain") or "period")
    series = [Series(metric, stamps, [float(r["value"]) for r in rows], labels=labels)]
    if all(_maybe(r.get("fitted")) is not None for r in rows):
        series.append(
            Series(
                "linear trend (OLS fit)",
                stamps,
                [float(r["fitted"]) for r in rows],
                style="dashed",
                labels=labels,
            )
        )
    slope = (results.get("trend") or {}).get("slope")
    notes = (
        [f"trend slope {slope:.4g} {results['trend'].get('slope_unit', '')}".strip()]
        if _maybe(slope) is not None
        else []
    )
    return PlotPlan(
        chart_type="line",
        title=f"{metric[0].upper() + metric[1:]} by {grain} with its linear trend",
        x_label=grain,
        y_label=metric,
        series=series,
        x_kind="datetime",
        notes=notes,
        points=len(rows),
        hue_label="series",
        x_column="bucket",
        y_column="value, fitted",
        aggregation="none: results.series[*].value and .fitted as the analysis computed them",
    )


def _forecast_line(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    observed = [r for r in results.get("observed") or [] if isinstance(r, Mapping)]
    ahead = [r for r in results.get("forecast") or [] if isinstance(r, Mapping)]
    if not ahead:
        raise InvalidInput("the forecast result has no forecast to chart; run the analysis again")
    metric, grain = _metric_name(results), str(results.get("grain") or "period")
    seen = [str(r["bucket"]) for r in observed]
    future = [str(r["bucket"]) for r in ahead]
    series = [
        Series(
            "history", [_stamp(b) for b in seen], [_number(r.get("value")) for r in observed], labels=seen
        ),
        Series(
            f"forecast ({_confidence(results)} prediction band)",
            [_stamp(b) for b in future],
            [_number(r.get("mean")) for r in ahead],
            low=[_maybe(r.get("low")) for r in ahead],
            high=[_maybe(r.get("high")) for r in ahead],
            style="dashed",
            labels=future,
        ),
    ]
    model = (results.get("model") or {}).get("name")
    return PlotPlan(
        chart_type="line",
        title=f"{metric[0].upper() + metric[1:]}: history and {len(ahead)}-{grain} forecast",
        x_label=grain,
        y_label=metric,
        series=series,
        x_kind="datetime",
        notes=[f"model {model}"] if model else [],
        points=len(observed) + len(ahead),
        hue_label="series",
        x_column="bucket",
        y_column="value (history), mean (forecast)",
        aggregation="none: results.observed[*].value and results.forecast[*].mean/low/high as computed",
    )


def _anomalies_line(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    found = [r for r in results.get("anomalies") or [] if isinstance(r, Mapping)]
    rows = [
        r
        for r in results.get("series") or []
        if isinstance(r, Mapping) and _maybe(r.get("value")) is not None
    ]
    metric, grain = _metric_name(results), str(results.get("grain") or "period")
    series: list[Series] = []
    notes: list[str] = []
    if rows:
        labels = [str(r["bucket"]) for r in rows]
        series.append(
            Series(metric, [_stamp(b) for b in labels], [float(r["value"]) for r in rows], labels=labels)
        )
    else:
        notes.append("the result carries no series: only the anomalies are drawn")
    marked = [str(r["bucket"]) for r in found]
    series.append(
        Series(
            "anomaly",
            [_stamp(b) for b in marked],
            [_number(r.get("value")) for r in found],
            style="markers",
            labels=marked,
        )
    )
    count = results.get("anomaly_count", len(found))
    if isinstance(count, int) and count > len(found):
        notes.append(f"{count} anomalies found; the {len(found)} listed in the result are marked")
    return PlotPlan(
        chart_type="line",
        title=f"{metric[0].upper() + metric[1:]} by {grain}: {len(found)} anomalies marked",
        x_label=grain,
        y_label=metric,
        series=series,
        x_kind="datetime",
        notes=notes,
        points=len(rows) or len(found),
        hue_label="series",
        x_column="bucket",
        y_column="value",
        aggregation="none: results.series[*].value and results.anomalies[*].value as computed",
    )


def _segment_means(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    metric = _metric_name(results)
    group_by = _label(str(results.get("group_by") or "segment"))
    return _segment_bars(
        results,
        "segments",
        "mean",
        title=f"Mean {metric} by {group_by}",
        y_label=f"mean {metric}",
        analysis="segment_compare",
        intervals=False,
    )


def _segment_boxes(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    table = _table(results, "segments", "segment_compare")
    order = _ordered([str(key) for key in table])
    boxes = []
    for label in order:
        row = table[label]
        if not all(_maybe(row.get(k)) is not None for k in ("q1", "median", "q3")):
            raise InvalidInput("a box view needs quartiles per segment; this metric has none, use a bar")
        boxes.append(
            BoxStats(
                label,
                q1=float(row["q1"]),
                median=float(row["median"]),
                q3=float(row["q3"]),
                low=float(row["q1"]),
                high=float(row["q3"]),
                mean=_number(row.get("mean")),
                count=int(row.get("customers") or 0),
                fliers=[],
            )
        )
    group_by = str(results.get("group_by") or "segment")
    metric = _metric_name(results)
    return PlotPlan(
        chart_type="box",
        title=f"{metric[0].upper() + metric[1:]} by {_label(group_by)} (quartiles; diamond: mean)",
        x_label=_label(group_by),
        y_label=metric,
        boxes=boxes,
        points=len(boxes),
        x_column=group_by,
        y_column="q1, median, q3",
        aggregation="none: results.segments[*] quartiles as the analysis computed them",
    )


def _driver_odds(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    coefficients = {
        str(c["term"]): c for c in results.get("coefficients") or [] if isinstance(c, Mapping) and "term" in c
    }
    ranked = [d for d in results.get("drivers") or [] if isinstance(d, Mapping) and "term" in d]
    if not ranked:
        raise InvalidInput("the churn_drivers result has no drivers to chart; run the analysis again")
    terms = [str(d["term"]) for d in ranked]
    low = high = None
    if all(t in coefficients for t in terms):  # the full answer has the intervals; a summary may not
        low = [_maybe(coefficients[t].get("ci_low")) for t in terms]
        high = [_maybe(coefficients[t].get("ci_high")) for t in terms]
    return PlotPlan(
        chart_type="bar",
        title=f"Churn drivers: odds ratios{f' ({_confidence(results)} CI)' if low else ''}; 1 = no effect",
        x_label="term",
        y_label="odds ratio of churn",
        series=[Series(None, terms, [_number(d.get("odds_ratio")) for d in ranked], low=low, high=high)],
        categories=terms,
        points=len(terms),
        orientation="h",
        reference=1.0,
        notes=["the dashed line marks an odds ratio of 1 (no effect)"],
        x_column="term",
        y_column="odds_ratio",
        aggregation="none: results.drivers[*].odds_ratio as the analysis computed it",
    )


def _survival_curves(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    by_segment = results.get("by_segment")
    curves: dict[str, Mapping[str, Any]]
    if isinstance(by_segment, Mapping) and by_segment:
        curves = {str(k): v for k, v in by_segment.items() if isinstance(v, Mapping)}
    else:
        curves = {"all customers": _table(results, "overall", "retention")}
    notes = []
    order = _ordered(list(curves))
    if len(order) > MAX_SERIES:
        largest = sorted(order, key=lambda k: -int(curves[k].get("customers") or 0))[:MAX_SERIES]
        notes.append(f"{len(order)} segments: the {MAX_SERIES} largest are drawn")
        order = [k for k in order if k in largest]
    series = []
    for name in order:
        points = [p for p in curves[name].get("curve") or [] if isinstance(p, Mapping)]
        days = [int(p["day"]) for p in points]
        series.append(
            Series(
                name,
                days,
                [_number(p.get("survival")) for p in points],
                low=[_maybe(p.get("ci_low")) for p in points],
                high=[_maybe(p.get("ci_high")) for p in points],
                style="step",
                labels=[str(day) for day in days],
            )
        )
    group_by = results.get("group_by")
    return PlotPlan(
        chart_type="line",
        title=f"Kaplan-Meier survival{' by ' + _label(str(group_by)) if group_by else ''} "
        f"({_confidence(results)} CI bands)",
        x_label="days since sign-up",
        y_label="share of customers not churned",
        series=series,
        x_kind="numeric",
        notes=notes,
        points=sum(len(s.x) for s in series),
        hue_label=_label(str(group_by)) if group_by else None,
        x_column="day",
        y_column="survival",
        aggregation="none: the curve points (survival, ci_low, ci_high) as the analysis computed them",
    )


def _cohort_heatmap(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    cohorts = results.get("cohorts")
    if not isinstance(cohorts, Mapping):
        cohorts = {}
    rows = [r for r in cohorts.get("rows") or [] if isinstance(r, Mapping)]
    if not rows:
        raise InvalidInput("this retention result has no cohort table; run it with cohort_months")
    months = [str(m) for m in cohorts.get("months") or range(1, len(rows[0].get("retention") or []) + 1)]
    return PlotPlan(
        chart_type="heatmap",
        title="Cohort retention: share not churned k months after sign-up",
        x_label="months after sign-up",
        y_label="sign-up cohort",
        rows=[str(r["cohort"]) for r in rows],
        columns=months,
        cells=[_padded([_maybe(v) for v in r.get("retention") or []], len(months)) for r in rows],
        hue_label="retention",
        points=len(rows),
        x_column="month",
        y_column="cohort",
        aggregation="none: results.cohorts.rows[*].retention as the analysis computed it",
    )


def _padded(values: list[float | None], length: int) -> list[float | None]:
    """A cohort's row as long as the table: months it has not reached yet are empty cells."""
    return (values + [None] * length)[:length]


def _missing_by_column(results: Mapping[str, Any], spec: ChartSpec) -> PlotPlan:
    columns = [c for c in results.get("columns") or [] if isinstance(c, Mapping) and "name" in c]
    if not columns:
        raise InvalidInput("the describe result has no columns to chart")
    names = [str(c["name"]) for c in columns]
    shares = [_number(c.get("null_fraction")) for c in columns]
    notes = [] if any(shares) else ["no column has missing values"]
    return PlotPlan(
        chart_type="bar",
        title="Missing values by column (share of rows)",
        x_label="column",
        y_label="share of rows missing",
        series=[Series(None, names, shares)],
        categories=names,
        notes=notes,
        points=len(names),
        orientation="h" if len(names) > 8 else "v",
        x_column="name",
        y_column="null_fraction",
        aggregation="none: results.columns[*].null_fraction as the analysis computed it",
    )


# Each analysis's views by chart kind; the first is its default.
VIEWS: dict[str, dict[str, View]] = {
    "churn_rate": {"bar": _churn_by_segment, "line": _churn_by_month},
    "arpu": {"line": _arpu_by_month, "bar": _arpu_by_segment},
    "network_quality": {"bar": _quality_by_segment, "box": _quality_boxes},
    "correlation": {"heatmap": _correlation_matrix},
    "trend": {"line": _trend_line},
    "forecast": {"line": _forecast_line},
    "anomalies": {"line": _anomalies_line},
    "segment_compare": {"bar": _segment_means, "box": _segment_boxes},
    "churn_drivers": {"bar": _driver_odds},
    "retention": {"line": _survival_curves, "heatmap": _cohort_heatmap},
    "describe": {"bar": _missing_by_column},
}
