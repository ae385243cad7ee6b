"""Chart rendering: a DataFrame and a ChartSpec in, PNG/SVG (matplotlib, Agg) or interactive HTML (plotly) out.

Pure and thread-safe: every call builds its own `Figure` on an Agg canvas (no pyplot, no global
rcParams), so several charts can render at once in a thread pool. Colours are the Okabe-Ito
palette, distinguishable with the common colour-vision deficiencies; heatmaps use viridis, and
correlations the diverging RdBu centred on zero.
"""

from __future__ import annotations

import html
import io
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import dates as mdates
from matplotlib import ticker
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

from analytics.chart_data import ChartSpec, PlotPlan, plan_chart, plotted, to_frame
from analytics.chart_views import analysis_view
from core.errors import InvalidInput

FORMATS = ("png", "svg", "html")
MIME_TYPES = {"png": "image/png", "svg": "image/svg+xml", "html": "text/html"}
MIN_SIDE, MAX_SIDE = 100, 4000
# Okabe & Ito (2008), reordered so the first colours contrast most; then Tol's grey and wine.
PALETTE = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#56B4E9",
    "#CC79A7",
    "#F0E442",
    "#000000",
    "#999999",
    "#882255",
)
TEXT = "#222222"
GRID = "#DDDDDD"


@dataclass
class Rendered:
    content: bytes
    format: str
    mime_type: str
    width: int
    height: int
    plan: PlotPlan


def render_chart(frame: pd.DataFrame, spec: ChartSpec) -> Rendered:
    """Validate, reduce and draw `frame` as `spec` says; the result has exactly spec.width x spec.height pixels."""
    check_spec(spec)
    return render_plan(plan_chart(frame, spec), spec)


def check_spec(spec: ChartSpec) -> None:
    if spec.format not in FORMATS:
        raise InvalidInput(f"unknown format '{spec.format[:20]}'; use one of: {', '.join(FORMATS)}")
    for side, value in (("width", spec.width), ("height", spec.height)):
        if not MIN_SIDE <= value <= MAX_SIDE:
            raise InvalidInput(f"{side} must be between {MIN_SIDE} and {MAX_SIDE} pixels, got {value}")


def render_plan(plan: PlotPlan, spec: ChartSpec) -> Rendered:
    """Draw a plan (from plan_chart, or an analysis view) in spec's format and size."""
    check_spec(spec)
    if spec.format == "html":
        content = _plotly_html(plan, spec)
    else:
        content = _matplotlib_bytes(plan, spec)
    return Rendered(content, spec.format, MIME_TYPES[spec.format], spec.width, spec.height, plan)


def default_title(plan: PlotPlan) -> str:
    if plan.chart_type == "histogram":
        return f"Distribution of {plan.x_label}"
    if plan.chart_type == "heatmap" and plan.diverging:
        return "Correlation matrix"
    if plan.chart_type == "heatmap":
        return f"{plan.hue_label} by {plan.y_label} and {plan.x_label}".capitalize()
    if plan.chart_type == "box":
        return (
            f"{plan.y_label} by {plan.x_label}".capitalize()
            if plan.x_label
            else f"Distribution of {plan.y_label}"
        )
    if plan.chart_type == "pie":
        return f"{plan.y_label} by {plan.x_label}".capitalize()
    if plan.chart_type == "scatter":
        return f"{plan.y_label} vs {plan.x_label}".capitalize()
    return f"{plan.y_label} by {plan.x_label}".capitalize()


# ---------------------------------------------------------------- matplotlib (png, svg)


