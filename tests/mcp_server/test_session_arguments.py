"""One rule for a session id and one for a key name, in every tool that takes them: the same JSON schema
and the same one-line refusal, before any work is done."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastmcp import Client

from tests.support import refusal

KEY_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
KEY_ARGUMENTS = {"key", "save_as", "dataset"}
NOT_YET = {"create_visualization"}  # takes sessions.access.SessionId / KeyName with its rework
# Where `dataset` names a demo dataset to generate, reset or summarise, not a key in a session.
DEMO_DATASET_TOOLS = {"generate_data", "reset_data", "summary_snapshot"}


def _branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The string branch of an optional argument's schema (anyOf [..., null])."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            return branch
    raise AssertionError(f"no string branch in {schema}")


async def test_every_session_id_and_key_name_argument_has_the_same_schema(
    connect: Callable[[str], Client[Any]],
) -> None:
    async with connect("admin") as client:
        tools = await client.list_tools()
    seen_ids, seen_keys = [], []
    for tool in tools:
        if tool.name in NOT_YET:
            continue
        for name, schema in tool.inputSchema["properties"].items():
            if name == "session_id":
                seen_ids.append(tool.name)
                assert _branch(schema).get("format") == "uuid", tool.name
            elif name == "dataset" and tool.name in DEMO_DATASET_TOOLS:
                assert set(_branch(schema)["enum"]) == {"telecom", "shop"}, tool.name
            elif name == "key" and tool.name == "get_record":
                continue  # the key of a database record, not of a session
            elif name in KEY_ARGUMENTS:
                seen_keys.append(tool.name)
                assert _branch(schema).get("pattern") == KEY_PATTERN, (tool.name, name)
    assert {"query_database", "analyze_data", "session_read", "import_file"} <= set(seen_ids)
    assert {"query_database", "analyze_data", "session_update", "import_file"} <= set(seen_keys)


async def test_a_malformed_session_id_or_key_gets_the_same_one_line_refusal_from_every_tool(
    connect: Callable[[str], Client[Any]],
) -> None:
    good = "0b9f4c1e-2d3a-4e5f-8a6b-7c8d9e0f1a2b"
    async with connect("analyst") as client:
        bad_ids = [
            await refusal(client, "query_database", query="SELECT 1", session_id="nope", save_as="x"),
            await refusal(
                client,
                "analyze_data",
                data_source="database",
                analysis_type="churn_rate",
                session_id="nope",
                save_as="x",
            ),
            await refusal(client, "session_read", session_id="nope", key="x"),
        ]
        bad_keys = [
            await refusal(client, "query_database", query="SELECT 1", session_id=good, save_as="_x"),
            await refusal(
                client,
                "analyze_data",
                data_source="database",
                analysis_type="churn_rate",
                session_id=good,
                save_as="_x",
            ),
            await refusal(client, "session_update", session_id=good, key="_x", value=1),
        ]
    for message in bad_ids:
        assert "session_id 'nope' is not a session id" in message, message
    for message in bad_keys:
        assert "key '_x' is not a valid key name" in message, message
