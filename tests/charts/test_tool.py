"""create_visualization through MCP: image content, exact dimensions, session datasets by reference,
saved charts, refusals; numbers checked against plain SQL on the shared database."""

from __future__ import annotations

import base64
import json

import pandas as pd
import pytest

from mcp_server.auth import Identity
from tests.charts.helpers import assert_not_blank, plotly_figure, png_image, svg_root
from tests.support import call, refusal

CHURN = {
    "rows": [
        {"account_type": "Premium", "churn_rate": 0.18},
        {"account_type": "Basic", "churn_rate": 0.31},
        {"account_type": "Enterprise", "churn_rate": 0.08},
    ],
    "columns": ["account_type", "churn_rate"],
    "row_count": 3,
    "truncated": False,
}


def identity_of(runtime, user: str) -> Identity:
    entry = next(e for e in runtime.settings.api_keys if e.user_id == user)
    return Identity(entry.user_id, entry.role, entry.key_id)


async def chart_file(client, answer: dict) -> bytes:
    """The chart's file, read through the resource link the answer gives."""
    (content,) = await client.read_resource(answer["link"]["uri"])
    assert content.mime_type == answer["mime_type"]
    return base64.b64decode(content.blob) if hasattr(content, "blob") else content.text.encode()


async def sql_frame(runtime, sql: str) -> pd.DataFrame:
    async with runtime.db.connection(read=True) as conn:
        rows = await conn.fetch(sql)
    return pd.DataFrame([dict(r) for r in rows])


async def test_a_png_travels_once_as_image_content_and_its_link_reads_the_same_file(connect):
    async with connect("analyst") as client:
        result = await client.call_tool(
            "create_visualization",
            {"data": CHURN, "chart_type": "bar", "title": "Churn", "width": 900, "height": 500},
        )
        answer = result.structured_content
        linked = await chart_file(client, answer)
    image = png_image(linked)
    assert image.size == (answer["dimensions"]["width"], answer["dimensions"]["height"]) == (900, 500)
    assert_not_blank(image)
    assert answer["format"] == "png" and answer["title"] == "Churn"
    shown = [block for block in result.content if block.type == "image"]
    assert len(shown) == 1 and shown[0].mime_type == "image/png"
    assert base64.b64decode(shown[0].data) == linked
    # Once: not again as base64 in the structured answer or the text.
    assert shown[0].data not in json.dumps(answer)
    assert all(len(block.text) < 1_000 for block in result.content if block.type == "text")
    (link,) = [block for block in result.content if block.type == "resource_link"]
    assert str(link.uri) == answer["link"]["uri"] and link.mime_type == "image/png"
    assert len(json.dumps(answer)) < 5_000


async def test_svg_and_html_come_back_as_links_to_small_documents(connect):
    async with connect("analyst") as client:
        svg = await call(client, "create_visualization", data=CHURN, chart_type="bar", format="svg")
        html = await call(client, "create_visualization", data=CHURN, chart_type="bar", format="html")
        svg_file = await chart_file(client, svg)
        page = await chart_file(client, html)
    root = svg_root(svg_file)
    assert (root.attrib["width"], root.attrib["height"]) == ("800px", "600px")
    (trace,) = plotly_figure(page)["data"]
    assert trace["y"] == [0.31, 0.18, 0.08]
    assert html["dimensions"] == {"width": 800, "height": 600}
    assert len(page) == html["size_bytes"] < 100_000, "plotly.js is referenced, not inlined"


async def test_a_session_dataset_is_charted_by_reference_and_counts_match_sql(connect, runtime):
    analyst = identity_of(runtime, "analyst")
    customers = await sql_frame(runtime, "SELECT account_type, age, is_churned, created_at FROM customers")
    expected = await sql_frame(runtime, "SELECT account_type, count(*) AS n FROM customers GROUP BY 1")
    async with connect("analyst") as client:
        session = await call(client, "session_create", data_source="database")
        await runtime.services.session_store.save_dataset(
            analyst, session["session_id"], "customers", customers, {"sql": "customers"}
        )
        answer = await call(
            client,
            "create_visualization",
            data={"session_id": session["session_id"], "dataset": "customers"},
            chart_type="bar",
            x_axis="account_type",
            aggregate="count",
            format="html",
        )
        page = await chart_file(client, answer)
    (trace,) = plotly_figure(page)["data"]
    assert dict(zip(trace["x"], trace["y"], strict=True)) == {
        row.account_type: float(row.n) for row in expected.itertuples()
    }
    assert trace["x"] == ["Basic", "Premium", "Enterprise"]
    assert answer["points"] == len(customers) == 2_000
    assert answer["source"] == {"session_id": session["session_id"], "dataset": "customers"}


async def test_a_large_session_dataset_is_sampled_for_a_scatter_and_the_answer_says_so(connect, runtime):
    analyst = identity_of(runtime, "analyst")
    events = await sql_frame(
        runtime,
        "SELECT network_quality_score, data_usage_mb FROM network_events ORDER BY event_id LIMIT 12000",
    )
    async with connect("analyst") as client:
        session = await call(client, "session_create", data_source="database")
        await runtime.services.session_store.save_dataset(
            analyst, session["session_id"], "events", events, {}
        )
        answer = await call(
            client,
            "create_visualization",
            data={"dataset": "events"},
            session_id=session["session_id"],
            chart_type="scatter",
            x_axis="network_quality_score",
            y_axis="data_usage_mb",
        )
        picture = await chart_file(client, answer)
    assert answer["points"] == 12_000
    assert any("sample of 5,000" in note for note in answer["notes"])
    assert answer["plotted"]["aggregation"] == "random sample"
    assert_not_blank(png_image(picture))


