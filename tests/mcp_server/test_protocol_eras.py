"""Both protocol eras: the 2025-11-25 era (initialize handshake, Mcp-Session-Id) and the 2026-07-28 era
(server/discover, every request stateless), each driven by an official client over real streamable HTTP,
over stdio and through FastMCP's in-memory client. Nothing of ours may use a feature 2026-07-28 deprecates.
"""

from __future__ import annotations

import ast
import json
import sys
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastmcp
import httpx
import httpx2
import pytest
from fastmcp import Client as FastMCPClient
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from tests.conftest import SEED_CUSTOMERS
from tests.security.conftest import instance
from tests.support import call, refusal, serving, stdio_env

LEGACY = "2025-11-25"
MODERN = "2026-07-28"
# How an official client is told to speak each era: the handshake, or `auto`, which probes server/discover.
CLIENT_MODE = {LEGACY: "legacy", MODERN: "auto"}
ERAS = [LEGACY, MODERN]

ROOT = Path(__file__).resolve().parents[2]
OUR_PACKAGES = ["mcp_server", "analytics", "sessions", "warehouse", "resources", "prompts", "importers"]


@dataclass
class Wire:
    """What crossed the wire: each request's JSON-RPC method and headers, each response's headers."""

    methods: list[str] = field(default_factory=list)
    request_headers: list[dict[str, str]] = field(default_factory=list)
    response_headers: list[dict[str, str]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)  # the HTTP status that answered each method
    log_messages: list[Any] = field(default_factory=list)


@asynccontextmanager
async def official_client(url: str, headers: dict[str, str], era: str, wire: Wire) -> AsyncIterator[Client]:
    """The MCP SDK's own client over streamable HTTP, speaking `era`, recording the wire."""

    async def on_request(request: httpx2.Request) -> None:
        if request.method == "POST" and request.content:
            wire.methods.append(json.loads(request.content).get("method", "<response>"))
            wire.request_headers.append({k.lower(): v for k, v in request.headers.items()})

    async def on_response(response: httpx2.Response) -> None:
        wire.response_headers.append({k.lower(): v for k, v in response.headers.items()})
        if response.request.method == "POST" and response.request.content:
            wire.statuses.append(response.status_code)  # one per entry of `methods`

    async def on_log(params: Any) -> None:
        wire.log_messages.append(params)

    async with httpx2.AsyncClient(
        headers=headers, timeout=30, event_hooks={"request": [on_request], "response": [on_response]}
    ) as http:
        transport = streamable_http_client(f"{url}/mcp", http_client=http)
        async with Client(transport, mode=CLIENT_MODE[era], logging_callback=on_log) as client:
            yield client


@pytest.fixture(scope="module", params=[False, True], ids=["stateful", "stateless"])
def stateless_http(request):
    """The server as `make run` serves it (sessions), and as compose does (FASTMCP_STATELESS_HTTP=true)."""
    return request.param


@pytest.fixture(scope="module")
async def base_url(runtime, stateless_http):
    previous = fastmcp.settings.stateless_http
    fastmcp.settings.stateless_http = stateless_http  # read once, when the HTTP app is built
    try:
        async with serving(runtime) as url:
            fastmcp.settings.stateless_http = previous
            yield url
    finally:
        fastmcp.settings.stateless_http = previous


