"""Answers sized for a model's context: an analysis's headline figures by default, its whole detail on
request, and numbers in text rounded to the digits a reader can use."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

# Significant digits of a float in text (structured content keeps full precision); a float's whole
# part is never rounded away (a revenue total keeps every unit).
TEXT_DIGITS = 4
# Days at which a survival curve is shown in a summary; months of a cohort table likewise.
CURVE_DAYS = (30, 90, 180, 365, 730)
COHORT_MONTHS = (1, 3, 6, 12)
# The longest series a summary lists (the latest points); anomalies likewise.
SERIES_POINTS = 12
ANOMALIES_LISTED = 20

Results = dict[str, Any]


def rounded(value: Any, digits: int = TEXT_DIGITS) -> Any:
    """`value` with every float rounded to `digits` significant digits, or to a whole number when it has
    more digits before the point (ints, text and structure kept)."""
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return value
        return round(value, max(0, digits - 1 - math.floor(math.log10(abs(value)))))
    if isinstance(value, dict):
        return {key: rounded(item, digits) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item, digits) for item in value]
    return value


def summarised(analysis: str, results: Results) -> tuple[Results, list[str]]:
    """The headline figures of an analysis's results, and what was left out (empty: nothing was)."""
    shorten = _SUMMARIES.get(analysis)
    if shorten is None:
        return results, []
    lean = dict(results)
    left_out: list[str] = []
    shorten(lean, left_out)
    return lean, left_out


def _anomalies(results: Results, left_out: list[str]) -> None:
    if results.get("series") is not None:
        left_out.append(f"series ({len(results['series'])} buckets)")
    results.pop("series", None)
    results.pop("series_note", None)
    anomalies = results.get("anomalies") or []
    if len(anomalies) > ANOMALIES_LISTED:
        results["anomalies"] = anomalies[:ANOMALIES_LISTED]
        left_out.append(f"anomalies beyond the largest {ANOMALIES_LISTED} ({len(anomalies)} in all)")


def _survival_points(curve: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The curve's step in force at each of CURVE_DAYS (and its last point), within its span."""
    points = []
    for day in CURVE_DAYS:
        before = [point for point in curve if point["day"] <= day]
        if before and day <= curve[-1]["day"]:
            points.append({**before[-1], "day": day})
    return points


def _retention(results: Results, left_out: list[str]) -> None:
    groups = [results.get("overall")] + list((results.get("by_segment") or {}).values())
    thinned = False
    for index, group in enumerate(groups):
        if isinstance(group, dict) and group.get("curve"):
            lean = {**group, "curve": _survival_points(group["curve"])}
            thinned = thinned or len(lean["curve"]) < len(group["curve"])
            if index == 0:
                results["overall"] = lean
            else:
                results["by_segment"] = {**results["by_segment"]}
                label = list(results["by_segment"])[index - 1]
                results["by_segment"][label] = lean
    if thinned:
        left_out.append(f"survival curves between days {', '.join(map(str, CURVE_DAYS))}")
    cohorts = results.get("cohorts")
    if isinstance(cohorts, dict) and cohorts.get("months"):
        keep = [i for i, month in enumerate(cohorts["months"]) if month in COHORT_MONTHS]
        if len(keep) < len(cohorts["months"]):
            results["cohorts"] = {
                **cohorts,
                "months": [cohorts["months"][i] for i in keep],
                "rows": [
                    {
                        **row,
                        "retained": [row["retained"][i] for i in keep if i < len(row["retained"])],
                        "retention": [row["retention"][i] for i in keep if i < len(row["retention"])],
                    }
                    for row in cohorts.get("rows", [])
                ],
            }
            left_out.append(f"cohort months other than {', '.join(map(str, COHORT_MONTHS))}")


def _latest(key: str, fields: tuple[str, ...] | None = None) -> Callable[[Results, list[str]], None]:
    """Keep the latest SERIES_POINTS of list `key` (and only `fields` of each point, when given)."""

    def shorten(results: Results, left_out: list[str]) -> None:
        series = results.get(key)
        if not isinstance(series, list):
            return
        lean = series[-SERIES_POINTS:]
        if fields is not None:
            lean = [{name: point[name] for name in fields if name in point} for point in lean]
        if len(lean) < len(series):
            left_out.append(f"{key} before the latest {SERIES_POINTS} of {len(series)} points")
        if fields is not None and series and set(series[0]) - set(fields):
            left_out.append(f"{key} fields {', '.join(sorted(set(series[0]) - set(fields)))}")
        results[key] = lean

    return shorten


def _dropping(*keys: str) -> Callable[[Results, list[str]], None]:
    def shorten(results: Results, left_out: list[str]) -> None:
        for key in keys:
            if results.pop(key, None) is not None:
                left_out.append(key)

    return shorten


def _trend(results: Results, left_out: list[str]) -> None:
    _latest("series", ("bucket", "value", "fitted"))(results, left_out)


_SUMMARIES: dict[str, Callable[[Results, list[str]], None]] = {
    "anomalies": _anomalies,
    "retention": _retention,
    "trend": _trend,
    "forecast": _latest("observed"),
    "correlation": _dropping("p_values"),  # strongest_pairs carries the p-values that matter
    "churn_drivers": _dropping("coefficients"),  # drivers rank them in words and odds ratios
}
