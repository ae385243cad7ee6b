"""ARPU: total revenue / distinct paying customers, overall, per segment, per month and per service type.

Intervals are Student-t on per-customer revenue (ARPU is the mean of each paying customer's total).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pandas as pd

from analytics.bands import segment_label, segment_order
from analytics.frames import as_of_instant, require_columns, require_rows_in_dates, segment_labels
from analytics.parameters import ArpuParameters
from analytics.stats import pooled_mean_variance, t_interval
from analytics.summary import Outcome, money

# Columns of the per-level aggregate both paths produce: one row per (level, key).
GROUP_COLUMNS = ("level", "key", "customers", "revenue", "variance")
LEVELS = {"segment": "by_segment", "month": "by_month", "service_type": "by_service_type"}


def arpu_from_groups(
    groups: pd.DataFrame, parameters: ArpuParameters, transactions: int, as_of: dt.datetime | None = None
) -> Outcome:
    """Finish from per-group paying customers, revenue and variance of per-customer revenue.

    `groups` has GROUP_COLUMNS; level 'segment' must partition the paying customers (overall comes from it).
    """
    confidence = parameters.confidence
    results: dict[str, Any] = {}
    segments = groups[groups["level"] == "segment"]
    counts = segments["customers"].to_numpy(dtype=float)
    revenue = segments["revenue"].to_numpy(dtype=float)
    paying = int(counts.sum())
    total = float(revenue.sum())
    if paying:
        means = revenue / counts
        variances = segments["variance"].astype(float).to_numpy(dtype=float)
        _, variance = pooled_mean_variance(counts, means, variances)
        interval = t_interval(total / paying, variance, paying, confidence)
    else:
        interval = None
    results["overall_arpu"] = total / paying if paying else None
    results["paying_customers"] = paying
    results["total_revenue"] = total
    results["confidence"] = confidence
    results["confidence_interval"] = list(interval) if interval else None
    results["interval_method"] = "Student t on per-customer revenue"
    results["group_by"] = parameters.group_by
    for level, name in LEVELS.items():
        results[name] = _by_key(groups[groups["level"] == level], confidence)
    results["date_range"] = {
        "start_date": parameters.start_date.isoformat() if parameters.start_date else None,
        "end_date": parameters.end_date.isoformat() if parameters.end_date else None,
    }
    if as_of is not None:
        results["as_of"] = pd.Timestamp(as_of).isoformat()
    return Outcome(results, _summary(results), transactions)


def _by_key(rows: pd.DataFrame, confidence: float) -> dict[str, dict[str, Any]]:
    entries: dict[str | int, dict[str, Any]] = {}
    for key, customers, revenue, variance in zip(
        rows["key"], rows["customers"], rows["revenue"], rows["variance"], strict=True
    ):
        n, amount = int(customers), float(revenue)
        spread = None if variance is None or pd.isna(variance) else float(variance)
        interval = t_interval(amount / n, spread, n, confidence) if n else None
        entries[segment_label(key)] = {
            "paying_customers": n,
            "revenue": amount,
            "arpu": amount / n if n else None,
            "ci_low": interval[0] if interval else None,
            "ci_high": interval[1] if interval else None,
        }
    return {str(key): entries[key] for key in sorted(entries, key=segment_order)}


def _summary(results: dict[str, Any]) -> str:
    if not results["paying_customers"]:
        return "No paying customers in the selected period, so no ARPU."
    interval = results["confidence_interval"]
    text = f"ARPU is {money(results['overall_arpu'])}"
    if interval:
        text += f" ({results['confidence'] * 100:g}% CI {money(interval[0])}-{money(interval[1])})"
    text += f" from {results['paying_customers']:,} paying customers and {money(results['total_revenue'])} revenue"
    segments = {k: v for k, v in results.get("by_segment", {}).items() if v["arpu"] is not None}
    if len(segments) > 1:
        highest = max(segments, key=lambda k: segments[k]["arpu"])
        lowest = min(segments, key=lambda k: segments[k]["arpu"])
        text += (
            f"; by {results['group_by']} highest in {highest} ({money(segments[highest]['arpu'])}) "
            f"and lowest in {lowest} ({money(segments[lowest]['arpu'])})"
        )
    return text + "."


def arpu_of_frame(frame: pd.DataFrame, parameters: ArpuParameters) -> Outcome:
    """ARPU on a session dataset of transactions (customer_id, amount; transaction_date, service_type, segment)."""
    require_columns(frame, ["customer_id", "amount"], "arpu")
    data = pd.DataFrame(
        {
            "customer_id": frame["customer_id"].astype(str),
            "amount": pd.to_numeric(frame["amount"].map(_number), errors="coerce").astype(float),
        }
    )
    if "transaction_date" in frame.columns:
        data["transaction_date"] = pd.to_datetime(frame["transaction_date"])
    elif parameters.start_date or parameters.end_date:
        require_columns(frame, ["transaction_date"], "a date range")
    as_of = None
    if parameters.group_by == "tenure_band":
        as_of = as_of_instant(frame, parameters.as_of)
    data["segment"] = segment_labels(frame, parameters.group_by, as_of)
    if "service_type" in frame.columns:
        data["service_type"] = frame["service_type"].astype(object).where(frame["service_type"].notna(), None)
    if parameters.start_date:
        data = data[data["transaction_date"] >= pd.Timestamp(parameters.start_date)]
    if parameters.end_date:
        data = data[data["transaction_date"] < pd.Timestamp(parameters.end_date) + pd.Timedelta(days=1)]
    if "transaction_date" in frame.columns:
        require_rows_in_dates(frame["transaction_date"], not data.empty, parameters, "transaction_date")
    data = data[data["amount"].notna()]
    parts = [_level(data, "segment", "segment")]
    if "transaction_date" in data.columns:
        parts.append(
            _level(data.assign(month=data["transaction_date"].dt.strftime("%Y-%m")), "month", "month")
        )
    if "service_type" in data.columns:
        parts.append(_level(data, "service_type", "service_type"))
    return arpu_from_groups(pd.concat(parts, ignore_index=True), parameters, len(data), as_of)


def _level(data: pd.DataFrame, level: str, column: str) -> pd.DataFrame:
    per_customer = data.groupby([column, "customer_id"], sort=False, dropna=False)["amount"].sum()
    grouped = per_customer.groupby(level=0, sort=False, dropna=False).agg(["size", "sum", "var"])
    return pd.DataFrame(
        {
            "level": level,
            "key": list(grouped.index),
            "customers": grouped["size"].to_numpy(),
            "revenue": grouped["sum"].to_numpy(),
            "variance": grouped["var"].to_numpy(),
        }
    )


def _number(value: Any) -> Any:
    return float(value) if value is not None and not isinstance(value, (float, int, str)) else value