@pytest.fixture
def deprecation_warnings():
    """MCPDeprecationWarnings raised while the test runs (the server runs in this process): the SDK raises
    one whenever a server sends a log message, asks for sampling or roots, and the like."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MCPDeprecationWarning)
        yield caught


def _deprecated(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, MCPDeprecationWarning)]


# --- the 2025-11-25 era and the 2026-07-28 era over streamable HTTP ---------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_each_era_negotiates_its_own_protocol_version_over_http(
    base_url, stateless_http, api_keys, era
):
    wire = Wire()
    async with official_client(base_url, {"X-API-Key": api_keys["analyst"]}, era, wire) as client:
        assert client.protocol_version == era
        assert client.server_info is not None and client.server_info.name == "analytics-mcp"
        await client.list_tools()
    if era == LEGACY:
        assert wire.methods[0] == "initialize"
        assert "server/discover" not in wire.methods
        session_ids = {h["mcp-session-id"] for h in wire.response_headers if "mcp-session-id" in h}
        if stateless_http:
            assert session_ids == set(), "a stateless server hands out no session"
        else:
            assert len(session_ids) == 1, "one MCP session for the whole conversation"
            assert wire.request_headers[-1]["mcp-session-id"] in session_ids
    else:
        assert wire.methods[0] == "server/discover"
        assert "initialize" not in wire.methods and "notifications/initialized" not in wire.methods
        assert not any("mcp-session-id" in h for h in wire.response_headers), "no session at 2026-07-28"
        assert not any("mcp-session-id" in h for h in wire.request_headers)
        assert all(h.get("mcp-protocol-version") == MODERN for h in wire.request_headers)


@pytest.mark.parametrize("era", ERAS)
async def test_each_era_lists_calls_reads_and_gets_prompts_over_http(
    base_url, api_keys, era, deprecation_warnings
):
    wire = Wire()
    async with official_client(
        base_url, {"Authorization": f"Bearer {api_keys['analyst']}"}, era, wire
    ) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert {"summary_snapshot", "query_database", "analyze_data"} <= tools

        snapshot = await client.call_tool("summary_snapshot", {})
        assert not snapshot.is_error, snapshot.content
        assert snapshot.structured_content["tables"]["customers"]["rows"] == SEED_CUSTOMERS

        counted = await client.call_tool(
            "query_database",
            {"query": "SELECT count(*) AS n FROM customers WHERE age >= %(age)s", "parameters": {"age": 0}},
        )
        assert not counted.is_error, counted.content
        assert counted.structured_content["rows"] == [{"n": SEED_CUSTOMERS}]

        schema = await client.read_resource("schema://database/main")
        assert "customers" in schema.contents[0].text and "network_events" in schema.contents[0].text

        prompt = await client.get_prompt("churn_analysis", {})
        assert "churn" in prompt.messages[0].content.text.lower()

        resources = {str(r.uri) for r in (await client.list_resources()).resources}
        assert "schema://database/main" in resources
    # Nothing of ours sent a log message or used another deprecated feature, in either era.
    assert wire.log_messages == []
    assert _deprecated(deprecation_warnings) == []


@pytest.mark.parametrize("era", ERAS)
async def test_each_era_gets_one_line_refusals_over_http(base_url, api_keys, era):
    async with official_client(base_url, {"X-API-Key": api_keys["analyst"]}, era, Wire()) as client:
        refused = await client.call_tool("query_database", {"query": "DELETE FROM customers"})
    assert refused.is_error
    text = refused.content[0].text
    assert "\n" not in text and "Traceback" not in text
    assert text.startswith("only SELECT queries are allowed")

    async with official_client(base_url, {"X-API-Key": api_keys["viewer"]}, era, Wire()) as client:
        assert "summary_snapshot" not in {tool.name for tool in (await client.list_tools()).tools}
        forbidden = await client.call_tool("summary_snapshot", {})
    assert forbidden.is_error
    text = forbidden.content[0].text
    assert "\n" not in text and "viewer" in text


@pytest.mark.parametrize("era", ERAS)
@pytest.mark.parametrize("key", [None, "wrong-key"])
async def test_each_eras_opening_request_without_a_valid_key_gets_401(base_url, era, key):
    headers = {"Accept": "application/json, text/event-stream"}
    if key is not None:
        headers["X-API-Key"] = key
    if era == LEGACY:
        opening = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    else:
        headers.update({"MCP-Protocol-Version": MODERN, "Mcp-Method": "server/discover"})
        envelope = {
            "io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientCapabilities": {},
        }
        opening = {"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": envelope}}
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{base_url}/mcp", headers=headers, json=opening)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_a_2026_07_28_request_is_authenticated_on_its_own(base_url, api_keys):
    """No session carries a key forward: each stateless request is checked, and a viewer's is a viewer's."""
    async with official_client(base_url, {"X-API-Key": api_keys["analyst"]}, MODERN, Wire()) as client:
        assert not (await client.call_tool("summary_snapshot", {})).is_error
    async with official_client(base_url, {"X-API-Key": api_keys["viewer"]}, MODERN, Wire()) as client:
        assert (await client.call_tool("summary_snapshot", {})).is_error
    wire = Wire()
    with pytest.raises((MCPError, ExceptionGroup)):  # the SDK's MCPError, wrapped by its task groups
        async with official_client(base_url, {"X-API-Key": "wrong-key"}, MODERN, wire) as client:
            await client.call_tool("summary_snapshot", {})
    assert wire.methods[0] == "server/discover"
    assert wire.statuses and set(wire.statuses) == {401}, "every request the client tried was refused"


@pytest.mark.parametrize("era", ERAS)
async def test_an_analysis_session_outlives_the_connection_that_opened_it_in_each_era(
    base_url, api_keys, era
):
    """Our sessions live in Redis under the caller's key, not in an MCP session: a dataset saved on one
    connection (or, at 2026-07-28, one stateless request) is there for the next."""
    headers = {"X-API-Key": api_keys["analyst"]}
    async with official_client(base_url, headers, era, Wire()) as client:
        opened = await client.call_tool("session_create", {"data_source": "database"})
        session_id = opened.structured_content["session_id"]
        saved = await client.call_tool(
            "query_database",
            {
                "query": "SELECT account_type, count(*) AS n FROM customers GROUP BY 1",
                "session_id": session_id,
                "save_as": "by_account_type",
            },
        )
        assert not saved.is_error, saved.content
    async with official_client(base_url, headers, era, Wire()) as client:
        read = await client.call_tool("session_read", {"session_id": session_id, "key": "by_account_type"})
        assert not read.is_error, read.content
        resource = await client.read_resource(f"session://{session_id}/by_account_type")
        assert resource.contents
    preview = read.structured_content["value"]["preview"]
    assert sum(row["n"] for row in preview) == SEED_CUSTOMERS


@pytest.mark.parametrize("era", ERAS)
async def test_the_rate_limit_counts_a_keys_calls_in_each_era(runtime, api_keys, era):
    """Counted per key, not per MCP session: at 2026-07-28 every request would be a session of its own."""
    limited = instance(
        runtime,
        f"{runtime.settings.redis_key_prefix}eras-{uuid.uuid4().hex[:8]}:",
        rate_limit_per_minute=3,
        rate_limit_window_seconds=30,
    )
    async with serving(limited) as url:
        async with official_client(url, {"X-API-Key": api_keys["analyst"]}, era, Wire()) as client:
            await client.list_tools()
            for _ in range(2):
                assert not (await client.call_tool("summary_snapshot", {})).is_error
        # A new connection (at 2026-07-28 every request is one) starts no new budget.
        wire = Wire()
        async with official_client(url, {"X-API-Key": api_keys["analyst"]}, era, wire) as client:
            with pytest.raises(MCPError) as refused:
                await client.call_tool("summary_snapshot", {})
    assert wire.methods[-1] == "tools/call" and wire.statuses[-1] == 429
    # The client shows the server's own line (a JSON-RPC error body), not a generic failure.
    assert "calls per" in str(refused.value) and "retry after" in str(refused.value)


@pytest.mark.parametrize("era", ERAS)
async def test_lists_in_either_era_are_never_cached_for_other_keys(base_url, api_keys, era):
    """Lists are filtered by the caller's role: a 2026-07-28 cache hint must not let a shared cache serve
    the admin's tool list to a viewer."""
    async with official_client(base_url, {"X-API-Key": api_keys["viewer"]}, era, Wire()) as client:
        listed = await client.list_tools()
    assert getattr(listed, "cache_scope", None) in (None, "private")