def _matplotlib_bytes(plan: PlotPlan, spec: ChartSpec) -> bytes:
    # Fonts are sized in points; scale dpi with the picture so an 800x600 chart is an 8x6 inch figure
    # and larger ones are sharper rather than emptier. figsize * dpi is exactly the pixel size.
    dpi = max(40.0, min(300.0, math.sqrt(spec.width * spec.height / 480_000) * 100))
    figure = Figure(figsize=(spec.width / dpi, spec.height / dpi), dpi=dpi, layout="constrained")
    figure.set_facecolor("white")
    axes = figure.add_subplot()
    _style_axes(axes)
    {
        "bar": _mpl_bar,
        "line": _mpl_line,
        "scatter": _mpl_scatter,
        "histogram": _mpl_histogram,
        "heatmap": _mpl_heatmap,
        "box": _mpl_box,
        "pie": _mpl_pie,
    }[plan.chart_type](figure, axes, plan)
    axes.set_title(plan.title or default_title(plan), fontsize=14, fontweight="bold", color=TEXT, pad=12)
    if plan.chart_type != "pie":
        across = plan.chart_type == "bar" and plan.orientation == "h"  # categories on the vertical axis
        axes.set_xlabel(plan.y_label if across else plan.x_label, fontsize=11, color=TEXT)
        axes.set_ylabel(plan.x_label if across else plan.y_label, fontsize=11, color=TEXT)
    buffer = io.BytesIO()
    if spec.format == "png":
        FigureCanvasAgg(figure).print_png(buffer, metadata={"Software": "analytics-mcp"})
        return buffer.getvalue()
    FigureCanvasSVG(figure).print_svg(buffer, metadata={"Date": None})
    return _svg_in_pixels(buffer.getvalue(), spec.width, spec.height)


def _svg_in_pixels(svg: bytes, width: int, height: int) -> bytes:
    """matplotlib writes the size in points; state it in pixels (the viewBox keeps the drawing scaled)."""
    head, _, tail = svg.partition(b"<svg ")
    opening, _, rest = tail.partition(b">")
    opening = re.sub(rb'width="[^"]*"', f'width="{width}px"'.encode(), opening, count=1)
    opening = re.sub(rb'height="[^"]*"', f'height="{height}px"'.encode(), opening, count=1)
    return head + b"<svg " + opening + b">" + rest


def _style_axes(axes: Axes) -> None:
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        axes.spines[side].set_color("#888888")
    axes.tick_params(labelsize=9.5, colors=TEXT)
    axes.set_axisbelow(True)


