"""The workflow prompts and docs://data_dictionary send agents to query_metrics (and metrics://main) before any
SQL, and to query_database only when no metric fits; the example they give runs, and the metrics the
dictionary names are the built-in model's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastmcp import Client

from prompts.workflows import METRICS_EXAMPLE
from resources.dictionary import NAMED_METRICS
from tests.support import call
from warehouse.models import shipped_model

PROMPTS = ["churn_analysis", "network_analysis", "revenue_optimization", "explore_dataset"]


@pytest.mark.parametrize("prompt", PROMPTS)
async def test_each_workflow_names_query_metrics_before_its_first_sql(
    prompt: str, connect: Callable[[str], Client]
) -> None:
    async with connect("analyst") as client:
        rendered = await client.get_prompt(prompt, {})
    text = rendered.messages[0].content.text  # type: ignore[union-attr]
    assert "query_metrics" in text and "metrics://main" in text
    assert text.index("query_metrics") < text.index('"query_database"')  # before the first SQL call
    assert "only when no metric" in text


async def test_the_dictionary_points_to_query_metrics_and_names_real_metrics(
    connect: Callable[[str], Client],
) -> None:
    async with connect("analyst") as client:
        (content,) = await client.read_resource("docs://data_dictionary")
    text = content.text  # type: ignore[union-attr]
    assert "## Ask with query_metrics first" in text and "metrics://main" in text
    assert text.index("query_metrics") < text.index("## customers")
    assert "Use `query_database` only when no metric" in text
    defined = shipped_model("telecom").metrics
    assert [name for name in NAMED_METRICS if name not in defined] == []
    for name in NAMED_METRICS:
        assert f"`{name}`" in text


async def test_the_example_the_prompts_give_runs_through_mcp(
    connect: Callable[[str], Client], runtime: Any
) -> None:
    async with connect("analyst") as client:
        answer = await call(client, "query_metrics", **METRICS_EXAMPLE)
    async with runtime.db.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT account_type, avg(is_churned::int)::float8 AS rate FROM customers GROUP BY account_type"
        )
    expected = {row["account_type"]: row["rate"] for row in rows}
    assert {row["account_type"]: row["churn_rate"] for row in answer["rows"]} == pytest.approx(
        expected, abs=1e-9
    )