async def test_progress_notifications_reach_a_client_of_each_era(make_runtime, api_keys):
    """generate_data reports progress: on 2026-07-28 it rides the request's own response stream."""
    async with make_runtime(customers=None) as runtime, serving(runtime) as url:
        for era in ERAS:
            seen: list[tuple[float, float | None, str | None]] = []

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append((progress, total, message))  # noqa: B023 - awaited within this iteration

            async with official_client(url, {"X-API-Key": api_keys["admin"]}, era, Wire()) as client:
                result = await client.call_tool(
                    "generate_data", {"customers": 30, "seed": 7}, progress_callback=on_progress
                )
            assert not result.is_error, result.content
            assert seen, f"no progress notification reached the {era} client"
            assert seen[-1][0] == seen[-1][1] == result.structured_content["rows"]


# --- stdio ------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("era", ERAS)
async def test_each_era_is_served_over_stdio(runtime, api_keys, era):
    env = stdio_env(runtime, api_keys, "analyst")
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server.cli", "serve", "--transport", "stdio"], env=env
    )
    async with Client(server, mode=CLIENT_MODE[era]) as client:
        assert client.protocol_version == era
        result = await client.call_tool("query_database", {"query": "SELECT count(*) AS n FROM customers"})
    assert not result.is_error, result.content
    assert result.structured_content["rows"] == [{"n": SEED_CUSTOMERS}]


# --- FastMCP's in-memory client ---------------------------------------------------------------------


