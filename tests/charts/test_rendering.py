"""The renderers on their own: every chart type in every format is a real picture of the right size,
and what is drawn is the data (bar heights, counts, order, dates)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from analytics.chart_data import CHART_TYPES, ChartSpec, plan_chart, to_frame
from analytics.charts import render_chart
from core.errors import InvalidInput
from tests.charts.helpers import (
    assert_not_blank,
    plotly_figure,
    png_image,
    svg_bar_heights,
    svg_root,
)

RNG = np.random.default_rng(11)
SAMPLE = pd.DataFrame(
    {
        "month": pd.date_range("2024-01-01", periods=12, freq="MS").repeat(3),
        "account_type": ["Basic", "Premium", "Enterprise"] * 12,
        "revenue": RNG.normal(200, 40, 36).round(2),
        "quality": RNG.uniform(1, 5, 36),
        "age": RNG.integers(18, 80, 36),
    }
)
SPECS = {
    "bar": ChartSpec("bar", x="account_type", y=("revenue",)),
    "grouped_bar": ChartSpec("grouped_bar", x="month", y=("revenue",), hue="account_type"),
    "stacked_bar": ChartSpec("stacked_bar", x="month", y=("revenue",), hue="account_type"),
    "line": ChartSpec("line", x="month", y=("revenue",), hue="account_type"),
    "scatter": ChartSpec("scatter", x="age", y=("quality",), hue="account_type"),
    "histogram": ChartSpec("histogram", x="revenue"),
    "heatmap": ChartSpec("heatmap", x="month", y=("account_type",), value="revenue"),
    "correlation_heatmap": ChartSpec("correlation_heatmap", y=("revenue", "quality", "age")),
    "box": ChartSpec("box", x="account_type", y=("revenue",)),
    "pie": ChartSpec("pie", x="account_type", y=("revenue",)),
}


def test_every_chart_type_is_covered():
    assert set(SPECS) == set(CHART_TYPES)


@pytest.mark.parametrize("chart_type", CHART_TYPES)
@pytest.mark.parametrize("fmt", ["png", "svg", "html"])
def test_every_chart_type_in_every_format_is_a_real_picture(chart_type, fmt):
    spec = dataclasses.replace(SPECS[chart_type], format=fmt, width=640, height=480)
    rendered = render_chart(SAMPLE, spec)
    assert (rendered.width, rendered.height) == (640, 480)
    if fmt == "png":
        image = png_image(rendered.content)
        assert image.size == (640, 480)
        assert_not_blank(image)
    elif fmt == "svg":
        root = svg_root(rendered.content)
        assert (root.attrib["width"], root.attrib["height"]) == ("640px", "480px")
        assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10
    else:
        figure = plotly_figure(rendered.content)
        assert figure["data"], "the page has no traces"
        assert (figure["layout"]["width"], figure["layout"]["height"]) == (640, 480)
        assert len(rendered.content) < 200_000, "plotly.js is loaded from the server, never inlined"
        assert b'src="/assets/plotly.min.js"' in rendered.content


@pytest.mark.parametrize("size", [(800, 600), (801, 599), (333, 211), (1999, 1001), (100, 4000)])
def test_png_has_exactly_the_requested_pixels(size):
    rendered = render_chart(
        SAMPLE, ChartSpec("line", x="month", y=("revenue",), width=size[0], height=size[1])
    )
    assert png_image(rendered.content).size == size


def test_bar_heights_in_the_svg_are_proportional_to_the_values():
    values = [3.0, 12.5, 7.25, 0.5]
    frame = pd.DataFrame({"plan": ["a", "b", "c", "d"], "amount": values})
    rendered = render_chart(frame, ChartSpec("bar", x="plan", y=("amount",), format="svg"))
    heights, bottoms = svg_bar_heights(rendered.content)
    assert len(heights) == 4
    scale = heights[1] / values[1]
    assert heights == pytest.approx([v * scale for v in values], rel=1e-3)
    assert max(bottoms) - min(bottoms) < 0.01, "bars do not share a baseline"


def test_bar_heights_in_the_html_equal_the_values_and_keep_their_categories():
    frame = pd.DataFrame({"plan": ["Premium", "Basic", "Enterprise"], "churn": [0.18, 0.31, 0.08]})
    rendered = render_chart(frame, ChartSpec("bar", x="plan", y=("churn",), format="html"))
    (trace,) = plotly_figure(rendered.content)["data"]
    assert trace["type"] == "bar"
    # Account tiers are drawn in their natural order, each with its own value.
    assert trace["x"] == ["Basic", "Premium", "Enterprise"]
    assert trace["y"] == [0.31, 0.18, 0.08]


def test_repeated_categories_are_summed_and_the_answer_says_so():
    frame = pd.DataFrame({"service": ["voice", "data", "voice", "sms", "data"], "amount": [1, 2, 3, 4, 5.5]})
    plan = plan_chart(frame, ChartSpec("bar", x="service", y=("amount",)))
    assert dict(zip(plan.categories, plan.series[0].y, strict=True)) == {
        "data": 7.5,
        "sms": 4.0,
        "voice": 4.0,
    }
    assert any("aggregated" in note for note in plan.notes)


def test_stacked_bars_sit_on_each_other_in_svg():
    frame = pd.DataFrame({"m": ["x", "x", "y", "y"], "kind": ["a", "b", "a", "b"], "v": [2.0, 6.0, 4.0, 4.0]})
    rendered = render_chart(frame, ChartSpec("stacked_bar", x="m", y=("v",), hue="kind", format="svg"))
    lower, lower_bottoms = svg_bar_heights(rendered.content, series=0)
    upper, upper_bottoms = svg_bar_heights(rendered.content, series=1)
    scale = lower[0] / 2.0
    assert upper == pytest.approx([6.0 * scale, 4.0 * scale], rel=1e-3)
    # The upper bar starts where the lower one ends.
    assert upper_bottoms == pytest.approx(
        [b - h for b, h in zip(lower_bottoms, lower, strict=True)], abs=0.01
    )


def test_categories_sort_naturally_numbers_and_dates_chronologically():
    text = pd.DataFrame({"bucket": ["item 10", "item 2", "item 1"], "v": [5, 2, 3]})
    assert plan_chart(text, ChartSpec("bar", x="bucket", y=("v",))).categories == [
        "item 1",
        "item 2",
        "item 10",
    ]
    months = to_frame({"month": ["2024-03-01", "2024-01-01", "2024-02-01"], "v": [3, 1, 2]})[0]
    plan = plan_chart(months, ChartSpec("bar", x="month", y=("v",)))
    assert plan.categories == ["2024-01", "2024-02", "2024-03"]
    assert plan.series[0].y == [1.0, 2.0, 3.0]
    ranked = plan_chart(text, ChartSpec("bar", x="bucket", y=("v",), sort="value_desc"))
    assert ranked.categories == ["item 10", "item 1", "item 2"]


def test_date_strings_become_a_time_axis():
    frame, _ = to_frame(
        {"rows": [{"day": "2024-01-05T00:00:00+00:00", "n": 1}, {"day": "2024-01-02T00:00:00+00:00", "n": 4}]}
    )
    assert pd.api.types.is_datetime64_any_dtype(frame["day"])
    plan = plan_chart(frame, ChartSpec("line", x="day", y=("n",)))
    assert plan.x_kind == "datetime"
    assert plan.series[0].x == [pd.Timestamp("2024-01-02"), pd.Timestamp("2024-01-05")]
    assert plan.series[0].y == [4.0, 1.0]


def test_histogram_counts_match_numpy():
    values = RNG.normal(0, 1, 5_000)
    plan = plan_chart(pd.DataFrame({"x": values}), ChartSpec("histogram", x="x", bins=20))
    counts, edges = np.histogram(values, bins=20)
    assert plan.series[0].y == counts.tolist()
    assert plan.bin_edges == pytest.approx(edges.tolist())


def test_correlation_heatmap_from_columns_matches_pandas_and_is_diverging():
    plan = plan_chart(SAMPLE, SPECS["correlation_heatmap"])
    expected = np.corrcoef(SAMPLE[["revenue", "quality", "age"]].to_numpy(dtype=float).T)
    assert np.array(plan.cells) == pytest.approx(expected)
    assert plan.diverging


def test_correlation_matrix_from_an_analysis_result_is_drawn_as_given():
    matrix = {"age": {"age": 1.0, "tenure_days": 0.2}, "tenure_days": {"age": 0.2, "tenure_days": 1.0}}
    frame, _ = to_frame({"analysis_type": "correlation", "results": {"matrix": matrix, "method": "pearson"}})
    plan = plan_chart(frame, ChartSpec("correlation_heatmap"))
    assert plan.rows == plan.columns == ["age", "tenure_days"]
    assert plan.cells == [[1.0, 0.2], [0.2, 1.0]]
    rendered = render_chart(frame, ChartSpec("heatmap", format="html"))
    (trace,) = plotly_figure(rendered.content)["data"]
    assert trace["z"] == [[1.0, 0.2], [0.2, 1.0]] and trace["zmin"] == -1


def test_by_segment_of_an_analysis_result_becomes_a_table_in_either_shape():
    as_list = {
        "results": {
            "by_segment": [{"segment": "Basic", "churn_rate": 0.3}, {"segment": "Premium", "churn_rate": 0.2}]
        }
    }
    as_dict = {
        "results": {
            "by_segment": {"Basic": {"churn_rate": 0.3}, "Premium": {"churn_rate": 0.2}},
            "group_by": "plan",
        }
    }
    first, _ = to_frame(as_list)
    second, _ = to_frame(as_dict)
    assert first.to_dict("list") == {"segment": ["Basic", "Premium"], "churn_rate": [0.3, 0.2]}
    assert second.to_dict("list") == {"plan": ["Basic", "Premium"], "churn_rate": [0.3, 0.2]}


def test_large_scatter_is_sampled_and_large_line_is_bucketed_with_a_note():
    big = pd.DataFrame({"x": np.arange(50_000, dtype=float), "y": RNG.normal(size=50_000)})
    scatter = plan_chart(big, ChartSpec("scatter", x="x", y=("y",)))
    assert len(scatter.series[0].x) == 5_000 and "sample" in scatter.notes[0]
    line = plan_chart(big, ChartSpec("line", x="x", y=("y",)))
    assert len(line.series[0].x) <= 2_000 and "averaged" in line.notes[0]
    assert np.mean(line.series[0].y) == pytest.approx(big["y"].mean(), abs=0.01)


def test_box_statistics_match_numpy_percentiles():
    values = RNG.exponential(2.0, 999)
    (box,) = plan_chart(pd.DataFrame({"v": values}), ChartSpec("box", y=("v",))).boxes
    assert [box.q1, box.median, box.q3] == pytest.approx(np.percentile(values, [25, 50, 75]).tolist())
    assert box.high <= np.percentile(values, 75) + 1.5 * (
        np.percentile(values, 75) - np.percentile(values, 25)
    )


@pytest.mark.parametrize(
    ("data", "spec", "expected"),
    [
        (SAMPLE, ChartSpec("donut"), "unknown chart type 'donut'; use one of: bar"),
        (SAMPLE, ChartSpec("bar", format="gif"), "unknown format 'gif'; use one of: png, svg, html"),
        (
            SAMPLE,
            ChartSpec("bar", x="acount_type"),
            "column 'acount_type' not in the data; columns: month, account_type",
        ),
        (
            SAMPLE,
            ChartSpec("line", x="month", y=("account_type",)),
            "column 'account_type' is not numeric (text); a line chart needs a numeric y; numeric columns: revenue, quality, age",
        ),
        (SAMPLE, ChartSpec("scatter", x="month", y=("account_type",)), "is not numeric"),
        (pd.DataFrame({"a": []}), ChartSpec("bar"), "data has no rows"),
        (
            pd.DataFrame({"x": range(20), "h": [str(i) for i in range(20)], "y": range(20)}),
            ChartSpec("line", x="x", y=("y",), hue="h"),
            "at most 10 series",
        ),
        (SAMPLE, ChartSpec("bar", width=50), "width must be between 100 and 4000"),
        (pd.DataFrame({"k": ["a", "b"], "v": [1, -2]}), ChartSpec("pie", x="k", y=("v",)), "non-negative"),
    ],
)
def test_bad_chart_requests_are_refused_with_one_clear_line(data, spec, expected):
    with pytest.raises(InvalidInput) as refused:
        render_chart(data, spec)
    assert expected in refused.value.message
    assert "\n" not in refused.value.message


def test_malformed_data_shapes_are_refused():
    with pytest.raises(InvalidInput, match="differ in length"):
        to_frame({"a": [1, 2], "b": [1]})
    with pytest.raises(InvalidInput, match="need 'columns'"):
        to_frame({"rows": [[1, 2]]})
    with pytest.raises(InvalidInput, match="tabular parts: by_segment"):
        to_frame({"results": {"by_segment": [{"a": 1}]}}, part="by_month")


def test_heatmap_cell_numbers_are_written_only_when_they_fit_their_cells():
    def frame(months: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "month": [f"2024-{m:02d}" if m <= 12 else f"2025-{m - 12:02d}" for m in range(1, months + 1)]
                * 3,
                "plan": [p for p in ("Basic", "Premium", "Enterprise") for _ in range(months)],
                "arpu": RNG.gamma(4, 25, months * 3).round(2),
            }
        )

    spec = ChartSpec("heatmap", x="month", y=("plan",), value="arpu", format="html")
    (few,) = plotly_figure(render_chart(frame(6), spec).content)["data"]
    (many,) = plotly_figure(render_chart(frame(24), spec).content)["data"]
    assert few["texttemplate"] == "%{z:.4g}"
    assert "texttemplate" not in many, "24 columns of 5-digit numbers would overlap at 800 px"
    wide = plotly_figure(render_chart(frame(24), dataclasses.replace(spec, width=3000)).content)["data"]
    assert wide[0]["texttemplate"] == "%{z:.4g}"


def test_combined_values_are_labelled_with_how_they_were_combined():
    line = plan_chart(SAMPLE, ChartSpec("line", x="account_type", y=("revenue",)))
    assert line.y_label == "mean of revenue" and any("mean of y" in note for note in line.notes)
    unique = plan_chart(SAMPLE, SPECS["heatmap"])
    assert unique.hue_label == "revenue", "one value per cell: drawn as given"
    assert (
        plan_chart(
            SAMPLE.assign(age=1), ChartSpec("heatmap", x="account_type", y=("age",), value="quality")
        ).hue_label
        == "mean of quality"
    )


def test_many_categories_keep_the_largest_bars_and_combine_the_rest_as_other():
    cities = [i for i in range(150) for _ in range(2)]
    frame = pd.DataFrame({"city": [f"c{i}" for i in cities], "v": cities})
    plan = plan_chart(frame, ChartSpec("bar", x="city", y=("v",)))
    assert len(plan.categories) == 30 and plan.categories[-1] == "other"
    assert plan.categories[0] == "c149" and plan.orientation == "h", "largest first, labels across"
    heights = dict(zip(plan.categories, plan.series[0].y, strict=True))
    assert heights["c149"] == 2 * 149
    assert heights["other"] == 2 * sum(range(150 - 29)), "the rest, summed like every bar"
    assert any("combined as 'other'" in note for note in plan.notes)


def test_a_table_of_one_row_per_category_keeps_its_largest_and_says_the_rest_are_left_out():
    frame = pd.DataFrame({"id": [f"c{i}" for i in range(150)], "rate": [i / 150 for i in range(150)]})
    plan = plan_chart(frame, ChartSpec("bar", x="id", y=("rate",)))
    assert len(plan.categories) == 29 and "other" not in plan.categories, "rates are not summed"
    assert any("121 left out" in note for note in plan.notes)


def test_pie_slices_never_repeat_a_colour():
    frame = pd.DataFrame({"k": [f"k{i}" for i in range(25)], "v": range(1, 26)})
    plan = plan_chart(frame, ChartSpec("pie", x="k", y=("v",)))
    (trace,) = plotly_figure(render_chart(frame, ChartSpec("pie", x="k", y=("v",), format="html")).content)[
        "data"
    ]
    assert len(plan.categories) == 10 and plan.categories[-1] == "other"
    assert len(set(trace["marker"]["colors"])) == len(trace["labels"]) == 10
