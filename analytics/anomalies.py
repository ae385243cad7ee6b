"""Anomalies: days or hours whose network quality or usage departs from the trailing baseline.

The baseline of a bucket is the median of the `window` buckets before it (the bucket itself left out, so
an outage cannot hide in its own baseline) and its spread the MAD scaled to a normal standard deviation;
the robust z-score is (value - median) / (1.4826 * MAD). Medians ignore the odd bad day, so one anomaly
does not mask the next. When the MAD is zero the mean absolute deviation (x 1.2533) stands in for it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Final

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats as scipy_stats

from analytics.frames import require_columns
from analytics.parameters import AnomaliesParameters
from analytics.stats import finite_or_none
from analytics.summary import Outcome
from analytics.trend import Measure, complete, in_range, truncate

DEFAULT_WINDOWS: Final = {"day": 28, "hour": 168}
MAD_TO_SD: Final = float(1 / scipy_stats.norm.ppf(0.75))  # 1.4826: MAD of a normal sample -> its SD
MEAN_AD_TO_SD: Final = math.sqrt(math.pi / 2)  # 1.2533: mean absolute deviation of a normal -> its SD
SERIES_LIMIT: Final = 2_000  # buckets; longer series are summarised, not listed
EMPTY_LIMIT: Final = 100
SPARSE_EVENTS: Final = 20  # median events per bucket below which a warning is given
DEFINITIONS: Final = {
    "quality": "mean network quality score of the bucket's events (1 worst, 5 best)",
    "usage": "total data usage (MB) of the bucket's events",
}


def rolling_baseline(values: np.ndarray, window: int, min_periods: int) -> tuple[np.ndarray, np.ndarray]:
    """Per position t: the median of values[t-window:t] and its robust spread (NaN without min_periods values)."""
    n = len(values)
    padded = np.concatenate([np.full(window, np.nan), values.astype(float)])
    windows = sliding_window_view(padded, window)[:n]  # windows[t] == values[t - window : t]
    counts = np.isfinite(windows).sum(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows at the start
        median = _row_medians(windows, counts)
        deviations = np.abs(windows - median[:, None])
        mad = _row_medians(deviations, counts)
        mean_ad = np.nanmean(deviations, axis=1)
    spread = np.where(mad > 0, MAD_TO_SD * mad, MEAN_AD_TO_SD * mean_ad)
    enough = counts >= min_periods
    return np.where(enough, median, np.nan), np.where(enough, spread, np.nan)


def _row_medians(matrix: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """np.nanmedian along rows, faster: np.sort puts NaN last, so each row's median sits at its count."""
    ordered = np.sort(matrix, axis=1)
    rows = np.arange(len(matrix))
    low = np.clip((counts - 1) // 2, 0, None)
    high = np.clip(counts // 2, 0, matrix.shape[1] - 1)
    median = (ordered[rows, low] + ordered[rows, high]) / 2
    return np.where(counts > 0, median, np.nan)


def robust_z(values: np.ndarray, median: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """(value - median) / spread; a departure from a perfectly flat baseline is infinite, no departure 0."""
    deviation = values - median
    with np.errstate(divide="ignore", invalid="ignore"):
        z = deviation / spread
        z = np.where((spread == 0) & (deviation == 0), 0.0, z)
        return np.where((spread == 0) & (deviation != 0), np.sign(deviation) * np.inf, z)


def anomalies_from_buckets(
    totals: pd.DataFrame, parameters: AnomaliesParameters, measure: Measure | None = None
) -> Outcome:
    """Finish from per-bucket totals: `bucket`, `events`, and `mean_quality` or `usage_mb` (a `measure`:
    `value` and `rows`, which stand for the events)."""
    grain = parameters.grain
    metric: str = parameters.metric
    series = complete(totals, grain)
    if measure is not None:
        metric = measure.name
        series = series.rename(columns={"rows": "events"})
    events = series["events"].fillna(0).to_numpy(dtype=float) if len(series) else np.array([])
    if measure is not None:
        filled = series["value"].where(series["events"].fillna(0) > 0, measure.empty) if len(series) else None
        values = filled.to_numpy(dtype=float) if filled is not None else np.array([])
    elif metric == "quality":
        values = series["mean_quality"].to_numpy(dtype=float) if len(series) else np.array([])
    else:
        # A bucket without events used no data: an outage shows as zero usage.
        values = series["usage_mb"].fillna(0.0).to_numpy(dtype=float) if len(series) else np.array([])
    window = parameters.window or DEFAULT_WINDOWS[grain]
    min_periods = max(3, window // 2)
    median, spread = rolling_baseline(values, window, min_periods)
    z = robust_z(values, median, spread)
    judged = np.isfinite(values) & np.isfinite(median)
    if parameters.direction == "low":
        flagged = judged & (z < -parameters.threshold)
    elif parameters.direction == "high":
        flagged = judged & (z > parameters.threshold)
    else:
        flagged = judged & (np.abs(z) > parameters.threshold)
    index = series.index
    found = []
    for i in np.flatnonzero(flagged):
        deviation = float(values[i] - median[i])
        found.append(
            {
                "bucket": index[i].isoformat(),
                "value": float(values[i]),
                "baseline": float(median[i]),
                "spread": float(spread[i]),
                "robust_z": finite_or_none(float(z[i])),
                "deviation": deviation,
                "relative_deviation": deviation / float(median[i]) if median[i] else None,
                "direction": "low" if deviation < 0 else "high",
                "events": int(events[i]),
            }
        )
    found.sort(key=lambda entry: -abs(entry["robust_z"]) if entry["robust_z"] is not None else -math.inf)
    results: dict[str, Any] = {
        "metric": metric,
        "definition": measure.definition if measure else DEFINITIONS[metric],
        "grain": grain,
        "method": "robust z-score against the trailing rolling median and MAD (current bucket excluded)",
        "window": window,
        "min_periods": min_periods,
        "threshold": parameters.threshold,
        "direction": parameters.direction,
        "buckets": len(values),
        "judged_buckets": int(judged.sum()),
        "empty_bucket_count": int((events == 0).sum()),
        "empty_buckets": [index[i].isoformat() for i in np.flatnonzero(events == 0)[:EMPTY_LIMIT]],
        "anomaly_count": len(found),
        "anomalies": found[: parameters.max_anomalies],
        "first_bucket": index[0].isoformat() if len(index) else None,
        "last_bucket": index[-1].isoformat() if len(index) else None,
    }
    typical_events = float(np.median(events)) if len(events) else 0.0
    if typical_events < SPARSE_EVENTS:
        results["warning"] = (
            f"buckets are sparse (median {typical_events:g} events per {grain}): scores swing by chance and "
            "z-scores overstate departures; use a coarser grain"
        )
    if len(values) <= SERIES_LIMIT:
        results["series"] = [
            {
                "bucket": index[i].isoformat(),
                "value": finite_or_none(float(values[i])),
                "baseline": finite_or_none(float(median[i])),
                "robust_z": finite_or_none(float(z[i])) if judged[i] else None,
                "events": int(events[i]),
            }
            for i in range(len(values))
        ]
    else:
        results["series"] = None
        results["series_note"] = f"{len(values):,} buckets: the series is listed up to {SERIES_LIMIT:,}"
    return Outcome(results, _summary(results), int(events.sum()))


def _summary(results: dict[str, Any]) -> str:
    name = {"quality": "network quality", "usage": "data usage"}.get(results["metric"], results["metric"])
    grain = results["grain"]
    if not results["judged_buckets"]:
        return (
            f"Too few {grain}s of {name} to judge ({results['buckets']} buckets; the baseline needs "
            f"{results['min_periods']} earlier ones)."
        )
    if not results["anomaly_count"]:
        return (
            f"No {grain} of {name} departs from its baseline beyond robust z {results['threshold']:g} "
            f"({results['judged_buckets']} {grain}s judged)."
        )
    top = results["anomalies"][0]
    size = "infinitely" if top["robust_z"] is None else f"{abs(top['robust_z']):.1f} robust SDs"
    return (
        f"{results['anomaly_count']} of {results['judged_buckets']} {grain}s depart from their {name} baseline "
        f"beyond robust z {results['threshold']:g}; the largest is {top['bucket'][:16].replace('T', ' ')} at "
        f"{top['value']:,.3f} against a baseline of {top['baseline']:,.3f} ({size} {top['direction']})."
    )


def anomalies_of_frame(frame: pd.DataFrame, parameters: AnomaliesParameters) -> Outcome:
    """Anomalies on a session dataset of events (event_timestamp and the metric's column)."""
    column = "network_quality_score" if parameters.metric == "quality" else "data_usage_mb"
    require_columns(frame, ["event_timestamp", column], f"{parameters.metric} anomalies")
    rows = in_range(frame, "event_timestamp", parameters)
    data = pd.DataFrame(
        {
            "bucket": truncate(rows["event_timestamp"], parameters.grain),
            "value": pd.to_numeric(rows[column], errors="coerce"),
        }
    )
    grouped = data.groupby("bucket")["value"]
    totals = pd.DataFrame(
        {"events": grouped.size(), "mean_quality": grouped.mean(), "usage_mb": grouped.sum()}
    )
    return anomalies_from_buckets(totals.reset_index(), parameters)
