"""The workflow prompts replayed literally through the tools: every call a prompt names must work, and the
churn workflow must end with a saved analysis and chart that session_read returns."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from fastmcp import Client

from prompts.workflows import SESSION_ID, tool_calls
from tests.conftest import app_for
from tests.support import call


def substitute(value: Any, session_id: str) -> Any:
    """The prompt's arguments with SESSION_ID replaced, exactly as the prompt tells the agent to do."""
    if value == SESSION_ID:
        return session_id
    if isinstance(value, dict):
        return {key: substitute(item, session_id) for key, item in value.items()}
    if isinstance(value, list):
        return [substitute(item, session_id) for item in value]
    return value


async def replay(client: Client, prompt: str, arguments: dict[str, str] | None = None) -> dict[str, Any]:
    """Render the prompt through MCP and run each of its tool calls in order; returns answers by step."""
    rendered = await client.get_prompt(prompt, arguments or {})
    text = rendered.messages[0].content.text
    calls = tool_calls(text)
    assert calls, f"{prompt} names no tool calls"
    assert calls[0]["tool"] == "session_create"
    answers: dict[str, Any] = {"text": text, "steps": []}
    session_id = ""
    for step in calls:
        arguments = substitute(step["arguments"], session_id)
        answer = await call(client, step["tool"], **arguments)
        if step["tool"] == "session_create":
            session_id = answer["session_id"]
        answers["steps"].append((step["tool"], arguments, answer))
    answers["session_id"] = session_id
    return answers


async def test_the_churn_workflow_followed_literally_ends_with_a_saved_analysis_and_chart(runtime):
    async with Client(app_for(runtime, "analyst").mcp) as client:
        done = await replay(client, "churn_analysis")
        session_id = done["session_id"]
        tools = [tool for tool, _, _ in done["steps"]]
        assert tools[:3] == ["session_create", "summary_snapshot", "query_database"]
        assert "analyze_data" in tools and "create_visualization" in tools
        assert (
            tools.index("analyze_data") < tools.index("create_visualization") < tools.index("session_update")
        )

        analysis = await call(client, "session_read", session_id=session_id, key="churn_by_account_type")
        chart = await call(client, "session_read", session_id=session_id, key="churn_by_account_type_chart")
        findings = await call(client, "session_read", session_id=session_id, key="findings")
        dataset = await call(client, "session_read", session_id=session_id, key="churn_customers")

    # The saved analysis agrees with plain SQL over the same customers.
    async with runtime.db.connection() as conn:
        rows = await conn.fetch(
            "SELECT account_type, count(*) AS n, count(*) FILTER (WHERE is_churned) AS churned "
            "FROM customers GROUP BY account_type"
        )
        customers = await conn.fetchval("SELECT count(*) FROM customers")
    results = analysis["value"]["results"]
    for row in rows:
        segment = results["by_segment"][row["account_type"]]
        assert segment["customers"] == row["n"]
        assert segment["churn_rate"] == pytest.approx(row["churned"] / row["n"], rel=1e-12)
    assert results["overall_churn_rate"] == pytest.approx(sum(r["churned"] for r in rows) / customers)

    # The chart is a real PNG, stored in the session: session_read gives its metadata and a link.
    stored = chart["value"]
    assert stored["format"] == "png"
    assert chart["link"]["uri"] == f"session://{session_id}/churn_by_account_type_chart"
    assert dataset["value"]["rows"] == customers
    assert findings["value"]["evidence"][-1] == "churn_by_account_type_chart"

    # The session resource lists everything the workflow saved.
    async with Client(app_for(runtime, "analyst").mcp) as client:
        contents = await client.read_resource(f"session://{session_id}")
        (picture,) = await client.read_resource(chart["link"]["uri"])
    assert base64.b64decode(picture.blob)[:8] == b"\x89PNG\r\n\x1a\n"
    described = json.loads(contents[0].text)
    keys = {item["key"]: item["kind"] for item in described["keys"]}
    assert keys["churn_by_account_type"] == "analysis"
    assert keys["churn_by_account_type_chart"] == "chart"
    assert keys["churn_customers"] == "dataset"
    assert keys["churn_drivers"] == "analysis"


@pytest.mark.parametrize(
    "prompt, arguments",
    [
        ("churn_analysis", {"segment": "age_band", "start_date": "2024-03-01", "end_date": "2025-06-30"}),
        ("churn_analysis", {"segment": "tenure_band", "focus": "segments"}),
        ("network_analysis", {}),
        ("network_analysis", {"segment": "account_type", "start_date": "2024-06-01", "focus": "churn"}),
        ("revenue_optimization", {}),
        ("revenue_optimization", {"segment": "age_band", "end_date": "2025-06-30", "focus": "arpu"}),
        ("revenue_optimization", {"focus": "retention"}),
        ("explore_dataset", {}),
        ("explore_dataset", {"table": "network_events"}),
        ("explore_dataset", {"table": "revenue"}),
    ],
)
async def test_every_call_a_workflow_names_runs_without_error(runtime, prompt, arguments):
    async with Client(app_for(runtime, "analyst").mcp) as client:
        done = await replay(client, prompt, arguments)
    last_tool, last_arguments, answer = done["steps"][-1]
    assert last_tool == "session_read"  # every workflow ends by checking its chart was stored
    assert answer["value"]["format"] == "png"