def _number_format(value: float, _position: Any = None) -> str:
    magnitude = abs(value)
    if magnitude >= 1e9:
        return f"{value / 1e9:.3g}B"
    if magnitude >= 1e6:
        return f"{value / 1e6:.3g}M"
    if magnitude >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _legend(axes: Axes, plan: PlotPlan, count: int, outside: bool = False, **options: Any) -> None:
    """A legend for several series; outside the axes (right) when points could sit under it."""
    if count <= 1:
        return
    if outside:
        options.update(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    legend = axes.legend(
        title=plan.hue_label,
        fontsize=9.5,
        title_fontsize=10,
        frameon=not outside,
        framealpha=0.9,
        edgecolor=GRID,
        **options,
    )
    legend.get_title().set_color(TEXT)


def _rotate_if_crowded(axes: Axes, labels: list[str]) -> None:
    longest = max((len(label) for label in labels), default=0)
    if len(labels) * max(longest, 3) > 70:
        for label in axes.get_xticklabels():
            label.set_rotation(40)
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")


def _mpl_bar(figure: Figure, axes: Axes, plan: PlotPlan) -> None:
    positions = np.arange(len(plan.categories), dtype=float)
    count = len(plan.series)
    stacked = plan.barmode == "stack" and count > 1
    across = plan.orientation == "h"
    width = 0.8 if stacked or count == 1 else 0.8 / count
    bottoms_positive = np.zeros(len(positions))
    bottoms_negative = np.zeros(len(positions))
    value_axis = axes.xaxis if across else axes.yaxis
    for index, series in enumerate(plan.series):
        heights = np.nan_to_num(np.asarray(series.y, dtype=float))
        if stacked:
            bottom = np.where(heights >= 0, bottoms_positive, bottoms_negative)
            offsets = positions
        else:
            bottom = np.zeros(len(positions))
            offsets = positions - 0.4 + width * (index + 0.5)
        style: dict[str, Any] = {
            "color": PALETTE[index % len(PALETTE)],
            "label": series.name,
            "edgecolor": "white",
            "linewidth": 0.6,
        }
        if across:
            bars = axes.barh(offsets, heights, height=width, left=bottom, **style)
        else:
            bars = axes.bar(offsets, heights, width=width, bottom=bottom, **style)
        for position, patch in enumerate(bars.patches):
            patch.set_gid(f"bar-{index}-{position}")  # lets a reader of the SVG find every bar
        if series.low is not None and series.high is not None:
            _mpl_error_bars(axes, offsets, heights, series.low, series.high, across)
        if stacked:
            bottoms_positive += np.where(heights >= 0, heights, 0)
            bottoms_negative += np.where(heights < 0, heights, 0)
        elif count == 1 and len(positions) <= 15 and series.low is None:
            axes.bar_label(
                bars, labels=[_number_format(h) for h in heights], fontsize=9, color=TEXT, padding=2
            )
    if plan.reference is not None:
        (axes.axvline if across else axes.axhline)(plan.reference, color=TEXT, linewidth=1, linestyle="--")
    if across:
        axes.set_yticks(positions, plan.categories)
        axes.invert_yaxis()  # the first category at the top, as it reads
        axes.xaxis.grid(True, color=GRID, linewidth=0.8)
        axes.margins(y=0.02, x=0.08)
        axes.axvline(0, color="#888888", linewidth=0.8)
    else:
        axes.set_xticks(positions, plan.categories)
        axes.yaxis.grid(True, color=GRID, linewidth=0.8)
        axes.margins(x=0.02, y=0.08)
        axes.axhline(0, color="#888888", linewidth=0.8)
        _rotate_if_crowded(axes, plan.categories)
    value_axis.set_major_formatter(ticker.FuncFormatter(_number_format))
    _legend(axes, plan, count, outside=True, reverse=stacked)  # stacked: legend order = stack order


def _mpl_error_bars(
    axes: Axes,
    positions: Any,
    values: Any,
    low: list[float | None],
    high: list[float | None],
    across: bool,
) -> None:
    below = np.array([v - lo if lo is not None else 0.0 for v, lo in zip(values, low, strict=True)])
    above = np.array([hi - v if hi is not None else 0.0 for v, hi in zip(values, high, strict=True)])
    errors = np.vstack([np.clip(below, 0, None), np.clip(above, 0, None)])
    options: dict[str, Any] = {"fmt": "none", "ecolor": TEXT, "elinewidth": 1.2, "capsize": 4}
    if across:
        axes.errorbar(values, positions, xerr=errors, **options)
    else:
        axes.errorbar(positions, values, yerr=errors, **options)


def _dates(values: list[Any]) -> Any:
    return pd.to_datetime(pd.Series(values)).to_numpy()


def _mpl_line(figure: Figure, axes: Axes, plan: PlotPlan) -> None:
    rank = {label: i for i, label in enumerate(plan.categories)}
    longest = max((len(s.x) for s in plan.series), default=0)
    for index, series in enumerate(plan.series):
        if plan.x_kind == "datetime":
            xs: Any = _dates(series.x)
        elif plan.x_kind == "text":
            xs = [rank[v] for v in series.x]
        else:
            xs = series.x
        colour = PALETTE[index % len(PALETTE)]
        if series.style == "markers":
            axes.scatter(xs, series.y, s=46, color=colour, zorder=3, label=series.name, edgecolors=TEXT)
            continue
        axes.plot(
            xs,
            series.y,
            color=colour,
            linewidth=2,
            linestyle="--" if series.style == "dashed" else "-",
            drawstyle="steps-post" if series.style == "step" else "default",
            marker="o" if longest <= 40 and series.style != "step" else None,
            markersize=4,
            label=series.name,
        )
        if series.low is not None and series.high is not None:
            low = np.array([np.nan if v is None else v for v in series.low], dtype=float)
            high = np.array([np.nan if v is None else v for v in series.high], dtype=float)
            axes.fill_between(
                xs,
                low,
                high,
                color=colour,
                alpha=0.18,
                linewidth=0,
                step="post" if series.style == "step" else None,
            )
    if plan.x_kind == "datetime":
        locator = mdates.AutoDateLocator(minticks=4, maxticks=10)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    elif plan.x_kind == "text":
        axes.set_xticks(range(len(plan.categories)), plan.categories)
        _rotate_if_crowded(axes, plan.categories)
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(_number_format))
    axes.grid(True, color=GRID, linewidth=0.8)
    _legend(axes, plan, len(plan.series))