async def test_a_saved_chart_is_read_back_from_the_session(connect):
    async with connect("analyst") as client:
        session = await call(client, "session_create", data_source="database")
        answer = await call(
            client,
            "create_visualization",
            data={"segment": ["Basic", "Premium"], "arpu": [20.5, 45.0]},
            chart_type="bar",
            format="svg",
            session_id=session["session_id"],
            save_as="arpu_chart",
        )
        read = await call(client, "session_read", session_id=session["session_id"], key="arpu_chart")
        svg_file = await chart_file(client, read["value"] | {"link": read["link"]})
    assert answer["saved"]["kind"] == "chart"
    assert read["kind"] == "chart"
    assert read["link"]["uri"] == answer["link"]["uri"] == f"session://{session['session_id']}/arpu_chart"
    assert read["value"]["dimensions"] == {"width": 800, "height": 600}
    assert read["value"]["plotted"] == answer["plotted"]
    assert len(svg_file) == answer["size_bytes"]
    svg_root(svg_file)


async def test_an_analysis_saved_in_a_session_is_charted_by_key(connect, runtime):
    analyst = identity_of(runtime, "analyst")
    matrix = {
        "age": {"age": 1.0, "total_revenue": -0.25},
        "total_revenue": {"age": -0.25, "total_revenue": 1.0},
    }
    async with connect("analyst") as client:
        session = await call(client, "session_create", data_source="database")
        await runtime.services.session_store.save_value(
            analyst,
            session["session_id"],
            "corr",
            {"analysis_type": "correlation", "results": {"matrix": matrix}},
            kind="analysis",
        )
        answer = await call(
            client,
            "create_visualization",
            data={"session_id": session["session_id"], "key": "corr"},
            chart_type="correlation_heatmap",
            format="html",
        )
        page = await chart_file(client, answer)
    (trace,) = plotly_figure(page)["data"]
    assert trace["z"] == [[1.0, -0.25], [-0.25, 1.0]]


async def test_another_analysts_session_is_not_found(connect, runtime):
    async with connect("analyst") as client:
        session = await call(client, "session_create", data_source="database")
    async with connect("analyst2") as client:
        text = await refusal(
            client,
            "create_visualization",
            data={"session_id": session["session_id"], "dataset": "customers"},
            chart_type="bar",
        )
    assert f"session '{session['session_id']}' not found" in text


async def test_an_unknown_dataset_is_refused_naming_the_datasets_there(connect):
    async with connect("analyst") as client:
        session = await call(client, "session_create", data_source="database")
        text = await refusal(
            client,
            "create_visualization",
            data={"session_id": session["session_id"], "dataset": "nope"},
            chart_type="bar",
        )
    assert "dataset 'nope' not in session" in text


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"data": CHURN, "chart_type": "donut"}, "chart_type"),
        ({"data": CHURN, "chart_type": "bar", "format": "gif"}, "format"),
        (
            {"data": CHURN, "chart_type": "bar", "y_axis": "churn"},
            "column 'churn' not in the data; columns: account_type, churn_rate",
        ),
        (
            {"data": CHURN, "chart_type": "line", "y_axis": "account_type"},
            "column 'account_type' is not numeric (text); a line chart needs a numeric y; numeric columns: churn_rate",
        ),
        ({"data": {"rows": [], "columns": ["a"]}, "chart_type": "bar"}, "data has no rows"),
        (
            {"data": {"x": list(range(100_001))}, "chart_type": "histogram"},
            "too many points: inline data has 100,001 rows",
        ),
        ({"data": CHURN, "chart_type": "bar", "width": 10}, "width"),
        ({"data": CHURN, "chart_type": "bar", "save_as": "c"}, "save_as needs session_id"),
        ({"data": "SELECT 1", "chart_type": "bar"}, "invalid arguments"),
    ],
)
async def test_bad_input_is_refused_with_one_clear_line(connect, arguments, expected):
    async with connect("analyst") as client:
        text = await refusal(client, "create_visualization", **arguments)
    assert expected in text


async def test_unknown_chart_type_error_lists_the_allowed_types(connect):
    async with connect("analyst") as client:
        text = await refusal(client, "create_visualization", data=CHURN, chart_type="donut")
    assert "'bar'" in text and "'heatmap'" in text


async def test_a_viewer_cannot_draw_charts(connect):
    async with connect("viewer") as client:
        text = await refusal(client, "create_visualization", data=CHURN, chart_type="bar")
    assert "role" in text


async def test_a_chart_over_its_time_limit_is_stopped_and_the_next_chart_still_draws(connect, monkeypatch):
    from mcp_server.tools import visualize

    async with connect("analyst") as client:
        await call(client, "create_visualization", data=CHURN, chart_type="bar")  # workers are up
        monkeypatch.setattr(visualize, "RENDER_TIMEOUT_SECONDS", 0.0)
        text = await refusal(client, "create_visualization", data=CHURN, chart_type="bar")
        monkeypatch.undo()
        answer = await call(client, "create_visualization", data=CHURN, chart_type="pie")
        picture = await chart_file(client, answer)
    assert "took longer than" in text or "did not finish in 0 s because the server is busy" in text
    assert_not_blank(png_image(picture))


async def test_a_chart_above_the_size_limit_is_refused_with_what_to_change(connect, monkeypatch):
    from mcp_server.tools import visualize

    monkeypatch.setattr(visualize, "MAX_OUTPUT_BYTES", 20_000)
    async with connect("analyst") as client:
        small = await call(client, "create_visualization", data=CHURN, chart_type="bar", format="html")
        text = await refusal(
            client, "create_visualization", data=CHURN, chart_type="bar", width=2000, height=2000
        )
    assert small["size_bytes"] <= 20_000
    assert "above the 20,000 one response can carry" in text and "smaller width/height" in text
