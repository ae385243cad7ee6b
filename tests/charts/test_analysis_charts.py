"""Analysis results chart what they claim: each analysis type's default chart plots the analysis's own
headline figures (the `plotted` values the answer reports equal the result's numbers), and a saved
analysis charts by reference, its chart read back as a link and metadata, not megabytes of base64."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from analytics.parameters import ANALYSES
from tests.charts.helpers import assert_not_blank, plotly_figure, png_image
from tests.support import call, refusal

Figures = dict[str, dict[str, Any]]  # series name -> {label: value}


def _by(table: dict[str, Any], value: str) -> dict[str, Any]:
    return {str(label): row[value] for label, row in table.items()}


def _points(rows: list[dict[str, Any]], label: str, value: str) -> dict[str, Any]:
    return {str(row[label]): row[value] for row in rows if row.get(value) is not None}


def _drivers(results: dict[str, Any]) -> Figures:
    return {"odds_ratio": {d["term"]: d["odds_ratio"] for d in results["drivers"]}}


def _curves(results: dict[str, Any]) -> Figures:
    return {
        name: _points(segment["curve"], "day", "survival") for name, segment in results["by_segment"].items()
    }


def _anomalies(results: dict[str, Any]) -> Figures:
    figures = {"anomaly": _points(results["anomalies"], "bucket", "value")}
    if results.get("series"):
        figures["network quality"] = _points(results["series"], "bucket", "value")
    return figures


# The headline figures of each analysis type, read straight from its result, by plotted series name.
HEADLINES: dict[str, tuple[str, Callable[[dict[str, Any]], Figures]]] = {
    "churn_rate": ("bar", lambda r: {"churn_rate": _by(r["by_segment"], "churn_rate")}),
    "arpu": ("line", lambda r: {"ARPU": _by(r["by_month"], "arpu")}),
    "network_quality": ("bar", lambda r: {"mean": _by(r["by_segment"], "mean")}),
    "correlation": ("heatmap", lambda r: {row: dict(cells) for row, cells in r["matrix"].items()}),
    "trend": (
        "line",
        lambda r: {
            "ARPU": _points(r["series"], "bucket", "value"),
            "linear trend (OLS fit)": _points(r["series"], "bucket", "fitted"),
        },
    ),
    "forecast": (
        "line",
        lambda r: {
            "history": _points(r["observed"], "bucket", "value"),
            "forecast (95% prediction band)": _points(r["forecast"], "bucket", "mean"),
        },
    ),
    "anomalies": ("line", _anomalies),
    "segment_compare": ("bar", lambda r: {"mean": _by(r["segments"], "mean")}),
    "churn_drivers": ("bar", _drivers),
    "retention": ("line", _curves),
    "describe": ("bar", lambda r: {"null_fraction": {c["name"]: c["null_fraction"] for c in r["columns"]}}),
}


def test_every_analysis_type_has_a_default_chart_under_test():
    assert set(HEADLINES) == set(ANALYSES)


def _shown(plotted: dict[str, Any]) -> Figures:
    return {series["name"]: series["values"] for series in plotted["series"]}


@pytest.mark.parametrize("analysis_type", sorted(HEADLINES))
async def test_each_analysis_types_default_chart_plots_its_own_headline_figures(connect, analysis_type):
    chart, headline = HEADLINES[analysis_type]
    async with connect("analyst") as client:
        analysis = await call(client, "analyze_data", data_source="database", analysis_type=analysis_type)
        answer = await call(client, "create_visualization", data=analysis)
    plotted = answer["plotted"]
    assert answer["chart_type"] == plotted["chart"] == chart
    expected, shown = headline(analysis["results"]), _shown(plotted)
    assert set(shown) == set(expected), f"series drawn: {sorted(shown)}"
    for name, values in shown.items():
        assert values, f"series {name} drew nothing"
        # Every label drawn carries exactly the analysis's own figure (at most 50 labels are listed).
        assert values == {label: expected[name][label] for label in values}, name
        assert len(values) == min(50, len(expected[name]))
    assert plotted["rows_used"] == answer["points"] > 0
    assert "analysis computed" in plotted["aggregation"] or "as computed" in plotted["aggregation"]


async def test_churn_by_segment_draws_its_confidence_intervals_as_error_bars(connect):
    async with connect("analyst") as client:
        analysis = await call(client, "analyze_data", data_source="database", analysis_type="churn_rate")
        answer = await call(client, "create_visualization", data=analysis, format="html")
        (content,) = await client.read_resource(answer["link"]["uri"])
    segments = analysis["results"]["by_segment"]
    (series,) = answer["plotted"]["series"]
    assert series["intervals"] == {name: [row["ci_low"], row["ci_high"]] for name, row in segments.items()}
    (trace,) = plotly_figure(content.text.encode())["data"]
    for label, value, above, below in zip(
        trace["x"], trace["y"], trace["error_y"]["array"], trace["error_y"]["arrayminus"], strict=True
    ):
        assert value == segments[label]["churn_rate"]
        assert value + above == pytest.approx(segments[label]["ci_high"])
        assert value - below == pytest.approx(segments[label]["ci_low"])
    assert answer["title"].startswith("Churn rate by account type")


async def test_a_churn_rate_chart_titled_by_location_plots_churn_rates_not_customer_counts(connect):
    async with connect("analyst") as client:
        analysis = await call(
            client,
            "analyze_data",
            data_source="database",
            analysis_type="churn_rate",
            parameters={"group_by": "location"},
        )
        answer = await call(
            client, "create_visualization", data=analysis, chart_type="bar", title="Churn rate by location"
        )
    segments = analysis["results"]["by_segment"]
    assert answer["plotted"]["y"] == "churn_rate" and answer["plotted"]["x"] == "location"
    (series,) = answer["plotted"]["series"]
    assert series["values"] == {name: row["churn_rate"] for name, row in segments.items()}
    assert all(value < 1 for value in series["values"].values()), "rates, not counts"


async def test_a_view_the_analysis_does_not_have_is_refused_naming_the_ones_it_has(connect):
    async with connect("analyst") as client:
        analysis = await call(client, "analyze_data", data_source="database", analysis_type="churn_rate")
        text = await refusal(client, "create_visualization", data=analysis, chart_type="pie")
        columns = await call(
            client,
            "create_visualization",
            data=analysis,
            chart_type="pie",
            part="by_segment",
            y_axis="customers",
        )
    assert "a churn_rate result charts as bar or line (default bar)" in text
    assert columns["plotted"]["y"] == "customers", "asking for a column by name still charts it"


async def test_a_saved_analysis_charts_by_reference_and_its_chart_reads_back_as_a_link(connect):
    async with connect("analyst") as client:
        session = (await call(client, "session_create", data_source="database"))["session_id"]
        analysis = await call(
            client,
            "analyze_data",
            data_source="database",
            analysis_type="churn_rate",
            session_id=session,
            save_as="churn",
        )
        result = await client.call_tool(
            "create_visualization",
            {
                "data": {"session_id": session, "key": "churn"},
                "session_id": session,
                "save_as": "churn_chart",
            },
        )
        answer = result.structured_content
        read = await client.call_tool("session_read", {"session_id": session, "key": "churn_chart"})
        (content,) = await client.read_resource(f"session://{session}/churn_chart")
    assert answer["source"] == {"session_id": session, "key": "churn"}
    (series,) = answer["plotted"]["series"]
    assert series["values"] == {
        name: row["churn_rate"] for name, row in analysis["results"]["by_segment"].items()
    }
    (link,) = [block for block in result.content if block.type == "resource_link"]
    assert str(link.uri) == f"session://{session}/churn_chart" == answer["link"]["uri"]
    # session_read: the chart's metadata and its link, in a few KB, no base64 of the picture
    text = "".join(block.text for block in read.content if block.type == "text")
    assert len(text) < 4_000 and len(json.dumps(read.structured_content)) < 4_000
    assert read.structured_content["link"]["uri"] == f"session://{session}/churn_chart"
    assert read.structured_content["value"]["plotted"] == answer["plotted"]
    picture = base64.b64decode(content.blob)
    assert content.mime_type == "image/png" and len(picture) == answer["size_bytes"]
    assert "content_base64" not in text and content.blob[:200] not in text
    assert_not_blank(png_image(picture))


async def test_a_large_session_value_is_read_as_an_outline_and_a_link(connect):
    big = {
        "summary": "many points",
        "series": [{"bucket": f"2024-01-{i % 28 + 1:02d}", "v": i} for i in range(5000)],
    }
    async with connect("analyst") as client:
        session = (await call(client, "session_create", data_source="database"))["session_id"]
        await call(client, "session_update", session_id=session, key="big", value=big)
        read = await call(client, "session_read", session_id=session, key="big")
        (content,) = await client.read_resource(read["link"]["uri"])
    assert read["value"] == {"summary": "many points", "series": "list of 5000 items"}
    assert len(json.dumps(read)) < 2_000
    assert json.loads(content.text) == big


async def test_an_artifact_is_readable_by_its_maker_only(connect):
    async with connect("analyst") as client:
        answer = await call(client, "create_visualization", data={"k": ["a", "b"], "v": [1, 2]}, format="svg")
        (content,) = await client.read_resource(answer["link"]["uri"])
    assert answer["link"]["uri"].startswith("artifact://") and content.text.startswith("<?xml")
    async with connect("analyst2") as client:
        with pytest.raises(Exception, match="not found"):
            await client.read_resource(answer["link"]["uri"])


OTHER_VIEWS = [
    (
        "churn_rate",
        {"monthly": True},
        "line",
        lambda r: {"churn_rate": _points(r["monthly"], "month", "churn_rate")},
    ),
    ("arpu", {}, "bar", lambda r: {"arpu": _by(r["by_segment"], "arpu")}),
    (
        "network_quality",
        {},
        "box",
        lambda r: {
            "median": {name: row["percentiles"]["p50"] for name, row in r["by_segment"].items()},
            "mean": _by(r["by_segment"], "mean"),
        },
    ),
    (
        "retention",
        {},
        "heatmap",
        lambda r: {
            row["cohort"]: {str(m): v for m, v in zip(r["cohorts"]["months"], row["retention"], strict=False)}
            for row in r["cohorts"]["rows"]
        },
    ),
]


@pytest.mark.parametrize(("analysis_type", "parameters", "chart", "headline"), OTHER_VIEWS)
async def test_an_analysis_s_other_views_plot_its_own_figures_too(
    connect, analysis_type, parameters, chart, headline
):
    async with connect("analyst") as client:
        analysis = await call(
            client,
            "analyze_data",
            data_source="database",
            analysis_type=analysis_type,
            parameters=parameters,
            detail="full",
        )
        answer = await call(client, "create_visualization", data=analysis, chart_type=chart)
    expected = headline(analysis["results"])
    assert answer["chart_type"] == chart
    for name, values in _shown(answer["plotted"]).items():
        drawn = {label: value for label, value in values.items() if value is not None}
        assert drawn == {label: expected[name][label] for label in drawn}, name
        assert drawn, name
