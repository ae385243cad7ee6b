"""A dataset at a glance: per column its type, nulls, distinct values and a numeric, date or text summary."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analytics.frames import require_columns
from analytics.parameters import DescribeParameters
from analytics.summary import Outcome

_TOP_VALUES = 5


def column_type(series: pd.Series) -> str:
    """The type an analyst would name: integer, float, boolean, datetime or string."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "integer"
    if pd.api.types.is_float_dtype(dtype):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    return "string"


def describe(frame: pd.DataFrame) -> dict[str, Any]:
    """{rows, columns: [{name, type, nulls, null_fraction, distinct, summary}]} for any DataFrame."""
    rows = len(frame)
    columns = []
    for name in frame.columns:
        series = frame[name]
        kind = column_type(series)
        nulls = int(series.isna().sum())
        present = series.dropna()
        entry: dict[str, Any] = {
            "name": str(name),
            "type": kind,
            "nulls": nulls,
            "null_fraction": nulls / rows if rows else 0.0,
            "distinct": int(present.nunique()),
        }
        if kind in ("integer", "float") and len(present):
            values = present.astype("float64")
            quartiles = values.quantile([0.25, 0.5, 0.75])
            entry["summary"] = {
                "mean": _number(values.mean()),
                "std": _number(values.std(ddof=1)) if len(values) > 1 else None,
                "min": _number(values.min()),
                "p25": _number(quartiles.loc[0.25]),
                "median": _number(quartiles.loc[0.5]),
                "p75": _number(quartiles.loc[0.75]),
                "max": _number(values.max()),
                "sum": _number(values.sum()),
            }
        elif kind == "boolean" and len(present):
            true = int(present.astype(bool).sum())
            entry["summary"] = {
                "true": true,
                "false": len(present) - true,
                "true_fraction": true / len(present),
            }
        elif kind == "datetime" and len(present):
            entry["summary"] = {"min": present.min().isoformat(), "max": present.max().isoformat()}
        elif kind == "string" and len(present):
            counts = present.astype(str).value_counts().head(_TOP_VALUES)
            lengths = present.astype(str).str.len()
            entry["summary"] = {
                "top_values": [{"value": str(v), "count": int(c)} for v, c in counts.items()],
                "min_length": int(lengths.min()),
                "max_length": int(lengths.max()),
            }
        columns.append(entry)
    return {"rows": rows, "column_count": len(columns), "columns": columns}


def _number(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def describe_outcome(described: dict[str, Any], source: str) -> Outcome:
    """describe() output (or the same shape computed in PostgreSQL) as an analysis result with a summary."""
    rows, columns = described["rows"], described["columns"]
    text = f"{source} has {rows:,} rows and {described['column_count']} described columns"
    gaps = sorted((c for c in columns if c["nulls"]), key=lambda c: -c["null_fraction"])
    if gaps:
        text += "; most missing: " + ", ".join(f"{c['name']} ({c['null_fraction']:.1%})" for c in gaps[:3])
    else:
        text += "; no missing values"
    return Outcome(described, text + ".", rows)


def describe_of_frame(frame: pd.DataFrame, parameters: DescribeParameters) -> Outcome:
    """The describe analysis on a session dataset: every column, or parameters.columns."""
    if parameters.columns:
        require_columns(frame, parameters.columns, "describe")
        frame = frame[list(dict.fromkeys(parameters.columns))]
    described = describe(frame)
    described["dataset"] = parameters.dataset
    return describe_outcome(described, f"dataset '{parameters.dataset}'")
