"""Chart inputs made drawable: any accepted data shape becomes a DataFrame, then a small plot plan.

`to_frame` normalises a query result `{rows, columns}`, a column map `{col: [values]}`, a list of
records or an analysis result (a correlation `matrix`, `by_segment`, `by_month`) into a DataFrame
with dates and numbers parsed. `plan_chart` checks the columns a chart needs, aggregates or samples
large inputs (saying so in `notes`) and returns exactly the numbers the renderers draw.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidInput

CHART_TYPES = (
    "bar",
    "grouped_bar",
    "stacked_bar",
    "line",
    "scatter",
    "histogram",
    "heatmap",
    "correlation_heatmap",
    "box",
    "pie",
)
AUTO = "auto"  # no chart type given: the analysis result's own view, else bars (a line over dates)
AGGREGATES = ("sum", "mean", "median", "count", "min", "max")
SORTS = ("auto", "x", "value_desc", "value_asc", "none")

MAX_INPUT_ROWS = 5_000_000  # a session dataset; inline data is capped lower by the tool
MAX_CATEGORIES = 100  # bars per series, heatmap rows/columns
MAX_SERIES = 10  # hue values (colours stay distinguishable)
MAX_PIE_SLICES = 10  # one colour each: the palette has 10
MAX_BARS = 30  # more categories: the largest MAX_BARS - 1 and one "other" bar
MAX_PLOTTED_LABELS = 50  # label -> value pairs per series in `plotted`
MAX_SCATTER_POINTS = 5_000  # more are sampled
MAX_LINE_POINTS = 2_000  # per series; more are averaged into buckets
MAX_BINS = 200
MAX_FLIERS = 100  # outliers drawn per box; more are sampled

_DATE_LIKE = re.compile(r"^\d{4}-\d{2}(-\d{2})?([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$")
_ANALYSIS_PARTS = ("matrix", "by_segment", "by_month", "by_week", "by_day", "by_group", "rows")
_ORDINALS = (
    ("basic", "premium", "enterprise"),
    ("low", "medium", "high"),
    ("very low", "low", "medium", "high", "very high"),
    ("small", "medium", "large"),
    ("poor", "fair", "good", "excellent"),
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    (
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ),
    ("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
)


@dataclass(frozen=True)
class ChartSpec:
    """What to draw. Column names are checked against the data by `plan_chart`."""

    chart_type: str
    x: str | None = None
    y: tuple[str, ...] = ()
    hue: str | None = None
    value: str | None = None  # heatmap cell values
    title: str | None = None
    x_label: str | None = None
    y_label: str | None = None
    format: str = "png"
    width: int = 800
    height: int = 600
    aggregate: str | None = None
    bins: int | None = None
    sort: str = "auto"
    # html: where the page loads plotly.js (the server's own /assets route; never a CDN, never inlined)
    plotly_src: str = "/assets/plotly.min.js"


@dataclass
class Series:
    name: str | None
    x: list[Any]
    y: list[float]
    # Interval ends per point: error bars on bars, a shaded band around a line (None: no interval).
    low: list[float | None] | None = None
    high: list[float | None] | None = None
    style: str = "line"  # line | step | dashed | markers (line charts)
    labels: list[str] | None = None  # how `plotted` names each x (default: x as text)


@dataclass
class BoxStats:
    name: str
    q1: float
    median: float
    q3: float
    low: float  # whisker ends (1.5 IQR rule)
    high: float
    mean: float
    count: int
    fliers: list[float]


@dataclass
class PlotPlan:
    """Exactly what a renderer draws; every number here appears in the picture."""

    chart_type: str  # bar | line | scatter | histogram | heatmap | box | pie
    title: str | None
    x_label: str
    y_label: str
    series: list[Series] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)  # bar and pie labels
    barmode: str = "group"  # group | stack
    x_kind: str = "category"  # category | numeric | datetime
    bin_edges: list[float] = field(default_factory=list)
    rows: list[str] = field(default_factory=list)  # heatmap
    columns: list[str] = field(default_factory=list)
    cells: list[list[float | None]] = field(default_factory=list)
    diverging: bool = False  # heatmap centred on 0 (correlations), range -1..1
    boxes: list[BoxStats] = field(default_factory=list)
    hue_label: str | None = None
    notes: list[str] = field(default_factory=list)
    points: int = 0  # input rows that the picture represents
    orientation: str = "v"  # bar: v (bars up) or h (bars across, labels readable)
    reference: float | None = None  # a value line drawn across the chart (e.g. odds ratio 1)
    x_column: str | None = None  # what `plotted` reports: the columns and the aggregation drawn
    y_column: str | None = None
    aggregation: str | None = None


# ---------------------------------------------------------------- normalising


def to_frame(data: Any, part: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Any accepted data shape as a DataFrame with parsed dates and numbers, plus notes on what was used."""
    notes: list[str] = []
    if isinstance(data, pd.DataFrame):
        frame = data.copy()
    elif isinstance(data, Mapping):
        frame = _from_mapping(data, part, notes)
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        frame = _from_records(list(data), None)
    else:
        raise InvalidInput(
            "data must be a query result {rows, columns}, a column map {column: [values]}, an analysis "
            "result or a reference {session_id, dataset}"
        )
    frame.columns = [str(c) for c in frame.columns]
    if len(set(frame.columns)) != len(frame.columns):
        raise InvalidInput("data has duplicate column names; give every column a distinct name")
    if len(frame) > MAX_INPUT_ROWS:
        raise InvalidInput(
            f"data has {len(frame):,} rows; at most {MAX_INPUT_ROWS:,} can be charted — filter or "
            "aggregate it first"
        )
    return _parse_columns(frame), notes


