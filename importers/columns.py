"""Shared by every format: header-row detection, column names, and typing text cells (numbers, booleans, dates)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from core.errors import InvalidInput

_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_GROUPED_NUMBER = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d+)?$")
_DATE = re.compile(r"^\d{4}-\d{1,2}-\d{1,2}([ T].*)?$|^\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}$")
_SAMPLE = 1_000
# Tried in order after ISO 8601; month-first or day-first decides which slash form comes first.
_MONTH_FIRST = ("%m/%d/%Y", "%d/%m/%Y", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M", "%m/%d/%y", "%d/%m/%y")
_DAY_FIRST = ("%d/%m/%Y", "%m/%d/%Y", "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M", "%d/%m/%y", "%m/%d/%y")
_OTHER_DATES = ("%d.%m.%Y", "%Y/%m/%d", "%d-%m-%Y", "%d %b %Y", "%d %B %Y", "%b %d, %Y", "%B %d, %Y")
_TRUE, _FALSE = {"true", "yes"}, {"false", "no"}


def cell_kind(value: Any) -> str:
    """'blank', 'number', 'date' or 'text' for one raw cell (a string or a spreadsheet value)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "blank"
    if isinstance(value, bool):
        return "text"
    if isinstance(value, (int, float, np.number)):
        return "number"
    if isinstance(value, (dt.date, dt.datetime, pd.Timestamp)):
        return "date"
    text = str(value).strip()
    if not text:
        return "blank"
    if _NUMBER.match(text) or _GROUPED_NUMBER.match(text):
        return "number"
    if _DATE.match(text):
        return "date"
    return "text"


def looks_like_header(first: Sequence[Any], body: Sequence[Sequence[Any]]) -> bool:
    """Is `first` a row of column names above the `body` rows?

    A text cell above a numeric or date column says yes; a number or date above a column of the
    same kind says no; a table of text only is taken to have a header when the names are unique.
    """
    first_kinds = [cell_kind(v) for v in first]
    if all(kind == "blank" for kind in first_kinds):
        return False
    evidence_for = evidence_against = False
    for index, kind in enumerate(first_kinds):
        column = [cell_kind(row[index]) for row in body[:200] if index < len(row)]
        typed = [k for k in column if k != "blank"]
        if not typed:
            continue
        dominant = max(("number", "date", "text"), key=typed.count)
        if typed.count(dominant) < 0.8 * len(typed):
            continue
        if dominant in ("number", "date") and kind == "text":
            evidence_for = True
        elif dominant == kind and kind in ("number", "date"):
            evidence_against = True
    if evidence_for:
        return True
    if evidence_against:
        return False
    names = [str(v).strip() for v in first if cell_kind(v) != "blank"]
    return len(names) == len(first_kinds) and len(set(names)) == len(names)


def column_names(raw: Sequence[Any] | None, width: int) -> list[str]:
    """Clean, unique names: stripped, blanks become column_N, repeats get a _2, _3 suffix."""
    names: list[str] = []
    seen: set[str] = set()
    for index in range(width):
        value = raw[index] if raw is not None and index < len(raw) else None
        text = " ".join(str(value).split()) if value is not None else ""
        if not text or text.startswith("Unnamed: ") or text.lower() == "nan":
            text = f"column_{index + 1}"
        text = text[:200]
        candidate, suffix = text, 2
        while candidate in seen:
            candidate, suffix = f"{text}_{suffix}", suffix + 1
        seen.add(candidate)
        names.append(candidate)
    return names


def infer_types(
    frame: pd.DataFrame, *, date_columns: Sequence[str] | None = None, dayfirst: bool = False
) -> pd.DataFrame:
    """Give text columns their real type: numbers, booleans, dates; what is left becomes a string column."""
    forced = list(date_columns or [])
    missing = [name for name in forced if name not in frame.columns]
    if missing:
        raise InvalidInput(
            f"date column '{missing[0]}' is not in the file; columns: {', '.join(map(str, frame.columns[:30]))}"
        )
    frame = frame.infer_objects()
    # A shallow copy with only the converted columns replaced: no copy of the columns already typed.
    typed = frame.copy(deep=False)
    for name in frame.columns:
        column = frame[name]
        if name in forced:
            typed[name] = _force_dates(column, name, dayfirst)
        elif column.dtype == object or pd.api.types.is_string_dtype(column.dtype):
            typed[name] = _typed_text(column, dayfirst)
    return typed