def _mpl_scatter(figure: Figure, axes: Axes, plan: PlotPlan) -> None:
    total = sum(len(s.x) for s in plan.series)
    size = 36 if total < 200 else 16 if total < 2000 else 8
    for index, series in enumerate(plan.series):
        xs = _dates(series.x) if plan.x_kind == "datetime" else series.x
        axes.scatter(
            xs,
            series.y,
            s=size,
            color=PALETTE[index % len(PALETTE)],
            alpha=0.75 if total < 2000 else 0.5,
            edgecolors="none",
            label=series.name,
        )
    if plan.x_kind == "datetime":
        locator = mdates.AutoDateLocator()
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    else:
        axes.xaxis.set_major_formatter(ticker.FuncFormatter(_number_format))
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(_number_format))
    axes.grid(True, color=GRID, linewidth=0.8)
    _legend(axes, plan, len(plan.series), outside=True, markerscale=2 if size < 20 else 1)


def _mpl_histogram(figure: Figure, axes: Axes, plan: PlotPlan) -> None:
    edges = np.asarray(plan.bin_edges)
    overlay = len(plan.series) > 1
    for index, series in enumerate(plan.series):
        colour = PALETTE[index % len(PALETTE)]
        axes.stairs(
            series.y,
            edges,
            fill=True,
            color=colour,
            alpha=0.45 if overlay else 0.9,
            label=series.name,
            edgecolor="white" if not overlay else colour,
        )
        if overlay:
            axes.stairs(series.y, edges, color=colour, linewidth=1.5)
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(_number_format))
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(_number_format))
    axes.yaxis.grid(True, color=GRID, linewidth=0.8)
    axes.set_ylim(bottom=0)
    _legend(axes, plan, len(plan.series))


def _mpl_heatmap(figure: Figure, axes: Axes, plan: PlotPlan) -> None:
    cells = np.ma.masked_invalid(np.array(plan.cells, dtype=float))
    if plan.diverging:
        image = axes.imshow(cells, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
    else:
        image = axes.imshow(cells, cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(plan.columns)), [_label(c) for c in plan.columns])
    axes.set_yticks(range(len(plan.rows)), [_label(r) for r in plan.rows])
    for side in ("left", "bottom"):
        axes.spines[side].set_visible(False)
    axes.tick_params(length=0)
    _rotate_if_crowded(axes, plan.columns)
    colorbar = figure.colorbar(image, ax=axes, shrink=0.9, pad=0.02)
    colorbar.set_label(plan.hue_label or "", fontsize=10, color=TEXT)
    colorbar.ax.tick_params(labelsize=9)
    colorbar.outline.set_visible(False)
    fontsize = 9 if len(plan.columns) <= 8 else 7.5
    texts = _cell_texts(plan)
    width, height = figure.get_size_inches() * figure.dpi
    if _cell_texts_fit(texts, width, height, fontsize * figure.dpi / 72):
        low, high = (-1.0, 1.0) if plan.diverging else (float(cells.min()), float(cells.max()))
        for row, values in enumerate(plan.cells):
            for column, value in enumerate(values):
                if value is None:
                    continue
                shade = (value - low) / (high - low) if high > low else 0.5
                dark = abs(shade - 0.5) > 0.3 if plan.diverging else shade < 0.6
                axes.text(
                    column,
                    row,
                    texts[row][column],
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="white" if dark else TEXT,
                )


def _cell_texts(plan: PlotPlan) -> list[list[str]]:
    return [
        [
            ""
            if value is None
            else f"{value:.2f}"
            if plan.diverging or abs(value) < 10
            else _number_format(value)
            for value in row
        ]
        for row in plan.cells
    ]


