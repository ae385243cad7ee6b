"""Network quality: mean, median, percentiles and share of poor events, per segment, with ANOVA and Kruskal-Wallis.

Both paths reduce the events to an exact histogram (segment, score, events): quality scores have few
distinct values, so the histogram is small, and every figure here, ranks included, follows exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from analytics.bands import segment_label, segment_order
from analytics.frames import require_columns, require_rows_in_dates, segment_labels
from analytics.parameters import NetworkQualityParameters
from analytics.stats import Histogram, kruskal_wallis, one_way_anova, percentile
from analytics.summary import Outcome, p_value_words, percent, significance


def _label(q: float) -> str:
    return f"p{q:g}"


def _describe(values: np.ndarray, counts: np.ndarray, parameters: NetworkQualityParameters) -> dict[str, Any]:
    n = float(counts.sum())
    mean = float(counts @ values / n)
    variance = float(counts @ (values - mean) ** 2 / (n - 1)) if n > 1 else math.nan
    return {
        "events": int(n),
        "mean": mean,
        "median": percentile(values, counts, 50),
        "std": math.sqrt(variance) if math.isfinite(variance) else None,
        "poor_share": float(counts[values < parameters.poor_threshold].sum() / n),
        "percentiles": {_label(q): percentile(values, counts, q) for q in parameters.percentiles},
    }


def network_quality_from_histogram(histogram: pd.DataFrame, parameters: NetworkQualityParameters) -> Outcome:
    """Finish from exact counts: `histogram` has columns segment, score, events (one row per pair)."""
    data = histogram[histogram["events"] > 0]
    segments = [segment_label(value) for value in data["segment"]]
    labels = sorted(set(segments), key=segment_order)
    row = {label: i for i, label in enumerate(labels)}
    scores = data["score"].to_numpy(dtype=float)
    values, column = np.unique(scores, return_inverse=True)
    counts = np.zeros((len(labels), len(values)))
    rows = np.array([row[label] for label in segments], dtype=np.int64)
    np.add.at(counts, (rows, column), data["events"].to_numpy(dtype=float))
    events = int(counts.sum())
    results: dict[str, Any] = {
        "overall_mean_quality": None,
        "events": events,
        "group_by": parameters.group_by,
    }
    if events:
        overall = _describe(values, counts.sum(axis=0), parameters)
        results.update(
            overall_mean_quality=overall["mean"],
            median=overall["median"],
            std=overall["std"],
            poor_share=overall["poor_share"],
            percentiles=overall["percentiles"],
        )
    results["poor_threshold"] = parameters.poor_threshold
    results["by_segment"] = {
        str(label): _describe(values, counts[i], parameters) for i, label in enumerate(labels)
    }
    exact = Histogram(values, counts)
    results["tests"] = {
        "anova": one_way_anova(exact) if events else None,
        "kruskal_wallis": kruskal_wallis(exact) if events else None,
    }
    return Outcome(results, _summary(results), events)


def _summary(results: dict[str, Any]) -> str:
    if not results["events"]:
        return "No network events in the selected period."
    text = (
        f"Mean network quality is {results['overall_mean_quality']:.2f} (median {results['median']:.2f}) over "
        f"{results['events']:,} events; {percent(results['poor_share'])} are poor (< {results['poor_threshold']:g})"
    )
    segments = results["by_segment"]
    if len(segments) > 1:
        best = max(segments, key=lambda k: segments[k]["mean"])
        worst = min(segments, key=lambda k: segments[k]["mean"])
        kruskal = results["tests"]["kruskal_wallis"] or {}
        text += (
            f"; by {results['group_by']} best in {best} ({segments[best]['mean']:.2f}) and worst in {worst} "
            f"({segments[worst]['mean']:.2f}), a difference that is {significance(kruskal.get('p_value'))} "
            f"(Kruskal-Wallis {p_value_words(kruskal.get('p_value'))})"
        )
    return text + "."


def network_quality_of_frame(frame: pd.DataFrame, parameters: NetworkQualityParameters) -> Outcome:
    """Network quality on a session dataset of events (network_quality_score and the group_by source)."""
    require_columns(frame, ["network_quality_score"], "network_quality")
    data = pd.DataFrame(
        {
            "segment": segment_labels(frame, parameters.group_by),
            "score": pd.to_numeric(frame["network_quality_score"], errors="coerce"),
        }
    )
    if parameters.start_date or parameters.end_date:
        require_columns(frame, ["event_timestamp"], "a date range")
        when = pd.to_datetime(frame["event_timestamp"])
        keep = pd.Series(True, index=frame.index)
        if parameters.start_date:
            keep &= when >= pd.Timestamp(parameters.start_date)
        if parameters.end_date:
            keep &= when < pd.Timestamp(parameters.end_date) + pd.Timedelta(days=1)
        require_rows_in_dates(when, bool(keep.any()), parameters, "event_timestamp")
        data = data[keep]
    data = data[data["score"].notna()]
    histogram = data.groupby(["segment", "score"], sort=False).size().rename("events").reset_index()
    return network_quality_from_histogram(histogram, parameters)
