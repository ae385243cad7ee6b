"""Correlation between per-customer features (pearson, spearman or kendall), p-values, strongest pairs in words."""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from analytics.frames import require_columns
from analytics.parameters import FEATURES, CorrelationParameters
from analytics.stats import finite_or_none
from analytics.summary import Outcome, p_value_words, strength
from core.errors import InvalidInput

_TESTS = {
    "pearson": scipy_stats.pearsonr,
    "spearman": scipy_stats.spearmanr,
    "kendall": scipy_stats.kendalltau,
}


def correlation_of_table(table: pd.DataFrame, parameters: CorrelationParameters) -> Outcome:
    """Correlate every pair of columns of `table` (numeric, one row per unit), each pair on its complete rows."""
    columns = list(table.columns)
    data = {name: table[name].to_numpy(dtype=float) for name in columns}
    test = _TESTS[parameters.method]
    matrix: dict[str, dict[str, float | None]] = {name: {name: 1.0} for name in columns}
    p_values: dict[str, dict[str, float | None]] = {name: {name: 0.0} for name in columns}
    pairs: list[dict[str, Any]] = []
    for left, right in itertools.combinations(columns, 2):
        complete = ~(np.isnan(data[left]) | np.isnan(data[right]))
        x, y = data[left][complete], data[right][complete]
        r: float | None = None
        p: float | None = None
        if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = test(x, y)
            r, p = finite_or_none(float(result[0])), finite_or_none(float(result[1]))
        matrix[left][right] = matrix[right][left] = r
        p_values[left][right] = p_values[right][left] = p
        if r is not None:
            pairs.append({"columns": [left, right], "r": r, "p_value": p, "n": int(complete.sum())})
    for name in columns:  # a constant column correlates with nothing, itself included
        if np.nanstd(data[name]) == 0 or np.isnan(data[name]).all():
            matrix[name][name] = None
    pairs.sort(key=lambda pair: -abs(float(pair["r"])))
    strongest = [
        pair | {"description": _describe(pair, parameters.method)} for pair in pairs[: parameters.top_pairs]
    ]
    results: dict[str, Any] = {
        "method": parameters.method,
        "columns": columns,
        "rows": len(table),
        "matrix": matrix,
        "p_values": p_values,
        "strongest_pairs": strongest,
    }
    summary = (
        f"Strongest {parameters.method} correlation over {len(table):,} rows: {strongest[0]['description']}"
        if strongest
        else f"No pair of the {len(columns)} columns could be correlated (constant or missing values)."
    )
    return Outcome(results, summary, len(table))


def _describe(pair: dict[str, Any], method: str) -> str:
    left, right = pair["columns"]
    r = float(pair["r"])
    direction = "positive" if r > 0 else "negative"
    trend = "higher" if r > 0 else "lower"
    return (
        f"{left} and {right}: {strength(r)} {direction} correlation ({method} r = {r:.3f}, "
        f"{p_value_words(pair['p_value'])}, n = {pair['n']:,}); rows with higher {left} tend to have "
        f"{trend} {right}."
    )


def numeric_columns(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """The named columns as floats (booleans as 0/1); a column that is not numeric is an error."""
    require_columns(frame, names, "correlation")
    table = {}
    for name in names:
        column = frame[name]
        if column.dtype == bool:
            table[name] = column.astype(float)
            continue
        converted = pd.to_numeric(column.map(_plain), errors="coerce")
        if converted.notna().sum() < column.notna().sum():
            raise InvalidInput(f"column '{name}' is not numeric; correlate numeric or boolean columns only")
        table[name] = converted.astype(float)
    return pd.DataFrame(table)


def _plain(value: Any) -> Any:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if value is None or isinstance(value, (int, float, str)):
        return value
    try:
        return float(value)  # Decimal and numpy scalars
    except (TypeError, ValueError):
        return math.nan


def correlation_of_frame(frame: pd.DataFrame, parameters: CorrelationParameters) -> Outcome:
    """Correlation on a session dataset: parameters.columns, else the per-customer features it has."""
    names = list(parameters.columns or [name for name in FEATURES if name in frame.columns])
    if len(names) < 2:
        raise InvalidInput(
            "name at least two numeric columns in parameters.columns; dataset columns: "
            + ", ".join(map(str, frame.columns[:40]))
        )
    if len(set(names)) != len(names):
        raise InvalidInput("parameters.columns lists a column twice")
    return correlation_of_table(numeric_columns(frame, names), parameters)