def _cell_texts_fit(texts: list[list[str]], width: float, height: float, font_pixels: float) -> bool:
    """Whether every cell's number fits inside its cell (about 0.6 em per character, plot area ~75%)."""
    if not texts or not texts[0]:
        return False
    longest = max(len(text) for row in texts for text in row)
    cell_width = width * 0.75 / len(texts[0])
    cell_height = height * 0.75 / len(texts)
    return longest * 0.62 * font_pixels <= cell_width * 0.9 and 1.3 * font_pixels <= cell_height


def _label(name: str) -> str:
    return name.replace("_", " ")


def _mpl_box(figure: Figure, axes: Axes, plan: PlotPlan) -> None:
    stats = [
        {
            "label": box.name,
            "med": box.median,
            "q1": box.q1,
            "q3": box.q3,
            "whislo": box.low,
            "whishi": box.high,
            "mean": box.mean,
            "fliers": box.fliers,
        }
        for box in plan.boxes
    ]
    parts = axes.bxp(
        stats,
        patch_artist=True,
        showmeans=True,
        meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": TEXT, "markersize": 5},
        medianprops={"color": TEXT, "linewidth": 1.5},
        flierprops={"marker": "o", "markersize": 3, "alpha": 0.5, "markeredgecolor": "#555555"},
    )
    for index, patch in enumerate(parts["boxes"]):
        patch.set_facecolor(_box_colour(index, len(parts["boxes"])))
        patch.set_alpha(0.75)
    axes.yaxis.set_major_formatter(ticker.FuncFormatter(_number_format))
    axes.yaxis.grid(True, color=GRID, linewidth=0.8)
    _rotate_if_crowded(axes, [b.name for b in plan.boxes])


def _mpl_pie(figure: Figure, axes: Axes, plan: PlotPlan) -> None:
    values = plan.series[0].y
    total = sum(values)
    colours = [PALETTE[i % len(PALETTE)] for i in range(len(values))]
    wedges, _texts, percents = axes.pie(
        values,
        labels=plan.categories,
        colors=colours,
        startangle=90,
        counterclock=False,
        autopct=lambda share: f"{share:.1f}%" if share >= 4 else "",
        pctdistance=0.75,
        wedgeprops={"edgecolor": "white", "linewidth": 1.5},
        textprops={"fontsize": 10, "color": TEXT},
    )
    for text, colour in zip(percents, colours, strict=True):
        text.set_color("white" if colour in ("#0072B2", "#D55E00", "#000000", "#882255", "#009E73") else TEXT)
    axes.set_aspect("equal")
    axes.set_xlabel(f"{plan.y_label}: total {_number_format(total)}", fontsize=10, color=TEXT)


# ---------------------------------------------------------------- plotly (html)


def _plotly_html(plan: PlotPlan, spec: ChartSpec) -> bytes:
    figure = plotly_figure(plan, spec)
    page = str(
        figure.to_html(
            full_html=True, include_plotlyjs=False, config={"displaylogo": False, "responsive": False}
        )
    )
    # plotly.js from the server that drew the chart (spec.plotly_src): never a CDN, never inlined.
    script = f'<script charset="utf-8" src="{html.escape(spec.plotly_src, quote=True)}"></script>'
    head = page.find("<head>")
    if head < 0:
        return (script + page).encode("utf-8")
    at = head + len("<head>")
    return (page[:at] + script + page[at:]).encode("utf-8")


