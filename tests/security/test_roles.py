"""One role declaration per tool, resource and prompt, enforced everywhere: the whole matrix, checked."""

from __future__ import annotations

import pytest

from mcp_server.auth import ADMIN, ANALYST, EVERYONE
from tests.conftest import app_for
from tests.support import refusal, stdio_env

# The contract's role matrix. A tool the server lists that is missing here FAILS the test:
# whoever adds a tool decides who may call it, here, on purpose.
EXPECTED_TOOL_ROLES = {
    "summary_snapshot": ANALYST,
    "generate_data": ADMIN,
    "reset_data": ADMIN,
    "query_database": ANALYST,
    "query_metrics": ANALYST,
    "get_record": ANALYST,
    "analyze_data": ANALYST,
    "create_visualization": ANALYST,
    "import_file": ANALYST,
    "describe_dataset": ANALYST,
    "load_to_table": ADMIN,
    "session_create": ANALYST,
    "session_read": EVERYONE,
    "session_list": EVERYONE,
    "session_update": ANALYST,
    "session_close": ANALYST,
    "session_extend": ANALYST,
    "session_restore": ANALYST,
    "session_delete": ADMIN,
    "session_delete_key": ANALYST,
    "session_rotate_keys": ADMIN,
    "list_sources": EVERYONE,
    "refresh_source": ADMIN,
}
# Tools the contract names: they must exist (the matrix above may list optional extras).
REQUIRED_TOOLS = {
    "summary_snapshot",
    "generate_data",
    "query_database",
    "analyze_data",
    "create_visualization",
    "session_create",
    "session_read",
    "session_update",
    "session_close",
    "session_delete",
}
EXPECTED_RESOURCE_ROLES = {
    "schema://database/main": ANALYST,
    "schema://database/main/{table}": ANALYST,
    "schema://{source}": EVERYONE,
    "metrics://{source}": ANALYST,
    "schema://{source}/{table}": EVERYONE,
    "docs://data_dictionary": ANALYST,
    "docs://{source}/data_dictionary": EVERYONE,  # the built-in database's (docs://main/...): analysts only
    "templates://analysis/{type}": ANALYST,
    "session://{session_id}": EVERYONE,
    "session://{session_id}/{key}": EVERYONE,
    "artifact://{artifact_id}": EVERYONE,
}
EXPECTED_PROMPT_ROLES = {
    "churn_analysis": ANALYST,
    "network_analysis": ANALYST,
    "revenue_optimization": ANALYST,
    "explore_dataset": ANALYST,
}


async def test_every_listed_tool_has_exactly_the_expected_roles(connect, apps):
    async with connect("admin") as client:
        listed = {tool.name for tool in await client.list_tools()}
    undeclared = sorted(listed - set(EXPECTED_TOOL_ROLES))
    assert not undeclared, f"tools without an expected role set in this test: {undeclared}"
    assert REQUIRED_TOOLS <= listed, f"contract tools missing: {sorted(REQUIRED_TOOLS - listed)}"
    roles = await apps["admin"].roles("tool")
    declared = {name: roles.get(name, frozenset()) for name in listed}
    assert declared == {name: EXPECTED_TOOL_ROLES[name] for name in listed}


async def test_every_resource_and_prompt_has_exactly_the_expected_roles(apps):
    app = apps["admin"]
    # Everything the server serves, from FastMCP's registry (no role filtering): each must be declared.
    registry = app.mcp.local_provider
    served_resources = {str(r.uri) for r in await registry.list_resources()} | {
        t.uri_template for t in await registry.list_resource_templates()
    }
    served_prompts = {p.name for p in await registry.list_prompts()}
    assert served_resources == set(EXPECTED_RESOURCE_ROLES), "a resource without an expected role set here"
    assert served_prompts == set(EXPECTED_PROMPT_ROLES), "a prompt without an expected role set here"
    assert await app.roles("resource") == EXPECTED_RESOURCE_ROLES
    assert await app.roles("prompt") == EXPECTED_PROMPT_ROLES


@pytest.mark.parametrize("user", ["admin", "analyst", "viewer"])
async def test_each_role_lists_exactly_the_resources_and_prompts_it_may_use(connect, user):
    role = {"admin": "admin", "analyst": "analyst", "viewer": "viewer"}[user]
    async with connect(user) as client:
        # Live sessions are listed too (as session://<id>, served by the session template): set aside.
        listed = {
            str(r.uri) for r in await client.list_resources() if not str(r.uri).startswith("session://")
        }
        listed |= {t.uriTemplate for t in await client.list_resource_templates()}
        prompts = {p.name for p in await client.list_prompts()}
    assert listed == {uri for uri, roles in EXPECTED_RESOURCE_ROLES.items() if role in roles}
    assert prompts == {name for name, roles in EXPECTED_PROMPT_ROLES.items() if role in roles}


