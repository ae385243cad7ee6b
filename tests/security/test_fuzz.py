"""Property-based fuzzing (hypothesis): every tool, driven with random and hostile arguments (wrong types,
huge strings, unicode, nulls, deep nesting, made-up parameters), answers with a clean result or a clean
one-line tool error, never a crash, an internal error or a traceback, and the server keeps serving.

The fuzzed server has a database and Redis prefix of its own: destructive admin tools (generate_data,
session_delete, load_to_table) may succeed on a lucky draw without touching other tests' data.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import app_for
from tests.support import call

EXAMPLES_PER_TOOL = 12
# The same examples on every run, so the shared suite never flakes on a new draw; FUZZ_RANDOM=1 explores
# fresh ones (a failure prints the example that caused it).
DERANDOMIZE = not os.environ.get("FUZZ_RANDOM")
ROOT = str(Path(__file__).resolve().parents[2])

# Integers at the edges of every range a tool accepts, plus small ones that are sometimes valid. (No
# uniform draw over the whole range: a valid generate_data(customers=1_900_000) would be a benchmark.)
integers = st.integers(-3, 50) | st.sampled_from([-(2**63), -1, 2**31, 2**53 + 1, 2**63, 10**30, 3_000_000])
HOSTILE_TEXT = [
    "",
    " ",
    "database",
    "churn_rate",
    "customers",
    "bar",
    "png",
    "read",
    "write",
    "'; DROP TABLE customers; --",
    "SELECT 1; DROP TABLE customers",
    "SELECT * FROM mcp_internal.audit_log",
    "SELECT pg_read_file('/etc/passwd')",
    "COPY customers TO PROGRAM 'id'",
    "%(x)s",
    "{x}",
    "{{7*7}}",
    "../../../../etc/passwd",
    "/etc/passwd",
    "C:\\Windows\\win.ini",
    "\x00",
    "a\x00b",
    "\u202egnp.exe",
    "\ud7ff\ufffd\U0010ffff",
    "💥" * 500,
    "null",
    "NaN",
    "-1",
    "1e309",
    "00000000-0000-4000-8000-000000000000",
    "<script>alert(1)</script>",
]
huge_text = st.integers(100_000, 400_000).map(lambda size: "x" * size)  # short to print, 0.1-0.4 MB to send
texts = st.sampled_from(HOSTILE_TEXT) | st.text(max_size=40) | huge_text
leaves = (
    st.none()
    | st.booleans()
    | integers
    | st.floats(allow_nan=True, allow_infinity=True)
    | texts
    | st.binary(max_size=20).map(lambda raw: raw.decode("latin-1"))
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    value: Any = "deep"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


# Up to the depth the MCP client itself can serialise (~250); the server refuses anything past 64 levels.
hostile = values | st.integers(20, 240).map(nested)


@pytest.fixture(scope="module")
async def fuzzed(make_runtime, runtime):
    """An admin's server on a database and Redis prefix of its own, with one real session to aim at."""
    prefix = f"{runtime.settings.redis_key_prefix}fuzz-{uuid.uuid4().hex[:8]}:"
    async with make_runtime(
        customers=40, seed=31, redis_key_prefix=prefix, call_timeout_seconds=20, schema_cache_seconds=0
    ) as rt:
        app = app_for(rt, "admin")
        async with Client(app.mcp) as client:
            created = await call(client, "session_create", data_source="database")
            await call(
                client,
                "query_database",
                query="SELECT customer_id, age, is_churned FROM customers",
                session_id=created["session_id"],
                save_as="sample",
            )
            tools = {tool.name: tool.inputSchema for tool in await client.list_tools()}
        yield app, tools, created["session_id"]


def arguments_for(schema: dict[str, Any], session_id: str) -> st.SearchStrategy[dict[str, Any]]:
    """Arguments shaped like the tool's own (its parameter names, some left out) with hostile values,
    sometimes a real session id or a made-up parameter, or a wholly random object."""
    names = sorted(schema.get("properties", {}))
    value = hostile | st.just(session_id) | st.just({"session_id": session_id, "dataset": "sample"})
    shaped = st.fixed_dictionaries({}, optional={name: value for name in names})
    made_up = st.dictionaries(texts.filter(lambda name: name not in names), hostile, max_size=2)
    return st.one_of(
        shaped,
        st.tuples(shaped, made_up).map(lambda pair: {**pair[0], **pair[1]}),
        st.dictionaries(texts, hostile, max_size=3),
    )


def assert_clean(tool: str, arguments: dict[str, Any], result: Any) -> None:
    shown = json.dumps(arguments, default=str)[:300]
    if not result.is_error:
        assert isinstance(result.structured_content, dict), f"{tool}({shown}) answered no JSON object"
        return
    texts_ = [getattr(block, "text", None) for block in result.content]
    assert len(texts_) == 1 and isinstance(texts_[0], str), f"{tool}({shown}): {result.content!r}"
    message = texts_[0]
    assert message.strip(), f"{tool}({shown}): empty error"
    assert "\n" not in message, f"{tool}({shown}): error is not one line: {message[:500]!r}"
    for leak in ("Traceback", 'File "', "internal error", ROOT, "postgresql://", "redis://"):
        assert leak not in message, f"{tool}({shown}): {leak!r} in {message[:500]!r}"
    assert len(message) <= 2_000, f"{tool}({shown}): a {len(message):,}-character error echoes its input"


