"""Churn rate: churned / customers, overall and per segment, with Wilson intervals and a chi-square test."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from analytics.bands import segment_label, segment_order
from analytics.frames import as_of_instant, require_columns, segment_labels, truthy
from analytics.parameters import ChurnRateParameters
from analytics.stats import chi_square_independence, wilson_interval
from analytics.summary import Outcome, p_value_words, percent, significance


def churn_rate_from_counts(
    segments: Sequence[object],
    customers: Sequence[int],
    churned: Sequence[int],
    parameters: ChurnRateParameters,
    monthly: pd.DataFrame | None = None,
    as_of: dt.datetime | None = None,
) -> Outcome:
    """Finish the analysis from per-segment counts (customers, churned); `monthly` has month, new, churned."""
    rows: dict[str | int, tuple[int, int]] = {}
    for segment, total, lost in zip(segments, customers, churned, strict=True):
        label = segment_label(segment)
        before = rows.get(label, (0, 0))
        rows[label] = (before[0] + int(total), before[1] + int(lost))
    labels = sorted(rows, key=segment_order)
    total_customers = sum(total for total, _ in rows.values())
    total_churned = sum(lost for _, lost in rows.values())
    confidence = parameters.confidence

    by_segment: dict[str, dict[str, Any]] = {}
    for label in labels:
        total, lost = rows[label]
        interval = wilson_interval(lost, total, confidence)
        by_segment[str(label)] = {
            "customers": total,
            "churned": lost,
            "churn_rate": lost / total if total else None,
            "ci_low": interval[0] if interval else None,
            "ci_high": interval[1] if interval else None,
        }
    table = np.array([[rows[label][1], rows[label][0] - rows[label][1]] for label in labels], dtype=float)
    test = chi_square_independence(table) if len(labels) else None
    overall = total_churned / total_customers if total_customers else None
    interval = wilson_interval(total_churned, total_customers, confidence)
    results: dict[str, Any] = {
        "overall_churn_rate": overall,
        "customers": total_customers,
        "churned": total_churned,
        "confidence": confidence,
        "confidence_interval": list(interval) if interval else None,
        "interval_method": "Wilson score",
        "group_by": parameters.group_by,
        "by_segment": by_segment,
        "test": (
            {
                "method": "Pearson chi-square test of independence (segment x churned), no continuity correction"
            }
            | test.as_dict()
            if test
            else None
        ),
    }
    if as_of is not None:
        results["as_of"] = pd.Timestamp(as_of).isoformat()
    if monthly is not None:
        results["monthly"] = monthly_churn(monthly)
    return Outcome(results, _summary(results, parameters.group_by), total_customers)


def monthly_churn(counts: pd.DataFrame) -> list[dict[str, Any]]:
    """Per month: customers active at its start, new sign-ups, churned; rate = churned / active at start."""
    ordered = counts.groupby("month", sort=True)[["new_customers", "churned"]].sum()
    active = 0
    series = []
    for month, row in ordered.iterrows():
        new, lost = int(row["new_customers"]), int(row["churned"])
        series.append(
            {
                "month": str(month),
                "active_at_start": active,
                "new_customers": new,
                "churned": lost,
                "churn_rate": lost / active if active else None,
            }
        )
        active += new - lost
    return series


def _summary(results: dict[str, Any], group_by: str) -> str:
    if not results["customers"]:
        return "No customers in the data, so no churn rate."
    interval = results["confidence_interval"]
    text = (
        f"Churn is {percent(results['overall_churn_rate'])} "
        f"({results['confidence'] * 100:g}% CI {percent(interval[0])}-{percent(interval[1])}) "
        f"across {results['customers']:,} customers"
    )
    segments = {k: v for k, v in results["by_segment"].items() if v["churn_rate"] is not None}
    if len(segments) > 1:
        highest = max(segments, key=lambda k: segments[k]["churn_rate"])
        lowest = min(segments, key=lambda k: segments[k]["churn_rate"])
        test = results["test"] or {}
        text += (
            f"; by {group_by} highest in {highest} ({percent(segments[highest]['churn_rate'])}) and lowest in "
            f"{lowest} ({percent(segments[lowest]['churn_rate'])}), a difference that is "
            f"{significance(test.get('p_value'))} (chi-square {p_value_words(test.get('p_value'))}"
        )
        if test.get("cramers_v") is not None:
            text += f", Cramér's V {test['cramers_v']:.2f}"
        text += ")"
    return text + "."


def churn_rate_of_frame(frame: pd.DataFrame, parameters: ChurnRateParameters) -> Outcome:
    """Churn on a session dataset with one row per customer (needs is_churned and the group_by source)."""
    require_columns(frame, ["is_churned"], "churn_rate")
    churned = truthy(frame["is_churned"])
    as_of = as_of_instant(frame, parameters.as_of) if parameters.group_by == "tenure_band" else None
    segments = segment_labels(frame, parameters.group_by, as_of)
    grouped = pd.DataFrame({"segment": segments, "churned": churned}).groupby("segment", sort=False)[
        "churned"
    ]
    counts = grouped.agg(["size", "sum"])
    monthly = None
    if parameters.monthly:
        require_columns(frame, ["created_at", "churn_date"], "the monthly churn series")
        monthly = monthly_counts(frame["created_at"], frame["churn_date"].where(churned))
    return churn_rate_from_counts(
        list(counts.index), counts["size"].tolist(), counts["sum"].tolist(), parameters, monthly, as_of
    )


def monthly_counts(created_at: pd.Series, churn_date: pd.Series) -> pd.DataFrame:
    new = pd.to_datetime(created_at).dt.strftime("%Y-%m").value_counts()
    lost = pd.to_datetime(churn_date).dropna().dt.strftime("%Y-%m").value_counts()
    months = new.index.union(lost.index)
    return pd.DataFrame(
        {
            "month": months,
            "new_customers": new.reindex(months, fill_value=0).to_numpy(),
            "churned": lost.reindex(months, fill_value=0).to_numpy(),
        }
    )