def plotly_figure(plan: PlotPlan, spec: ChartSpec) -> Any:
    import plotly.graph_objects as go  # imported here: only html needs it

    figure = go.Figure()
    colours = list(PALETTE)
    if plan.chart_type == "bar":
        across = plan.orientation == "h"
        for index, series in enumerate(plan.series):
            values = [None if math.isnan(v) else v for v in series.y]
            error: dict[str, Any] = {}
            if series.low is not None and series.high is not None:
                error = {
                    "type": "data",
                    "symmetric": False,
                    "array": [
                        0 if h is None or v is None else h - v
                        for v, h in zip(values, series.high, strict=True)
                    ],
                    "arrayminus": [
                        0 if lo is None or v is None else v - lo
                        for v, lo in zip(values, series.low, strict=True)
                    ],
                    "color": TEXT,
                }
            figure.add_bar(
                x=values if across else plan.categories,
                y=plan.categories if across else values,
                orientation="h" if across else "v",
                name=series.name or plan.y_label,
                marker_color=colours[index % len(colours)],
                showlegend=len(plan.series) > 1,
                **({"error_x": error} if across and error else {"error_y": error} if error else {}),
            )
        figure.update_layout(barmode="stack" if plan.barmode == "stack" else "group")
        category_axis = figure.update_yaxes if across else figure.update_xaxes
        category_axis(type="category", categoryorder="array", categoryarray=plan.categories)
        if across:
            figure.update_yaxes(autorange="reversed")
        if plan.reference is not None:
            line = {"dash": "dash", "color": TEXT, "width": 1}
            if across:
                figure.add_vline(x=plan.reference, line=line)
            else:
                figure.add_hline(y=plan.reference, line=line)
    elif plan.chart_type in ("line", "scatter"):
        for index, series in enumerate(plan.series):
            xs = [_iso(v) for v in series.x] if plan.x_kind == "datetime" else series.x
            colour = colours[index % len(colours)]
            shape = "hv" if series.style == "step" else "linear"
            if plan.chart_type == "line" and series.low is not None and series.high is not None:
                figure.add_scatter(  # the interval band: upper edge, then lower edge filled up to it
                    x=xs,
                    y=series.high,
                    mode="lines",
                    line={"width": 0, "shape": shape, "color": colour},
                    showlegend=False,
                    hoverinfo="skip",
                    name=f"{series.name or plan.y_label} upper",
                )
                figure.add_scatter(
                    x=xs,
                    y=series.low,
                    mode="lines",
                    line={"width": 0, "shape": shape, "color": colour},
                    fill="tonexty",
                    fillcolor=_translucent(colour),
                    showlegend=False,
                    hoverinfo="skip",
                    name=f"{series.name or plan.y_label} lower",
                )
            markers_only = plan.chart_type == "scatter" or series.style == "markers"
            figure.add_scatter(
                x=xs,
                y=series.y,
                name=series.name or plan.y_label,
                mode="markers"
                if markers_only
                else ("lines+markers" if len(xs) <= 40 and series.style != "step" else "lines"),
                line={
                    "color": colour,
                    "shape": shape,
                    "dash": "dash" if series.style == "dashed" else "solid",
                },
                marker={
                    "color": colour,
                    "size": 10 if series.style == "markers" else 6 if len(xs) < 2000 else 4,
                    **({"line": {"color": TEXT, "width": 1}} if series.style == "markers" else {}),
                },
                opacity=0.75 if plan.chart_type == "scatter" else 1.0,
                showlegend=len(plan.series) > 1,
            )
        if plan.x_kind == "text":
            figure.update_xaxes(type="category", categoryorder="array", categoryarray=plan.categories)
    elif plan.chart_type == "histogram":
        edges = plan.bin_edges
        centres = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:], strict=True)]
        widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
        for index, series in enumerate(plan.series):
            figure.add_bar(
                x=centres,
                y=series.y,
                width=widths,
                name=series.name or "count",
                marker_color=colours[index % len(colours)],
                opacity=0.55 if len(plan.series) > 1 else 0.9,
                showlegend=len(plan.series) > 1,
            )
        figure.update_layout(barmode="overlay", bargap=0)
    elif plan.chart_type == "heatmap":
        options: dict[str, Any] = {"colorscale": "Viridis"}
        if plan.diverging:
            options = {"colorscale": "RdBu_r", "zmin": -1, "zmax": 1, "zmid": 0}
        if _cell_texts_fit(_cell_texts(plan), spec.width, spec.height, 12.0):
            options["texttemplate"] = "%{z:.2f}" if plan.diverging else "%{z:.4g}"
        figure.add_heatmap(
            z=plan.cells,
            x=[_label(c) for c in plan.columns],
            y=[_label(r) for r in plan.rows],
            colorbar={"title": {"text": plan.hue_label or ""}},
            **options,
        )
        figure.update_yaxes(autorange="reversed")
    elif plan.chart_type == "box":
        for index, box in enumerate(plan.boxes):
            colour = _box_colour(index, len(plan.boxes))
            figure.add_box(
                x=[box.name],
                q1=[box.q1],
                median=[box.median],
                q3=[box.q3],
                lowerfence=[box.low],
                upperfence=[box.high],
                mean=[box.mean],
                name=box.name,
                marker_color=colour,
                showlegend=False,
            )
            if box.fliers:
                figure.add_scatter(
                    x=[box.name] * len(box.fliers),
                    y=box.fliers,
                    mode="markers",
                    marker={"color": colour, "size": 4, "opacity": 0.5},
                    showlegend=False,
                    name=f"{box.name} outliers",
                )
    elif plan.chart_type == "pie":
        figure.add_pie(
            labels=plan.categories,
            values=plan.series[0].y,
            marker={"colors": [colours[i % len(colours)] for i in range(len(plan.categories))]},
            sort=False,
            direction="clockwise",
            textinfo="label+percent",
        )
    figure.update_layout(
        title={
            "text": plan.title or default_title(plan),
            "x": 0.5,
            "xanchor": "center",
            "font": {"size": 18},
        },
        template="plotly_white",
        width=spec.width,
        height=spec.height,
        colorway=colours,
        font={"size": 13, "color": TEXT},
        legend_title_text=plan.hue_label or "",
        margin={"l": 70, "r": 30, "t": 70, "b": 70},
    )
    if plan.chart_type != "pie":
        across = plan.chart_type == "bar" and plan.orientation == "h"  # categories on the vertical axis
        figure.update_xaxes(title_text=plan.y_label if across else plan.x_label)
        figure.update_yaxes(title_text=plan.x_label if across else plan.y_label)
    return figure