# The tools this file knows by name (each fuzzed on its own); tools added later are fuzzed too, by the
# NEWER_TOOLS case, until someone adds them here.
FUZZED_TOOLS = (
    "summary_snapshot",
    "generate_data",
    "query_database",
    "analyze_data",
    "create_visualization",
    "import_file",
    "describe_dataset",
    "load_to_table",
    "session_create",
    "session_read",
    "session_list",
    "session_update",
    "session_close",
    "session_extend",
    "session_restore",
    "session_delete",
    "session_rotate_keys",
)
NEWER_TOOLS = "<any other tool the server lists>"


async def test_the_fuzz_reaches_every_tool_the_server_lists(fuzzed):
    _, tools, _ = fuzzed
    assert {"query_database", "analyze_data", "create_visualization", "session_update"} <= set(tools)
    assert set(FUZZED_TOOLS) <= set(tools), f"no longer listed: {sorted(set(FUZZED_TOOLS) - set(tools))}"


@pytest.mark.slow
@pytest.mark.parametrize("tool", [*FUZZED_TOOLS, NEWER_TOOLS])
@settings(
    max_examples=EXAMPLES_PER_TOOL,
    deadline=None,
    database=None,
    derandomize=DERANDOMIZE,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
async def test_every_tool_answers_random_and_hostile_arguments_cleanly(fuzzed, tool, data):
    app, tools, session_id = fuzzed
    if tool == NEWER_TOOLS:
        newer = sorted(set(tools) - set(FUZZED_TOOLS))
        if not newer:
            return
        tool = data.draw(st.sampled_from(newer), label="tool")
    arguments = data.draw(arguments_for(tools[tool], session_id), label="arguments")
    async with Client(app.mcp) as client:
        result = await client.call_tool(tool, arguments, raise_on_error=False)
        assert_clean(tool, arguments, result)
        # The server keeps serving after whatever it was just sent.
        still = await client.call_tool("summary_snapshot", {}, raise_on_error=False)
        assert not still.is_error, still.content


# Raw HTTP, where the MCP client cannot go: bodies that are not JSON, not JSON-RPC, or nested past
# any parser's comfort. Each gets a 4xx or a clean JSON-RPC answer, never a 5xx or a traceback.
def _call(arguments: bytes, name: bytes = b'"summary_snapshot"') -> bytes:
    return (
        b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":'
        + name
        + b',"arguments":'
        + arguments
        + b"}}"
    )


HOSTILE_BODIES = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"[1, 2, 3]",
    b'"text"',
    b"\xff\xfe\x00\x00",
    b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":null}',
    b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":123}}',
    b'{"jsonrpc":"2.0","id":{"a":[1]},"method":"tools/call","params":{"name":"summary_snapshot"}}',
    b'{"jsonrpc":"2.0","id":9,"method":"' + b"x" * 20_000 + b'"}',
    _call(b'"SELECT 1"', b'"query_database"'),
    _call(b"[" * 20_000 + b"]" * 20_000, b'"analyze_data"'),
    _call(b'{"a":' * 5_000 + b"1" + b"}" * 5_000),
    b'{"jsonrpc":"2.0","id":9,"method":"tools/list","params":{"cursor":'
    + b"[" * 20_000
    + b"]" * 20_000
    + b"}}",
    _call(b'{"query":"SELECT 1e999","parameters":{"x":1e999}}', b'"query_database"'),
    _call(b'{"session_id":"\\ud800","key":"\\u0000"}', b'"session_read"'),
    _call(
        b'{"data":{"x":[' + b",".join([b"1"] * 50_000) + b']},"chart_type":"bar"}', b'"create_visualization"'
    ),
]


@pytest.mark.http
async def test_hostile_raw_http_bodies_get_clean_answers_and_the_server_keeps_serving(runtime, api_keys):
    import httpx

    from tests.support import mcp_session, serving

    headers = {
        "X-API-Key": api_keys["analyst"],
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
    }
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "fuzz", "version": "0"},
        },
    }
    async with serving(runtime) as url, httpx.AsyncClient(timeout=60) as http:
        opened = await http.post(f"{url}/mcp", headers=headers, json=initialize)
        assert opened.status_code == 200, opened.text
        session = (
            {"mcp-session-id": opened.headers["mcp-session-id"]} if "mcp-session-id" in opened.headers else {}
        )
        await http.post(
            f"{url}/mcp",
            headers={**headers, **session},
            json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        )
        for body in HOSTILE_BODIES:
            response = await http.post(f"{url}/mcp", headers={**headers, **session}, content=body)
            shown = body[:80]
            assert response.status_code < 500, f"{shown!r}: {response.status_code} {response.text[:300]}"
            for leak in ("Traceback", ROOT, "postgresql://", "redis://"):
                assert leak not in response.text, f"{shown!r}: {leak!r} in {response.text[:300]!r}"
        async with mcp_session(url, {"X-API-Key": api_keys["analyst"]}) as still:
            assert not (await still.call_tool("summary_snapshot", {})).is_error