def _from_mapping(data: Mapping[str, Any], part: str | None, notes: list[str]) -> pd.DataFrame:
    if "rows" in data and isinstance(data.get("rows"), list) and part is None:
        return _from_records(data["rows"], data.get("columns"))
    results = data.get("results") if isinstance(data.get("results"), Mapping) else None
    source: Mapping[str, Any] = results if results is not None else data
    parts = [name for name, value in source.items() if _is_tabular(name, value)]
    if part is not None or (results is not None or any(p in source for p in _ANALYSIS_PARTS)):
        if part is None:
            part = next((p for p in _ANALYSIS_PARTS if p in parts), parts[0] if parts else None)
        if part is None or part not in source:
            available = ", ".join(parts) or "none"
            raise InvalidInput(
                f"analysis part '{part}' not in the data; tabular parts: {available}; pass part=<name>"
            )
        if len(parts) > 1:
            notes.append(
                f"charted '{part}' of the analysis result (other parts: {', '.join(p for p in parts if p != part)})"
            )
        return _from_part(part, source[part], source)
    if data and all(isinstance(v, (list, tuple)) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            sizes = ", ".join(f"{k}: {len(v)}" for k, v in list(data.items())[:10])
            raise InvalidInput(
                f"column map lists differ in length ({sizes}); give every column the same length"
            )
        return pd.DataFrame({str(k): list(v) for k, v in data.items()})
    raise InvalidInput(
        "data must be a query result {rows, columns}, a column map {column: [values]}, an analysis "
        "result (with matrix or by_segment) or a reference {session_id, dataset}"
    )


def _is_tabular(name: str, value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, Mapping) for v in value)
    if isinstance(value, Mapping):
        return bool(value) and all(isinstance(v, (Mapping, int, float)) for v in value.values())
    return False


def _from_part(name: str, value: Any, source: Mapping[str, Any]) -> pd.DataFrame:
    if name == "matrix" and isinstance(value, Mapping):
        frame = pd.DataFrame({str(k): v for k, v in value.items()}).T
        frame = frame.reindex(columns=[c for c in frame.index if c in frame.columns] or frame.columns)
        frame.attrs["matrix"] = True
        return frame.apply(pd.to_numeric, errors="coerce")
    label = str(
        source.get("group_by") or source.get("segment_by") or ("month" if "month" in name else "segment")
    )
    if isinstance(value, list):
        return _from_records(value, None)
    if isinstance(value, Mapping):
        if all(isinstance(v, Mapping) for v in value.values()):
            records = [
                {label: key, **{str(k): v for k, v in row.items() if k != label}}
                for key, row in value.items()
            ]
            return _from_records(records, None)
        return pd.DataFrame({label: list(value.keys()), "value": list(value.values())})
    raise InvalidInput(f"analysis part '{name}' is not a table; chart 'by_segment' or 'matrix' instead")


def _from_records(rows: list[Any], columns: Any) -> pd.DataFrame:
    names: list[str] | None = None
    if isinstance(columns, list) and columns:
        names = [str(c.get("name")) if isinstance(c, Mapping) else str(c) for c in columns]
    if not rows:
        return pd.DataFrame(columns=names or [])
    if all(isinstance(r, Mapping) for r in rows):
        frame = pd.DataFrame.from_records(rows)
        if names and set(names) <= set(frame.columns):
            frame = frame[names]
        return frame
    if all(isinstance(r, (list, tuple)) for r in rows):
        widths = {len(r) for r in rows}
        if names is None or widths != {len(names)}:
            raise InvalidInput("rows given as lists need 'columns' with one name per value in every row")
        return pd.DataFrame([list(r) for r in rows], columns=names)
    raise InvalidInput("rows must all be objects {column: value} (or all lists, with 'columns')")