@pytest.mark.parametrize("era", ERAS)
async def test_fastmcp_in_memory_client_is_served_in_each_era(apps, era, deprecation_warnings):
    logged: list[Any] = []

    async def on_log(message: Any) -> None:
        logged.append(message)

    async with FastMCPClient(apps["analyst"].mcp, mode=CLIENT_MODE[era], log_handler=on_log) as client:
        assert client.protocol_version == era
        assert "query_database" in {tool.name for tool in await client.list_tools()}
        snapshot = await call(client, "summary_snapshot")
        assert snapshot["tables"]["customers"]["rows"] == SEED_CUSTOMERS
        counted = await call(client, "query_database", query="SELECT count(*) AS n FROM revenue")
        assert counted["rows"][0]["n"] > 0
        schema = await client.read_resource("schema://database/main")
        assert "customers" in schema[0].text
        prompt = await client.get_prompt("explore_dataset", {})
        assert prompt.messages
        text = await refusal(client, "query_database", query="DROP TABLE customers")
        assert "SELECT" in text
    async with FastMCPClient(apps["viewer"].mcp, mode=CLIENT_MODE[era]) as client:
        assert "viewer" in await refusal(client, "query_database", query="SELECT 1")
    assert logged == []
    assert _deprecated(deprecation_warnings) == []


# --- no deprecated feature in our code --------------------------------------------------------------

# What a FastMCP Context offers that 2026-07-28 deprecates (logging, sampling, roots) or that only means
# something while a session lasts (its id, its per-session state): a 2026-07-28 request has no session.
DEPRECATED_CONTEXT_USES = frozenset(
    {
        "log",
        "debug",
        "info",
        "warning",
        "error",
        "sample",
        "sample_step",
        "list_roots",
        "session",
        "session_id",
        "get_state",
        "set_state",
        "delete_state",
        "send_log_message",
        "create_message",
    }
)
DEPRECATED_WIRE_NAMES = (
    "notifications/message",
    "logging/setlevel",
    "sampling/createmessage",
    "roots/list",
    "resources/subscribe",
    "mcp-session-id",
)


def deprecated_uses(source: str, filename: str = "<source>") -> list[str]:
    """Where `source` uses a deprecated MCP feature: a Context's log/sample/roots/session methods (on a
    parameter annotated Context, `ctx`, or a middleware's `fastmcp_context`), or a deprecated wire name."""
    found = []
    tree = ast.parse(source, filename)
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        arguments = function.args.posonlyargs + function.args.args + function.args.kwonlyargs
        contexts = {"ctx"} | {
            a.arg
            for a in arguments
            if a.annotation is not None
            and any(
                isinstance(n, (ast.Name, ast.Attribute))
                and getattr(n, "id", getattr(n, "attr", "")) == "Context"
                for n in ast.walk(a.annotation)
            )
        }
        for node in ast.walk(function):
            if not isinstance(node, ast.Attribute) or node.attr not in DEPRECATED_CONTEXT_USES:
                continue
            base = node.value
            if (isinstance(base, ast.Name) and base.id in contexts) or (
                isinstance(base, ast.Attribute) and base.attr == "fastmcp_context"
            ):
                found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    prose = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}  # docstrings
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            for name in DEPRECATED_WIRE_NAMES:
                if name in node.value.lower():
                    found.append(f"{filename}:{node.lineno}: {name!r}")
    return sorted(set(found))


def test_our_code_uses_no_feature_the_2026_07_28_revision_deprecates():
    found = []
    for package in OUR_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found += deprecated_uses(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    problems = "; ".join(found)
    assert found == [], f"uses of deprecated MCP features (logging, sampling, roots, sessions): {problems}"


def test_the_deprecated_feature_scan_finds_each_kind_of_use():
    source = '''
async def tool(ctx: Context, frame):
    await ctx.info("loaded")
    frame.sample(3)          # pandas, not MCP sampling
    log.info("fine")         # our own log, not a message to the client

async def other(context: fastmcp.Context):
    return await context.sample("summarise")

async def on_call_tool(self, context, call_next):
    key = context.fastmcp_context.session_id
    """A docstring may name Mcp-Session-Id."""
    header = "Mcp-Session-Id"
'''
    found = deprecated_uses(source)
    assert sorted(line.split(": ", 1)[1] for line in found) == [
        "'mcp-session-id'",
        "context.fastmcp_context.session_id",
        "context.sample",
        "ctx.info",
    ]
