"""DataFrames to compressed Arrow IPC bytes and back, their column metadata, and JSON-ready preview rows."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import math
import uuid
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc

from core.errors import InvalidInput

_WRITE_OPTIONS = ipc.IpcWriteOptions(compression="zstd")


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """The frame as an Arrow table; object columns Arrow cannot type (UUIDs, mixed values) become text."""
    if not all(isinstance(name, str) for name in frame.columns):
        frame = frame.rename(columns=str)
    if frame.columns.duplicated().any():
        duplicated = ", ".join(sorted(set(frame.columns[frame.columns.duplicated()])))[:200]
        raise InvalidInput(f"dataset has duplicate column names ({duplicated}); alias them in the query")
    converted: dict[str, Any] = {}
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object:
            sample = column.dropna()
            if len(sample) and isinstance(sample.iloc[0], uuid.UUID):
                converted[name] = column.map(lambda v: None if v is None else str(v))
    if converted:
        frame = frame.assign(**converted)
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        as_text = {
            name: frame[name].map(lambda v: None if _missing(v) else str(v))
            for name in frame.columns
            if frame[name].dtype == object
        }
        return pa.Table.from_pandas(frame.assign(**as_text), preserve_index=False)


def frame_to_bytes(frame: pd.DataFrame) -> tuple[bytes, list[dict[str, str]]]:
    """Arrow IPC (zstd-compressed) bytes of `frame`, and its columns as [{name, type}]."""
    table = _arrow_table(frame)
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema, options=_WRITE_OPTIONS) as writer:
        writer.write_table(table)
    columns = [{"name": field.name, "type": str(field.type)} for field in table.schema]
    return sink.getvalue().to_pybytes(), columns


def bytes_to_frame(data: bytes) -> pd.DataFrame:
    with ipc.open_file(pa.BufferReader(data)) as reader:
        table = reader.read_all()
    frame: pd.DataFrame = table.to_pandas()
    return frame


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    try:
        return bool(pd.isna(value)) if np.ndim(value) == 0 else False
    except (TypeError, ValueError):
        return False


# A numeric whose whole-number part reaches this keeps every digit only as text (ids, exact totals).
EXACT_WHOLE_LIMIT = decimal.Decimal(10) ** 15
_FIFTEEN_DIGITS = decimal.Context(prec=15)
AS_TEXT = "as text: exceeds float precision"  # what a column type says when values come back as text


def decimal_number(value: decimal.Decimal) -> int | float | str | None:
    """A PostgreSQL numeric as JSON: a number whenever a double keeps it, else its exact text.

    Whole numbers (no fraction digits) up to 2^53 are integers. Other values are doubles when the double
    agrees with them in the first 15 significant digits and they are below 10^15 (digits past the 15th
    are arithmetic, e.g. avg() gives 20); beyond that a double would change the number: text."""
    if not value.is_finite():
        return None
    if int(value.as_tuple().exponent) >= 0 and abs(value) <= 2**53:
        return int(value)
    as_float = float(value)
    if not math.isfinite(as_float):
        return str(value)
    if decimal.Decimal(repr(as_float)) == value:
        return as_float
    if abs(value) < EXACT_WHOLE_LIMIT and _FIFTEEN_DIGITS.plus(value) == _FIFTEEN_DIGITS.plus(
        decimal.Decimal(repr(as_float))
    ):
        return as_float
    return str(value)


def iso_time(value: dt.date | dt.time) -> str:
    """ISO 8601 with fractional seconds only when they are not zero (.5 -> .500, never .000000), and an
    instant with a time zone always in UTC as +00:00."""
    if isinstance(value, pd.Timestamp):
        stamp: Any = value.tz_convert("UTC") if value.tzinfo is not None else value
        if stamp.nanosecond:
            return str(stamp.isoformat())
        value = stamp.to_pydatetime()
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.isoformat(timespec=_timespec(value.microsecond))
    if isinstance(value, dt.time):
        return value.isoformat(timespec=_timespec(value.microsecond))
    return value.isoformat()


def _timespec(microsecond: int) -> str:
    if microsecond == 0:
        return "seconds"
    return "milliseconds" if microsecond % 1000 == 0 else "microseconds"


def json_ready(value: Any) -> Any:
    """A value JSON can hold, for every answer and stored value (the one JSON sanitiser): numpy scalars
    unwrapped, NaN, NA and NaT as null, numerics as numbers unless a double would change them (then exact
    text), times as ISO 8601 text, timedeltas as seconds, bytes as base64, anything else as its text."""
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_ready(item) for item in value]
    if isinstance(value, np.ndarray):
        return [json_ready(item) for item in value.tolist()]
    if isinstance(value, np.datetime64):  # .item() of a nanosecond one is an int
        return None if np.isnat(value) else iso_time(pd.Timestamp(value))
    if isinstance(value, np.generic):
        return json_ready(value.item())
    if isinstance(value, decimal.Decimal):
        return decimal_number(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode()
    if _missing(value):
        return None
    if isinstance(value, (dt.datetime, dt.date, dt.time, pd.Timestamp)):
        return iso_time(value)
    if isinstance(value, (dt.timedelta, pd.Timedelta)):
        return value.total_seconds()
    return str(value)


def preview_rows(frame: pd.DataFrame, offset: int, limit: int) -> list[dict[str, Any]]:
    """Rows offset .. offset+limit as JSON-ready dicts."""
    window = frame.iloc[offset : offset + limit]
    records: list[dict[str, Any]] = json_ready(window.to_dict(orient="records"))
    return records
