"""Checks and derived columns for session datasets, so a saved DataFrame can be analysed like the live tables."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pandas as pd

from analytics.bands import AGE_BANDS, MISSING, TENURE_BANDS, band_labels, tenure_days
from core.errors import InvalidInput

TIMESTAMP_COLUMNS = ("created_at", "churn_date", "event_timestamp", "transaction_date")


def require_columns(frame: pd.DataFrame, needed: Iterable[str], purpose: str) -> None:
    missing = [name for name in needed if name not in frame.columns]
    if missing:
        raise InvalidInput(
            f"dataset lacks column {', '.join(repr(m) for m in missing)} needed for {purpose}; "
            f"columns: {', '.join(map(str, frame.columns[:40]))}"
        )


def dates_asked(start: dt.date | None, end: dt.date | None) -> str:
    """The date filter in words: 'between 2024-01-01 and 2024-03-31', 'from ... on', 'up to ...'."""
    if start and end:
        return f"between {start} and {end}"
    return f"from {start} on" if start else f"up to {end}"


def require_rows_in_dates(when: pd.Series, found: bool, parameters: Any, column: str) -> None:
    """When start_date/end_date keep no row of a dataset: an InvalidInput naming the days `column` covers."""
    if found or not (parameters.start_date or parameters.end_date):
        return
    asked = dates_asked(parameters.start_date, parameters.end_date)
    present = pd.to_datetime(when).dropna()
    if present.empty:
        raise InvalidInput(f"no rows {asked}: the dataset's column {column!r} has no dates")
    raise InvalidInput(
        f"no rows {asked}; the dataset's {column} covers {present.min().date()} to {present.max().date()}: "
        "pick dates in that range or drop start_date/end_date"
    )


def as_of_instant(frame: pd.DataFrame, as_of: dt.datetime | None) -> pd.Timestamp:
    """The reference instant for tenure: the parameter, else the latest timestamp in the dataset."""
    if as_of is not None:
        return pd.Timestamp(as_of)
    latest = [pd.to_datetime(frame[name]).max() for name in TIMESTAMP_COLUMNS if name in frame.columns]
    latest = [value for value in latest if not pd.isna(value)]
    if not latest:
        raise InvalidInput("tenure needs created_at in the dataset, or pass parameters.as_of")
    return pd.Timestamp(max(latest))


def customer_tenure_days(frame: pd.DataFrame, as_of: dt.datetime | None) -> pd.Series:
    if "tenure_days" in frame.columns:
        return pd.to_numeric(frame["tenure_days"], errors="coerce")
    require_columns(frame, ["created_at"], "tenure")
    churn_date = frame["churn_date"] if "churn_date" in frame.columns else None
    return tenure_days(frame["created_at"], churn_date, as_of_instant(frame, as_of))


def segment_labels(frame: pd.DataFrame, group_by: str, as_of: dt.datetime | None = None) -> pd.Series:
    """The segment of every row for `group_by`, deriving bands and hour of day like the SQL does."""
    if group_by == "age_band":
        require_columns(frame, ["age"], "age_band")
        return band_labels(frame["age"], AGE_BANDS)
    if group_by == "tenure_band":
        return band_labels(customer_tenure_days(frame, as_of), TENURE_BANDS)
    if group_by == "hour_of_day":
        if "hour_of_day" in frame.columns:
            hours = pd.to_numeric(frame["hour_of_day"], errors="coerce")
        else:
            require_columns(frame, ["event_timestamp"], "hour_of_day")
            hours = pd.to_datetime(frame["event_timestamp"]).dt.hour
        return hours.astype("Int64").astype(object).where(hours.notna(), MISSING)
    require_columns(frame, [group_by], f"group_by '{group_by}'")
    column = frame[group_by]
    return column.astype(object).where(column.notna(), MISSING).map(str)


def truthy(column: pd.Series) -> pd.Series:
    """Booleans from bool, 0/1 or 'true'/'false' columns; missing counts as False (as in the SQL)."""
    if column.dtype == bool:
        return column
    mapped = column.map(_truth)
    return mapped.fillna(False).astype(bool)


def _truth(value: Any) -> bool | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    if isinstance(value, str):
        return value.strip().lower() in {"true", "t", "1", "yes"}
    return bool(value)