@pytest.mark.parametrize("user", ["viewer", "analyst"])
async def test_each_role_lists_exactly_the_tools_it_may_call(connect, user):
    async with connect("admin") as admin:
        everything = {tool.name for tool in await admin.list_tools()}
    async with connect(user) as client:
        listed = {tool.name for tool in await client.list_tools()}
    role = "viewer" if user == "viewer" else "analyst"
    assert listed == {name for name in everything if role in EXPECTED_TOOL_ROLES[name]}


async def test_a_viewer_is_refused_every_analyst_and_admin_tool(connect):
    async with connect("admin") as admin:
        everything = sorted(tool.name for tool in await admin.list_tools())
    refused = [name for name in everything if "viewer" not in EXPECTED_TOOL_ROLES[name]]
    assert "query_database" in refused and "session_create" in refused
    async with connect("viewer") as client:
        for name in refused:
            message = await refusal(client, name)
            assert f"tool '{name}' needs role" in message and "viewer" in message


async def test_an_analyst_is_refused_every_admin_tool(connect):
    async with connect("admin") as admin:
        everything = sorted(tool.name for tool in await admin.list_tools())
    refused = [name for name in everything if EXPECTED_TOOL_ROLES[name] == ADMIN]
    assert {"generate_data", "session_delete"} <= set(refused)
    async with connect("analyst") as client:
        for name in refused:
            message = await refusal(client, name)
            assert f"tool '{name}' needs role admin" in message


async def test_a_viewer_cannot_read_analyst_resources_or_prompts(connect):
    from fastmcp.exceptions import McpError

    async with connect("viewer") as client:
        for uri in ("schema://database/main", "schema://database/main/revenue", "docs://data_dictionary"):
            with pytest.raises(McpError, match="needs role admin or analyst; your key has role viewer"):
                await client.read_resource(uri)
        for name, roles in EXPECTED_PROMPT_ROLES.items():
            assert "viewer" not in roles
            with pytest.raises(McpError, match="needs role admin or analyst; your key has role viewer"):
                await client.get_prompt(name)


async def test_a_tool_without_a_role_declaration_is_refused_to_everyone(runtime):
    app = app_for(runtime, "admin")
    app.mcp.tool(lambda: {"ok": True}, name="undeclared_probe")  # registered around App.tool: no roles
    from fastmcp import Client

    async with Client(app.mcp) as client:
        assert "undeclared_probe" not in {tool.name for tool in await client.list_tools()}
        message = await refusal(client, "undeclared_probe")
    assert message == "no tool 'undeclared_probe' is available to your key; list the tools to see yours"


async def test_a_resource_or_prompt_without_a_role_declaration_is_unlisted_and_unreachable(runtime):
    from fastmcp import Client
    from fastmcp.exceptions import McpError

    app = app_for(runtime, "admin")
    app.mcp.resource("probe://undeclared")(lambda: "secret")  # registered around App.resource
    app.mcp.prompt(name="undeclared_prompt")(lambda: "secret")
    async with Client(app.mcp) as client:
        assert "probe://undeclared" not in {str(r.uri) for r in await client.list_resources()}
        assert "undeclared_prompt" not in {p.name for p in await client.list_prompts()}
        with pytest.raises(
            McpError,
            match="no resource 'probe://undeclared'; resources: artifact://.*, docs://data_dictionary",
        ):
            await client.read_resource("probe://undeclared")
        with pytest.raises(McpError, match="no prompt 'undeclared_prompt' is available to your key"):
            await client.get_prompt("undeclared_prompt")


@pytest.mark.slow
async def test_the_stdio_caller_has_exactly_the_role_of_its_mcp_api_key(runtime, api_keys):
    """FastMCP exempts stdio from its role checks (it trusts the local process); ours still hold there."""
    import sys

    from fastmcp import Client
    from fastmcp.client.transports import StdioTransport

    env = stdio_env(runtime, api_keys, "viewer")
    command = ["-m", "mcp_server.cli", "serve", "--transport", "stdio"]
    async with Client(StdioTransport(sys.executable, command, env=env)) as client:
        tools = {tool.name for tool in await client.list_tools()}
        prompts = {prompt.name for prompt in await client.list_prompts()}
        message = await refusal(client, "query_database", query="SELECT 1")
        listed_sources = await client.call_tool("list_sources", {})
    assert tools == {name for name, roles in EXPECTED_TOOL_ROLES.items() if "viewer" in roles}
    assert prompts == set()
    assert message == "tool 'query_database' needs role admin or analyst; your key has role viewer"
    assert not listed_sources.is_error
