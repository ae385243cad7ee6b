"""Trend of a metric over time: one value per day, week or month, an OLS trend with its interval, and a
seasonal decomposition (STL or classical) when the series spans two full cycles.

Both paths reduce the data to per-bucket aggregates first (PostgreSQL for the live tables, pandas for a
session dataset); everything here works on those few rows.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pandas as pd
import statsmodels.api as sm
from statsmodels.stats.stattools import durbin_watson
from statsmodels.tsa.seasonal import STL, seasonal_decompose

from analytics.frames import require_columns, require_rows_in_dates, truthy
from analytics.parameters import DateRange, TrendParameters
from analytics.stats import finite_or_none
from analytics.summary import Outcome, p_value_words, percent, significance
from core.errors import InvalidInput

# pandas frequencies whose bucket starts equal PostgreSQL's date_trunc (weeks start on Monday).
FREQUENCIES: Final = {"hour": "h", "day": "D", "week": "W-MON", "month": "MS"}
DEFAULT_PERIODS: Final = {"hour": 24, "day": 7, "week": 52, "month": 12}
DEFINITIONS: Final = {
    "arpu": "revenue / distinct paying customers in the bucket",
    "churn": "customers who churned in the bucket / customers active at its start",
    "quality": "mean network quality score of the bucket's events (1 worst, 5 best)",
    "usage": "total data usage (MB) of the bucket's events",
}
_UNITS: Final = {"hour": "hour", "day": "day", "week": "week", "month": "month"}
_NAMES: Final = {
    "arpu": "ARPU",
    "churn": "Churn rate",
    "quality": "Mean network quality",
    "usage": "Data usage",
}


@dataclass(frozen=True)
class Measure:
    """A column of any table standing in for a built-in metric (analyses on a source): its name in the
    results, what it is, and the value of a bucket without rows (0 for sums and counts, None for means).
    Its per-bucket totals are `bucket`, `value`, `count` (values aggregated) and `rows`."""

    name: str
    definition: str
    empty: float | None = 0.0


def truncate(instants: pd.Series, grain: str) -> pd.Series:
    """date_trunc(grain, instant) as PostgreSQL computes it on a timestamp without time zone."""
    when = pd.to_datetime(instants)
    if getattr(when.dt, "tz", None) is not None:
        when = when.dt.tz_convert("UTC").dt.tz_localize(None)
    if grain == "hour":
        return when.dt.floor("h")
    if grain == "day":
        return when.dt.floor("D")
    if grain == "week":
        day = when.dt.floor("D")
        return day - pd.to_timedelta(day.dt.dayofweek, unit="D")
    if grain == "month":
        return when.dt.to_period("M").dt.start_time
    raise InvalidInput(f"grain must be one of {', '.join(FREQUENCIES)}; got {grain!r}")


def complete(buckets: pd.DataFrame, grain: str) -> pd.DataFrame:
    """One row per bucket from the first to the last (index: bucket start); missing buckets are NaN rows."""
    if buckets.empty:
        return buckets.set_index("bucket")
    frame = buckets.assign(bucket=pd.to_datetime(buckets["bucket"])).groupby("bucket").sum(min_count=1)
    index = pd.date_range(frame.index.min(), frame.index.max(), freq=FREQUENCIES[grain])
    return frame.reindex(index)


def in_range(frame: pd.DataFrame, column: str, parameters: DateRange) -> pd.DataFrame:
    """Rows of a session dataset whose `column` falls in the date range (start inclusive, end day inclusive)."""
    if not parameters.start_date and not parameters.end_date:
        return frame
    when = pd.to_datetime(frame[column])
    keep = pd.Series(True, index=frame.index)
    if parameters.start_date:
        keep &= when >= pd.Timestamp(parameters.start_date)
    if parameters.end_date:
        keep &= when < pd.Timestamp(parameters.end_date) + pd.Timedelta(days=1)
    require_rows_in_dates(when, bool(keep.any()), parameters, column)
    return frame[keep]


def metric_series(
    totals: pd.DataFrame, metric: str, parameters: DateRange, grain: str, measure: Measure | None = None
) -> pd.DataFrame:
    """From completed per-bucket totals to (value, count) per bucket, as the metric defines them.

    totals columns by metric: arpu (revenue, customers, transactions); churn (new_customers, churned,
    over all history); quality (mean_quality, scored_events); usage (usage_mb, events); a `measure`
    (value, count, rows: the date range applied already).
    """
    if measure is not None:
        rows = totals["rows"].fillna(0)
        value = totals["value"].where(rows > 0, measure.empty)
        return pd.DataFrame({"value": value.astype(float), "count": totals["count"].fillna(0), "rows": rows})
    if metric == "arpu":
        customers = totals["customers"].fillna(0)
        value = (totals["revenue"] / customers).where(customers > 0)
        return pd.DataFrame({"value": value, "count": customers, "rows": totals["transactions"].fillna(0)})
    if metric == "quality":
        return pd.DataFrame(
            {
                "value": totals["mean_quality"],
                "count": totals["scored_events"].fillna(0),
                "rows": totals["events"],
            }
        ).fillna({"rows": 0})
    if metric == "usage":
        events = totals["events"].fillna(0)
        return pd.DataFrame({"value": totals["usage_mb"].fillna(0.0), "count": events, "rows": events})
    # churn: the active base at a bucket's start needs all earlier buckets, so the range applies last.
    new = totals["new_customers"].fillna(0)
    churned = totals["churned"].fillna(0)
    active = (new - churned).cumsum().shift(1, fill_value=0)
    series = pd.DataFrame(
        {"value": (churned / active).where(active > 0), "count": active, "rows": churned, "new": new}
    )
    if parameters.start_date:
        first = truncate(pd.Series([pd.Timestamp(parameters.start_date)]), grain).iloc[0]
        series = series[series.index >= first]
    if parameters.end_date:
        series = series[series.index <= pd.Timestamp(parameters.end_date)]
    return series


def ols_trend(values: pd.Series, confidence: float) -> dict[str, Any] | None:
    """OLS of value on bucket number (0, 1, ...; gaps keep their number): slope per bucket with its interval."""
    position = np.arange(len(values), dtype=float)
    present = values.notna().to_numpy()
    y = values.to_numpy(dtype=float)[present]
    if len(y) < 3:
        return None
    fit = sm.OLS(y, sm.add_constant(position[present])).fit()
    low, high = fit.conf_int(alpha=1 - confidence)[1]
    mean = float(y.mean())
    slope = float(fit.params[1])
    return {
        "slope": slope,
        "intercept": float(fit.params[0]),
        "slope_ci": [float(low), float(high)],
        "standard_error": float(fit.bse[1]),
        "t_statistic": finite_or_none(float(fit.tvalues[1])),
        "p_value": finite_or_none(float(fit.pvalues[1])),
        "r_squared": finite_or_none(float(fit.rsquared)),
        "points": int(len(y)),
        "relative_slope": slope / mean if mean else None,
        "durbin_watson": finite_or_none(float(durbin_watson(fit.resid))),
        "fitted": [float(fit.params[0] + slope * p) for p in position],
    }


def _profile_label(when: pd.Timestamp, grain: str, period: int) -> str:
    if grain == "day" and period == 7:
        return str(when.day_name())
    if grain == "month" and period == 12:
        return str(when.month_name())
    if grain == "hour" and period == 24:
        return f"{when.hour:02d}:00"
    if grain == "week" and period == 52:
        return f"week {when.isocalendar().week}"
    return str(when.isoformat())


def decompose(values: pd.Series, grain: str, period: int, method: str) -> dict[str, Any]:
    """Additive decomposition into trend, seasonal and residual, or why it was skipped."""
    # Gaps inside the series are interpolated linearly (and counted); empty edges are dropped.
    inside = values.interpolate(limit_area="inside")
    kept = inside.dropna()
    filled = int(values.isna().sum() - inside.isna().sum())
    if len(kept) < 2 * period:
        return {
            "method": method,
            "period": period,
            "skipped": f"{len(kept)} {grain} buckets are fewer than the two full cycles ({2 * period}) a "
            f"decomposition with period {period} needs; use a finer grain, a longer range or a shorter "
            "seasonal_period",
        }
    y = kept.to_numpy(dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if method == "stl":
            result = STL(y, period=period).fit()
            trend, seasonal, residual = result.trend, result.seasonal, result.resid
        else:
            result = seasonal_decompose(y, model="additive", period=period)
            trend, seasonal, residual = result.trend, result.seasonal, result.resid
    trend, seasonal, residual = (np.asarray(part, dtype=float) for part in (trend, seasonal, residual))
    valid = np.isfinite(residual)
    variance_residual = float(np.var(residual[valid], ddof=1))
    seasonal_strength = _strength(variance_residual, seasonal[valid] + residual[valid])
    trend_strength = _strength(variance_residual, trend[valid] + residual[valid])
    positions = np.arange(len(y)) % period
    effects = [float(seasonal[positions == p].mean()) for p in range(period)]
    labels = [_profile_label(kept.index[p], grain, period) for p in range(period)]
    profile = [
        {"position": p, "label": label, "effect": effect}
        for p, (label, effect) in enumerate(zip(labels, effects, strict=True))
    ]
    peak, trough = int(np.argmax(effects)), int(np.argmin(effects))
    components = pd.DataFrame({"trend": trend, "seasonal": seasonal, "residual": residual}, index=kept.index)
    return {
        "method": method,
        "period": period,
        "seasonal_test": seasonal_test(values, period),
        "interpolated_buckets": filled,
        "seasonal_strength": seasonal_strength,
        "trend_strength": trend_strength,
        "seasonal_amplitude": effects[peak] - effects[trough],
        "seasonal_peak": labels[peak],
        "seasonal_trough": labels[trough],
        "seasonal_profile": profile,
        "components": components,
    }


def seasonal_test(values: pd.Series, period: int) -> dict[str, Any] | None:
    """F-test of seasonal position dummies on top of a linear trend: is the seasonality more than noise?"""
    position = np.arange(len(values))
    present = values.notna().to_numpy()
    y = values.to_numpy(dtype=float)[present]
    trend_only = sm.add_constant(position[present].astype(float))
    dummies = (position[present, None] % period == np.arange(1, period)[None, :]).astype(float)
    with_season = np.column_stack([trend_only, dummies])
    if len(y) <= with_season.shape[1]:
        return None
    restricted = sm.OLS(y, trend_only).fit()
    full = sm.OLS(y, with_season).fit()
    f_statistic, p_value, df_difference = full.compare_f_test(restricted)
    return {
        "method": "F-test of seasonal dummies over a linear trend",
        "f_statistic": finite_or_none(float(f_statistic)),
        "degrees_of_freedom": [int(df_difference), int(full.df_resid)],
        "p_value": finite_or_none(float(p_value)),
    }


def _strength(variance_residual: float, combined: np.ndarray) -> float | None:
    """Hyndman's strength: max(0, 1 - var(residual) / var(component + residual))."""
    variance = float(np.var(combined, ddof=1)) if len(combined) > 1 else math.nan
    if not math.isfinite(variance) or variance <= 0:
        return None
    return max(0.0, 1.0 - variance_residual / variance)


