"""Derived segments shared by the SQL and the pandas paths: age and tenure bands, so both agree exactly."""

from __future__ import annotations

from typing import Final

import numpy as np
import pandas as pd

# (lower bound inclusive, label); a value belongs to the last band whose bound it reaches.
AGE_BANDS: Final[tuple[tuple[float, str], ...]] = (
    (0, "under 25"),
    (25, "25-34"),
    (35, "35-44"),
    (45, "45-54"),
    (55, "55-64"),
    (65, "65+"),
)
TENURE_BANDS: Final[tuple[tuple[float, str], ...]] = (
    (0, "under 90 days"),
    (90, "90-179 days"),
    (180, "180-364 days"),
    (365, "365-729 days"),
    (730, "730+ days"),
)
MISSING: Final = "(missing)"
SECONDS_PER_DAY: Final = 86_400.0


def band_labels(values: pd.Series, bands: tuple[tuple[float, str], ...]) -> pd.Series:
    """The band label of each value (MISSING where the value is missing)."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    bounds = np.array([bound for bound, _ in bands], dtype=float)
    labels = np.array([label for _, label in bands], dtype=object)
    index = np.clip(np.searchsorted(bounds, numbers, side="right") - 1, 0, len(bands) - 1)
    result = np.where(np.isnan(numbers), MISSING, labels[index])
    return pd.Series(result, index=values.index, dtype=object)


def tenure_days(created_at: pd.Series, churn_date: pd.Series | None, as_of: pd.Timestamp) -> pd.Series:
    """Days from sign-up to churn, or to `as_of` for customers still active (fractional days)."""
    start = pd.to_datetime(created_at)
    end = pd.Series(as_of, index=created_at.index)
    if churn_date is not None:
        churned_at = pd.to_datetime(churn_date)
        end = churned_at.where(churned_at.notna(), end)
    return (end - start).dt.total_seconds() / SECONDS_PER_DAY


_BAND_ORDER: Final = {label: i for bands in (AGE_BANDS, TENURE_BANDS) for i, (_, label) in enumerate(bands)}


def segment_label(value: object) -> str | int:
    """A segment as results show it: hours stay numbers, missing becomes MISSING, the rest text."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return MISSING
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return str(value)


def segment_order(label: str | int) -> tuple[int, float, str]:
    """Bands in band order, hours numerically, names alphabetically, missing last."""
    if label == MISSING:
        return (3, 0.0, "")
    if isinstance(label, int):
        return (0, float(label), "")
    if label in _BAND_ORDER:
        return (1, float(_BAND_ORDER[label]), "")
    return (2, 0.0, label)