def _parse_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Numbers sent as strings become numbers; ISO dates become datetimes (timezone-aware ones in UTC)."""
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object or pd.api.types.is_string_dtype(column):
            present = column.dropna()
            if present.empty:
                continue
            if present.map(lambda v: isinstance(v, bool)).all():
                frame[name] = column.astype("boolean")
                continue
            as_text = present.astype(str)
            numbers = pd.to_numeric(as_text, errors="coerce")
            if (
                numbers.notna().all()
                and not present.map(lambda v: isinstance(v, str) and v.strip() == "").any()
            ):
                frame[name] = pd.to_numeric(column, errors="coerce")
                continue
            if as_text.str.match(_DATE_LIKE).all():
                try:
                    parsed = pd.to_datetime(column, format="ISO8601", utc=True)
                except (ValueError, TypeError, OverflowError):
                    continue
                frame[name] = parsed.dt.tz_convert(None)
        elif isinstance(column.dtype, pd.DatetimeTZDtype):
            frame[name] = column.dt.tz_convert(None)
    return frame


# ---------------------------------------------------------------- planning


def kind_of(column: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(column):
        return "boolean"
    if pd.api.types.is_numeric_dtype(column):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(column):
        return "datetime"
    return "text"


def plan_chart(frame: pd.DataFrame, spec: ChartSpec) -> PlotPlan:
    """Validate `spec` against `frame` and reduce the data to what the chart draws."""
    if spec.chart_type == AUTO and not frame.empty:  # no chart type asked: a line over dates, else bars
        x = spec.x if spec.x in frame.columns else _default_category(frame, [spec.hue])
        spec = replace(spec, chart_type="line" if kind_of(frame[x]) == "datetime" else "bar")
    if spec.chart_type not in CHART_TYPES:
        raise InvalidInput(
            f"unknown chart type '{spec.chart_type[:40]}'; use one of: {', '.join(CHART_TYPES)}"
        )
    if spec.aggregate is not None and spec.aggregate not in AGGREGATES:
        raise InvalidInput(f"unknown aggregate '{spec.aggregate[:20]}'; use one of: {', '.join(AGGREGATES)}")
    if spec.sort not in SORTS:
        raise InvalidInput(f"unknown sort '{spec.sort[:20]}'; use one of: {', '.join(SORTS)}")
    if frame.empty or len(frame.columns) == 0:
        raise InvalidInput("data has no rows; nothing to chart — check the query or dataset")
    for name in (spec.x, spec.hue, spec.value, *spec.y):
        _require_column(frame, name)
    planner = {
        "bar": _plan_bar,
        "grouped_bar": _plan_bar,
        "stacked_bar": _plan_bar,
        "line": _plan_line,
        "scatter": _plan_scatter,
        "histogram": _plan_histogram,
        "heatmap": _plan_heatmap,
        "correlation_heatmap": _plan_correlation,
        "box": _plan_box,
        "pie": _plan_pie,
    }[spec.chart_type]
    plan = planner(frame, spec)
    plan.points = len(frame)
    if spec.x_label:
        plan.x_label = spec.x_label
    if spec.y_label:
        plan.y_label = spec.y_label
    return plan


def _columns_list(frame: pd.DataFrame) -> str:
    names = [str(c) for c in frame.columns]
    shown = ", ".join(names[:30])
    return shown + (f" (+{len(names) - 30} more)" if len(names) > 30 else "")


def _require_column(frame: pd.DataFrame, name: str | None) -> None:
    if name is not None and name not in frame.columns:
        raise InvalidInput(f"column '{name[:60]}' not in the data; columns: {_columns_list(frame)}")


def _numeric_columns(frame: pd.DataFrame, exclude: Sequence[str | None] = ()) -> list[str]:
    return [c for c in frame.columns if kind_of(frame[c]) in ("numeric", "boolean") and c not in exclude]


def _require_numeric(frame: pd.DataFrame, name: str, role: str, chart: str) -> pd.Series:
    column = frame[name]
    kind = kind_of(column)
    if kind not in ("numeric", "boolean"):
        numeric = ", ".join(_numeric_columns(frame)) or "none"
        raise InvalidInput(
            f"column '{name}' is not numeric ({kind}); a {chart} chart needs a numeric {role}; numeric columns: {numeric}"
        )
    return column.astype("float64")


def _default_numeric(frame: pd.DataFrame, exclude: Sequence[str | None], chart: str, role: str) -> str:
    numeric = _numeric_columns(frame, exclude)
    if not numeric:
        raise InvalidInput(
            f"a {chart} chart needs a numeric {role} column and the data has none; columns: {_columns_list(frame)}"
        )
    return numeric[0]


def _default_category(frame: pd.DataFrame, exclude: Sequence[str | None] = ()) -> str:
    for name in frame.columns:
        if kind_of(frame[name]) in ("text", "datetime", "boolean") and name not in exclude:
            return str(name)
    return (
        str(next(c for c in frame.columns if c not in exclude))
        if len(frame.columns) > len(exclude)
        else str(frame.columns[0])
    )


def _label(name: str) -> str:
    return name.replace("_", " ")


def _labels(values: pd.Series) -> pd.Series:
    """Category labels: dates formatted at the precision they carry, everything else as text."""
    if kind_of(values) == "datetime":
        present = values.dropna()
        if (present == present.dt.normalize()).all():
            fmt = "%Y-%m" if (present.dt.day == 1).all() else "%Y-%m-%d"
        else:
            fmt = "%Y-%m-%d %H:%M"
        return values.dt.strftime(fmt).fillna("(missing)")
    if kind_of(values) == "numeric":
        return values.map(
            lambda v: "(missing)" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v))
        )
    return values.astype("string").fillna("(missing)").astype(str)


def _natural_key(text: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text))


def _category_order(raw: pd.Series, labels: pd.Series) -> list[str]:
    """Chronological for dates, numeric for numbers, known ordinals in their order, else natural order."""
    kind = kind_of(raw)
    unique = list(dict.fromkeys(labels.tolist()))
    if kind in ("datetime", "numeric"):
        first = pd.DataFrame({"raw": raw, "label": labels}).drop_duplicates("label")
        ordered: list[str] = first.sort_values("raw", na_position="last")["label"].tolist()
        return ordered
    lowered = {u.lower() for u in unique}
    for ordinal in _ORDINALS:
        if lowered <= set(ordinal):
            return sorted(unique, key=lambda u: ordinal.index(u.lower()))
    return sorted(unique, key=_natural_key)


def _series_names(frame: pd.DataFrame, hue: str | None) -> tuple[pd.Series | None, list[str]]:
    if hue is None:
        return None, []
    labels = _labels(frame[hue])
    order = _category_order(frame[hue], labels)
    if len(order) > MAX_SERIES:
        raise InvalidInput(
            f"hue column '{hue}' has {len(order)} values; at most {MAX_SERIES} series stay readable — "
            "filter the data or pick a column with fewer values"
        )
    return labels, order


def _y_columns(frame: pd.DataFrame, spec: ChartSpec, chart: str, exclude: Sequence[str | None]) -> list[str]:
    if spec.y:
        if spec.hue and len(spec.y) > 1:
            raise InvalidInput("give either several y columns or a hue column, not both")
        return list(spec.y)
    return [_default_numeric(frame, exclude, chart, "y")]


def _aggregate(grouped: Any, how: str) -> pd.Series:
    return grouped.size().astype("float64") if how == "count" else getattr(grouped, how)()


def _plan_bar(frame: pd.DataFrame, spec: ChartSpec) -> PlotPlan:
    chart = "bar"
    x = spec.x or _default_category(frame, [spec.hue])
    counting = not spec.y and not _numeric_columns(frame, [x, spec.hue]) or spec.aggregate == "count"
    ys = [] if counting else _y_columns(frame, spec, chart, [x, spec.hue])
    labels = _labels(frame[x])
    order = _category_order(frame[x], labels)
    hue_labels, hue_order = _series_names(frame, spec.hue)
    notes: list[str] = []
    sort = spec.sort
    if len(order) > MAX_BARS:
        frame, labels, order = _top_categories(frame, labels, spec, ys, hue_labels, notes)
        sort = "value_desc" if sort == "auto" else sort
        if hue_labels is not None:
            hue_labels = hue_labels.loc[frame.index]
    work = pd.DataFrame({"x": labels})
    if hue_labels is not None:
        work["hue"] = hue_labels
    keys = ["x", "hue"] if hue_labels is not None else ["x"]
    duplicated = work.duplicated(keys).any()
    how = spec.aggregate or ("count" if counting else "sum")
    table: dict[str, pd.Series] = {}
    if counting:
        table["count"] = _aggregate(work.groupby(keys, sort=False), "count")
        y_label = "count"
    else:
        for y in ys:
            work[y] = _require_numeric(frame, y, "y", chart).to_numpy()
            table[y] = (
                _aggregate(work.groupby(keys, sort=False)[y], how)
                if (duplicated or spec.aggregate)
                else work.set_index(keys)[y]
            )
        y_label = _label(ys[0]) if len(ys) == 1 else "value"
        if duplicated:
            notes.append(
                f"{len(frame):,} rows aggregated to {len(order)} bars ({how} of {', '.join(ys)} per {x})"
            )
        if spec.aggregate and spec.aggregate != "sum" and len(ys) == 1:
            y_label = f"{spec.aggregate} of {_label(ys[0])}"
    order = _sorted_categories(order, table, sort, hue_labels is not None)
    if OTHER in order:  # "other" is never ranked among the categories it stands for
        order = [c for c in order if c != OTHER] + [OTHER]
    series: list[Series] = []
    if hue_labels is not None:
        values = next(iter(table.values()))
        for name in hue_order:
            heights = [_float(values.get((cat, name))) for cat in order]
            series.append(Series(name, order, heights))
    else:
        for name, values in table.items():
            series.append(
                Series(name if len(table) > 1 else None, order, [_float(values.get(cat)) for cat in order])
            )
    barmode = "stack" if spec.chart_type == "stacked_bar" else "group"
    longest = max((len(c) for c in order), default=0)
    return PlotPlan(
        chart_type="bar",
        title=spec.title,
        x_label=_label(x),
        y_label=y_label,
        series=series,
        categories=order,
        barmode=barmode,
        hue_label=_label(spec.hue) if spec.hue else ("series" if len(series) > 1 else None),
        notes=notes,
        orientation="h" if len(order) > 12 or longest > 14 else "v",
        x_column=x,
        y_column=", ".join(ys) if ys else None,
        aggregation=how if (duplicated or spec.aggregate or counting) else None,
    )


OTHER = "other"


def _top_categories(
    frame: pd.DataFrame,
    labels: pd.Series,
    spec: ChartSpec,
    ys: list[str],
    hue_labels: pd.Series | None,
    notes: list[str],
) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """The MAX_BARS - 1 largest categories, and the rest as one "other" bar (the same aggregate over
    their rows) when rows are aggregated; a table of one row per category keeps its largest only."""
    ranking_how = spec.aggregate or ("count" if not ys else "sum")
    if ys:
        values = frame[ys[0]].astype("float64")
        ranked = _aggregate(values.groupby(labels), ranking_how)
    else:
        ranked = labels.value_counts().astype("float64")
    keep = ranked.sort_values(ascending=False).index[: MAX_BARS - 1].tolist()
    rest = len(ranked) - len(keep)
    kept = labels.isin(keep)
    aggregated = bool(spec.aggregate) or not ys or labels.duplicated().any() or hue_labels is not None
    if aggregated:
        labels = labels.where(kept, OTHER)
        notes.append(
            f"{len(ranked):,} categories: the {len(keep)} largest by {ranking_how} are drawn, the other "
            f"{rest:,} combined as '{OTHER}'"
        )
        return frame, labels, keep + [OTHER]
    notes.append(
        f"{len(ranked):,} categories: the {len(keep)} largest by {ys[0]} are drawn, {rest:,} left out "
        "(filter the data to see them)"
    )
    return frame[kept], labels[kept], keep


def _sorted_categories(order: list[str], table: dict[str, pd.Series], sort: str, has_hue: bool) -> list[str]:
    if sort in ("auto", "x", "none"):
        return order
    values = next(iter(table.values()))
    totals = values.groupby(level=0).sum() if has_hue else values
    return sorted(order, key=lambda c: _float(totals.get(c)) or 0.0, reverse=sort == "value_desc")


def _float(value: Any) -> float:
    if value is None:
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _plan_line(frame: pd.DataFrame, spec: ChartSpec) -> PlotPlan:
    chart = "line"
    x = (
        spec.x
        or next((c for c in frame.columns if kind_of(frame[c]) == "datetime"), None)
        or str(frame.columns[0])
    )
    ys = _y_columns(frame, spec, chart, [x, spec.hue])
    x_kind = kind_of(frame[x])
    x_kind = "numeric" if x_kind == "boolean" else x_kind
    hue_labels, hue_order = _series_names(frame, spec.hue)
    how = spec.aggregate or "mean"
    notes: list[str] = []
    series: list[Series] = []
    groups: list[tuple[str | None, pd.DataFrame]] = []
    if hue_labels is not None:
        for hue_value in hue_order:
            groups.extend(
                (hue_value, frame[hue_labels == hue_value][[x, y]].rename(columns={y: "y"})) for y in ys
            )
    else:
        groups = [(y if len(ys) > 1 else None, frame[[x, y]].rename(columns={y: "y"})) for y in ys]
    for y in ys:
        _require_numeric(frame, y, "y", chart)
    category_order: list[str] = []
    if x_kind == "text":
        labels = _labels(frame[x])
        category_order = _category_order(frame[x], labels)
        if len(category_order) > MAX_LINE_POINTS:
            raise InvalidInput(
                f"too many points: column '{x}' has {len(category_order):,} text values; use a numeric or date x"
            )
    aggregated = sampled = False
    for name, group in groups:
        group = group.dropna(subset=[x]).copy()
        group["y"] = group["y"].astype("float64")
        if x_kind == "text":
            group[x] = _labels(group[x])
        if group[x].duplicated().any():
            group = _aggregate(group.groupby(x, sort=False)["y"], how).reset_index()
            aggregated = True
        if x_kind == "text":
            rank = {label: i for i, label in enumerate(category_order)}
            group = group.sort_values(x, key=lambda s: s.map(rank))
        else:
            group = group.sort_values(x)
        if len(group) > MAX_LINE_POINTS and x_kind != "text":
            group = _bucket_means(group, x, x_kind)
            sampled = True
        series.append(Series(name, group[x].tolist(), group["y"].tolist()))
    if aggregated:
        notes.append(f"repeated x values combined ({how} of y per {x})")
    if sampled:
        notes.append(
            f"{len(frame):,} rows averaged into at most {MAX_LINE_POINTS:,} points per series for drawing"
        )
    return PlotPlan(
        chart_type="line",
        title=spec.title,
        x_label=_label(x),
        y_label=(f"{how} of " if aggregated else "") + _label(ys[0]) if len(ys) == 1 else "value",
        series=series,
        categories=category_order,
        x_kind=x_kind,
        hue_label=_label(spec.hue) if spec.hue else ("series" if len(series) > 1 else None),
        notes=notes,
        x_column=x,
        y_column=", ".join(ys),
        aggregation=how if aggregated else ("bucket mean" if sampled else None),
    )


def _bucket_means(group: pd.DataFrame, x: str, x_kind: str) -> pd.DataFrame:
    values = group[x].astype("int64") if x_kind == "datetime" else group[x].astype("float64")
    buckets = pd.cut(values, MAX_LINE_POINTS, labels=False)
    reduced = pd.DataFrame({"x": values, "y": group["y"]}).groupby(buckets).mean().dropna()
    if x_kind == "datetime":
        reduced["x"] = pd.to_datetime(reduced["x"].round().astype("int64"))
    return reduced.rename(columns={"x": x})


def _plan_scatter(frame: pd.DataFrame, spec: ChartSpec) -> PlotPlan:
    chart = "scatter"
    x = spec.x or _default_numeric(frame, [spec.hue, *spec.y], chart, "x")
    y = spec.y[0] if spec.y else _default_numeric(frame, [x, spec.hue], chart, "y")
    x_kind = kind_of(frame[x])
    if x_kind not in ("datetime",):
        _require_numeric(frame, x, "x", chart)
    _require_numeric(frame, y, "y", chart)
    notes: list[str] = []
    work = frame.dropna(subset=[x, y])
    if len(work) > MAX_SCATTER_POINTS:
        work = work.sample(n=MAX_SCATTER_POINTS, random_state=0)
        notes.append(f"{len(frame):,} rows; a random sample of {MAX_SCATTER_POINTS:,} points is drawn")
    hue_labels, hue_order = _series_names(work, spec.hue)
    series: list[Series] = []
    if hue_labels is None:
        series.append(Series(None, _xs(work[x], x_kind), work[y].astype("float64").tolist()))
    else:
        for name in hue_order:
            part = work[hue_labels == name]
            series.append(Series(name, _xs(part[x], x_kind), part[y].astype("float64").tolist()))
    return PlotPlan(
        chart_type="scatter",
        title=spec.title,
        x_label=_label(x),
        y_label=_label(y),
        series=series,
        x_kind="datetime" if x_kind == "datetime" else "numeric",
        hue_label=_label(spec.hue) if spec.hue else None,
        notes=notes,
        x_column=x,
        y_column=y,
        aggregation="random sample" if len(work) < len(frame.dropna(subset=[x, y])) else None,
    )


def _xs(values: pd.Series, kind: str) -> list[Any]:
    listed: list[Any] = values.tolist() if kind == "datetime" else values.astype("float64").tolist()
    return listed


def _plan_histogram(frame: pd.DataFrame, spec: ChartSpec) -> PlotPlan:
    chart = "histogram"
    x = spec.x or (spec.y[0] if spec.y else _default_numeric(frame, [spec.hue], chart, "x"))
    values = _require_numeric(frame, x, "x", chart)
    finite = values[np.isfinite(values)]
    if finite.empty:
        raise InvalidInput(f"column '{x}' has no numeric values to bin")
    if spec.bins is not None and not 1 <= spec.bins <= MAX_BINS:
        raise InvalidInput(f"bins must be between 1 and {MAX_BINS}")
    bins: Any = spec.bins or min(
        50, max(5, int(np.histogram_bin_edges(finite.to_numpy(), bins="auto").size - 1))
    )
    edges = np.histogram_bin_edges(finite.to_numpy(), bins=bins)
    hue_labels, hue_order = _series_names(frame, spec.hue)
    series: list[Series] = []
    if hue_labels is None:
        counts, _ = np.histogram(finite.to_numpy(), bins=edges)
        series.append(Series(None, edges[:-1].tolist(), counts.astype(float).tolist()))
    else:
        for name in hue_order:
            part = values[(hue_labels == name) & np.isfinite(values)]
            counts, _ = np.histogram(part.to_numpy(), bins=edges)
            series.append(Series(name, edges[:-1].tolist(), counts.astype(float).tolist()))
    notes = []
    if len(finite) < len(values):
        notes.append(f"{len(values) - len(finite):,} missing values left out")
    return PlotPlan(
        chart_type="histogram",
        title=spec.title,
        x_label=_label(x),
        y_label="count",
        series=series,
        bin_edges=edges.tolist(),
        x_kind="numeric",
        barmode="overlay",
        hue_label=_label(spec.hue) if spec.hue else None,
        notes=notes,
        x_column=x,
        y_column="count",
        aggregation="count per bin",
    )


def _plan_heatmap(frame: pd.DataFrame, spec: ChartSpec) -> PlotPlan:
    if frame.attrs.get("matrix") and spec.x is None and not spec.y:
        return _matrix_plan(frame, spec, diverging=_looks_like_correlation(frame))
    chart = "heatmap"
    x = spec.x or _default_category(frame)
    y = spec.y[0] if spec.y else _default_category(frame, [x])
    if y == x:
        raise InvalidInput(
            f"a heatmap needs two different columns for x and y; columns: {_columns_list(frame)}"
        )
    value = spec.value
    if value is None and spec.aggregate != "count":
        value = next((c for c in _numeric_columns(frame, [x, y])), None)
    how = spec.aggregate or ("mean" if value else "count")
    work = pd.DataFrame({"x": _labels(frame[x]), "y": _labels(frame[y])})
    if value is not None and how != "count":
        work["v"] = _require_numeric(frame, value, "value", chart).to_numpy()
        table = _aggregate(work.groupby(["y", "x"])["v"], how)
    else:
        table = _aggregate(work.groupby(["y", "x"]), "count")
        how, value = "count", None
    columns = _category_order(frame[x], work["x"])
    rows = _category_order(frame[y], work["y"])
    if len(columns) > MAX_CATEGORIES or len(rows) > MAX_CATEGORIES:
        raise InvalidInput(
            f"too many heatmap cells: {len(rows)} x {len(columns)}; at most {MAX_CATEGORIES} per axis — "
            "group the data first"
        )
    matrix = table.unstack("x").reindex(index=rows, columns=columns)
    notes = []
    combined = bool(work.duplicated(["x", "y"]).any())
    if combined or how == "count":
        notes.append(f"cells show the {how} of {value or 'rows'} per {x} and {y}")
    return PlotPlan(
        chart_type="heatmap",
        title=spec.title,
        x_label=_label(x),
        y_label=_label(y),
        rows=rows,
        columns=columns,
        cells=_cells(matrix.to_numpy(dtype="float64")),
        hue_label="count"
        if how == "count" or not value
        else (f"{how} of " if combined else "") + _label(value),
        notes=notes,
        x_column=x,
        y_column=y,
        aggregation=f"{how} of {value or 'rows'}" if combined or how == "count" else None,
    )


def _looks_like_correlation(frame: pd.DataFrame) -> bool:
    values = frame.to_numpy(dtype="float64")
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(np.all(np.abs(finite) <= 1.0 + 1e-9))


def _plan_correlation(frame: pd.DataFrame, spec: ChartSpec) -> PlotPlan:
    if frame.attrs.get("matrix"):
        return _matrix_plan(frame, spec, diverging=True)
    columns = list(spec.y) if spec.y else _numeric_columns(frame, [spec.hue])
    for name in columns:
        _require_numeric(frame, name, "column", "correlation heatmap")
    if len(columns) < 2:
        raise InvalidInput(
            f"a correlation heatmap needs at least 2 numeric columns; numeric columns: "
            f"{', '.join(_numeric_columns(frame)) or 'none'}"
        )
    if len(columns) > MAX_CATEGORIES:
        raise InvalidInput(f"too many columns to correlate ({len(columns)}); at most {MAX_CATEGORIES}")
    matrix = frame[columns].astype("float64").corr(method="pearson")
    matrix.attrs["matrix"] = True
    plan = _matrix_plan(matrix, spec, diverging=True)
    plan.notes.append(f"pearson correlation over {len(frame):,} rows")
    return plan


def _matrix_plan(matrix: pd.DataFrame, spec: ChartSpec, diverging: bool) -> PlotPlan:
    if matrix.shape[0] > MAX_CATEGORIES or matrix.shape[1] > MAX_CATEGORIES:
        raise InvalidInput(
            f"matrix is {matrix.shape[0]} x {matrix.shape[1]}; at most {MAX_CATEGORIES} per axis"
        )
    return PlotPlan(
        chart_type="heatmap",
        title=spec.title,
        x_label="",
        y_label="",
        rows=[str(r) for r in matrix.index],
        columns=[str(c) for c in matrix.columns],
        cells=_cells(matrix.to_numpy(dtype="float64")),
        diverging=diverging,
        hue_label="correlation (r)" if diverging else "value",
    )


def _cells(values: np.ndarray) -> list[list[float | None]]:
    return [[None if not math.isfinite(v) else float(v) for v in row] for row in values]


def _plan_box(frame: pd.DataFrame, spec: ChartSpec) -> PlotPlan:
    chart = "box"
    y = spec.y[0] if spec.y else _default_numeric(frame, [spec.x, spec.hue], chart, "y")
    values = _require_numeric(frame, y, "y", chart)
    group_by = spec.x or spec.hue
    boxes: list[BoxStats] = []
    if group_by is None:
        boxes.append(_box_stats(_label(y), values))
    else:
        labels = _labels(frame[group_by])
        order = _category_order(frame[group_by], labels)
        if len(order) > MAX_CATEGORIES // 2:
            raise InvalidInput(
                f"too many boxes: column '{group_by}' has {len(order)} values; at most {MAX_CATEGORIES // 2}"
            )
        boxes = [_box_stats(name, values[labels == name]) for name in order]
    boxes = [b for b in boxes if b.count]
    if not boxes:
        raise InvalidInput(f"column '{y}' has no numeric values")
    notes = []
    if len(frame) > MAX_FLIERS * 10:
        notes.append("boxes use every row; at most 100 outliers per box are drawn")
    return PlotPlan(
        chart_type="box",
        title=spec.title,
        x_label=_label(group_by) if group_by else "",
        y_label=_label(y),
        boxes=boxes,
        notes=notes,
        x_column=group_by,
        y_column=y,
        aggregation="quartiles",
    )


def _box_stats(name: str, values: pd.Series) -> BoxStats:
    data = values[np.isfinite(values)].to_numpy()
    if data.size == 0:
        return BoxStats(name, 0, 0, 0, 0, 0, 0, 0, [])
    q1, median, q3 = np.percentile(data, [25, 50, 75])
    iqr = q3 - q1
    inside = data[(data >= q1 - 1.5 * iqr) & (data <= q3 + 1.5 * iqr)]
    low, high = float(inside.min()), float(inside.max())
    fliers = data[(data < low) | (data > high)]
    if fliers.size > MAX_FLIERS:
        fliers = np.random.default_rng(0).choice(fliers, MAX_FLIERS, replace=False)
    return BoxStats(
        name,
        float(q1),
        float(median),
        float(q3),
        low,
        high,
        float(data.mean()),
        int(data.size),
        fliers.tolist(),
    )


def _plan_pie(frame: pd.DataFrame, spec: ChartSpec) -> PlotPlan:
    chart = "pie"
    x = spec.x or _default_category(frame)
    counting = spec.aggregate == "count" or (not spec.y and not _numeric_columns(frame, [x]))
    labels = _labels(frame[x])
    y: str | None = None
    if counting:
        totals = labels.value_counts().astype("float64")
        value_label = "count"
    else:
        y = spec.y[0] if spec.y else _default_numeric(frame, [x], chart, "value")
        values = _require_numeric(frame, y, "value", chart)
        if (values < 0).any():
            raise InvalidInput(
                f"a pie chart needs non-negative values; column '{y}' has negatives — use a bar chart"
            )
        totals = _aggregate(values.groupby(labels), spec.aggregate or "sum")
        value_label = _label(y)
    totals = totals[totals > 0].sort_values(ascending=False)
    if totals.empty:
        raise InvalidInput("every pie slice would be zero; nothing to chart")
    notes = []
    if len(totals) > MAX_PIE_SLICES:
        rest = totals.iloc[MAX_PIE_SLICES - 1 :]
        totals = pd.concat([totals.iloc[: MAX_PIE_SLICES - 1], pd.Series({"other": rest.sum()})])
        notes.append(f"{len(rest)} smallest slices combined as 'other'")
    return PlotPlan(
        chart_type="pie",
        title=spec.title,
        x_label=_label(x),
        y_label=value_label,
        categories=[str(c) for c in totals.index],
        series=[Series(None, [str(c) for c in totals.index], totals.astype(float).tolist())],
        notes=notes,
        x_column=x,
        y_column=None if counting else y,
        aggregation="count" if counting else (spec.aggregate or "sum"),
    )


# ---------------------------------------------------------------- what was drawn


def plotted(plan: PlotPlan) -> dict[str, Any]:
    """What the picture shows, for the agent to check against its data: the x and y columns, the
    aggregation, the rows used and, per series, label -> value pairs (at most MAX_PLOTTED_LABELS,
    evenly spread when there are more; `labels_total` then says how many)."""
    series: list[dict[str, Any]] = []
    if plan.chart_type == "heatmap":
        for row, cells in zip(plan.rows, plan.cells, strict=True):
            series.append(_plotted_series(row, list(plan.columns), list(cells)))
    elif plan.chart_type == "box":
        names = [box.name for box in plan.boxes]
        series.append(_plotted_series("median", names, [box.median for box in plan.boxes]))
        series.append(_plotted_series("mean", names, [box.mean for box in plan.boxes]))
    else:
        for index, line in enumerate(plan.series):
            labels = line.labels or [_label_text(x) for x in line.x]
            name = line.name or plan.y_column or plan.y_label or f"series {index + 1}"
            entry = _plotted_series(name, labels, list(line.y))
            if line.low is not None and line.high is not None:
                shown = entry["values"].keys()
                pairs = dict(zip(labels, zip(line.low, line.high, strict=True), strict=True))
                entry["intervals"] = {
                    label: [_number(pairs[label][0]), _number(pairs[label][1])] for label in shown
                }
            series.append(entry)
    return {
        "chart": plan.chart_type,
        "x": plan.x_column or plan.x_label or None,
        "y": plan.y_column or plan.y_label or None,
        "aggregation": plan.aggregation or "none",
        "rows_used": plan.points,
        "series": series,
    }


def _plotted_series(name: str, labels: list[str], values: list[Any]) -> dict[str, Any]:
    positions = list(range(len(labels)))
    if len(positions) > MAX_PLOTTED_LABELS:
        step = (len(positions) - 1) / (MAX_PLOTTED_LABELS - 1)
        positions = sorted({round(i * step) for i in range(MAX_PLOTTED_LABELS)})
    entry: dict[str, Any] = {
        "name": str(name),
        "values": {str(labels[i]): _number(values[i]) for i in positions},
    }
    if len(labels) > len(positions):
        entry["labels_total"] = len(labels)
    return entry


def _number(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _label_text(value: Any) -> str:
    if isinstance(value, (pd.Timestamp, np.datetime64)) or hasattr(value, "isoformat"):
        stamp = pd.Timestamp(value)
        return str(stamp.date().isoformat() if stamp == stamp.normalize() else stamp.isoformat())
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