def trend_from_buckets(
    totals: pd.DataFrame, parameters: TrendParameters, measure: Measure | None = None
) -> Outcome:
    """Finish from per-bucket totals (a `bucket` column plus the metric's columns, see metric_series)."""
    grain = parameters.grain
    series = metric_series(complete(totals, grain), parameters.metric, parameters, grain, measure)
    values = series["value"].astype(float)
    row_count = int(series["rows"].sum()) if len(series) else 0
    results: dict[str, Any] = {
        "metric": measure.name if measure else parameters.metric,
        "definition": measure.definition if measure else DEFINITIONS[parameters.metric],
        "grain": grain,
        "buckets": len(series),
        "first_bucket": series.index[0].isoformat() if len(series) else None,
        "last_bucket": series.index[-1].isoformat() if len(series) else None,
        "empty_buckets": int(values.isna().sum()),
        "confidence": parameters.confidence,
    }
    trend = ols_trend(values, parameters.confidence)
    fitted = trend.pop("fitted") if trend else [None] * len(series)
    if trend is not None:
        trend["slope_unit"] = f"per {_UNITS[grain]}"
        dw = trend["durbin_watson"]
        trend["note"] = (
            "residuals are autocorrelated (Durbin-Watson outside 1.5-2.5): the interval and p-value are "
            "optimistic"
            if dw is not None and not 1.5 <= dw <= 2.5
            else "residuals show no strong autocorrelation (Durbin-Watson within 1.5-2.5)"
        )
    results["trend"] = trend
    period = parameters.seasonal_period or DEFAULT_PERIODS[grain]
    decomposition = decompose(values, grain, period, parameters.decomposition)
    components = decomposition.pop("components", None)
    results["decomposition"] = decomposition
    # Plain lists, not row-wise pandas access: a daily series has hundreds of points.
    numbers, counts = values.to_numpy(dtype=float), series["count"].fillna(0).to_numpy(dtype=float)
    parts = components.reindex(series.index).to_numpy(dtype=float) if components is not None else None
    points = []
    for i, when in enumerate(series.index):
        point: dict[str, Any] = {
            "bucket": when.isoformat(),
            "value": finite_or_none(float(numbers[i])),
            "count": int(counts[i]),
            "fitted": fitted[i],
        }
        if parts is not None:  # buckets outside the decomposed run get None
            point.update(
                trend=finite_or_none(parts[i, 0]),
                seasonal=finite_or_none(parts[i, 1]),
                residual=finite_or_none(parts[i, 2]),
            )
        points.append(point)
    results["series"] = points
    return Outcome(results, _summary(results), row_count)


