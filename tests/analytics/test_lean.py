"""Answers an agent can afford: analyses summarise by default, say what they left out, give the whole
detail on request, round floats in text only, and show their SQL only when asked."""

from __future__ import annotations

import json
import re
from typing import Any

from fastmcp import Client

from analytics.lean import COHORT_MONTHS, CURVE_DAYS, SERIES_POINTS, rounded


async def _both(client: Client[Any], analysis: str, **parameters: Any) -> tuple[Any, Any]:
    """(default answer as the agent gets it, the full answer) for one analysis on the live tables."""
    arguments = {"data_source": "database", "analysis_type": analysis, "parameters": parameters}
    lean = await client.call_tool("analyze_data", arguments)
    full = await client.call_tool("analyze_data", {**arguments, "detail": "full"})
    return lean, full.structured_content


def _text(result: Any) -> str:
    return "".join(block.text for block in result.content if getattr(block, "text", None))


async def test_an_anomalies_answer_lists_the_anomalies_not_the_series(connect) -> None:
    async with connect("analyst") as client:
        lean, full = await _both(client, "anomalies", metric="quality", grain="day")
    answer = lean.structured_content
    assert "series" not in answer["results"] and len(full["results"]["series"]) > 300
    assert answer["results"]["anomalies"] == full["results"]["anomalies"][:20]
    assert answer["results"]["anomaly_count"] == full["results"]["anomaly_count"]
    assert any("series" in item for item in answer["metadata"]["omitted"])
    assert "detail='full'" in answer["metadata"]["hint"]
    assert len(_text(lean)) < 8_000 < len(json.dumps(full))


async def test_a_retention_answer_gives_medians_and_a_few_curve_points(connect) -> None:
    async with connect("analyst") as client:
        lean, full = await _both(client, "retention", group_by="account_type")
    results = lean.structured_content["results"]
    for label, segment in full["results"]["by_segment"].items():
        summary = results["by_segment"][label]
        assert summary["median_lifetime_days"] == segment["median_lifetime_days"]
        days = [point["day"] for point in summary["curve"]]
        assert days == [day for day in CURVE_DAYS if day <= segment["curve"][-1]["day"]]
        for point in summary["curve"]:  # the survival in force on that day, from the full curve
            step = [p for p in segment["curve"] if p["day"] <= point["day"]][-1]
            assert point["survival"] == step["survival"]
    assert results["cohorts"]["months"] == [
        m for m in full["results"]["cohorts"]["months"] if m in COHORT_MONTHS
    ]
    assert results["test"] == full["results"]["test"]


async def test_a_trend_summary_keeps_the_latest_points_and_the_fit(connect) -> None:
    async with connect("analyst") as client:
        lean, full = await _both(client, "trend", metric="arpu", grain="week")
    results = lean.structured_content["results"]
    assert results["trend"] == full["results"]["trend"]
    assert [p["bucket"] for p in results["series"]] == [p["bucket"] for p in full["results"]["series"]][
        -SERIES_POINTS:
    ]


async def test_floats_are_rounded_in_text_only_and_sql_comes_on_request(connect) -> None:
    async with connect("analyst") as client:
        result = await client.call_tool(
            "analyze_data", {"data_source": "database", "analysis_type": "arpu", "parameters": {}}
        )
        with_sql = await client.call_tool(
            "analyze_data",
            {"data_source": "database", "analysis_type": "arpu", "parameters": {}, "include_sql": True},
        )
    text = _text(result)
    summary, _, body = text.partition("\n")
    assert summary == result.structured_content["summary"]
    numbers = re.findall(r"(?<![\d:.])-?\d+\.\d+(?:e-?\d+)?", body)
    assert numbers
    for number in numbers:  # at most 4 significant digits, or a whole number when it has more
        mantissa = number.split("e")[0].lstrip("-")
        significant = re.sub(r"[^0-9]", "", mantissa).strip("0")
        assert len(significant) <= 4 or mantissa.endswith(".0"), number
    structured = result.structured_content["results"]
    assert json.loads(body)["results"] == rounded(structured)
    assert structured["overall_arpu"] != rounded(structured["overall_arpu"], 3)  # full precision kept
    assert "sql" not in result.structured_content["metadata"]
    assert with_sql.structured_content["metadata"]["sql"]


def test_rounding_keeps_integers_text_and_non_finite_values() -> None:
    assert rounded({"a": 1234567, "b": "0.123456789", "c": [0.123456789, -98765.4321, 0.0]}) == {
        "a": 1234567,
        "b": "0.123456789",
        "c": [0.1235, -98765.0, 0.0],
    }
    assert rounded(float("nan")) != rounded(float("nan"))
    assert rounded(2.44105e-26) == 2.441e-26
    assert rounded(1234567.891) == 1234568.0  # the whole part is kept