def _typed_text(column: pd.Series, dayfirst: bool) -> pd.Series:
    if column.dtype == object:  # Python values (a spreadsheet, mixed chunks): booleans and dates kept as such
        values = column.dropna()
        for kind, convert in (((bool, np.bool_), _python_booleans), ((dt.datetime, dt.date), _python_dates)):
            if len(values) and _all_instances(values.iloc[:_SAMPLE], kind) and _all_instances(values, kind):
                return convert(column, len(values))
    text = column.astype("str").str.strip()  # pyarrow-backed: vectorised string work
    text = text.mask(text == "")
    present = text.dropna()
    if present.empty:
        return pd.Series(np.nan, index=column.index, dtype="str")
    sample = present.iloc[:_SAMPLE]
    for parse in (_as_number, _as_boolean):
        if parse(sample) is not None:
            result = parse(present)
            if result is not None:
                if result.dtype == bool and len(present) < len(column):
                    result = result.astype("boolean")  # keeps the gaps as <NA>, not object
                return result.reindex(column.index)
    date_format = _date_format(sample, dayfirst)
    if date_format is not None:
        # The sample's format first (one pass); a column that does not fully fit it gets the whole search.
        dates = _in_date_format(present, date_format)
        if dates is None and len(present) > len(sample):
            dates = _as_date(present, dayfirst)
        if dates is not None:
            return dates.reindex(column.index)
    return text.astype("str")


def _all_instances(values: pd.Series, kind: tuple[type, ...]) -> bool:
    return all(isinstance(value, kind) for value in values)


def _python_booleans(column: pd.Series, present: int) -> pd.Series:
    return column.astype("boolean") if present < len(column) else column.astype(bool)


def _python_dates(column: pd.Series, present: int) -> pd.Series:
    return pd.to_datetime(column, errors="coerce")


def _as_number(text: pd.Series) -> pd.Series | None:
    cleaned = text
    if not text.str.match(_NUMBER.pattern).all():
        if not text.str.match(f"{_NUMBER.pattern}|{_GROUPED_NUMBER.pattern}").all():
            return None
        cleaned = text.str.replace(",", "", regex=False)
    numbers = pd.to_numeric(cleaned.to_numpy(dtype=object), errors="coerce")  # numpy dtypes, not nullable
    if numbers.dtype.kind not in "iuf" or np.isnan(numbers).any():
        return None
    return pd.Series(numbers, index=text.index)


def _as_boolean(text: pd.Series) -> pd.Series | None:
    lowered = text.str.lower()
    if not lowered.isin(_TRUE | _FALSE).all():
        return None
    return lowered.isin(_TRUE).astype(bool)


def _as_date(text: pd.Series, dayfirst: bool) -> pd.Series | None:
    date_format = _date_format(text, dayfirst)
    return None if date_format is None else _in_date_format(text, date_format)


def _date_format(text: pd.Series, dayfirst: bool) -> str | None:
    """The first date format (ISO 8601 first) every value of `text` parses in, or None."""
    if not text.str.contains(r"\d", regex=True).all() or text.str.len().max() > 40:
        return None
    for fmt in ("ISO8601", *(_DAY_FIRST if dayfirst else _MONTH_FIRST), *_OTHER_DATES):
        if fmt == "ISO8601" and not text.str.match(r"^\d{4}-\d{1,2}").all():
            continue
        if _in_date_format(text, fmt) is not None:
            return fmt
    return None


def _in_date_format(text: pd.Series, fmt: str) -> pd.Series | None:
    """`text` parsed as dates in `fmt`, or None when a value does not parse."""
    if fmt == "ISO8601" and text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all():
        fast = _plain_iso_dates(text)
        if fast is not None:
            return fast
    try:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
    except (ValueError, TypeError, OverflowError):
        return None
    return None if parsed.isna().any() else parsed


def _plain_iso_dates(text: pd.Series) -> pd.Series | None:
    """YYYY-MM-DD strings parsed by Arrow (several times faster than pandas), or None to let pandas decide.

    Arrow rolls an impossible day over (2024-02-30 becomes 2024-03-01) where pandas refuses it, so
    the parsed day and month must equal the written ones.
    """
    strings = pa.array(text)  # zero-copy for the Arrow-backed strings pandas reads CSV text into
    try:
        parsed = pc.strptime(strings, format="%Y-%m-%d", unit="us", error_is_null=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if parsed.null_count:
        return None
    written_month = pc.cast(pc.utf8_slice_codeunits(strings, 5, 7), pa.int64())
    written_day = pc.cast(pc.utf8_slice_codeunits(strings, 8, 10), pa.int64())
    if not (pc.all(pc.equal(pc.month(parsed), written_month)).as_py()) or not (
        pc.all(pc.equal(pc.day(parsed), written_day)).as_py()
    ):
        return None
    return pd.Series(parsed.to_numpy(zero_copy_only=False), index=text.index)


def _force_dates(column: pd.Series, name: str, dayfirst: bool) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        return column
    text = column.astype("str").str.strip()  # pyarrow-backed: vectorised string work
    text = text.mask(text == "")
    present = text.dropna()
    parsed = _as_date(present, dayfirst) if len(present) else present.astype("datetime64[ns]")
    if parsed is None:
        try:
            parsed = pd.to_datetime(present, errors="raise", dayfirst=dayfirst, format="mixed")
        except (ValueError, TypeError, OverflowError):
            bad = next(
                (v for v in present.iloc[:10_000] if pd.isna(pd.to_datetime(v, errors="coerce"))),
                present.iloc[0],
            )
            raise InvalidInput(
                f"column '{name}' has values that are not dates, e.g. '{str(bad)[:40]}'; "
                "remove it from date_columns or fix the file"
            ) from None
    return parsed.reindex(column.index)
