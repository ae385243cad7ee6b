"""The tool input schemas teach a model the choices it has, without reading a template first."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastmcp import Client

from analytics.parameters import ANALYSES


async def test_analysis_and_chart_types_are_enums_in_the_input_schema(
    connect: Callable[[str], Client[Any]],
) -> None:
    async with connect("analyst") as client:
        tools = {tool.name: tool for tool in await client.list_tools()}
    analysis = tools["analyze_data"].inputSchema["properties"]["analysis_type"]
    assert sorted(analysis["enum"]) == sorted(ANALYSES)
    chart = tools["create_visualization"].inputSchema["properties"]["chart_type"]
    assert {"bar", "line"} <= set(chart["enum"])


async def test_each_analysis_describes_its_parameters_in_the_input_schema(
    connect: Callable[[str], Client[Any]],
) -> None:
    async with connect("analyst") as client:
        tools = {tool.name: tool for tool in await client.list_tools()}
    branches = tools["analyze_data"].inputSchema["properties"]["parameters"]["anyOf"]
    by_title = {branch["description"].split("'")[1]: branch for branch in branches if "description" in branch}
    assert sorted(by_title) == sorted(ANALYSES)
    for name, analysis in ANALYSES.items():
        assert set(by_title[name]["properties"]) == set(analysis.parameters.model_fields)
    group_by = by_title["churn_rate"]["properties"]["group_by"]
    assert "account_type" in group_by.get("enum", []) or "account_type" in str(group_by)
    assert {"type": "null"} in branches  # parameters may be left out


async def test_listed_schemas_are_self_contained(connect: Callable[[str], Client[Any]]) -> None:
    """No $ref to follow in any tool's or template's schema (some clients cannot): inlined once when each
    tool is registered, with FastMCP's per-list dereferencing turned off."""
    async with connect("admin") as client:
        tools = await client.list_tools()
        templates = await client.list_resource_templates()
    schemas = [str(tool.inputSchema) for tool in tools] + [str(tool.outputSchema) for tool in tools]
    schemas += [str(template.model_dump()) for template in templates]
    assert len(tools) >= 17 and templates
    assert not [schema for schema in schemas if "$ref" in schema or "$defs" in schema]
