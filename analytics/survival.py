"""Retention: Kaplan-Meier survival of customer lifetime by segment (median lifetime, log-rank test) and a
monthly sign-up cohort retention table, finished from per-segment lifetime counts.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from statsmodels.duration.survfunc import SurvfuncRight, survdiff

from analytics.bands import SECONDS_PER_DAY, segment_label, segment_order
from analytics.frames import as_of_instant, require_columns, segment_labels, truthy
from analytics.parameters import RetentionParameters
from analytics.stats import finite_or_none
from analytics.summary import Outcome, p_value_words, percent, significance
from core.errors import InvalidInput

QUANTILES = (0.1, 0.25, 0.5)  # shares of customers churned, reported as lifetimes in days


def kaplan_meier(
    lifetimes: np.ndarray, churned: np.ndarray, confidence: float, step_days: int
) -> dict[str, Any]:
    """Product-limit estimate for one group: median and quantile lifetimes, and the curve every `step_days`.

    A quantile is the first lifetime at which estimated survival falls strictly below 1 - p (as SAS and
    statsmodels define it); None when the curve never gets there (not reached in the data).
    """
    fit = SurvfuncRight(lifetimes, churned.astype(float))
    alpha = 1 - confidence
    z = float(scipy_stats.norm.ppf(1 - alpha / 2))
    times, survival, errors = fit.surv_times, fit.surv_prob, fit.surv_prob_se
    quantiles = {f"{p:.0%}": finite_or_none(float(fit.quantile(p))) for p in QUANTILES}
    median = quantiles["50%"]
    median_interval: list[float | None] | None = None
    if median is not None:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            low, high = fit.quantile_ci(0.5, alpha=alpha, method="cloglog")
        median_interval = [finite_or_none(float(low)), finite_or_none(float(high))]
    curve = []
    horizon = int(lifetimes.max()) if len(lifetimes) else 0
    for day in range(0, horizon + 1, step_days):
        position = int(np.searchsorted(times, day, side="right")) - 1
        value = 1.0 if position < 0 else float(survival[position])
        error = 0.0 if position < 0 else float(errors[position])
        low, high = _log_log_interval(value, error, z)
        curve.append(
            {
                "day": day,
                "survival": value,
                "ci_low": low,
                "ci_high": high,
                "at_risk": int((lifetimes >= day).sum()),
            }
        )
    return {
        "customers": len(lifetimes),
        "churned": int(churned.sum()),
        "median_lifetime_days": median,
        "median_ci": median_interval,
        "lifetime_quantiles": quantiles,
        "curve": curve,
    }


def _log_log_interval(survival: float, error: float, z: float) -> tuple[float, float]:
    """Greenwood standard error carried through log(-log S), so the interval stays inside [0, 1]."""
    if survival >= 1.0 or survival <= 0.0 or error <= 0:
        return survival, survival
    scale = error / (survival * abs(math.log(survival)))
    theta = math.log(-math.log(survival))
    return math.exp(-math.exp(theta + z * scale)), math.exp(-math.exp(theta - z * scale))


def retention_from_counts(
    lifetimes: pd.DataFrame, cohorts: pd.DataFrame, as_of: pd.Timestamp, parameters: RetentionParameters
) -> Outcome:
    """Finish the analysis from counts: `lifetimes` has segment, lifetime_days, churned, customers;
    `cohorts` has cohort ('YYYY-MM'), months_lived (missing: still active) and customers.
    """
    counts = lifetimes.assign(segment=lifetimes["segment"].map(segment_label))
    counts = counts[counts["customers"] > 0]
    if counts.empty:
        raise InvalidInput("no customers signed up before as_of, so there is no lifetime to analyse")
    days = np.repeat(counts["lifetime_days"].to_numpy(dtype=float), counts["customers"].to_numpy(dtype=int))
    events = np.repeat(counts["churned"].to_numpy(dtype=bool), counts["customers"].to_numpy(dtype=int))
    step, confidence = parameters.curve_step_days, parameters.confidence
    labels = sorted(set(counts["segment"]), key=segment_order)
    # Each customer's segment as its position in `labels` (sorting integers, not strings, in survdiff).
    codes = counts["segment"].map({label: position for position, label in enumerate(labels)})
    groups = np.repeat(codes.to_numpy(dtype=int), counts["customers"].to_numpy(dtype=int))
    by_segment = {}
    for position, label in enumerate(labels):
        chosen = groups == position
        by_segment[str(label)] = kaplan_meier(days[chosen], events[chosen], confidence, step)
    test = None
    if len(labels) > 1:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            chi_square, p_value = survdiff(days, events.astype(float), groups)
        test = {
            "method": "log-rank test (statsmodels survdiff) of equal survival across segments",
            "chi_square": float(chi_square),
            "degrees_of_freedom": len(labels) - 1,
            "p_value": float(p_value),
        }
    results: dict[str, Any] = {
        "lifetime": "days from sign-up to churn; customers still active at as_of are censored there",
        "as_of": as_of.isoformat(),
        "group_by": parameters.group_by,
        "confidence": confidence,
        "overall": kaplan_meier(days, events, confidence, step),
        "by_segment": by_segment,
        "test": test,
        "cohorts": cohort_table(cohorts, as_of, parameters.cohort_months),
    }
    return Outcome(results, _summary(results), len(days))


def cohort_table(counts: pd.DataFrame, as_of: pd.Timestamp, months: int) -> dict[str, Any]:
    """Share of each monthly sign-up cohort still active k = 1..months whole months after signing up,
    shown only for months every member of the cohort has been observed (cohort end + k months <= as_of).
    """
    table = []
    for cohort, rows in counts.groupby("cohort", sort=True):
        size = int(rows["customers"].sum())
        # months_lived is NaN for customers still active: never < k, so they stay retained
        months_lived, churned = rows["months_lived"].to_numpy(dtype=float), rows["customers"].to_numpy()
        start = pd.Timestamp(f"{cohort}-01")
        end = start + pd.DateOffset(months=1)
        observable = (as_of.year - end.year) * 12 + (as_of.month - end.month)
        shown = max(0, min(months, observable))
        retained = [size - int(churned[months_lived < k].sum()) for k in range(1, shown + 1)]
        table.append(
            {
                "cohort": str(cohort),
                "customers": size,
                "retained": retained,
                "retention": [count / size for count in retained],
            }
        )
    return {
        "months": list(range(1, months + 1)),
        "definition": "retention[k-1]: share of the cohort not churned k whole months after sign-up",
        "rows": table,
    }


def _summary(results: dict[str, Any]) -> str:
    overall = results["overall"]
    if overall["median_lifetime_days"] is not None:
        text = f"Median customer lifetime is {overall['median_lifetime_days']:.0f} days"
    else:
        horizon = overall["curve"][-1]["day"]
        text = f"Median customer lifetime is not reached within {horizon} days (over half never churned)"
    text += f" across {overall['customers']:,} customers"
    year = {
        label: _survival_at(segment["curve"], 365)
        for label, segment in results["by_segment"].items()
        if _survival_at(segment["curve"], 365) is not None
    }
    if year:
        text += "; 1-year survival " + ", ".join(f"{label} {percent(value)}" for label, value in year.items())
    test = results["test"]
    if test is not None:
        text += (
            f"; the difference between {results['group_by']} segments is {significance(test['p_value'])} "
            f"(log-rank {p_value_words(test['p_value'])})"
        )
    return text + "."


def _survival_at(curve: list[dict[str, Any]], day: int) -> float | None:
    before = [point for point in curve if point["day"] <= day]
    if not before or curve[-1]["day"] < day:
        return None
    return float(before[-1]["survival"])


def whole_months(start: pd.Series, end: pd.Series) -> pd.Series:
    """Largest k with start + k months <= end, months added as PostgreSQL and pandas add them (31 Jan + 1
    month = 29 Feb): the calendar-month difference, less one when the start's day and time, clamped to the
    end's month, come after the end's.
    """
    months = (end.dt.year - start.dt.year) * 12 + (end.dt.month - start.dt.month)
    day = np.minimum(start.dt.day, end.dt.days_in_month)
    shifted = pd.to_timedelta(day - 1, unit="D") + (start - start.dt.normalize())
    reached = end - end.dt.to_period("M").dt.start_time
    return months - (shifted > reached).astype(int)


def retention_of_frame(frame: pd.DataFrame, parameters: RetentionParameters) -> Outcome:
    """Retention on a session dataset with one row per customer: created_at and churn_date (or is_churned)."""
    require_columns(frame, ["created_at"], "retention")
    if "churn_date" not in frame.columns:
        require_columns(frame, ["churn_date"], "retention (lifetimes of churned customers)")
    as_of = as_of_instant(frame, parameters.as_of)
    created = pd.to_datetime(frame["created_at"])
    churn_date = pd.to_datetime(frame["churn_date"])
    churned = churn_date.notna()
    if "is_churned" in frame.columns:
        flagged = truthy(frame["is_churned"])
        if (flagged & churn_date.isna()).any():
            raise InvalidInput("some customers have is_churned true but no churn_date; retention needs both")
        churned = flagged
    churned = churned & (churn_date <= as_of)
    known = created.notna() & (created <= as_of)
    end = churn_date.where(churned, as_of)
    days = np.floor((end - created).dt.total_seconds() / SECONDS_PER_DAY)
    segments = segment_labels(frame, parameters.group_by)
    lifetimes = (
        pd.DataFrame({"segment": segments, "lifetime_days": days, "churned": churned})[known]
        .groupby(["segment", "lifetime_days", "churned"], sort=False)
        .size()
        .rename("customers")
        .reset_index()
    )
    lived = whole_months(created, churn_date).where(churned)
    cohorts = (
        pd.DataFrame({"cohort": created.dt.strftime("%Y-%m"), "months_lived": lived})[known]
        .groupby(["cohort", "months_lived"], dropna=False, sort=True)
        .size()
        .rename("customers")
        .reset_index()
    )
    return retention_from_counts(lifetimes, cohorts, as_of, parameters)
