"""The three workflow prompts, followed word for word by the official MCP client over streamable HTTP,
cost an agent at most WORKFLOW_TEXT_BUDGET characters of tool text each, and no response nears 1 MiB."""

from __future__ import annotations

import json
from typing import Any

import pytest

from prompts.workflows import SESSION_ID, tool_calls
from tests.resources.test_workflows import substitute
from tests.support import mcp_session, serving

pytestmark = pytest.mark.http

WORKFLOW_TEXT_BUDGET = 20_000
ONE_MEBIBYTE = 1_048_576
# The text each workflow returned before answers were made lean (5,000 demo customers, docs/benchmarks.md).
BEFORE = {"churn_analysis": 70_754, "revenue_optimization": 78_612, "network_analysis": 136_210}


async def _replay(session: Any, prompt: str) -> tuple[int, int, list[tuple[str, int]]]:
    """(text characters, largest response in bytes, per step) of one workflow followed literally."""
    rendered = await session.get_prompt(prompt, {})
    calls = tool_calls(rendered.messages[0].content.text)
    session_id, text_total, largest, steps = SESSION_ID, 0, 0, []
    for step in calls:
        arguments = substitute(step["arguments"], session_id)
        result = await session.call_tool(step["tool"], arguments)
        assert not result.is_error, f"{prompt}: {step['tool']} failed: {result.content[0].text[:300]}"
        if step["tool"] == "session_create":
            session_id = result.structured_content["session_id"]
        text = sum(len(block.text) for block in result.content if getattr(block, "text", None))
        size = len(json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True)))
        text_total, largest = text_total + text, max(largest, size)
        steps.append((step["tool"], text))
    return text_total, largest, steps


@pytest.mark.parametrize("prompt", sorted(BEFORE))
async def test_each_workflow_costs_an_agent_at_most_twenty_thousand_characters(runtime, api_keys, prompt):
    async with serving(runtime) as url, mcp_session(url, {"X-API-Key": api_keys["analyst"]}) as session:
        text, largest, steps = await _replay(session, prompt)
    print(
        f"\n{prompt}: {text:,} characters of tool text (before: {BEFORE[prompt]:,}); largest response {largest:,} bytes"
    )
    assert largest < ONE_MEBIBYTE
    assert text <= WORKFLOW_TEXT_BUDGET, steps