def _box_colour(index: int, count: int) -> str:
    """A colour per box while the palette lasts; beyond it one colour for all, never a repeated one."""
    return PALETTE[index] if count <= len(PALETTE) else PALETTE[0]


def _translucent(colour: str, alpha: float = 0.18) -> str:
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def _iso(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


# ---------------------------------------------------------------- worker entry points


@dataclass
class ChartJob:
    """A finished chart as a worker process hands it back: the file's bytes and what it shows."""

    content: bytes
    format: str
    mime_type: str
    width: int
    height: int
    title: str
    x_label: str
    y_label: str
    points: int
    notes: list[str]
    plotted: dict[str, Any]

    @property
    def size_bytes(self) -> int:
        return len(self.content)


def draw(data: Any, spec: ChartSpec, part: str | None = None, max_rows: int | None = None) -> ChartJob:
    """Normalise `data`, draw it; the whole CPU-bound part of a chart request, picklable both ways.

    An analysis result without chosen columns draws its own view (analytics.chart_views); anything
    else goes through to_frame and plan_chart."""
    check_spec(spec)
    notes: list[str] = []
    plan = analysis_view(data, spec, part)
    if plan is None:
        frame, notes = to_frame(data, part)
        if max_rows is not None and len(frame) > max_rows:
            raise InvalidInput(
                f"too many points: inline data has {len(frame):,} rows, at most {max_rows:,}; save it in a "
                "session (query_database with session_id + save_as) and pass {session_id, dataset}"
            )
        plan = plan_chart(frame, spec)
    rendered = render_plan(plan, spec)
    return ChartJob(
        content=rendered.content,
        format=rendered.format,
        mime_type=rendered.mime_type,
        width=rendered.width,
        height=rendered.height,
        title=plan.title or default_title(plan),
        x_label=plan.x_label,
        y_label=plan.y_label,
        points=plan.points,
        notes=notes + plan.notes,
        plotted=plotted(plan),
    )