def _number(value: float, metric: str) -> str:
    if metric == "churn":
        return percent(value, 2)
    if metric == "quality":
        return f"{value:.3f}"
    return f"{value:,.2f}"


def _summary(results: dict[str, Any]) -> str:
    metric, grain = results["metric"], results["grain"]
    name = _NAMES.get(metric, metric)
    trend = results["trend"]
    if trend is None:
        return f"{name} has {results['buckets']} {grain} bucket(s) with data: too few to fit a trend."
    slope, (low, high) = trend["slope"], trend["slope_ci"]
    direction = "rises" if slope > 0 else "falls" if slope < 0 else "is flat"
    text = (
        f"{name} {direction} by {_number(abs(slope), metric)} per {grain} over {trend['points']} {grain}s "
        f"({results['confidence'] * 100:g}% CI {_number(low, metric)} to {_number(high, metric)}), a trend "
        f"that is {significance(trend['p_value'])} ({p_value_words(trend['p_value'])})"
    )
    decomposition = results["decomposition"]
    if "skipped" in decomposition:
        text += f"; no seasonal decomposition: {decomposition['skipped'].split(';')[0]}"
    else:
        test = decomposition["seasonal_test"] or {}
        text += (
            f"; seasonality (period {decomposition['period']}, peak {decomposition['seasonal_peak']}) is "
            f"{significance(test.get('p_value'))} (F-test {p_value_words(test.get('p_value'))})"
        )
    return text + "."


def totals_of_frame(frame: pd.DataFrame, metric: str, grain: str, parameters: DateRange) -> pd.DataFrame:
    """Per-bucket totals of a session dataset, the same columns the SQL returns."""
    if metric == "arpu":
        require_columns(frame, ["transaction_date", "amount", "customer_id"], "an ARPU trend")
        rows = in_range(frame, "transaction_date", parameters)
        data = pd.DataFrame(
            {
                "bucket": truncate(rows["transaction_date"], grain),
                "amount": pd.to_numeric(rows["amount"], errors="coerce"),
                "customer_id": rows["customer_id"].astype(str),
            }
        )
        grouped = data.groupby("bucket")
        return pd.DataFrame(
            {
                "revenue": grouped["amount"].sum(),
                "customers": grouped["customer_id"].nunique(),
                "transactions": grouped.size(),
            }
        ).reset_index()
    if metric in ("quality", "usage"):
        column = "network_quality_score" if metric == "quality" else "data_usage_mb"
        require_columns(frame, ["event_timestamp", column], f"a {metric} series")
        rows = in_range(frame, "event_timestamp", parameters)
        data = pd.DataFrame(
            {
                "bucket": truncate(rows["event_timestamp"], grain),
                "value": pd.to_numeric(rows[column], errors="coerce"),
            }
        )
        grouped = data.groupby("bucket")["value"]
        totals = pd.DataFrame({"events": grouped.size()})
        if metric == "quality":
            totals["mean_quality"] = grouped.mean()
            totals["scored_events"] = grouped.count()
        else:
            totals["usage_mb"] = grouped.sum()
        return totals.reset_index()
    require_columns(frame, ["created_at", "churn_date"], "a churn series")
    churned_at = pd.to_datetime(frame["churn_date"])
    if "is_churned" in frame.columns:
        churned_at = churned_at.where(truthy(frame["is_churned"]))
    new = truncate(frame["created_at"], grain).value_counts()
    lost = truncate(churned_at.dropna(), grain).value_counts()
    buckets = new.index.union(lost.index)
    return pd.DataFrame(
        {
            "bucket": buckets,
            "new_customers": new.reindex(buckets, fill_value=0).to_numpy(),
            "churned": lost.reindex(buckets, fill_value=0).to_numpy(),
        }
    )


def trend_of_frame(frame: pd.DataFrame, parameters: TrendParameters) -> Outcome:
    """A trend on a session dataset: revenue rows (arpu), events (quality, usage) or customers (churn)."""
    return trend_from_buckets(
        totals_of_frame(frame, parameters.metric, parameters.grain, parameters), parameters
    )
