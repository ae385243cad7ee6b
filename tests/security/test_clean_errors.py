"""Odd inputs get a one-line answer, never "internal error"; every log line is JSON without agent input;
summary_snapshot shows a caller only its own activity."""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import uuid

import pytest
from fastmcp import Client
from mcp.types import TextResourceContents

from mcp_server import logs
from tests.conftest import app_for
from tests.security.conftest import instance
from tests.support import call, error_text, refusal

INTERNAL = "internal error"


def json_lines(text: str) -> list[dict]:
    """Every non-empty line parsed as a JSON object (fails the test on the first one that is not)."""
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"log line is not JSON: {line[:300]!r}") from None
        assert isinstance(parsed, dict), line[:300]
        found.append(parsed)
    return found


def assert_clean_log(text: str, *markers: str) -> list[dict]:
    """JSON lines only, no marker of the agent's input anywhere, no error-level line (nothing here is a fault)."""
    lines = json_lines(text)
    for marker in markers:
        assert marker not in text, f"agent input {marker!r} reached the log"
    faults = [line for line in lines if line["level"] in ("error", "critical")]
    assert faults == [], faults
    return lines


async def read_error(client: Client, uri: str) -> str | None:
    """The one-line error of a resource read, or None when it was served."""
    try:
        contents = await client.read_resource(uri)
    except Exception as error:  # noqa: BLE001 - the MCP error the client raises for a failed read
        text = str(error)
        assert "\n" not in text and "Traceback" not in text, text
        return text
    assert contents and isinstance(contents[0], TextResourceContents)
    return None


async def assert_still_serving(client: Client) -> None:
    answer = await call(client, "query_database", query="SELECT customer_id FROM customers LIMIT 1")
    assert len(answer["rows"]) == 1


# --- the inputs from the issue -----------------------------------------------------------------


async def test_a_placeholder_glued_to_a_name_is_refused_in_one_line_naming_it(runtime, captured_logs):
    alias, value = f"glued{secrets.token_hex(4)}", f"VAL{secrets.token_hex(6)}"
    async with Client(app_for(runtime, "analyst").mcp) as client:
        message = await refusal(
            client, "query_database", query=f"SELECT 1 AS {alias}%(a)s", parameters={"a": value}
        )
        assert "%(a)s" in message and "glued" in message and INTERNAL not in message
        # The same placeholder written apart from the name is a value, as intended.
        spaced = await call(
            client, "query_database", query=f"SELECT %(a)s::text AS {alias}", parameters={"a": value}
        )
        assert spaced["rows"] == [{alias: value}]
        await assert_still_serving(client)
    assert_clean_log(captured_logs.getvalue(), value, f"{alias}%")


async def test_anyarray_columns_of_pg_stats_are_served_as_postgresql_text(runtime, captured_logs):
    async with runtime.db.connection() as conn:
        await conn.execute("ANALYZE customers")  # statistics only; no row changes
        expected = await conn.fetchval(
            "SELECT most_common_vals::text FROM pg_stats "
            "WHERE schemaname = 'public' AND tablename = 'customers' AND attname = 'account_type'"
        )
    assert expected and expected.startswith("{")
    async with Client(app_for(runtime, "analyst").mcp) as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT attname, most_common_vals, histogram_bounds FROM pg_stats "
            "WHERE tablename = 'customers' AND attname = 'account_type'",
        )
        assert answer["rows"] == [
            {"attname": "account_type", "most_common_vals": expected, "histogram_bounds": None}
        ]
        assert answer["column_types"]["most_common_vals"] == "anyarray"
        # Other pseudo-typed columns asyncpg has no codec for read the same way.
        nulls = await call(
            client, "query_database", query="SELECT NULL::anyelement AS e, NULL::anyrange AS r"
        )
        assert nulls["rows"] == [{"e": None, "r": None}]
        await assert_still_serving(client)
    assert_clean_log(captured_logs.getvalue())


async def test_resource_uris_with_dot_dot_or_extra_segments_get_one_line_not_found(runtime, captured_logs):
    marker = f"mk{secrets.token_hex(5)}"
    uris = [
        f"session://../{marker}",
        f"session://{marker}/..",
        f"templates://analysis/../{marker}",
        f"templates://analysis/{marker}/x",
        f"templates://analysis/%2e%2e%2F{marker}",
        f"schema://database/main/../../{marker}",
        f"schema://database/main/{marker}%2F..%2F..",
        f"schema://database/main/..%2F{marker}",
        f"data://..%2F..%2F{marker}",
    ]
    async with Client(app_for(runtime, "analyst").mcp) as client:
        for uri in uris:
            message = await read_error(client, uri)
            assert message is not None, f"{uri} was served"
            assert INTERNAL not in message and ("no resource" in message or "no analysis type" in message), (
                uri,
                message,
            )
        assert await read_error(client, "schema://database/main/customers") is None
        await assert_still_serving(client)
    assert_clean_log(captured_logs.getvalue(), marker)


# --- logs ---------------------------------------------------------------------------------------


def test_a_library_log_line_keeps_its_shape_but_not_the_values_in_it():
    marker = f"mk{secrets.token_hex(5)}"
    formatter, redactor = logs.JsonFormatter(), logs.RedactSecrets()
    records = [
        logging.LogRecord(
            "fastmcp.server.server", 40, __file__, 1, f"Error reading resource 'x://{marker}'", None, None
        ),
        logging.LogRecord(
            "fastmcp.server.server",
            30,
            __file__,
            1,
            "Invalid arguments for tool %r: %s",
            (marker, {"n": 1}),
            None,
        ),
        logging.LogRecord(
            "mcp.server.streamable_http", 40, __file__, 1, f"Session {marker!r} crashed\n{marker}", None, None
        ),
        logging.LogRecord("uvicorn.error", 30, __file__, 1, "%d sessions open; %s", (3, marker), None),
    ]
    try:
        raise ValueError(marker)
    except ValueError:
        records.append(
            logging.LogRecord(
                "asyncio",
                40,
                __file__,
                1,
                f"Task exception was never retrieved\n{marker}",
                None,
                sys.exc_info(),
            )
        )
    lines = []
    for record in records:
        assert redactor.filter(record)
        lines.append(formatter.format(record))
    for line in lines:
        assert "\n" not in line and marker not in line
    parsed = [json.loads(line) for line in lines]
    assert parsed[0]["msg"] == "Error reading resource '…'"
    assert parsed[3]["msg"] == "3 sessions open; <withheld>"  # numbers stay, strings go
    assert parsed[4]["msg"] == "Task exception was never retrieved"
    assert "builtins.ValueError (message withheld)" in parsed[4]["exc"]  # a real fault keeps its frames


async def test_fastmcp_logs_of_refused_calls_are_json_without_input_or_traceback(runtime, captured_logs):
    marker = f"mk{secrets.token_hex(5)}"
    async with Client(app_for(runtime, "analyst").mcp) as client:
        await refusal(client, "query_database", query=f"SELECT {marker} FROM customers")
        await refusal(client, "query_database", query=f"SELECT 1 AS x{marker}%(a)s", parameters={"a": marker})
        await refusal(client, "session_read", session_id=marker, key=marker)
        await refusal(client, f"no_such_tool_{marker}")
        await refusal(client, "query_database", query="SELECT 1", timeout=marker)
        assert await read_error(client, f"templates://analysis/{marker}") is not None
        assert await read_error(client, f"templates://analysis/{marker}/..") is not None
        await refusal(client, "analyze_data", data_source="database", analysis_type=marker)
    lines = assert_clean_log(captured_logs.getvalue(), marker)
    library = [line for line in lines if not logs.is_own_logger(line["logger"])]
    assert any(line["logger"].startswith("fastmcp") for line in library)  # the capture saw FastMCP's lines
    assert all("exc" not in line for line in lines), [line for line in lines if "exc" in line]


@pytest.mark.slow
async def test_a_served_process_writes_only_json_lines_to_stderr_and_no_agent_input(
    create_database, redis_url, redis_prefix, tmp_path
):
    """The real `serve` command: its whole stderr, through odd calls over HTTP with the official client."""
    from cryptography.fernet import Fernet

    from mcp_server.config import digest_key
    from tests.production.services import ServerProcess, mcp_session

    key, marker = f"key-{secrets.token_hex(8)}", f"mk{secrets.token_hex(5)}"
    env = {
        "DATABASE_URL": await create_database(),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"{redis_prefix}proc-{uuid.uuid4().hex[:6]}:",
        "API_KEYS": f"analyst:analyst:{digest_key(key)}",
        "SESSION_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ANALYTICS_MCP_HOME": str(tmp_path),
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "4",
        "LOG_LEVEL": "DEBUG",
        "PYTHONWARNINGS": "always",
    }
    server = ServerProcess({k: v for k, v in env.items() if k != "PYTHONWARNINGS"})
    server.env["PYTHONWARNINGS"] = env["PYTHONWARNINGS"]
    await server.start()
    try:
        async with mcp_session(server.url, key) as session:
            bad = [
                ("query_database", {"query": f"SELECT 1 AS x{marker}%(a)s", "parameters": {"a": marker}}),
                ("query_database", {"query": f"SELECT {marker} FROM customers"}),
                ("query_database", {"query": "SELECT 1", "timeout": marker}),
                (f"tool_{marker}", {}),
                ("session_read", {"session_id": marker, "key": marker}),
            ]
            for name, arguments in bad:
                result = await session.call_tool(name, arguments)
                assert result.isError and INTERNAL not in error_text(result), error_text(result)
            for uri in (
                f"session://../{marker}",
                f"templates://analysis/{marker}/x",
                f"data://..%2F{marker}",
            ):
                with pytest.raises(Exception) as refused:
                    await session.read_resource(uri)
                assert INTERNAL not in str(refused.value)
            served = await session.call_tool("query_database", {"query": "SELECT 1 AS one"})
            assert not served.isError
    finally:
        await server.stop()
    output = server.output()
    lines = assert_clean_log(output, marker, key)
    assert any(line.get("logger") == "fastmcp.server.server" for line in lines)  # DEBUG: FastMCP spoke
    assert os.path.getsize(server.log) > 0


# --- summary_snapshot ---------------------------------------------------------------------------


async def test_summary_snapshot_shows_no_other_users_activity_to_a_non_admin(runtime, fresh_prefix):
    rt = instance(runtime, fresh_prefix)
    analyst, other, admin = (Client(app_for(rt, user).mcp) for user in ("analyst", "analyst2", "admin"))
    async with analyst, other, admin:
        for _ in range(3):
            await call(analyst, "query_database", query="SELECT 1 AS one")
        await refusal(analyst, "session_read", session_id="00000000-0000-4000-8000-000000000000", key="k")
        seen_by_other = await call(other, "summary_snapshot")
        seen_by_admin = await call(admin, "summary_snapshot")
    text = json.dumps(seen_by_other)
    assert "query_database" not in text and "session_read" not in text and "latency" not in text
    assert seen_by_other["tables"]["customers"]["rows"] > 0  # the data summary itself is for everyone
    assert seen_by_admin["latency_ms"]["query_database"]["samples"] == 3  # operators still see it
    assert seen_by_admin["latency_ms"]["session_read"]["samples"] == 1


# --- a fuzz-ish sweep ---------------------------------------------------------------------------

PLACEHOLDERS = [
    "SELECT x%(a)s",
    "SELECT 1%(a)s",
    'SELECT 1 AS "x"%(a)s',
    "SELECT Ω%(a)s",
    "SELECT %(a)sx",
    "SELECT %(a)s%(a)s",
    "SELECT %(a)s.x",
    "SELECT %(a)s$$x$$",
    "SELECT %(a)s$1",
    "SELECT $1",
    "SELECT '%(a)s'",
    'SELECT "%(a)s" FROM customers',
    "SELECT $$%(a)s$$",
    "SELECT e'%(a)s'",
    "SELECT 1 -- %(a)s",
    "SELECT /* %(a)s */ 1",
    "SELECT %(1a)s",
    "SELECT %()s",
    "SELECT %(a)",
    "SELECT %(a)d",
    "SELECT % (a)s",
    "SELECT %%(a)s",
    "SELECT %(a)s AS %(a)s",
    "SELECT ARRAY[%(a)s]",
    "SELECT %(a)s::text[]",
    "SELECT %(a)s::anyelement",
    "SELECT 1 FROM customers LIMIT %(a)s",
    "SELECT * FROM customers%(a)s",
    "SELECT %(a)s FROM customers ORDER BY %(a)s",
    "SELECT count(*) FILTER (WHERE age > %(a)s)x FROM customers",
]

ODD_TYPES = [
    "'(1,2)'::point",
    "int4range(1, 5)",
    "'[1,5)'::int4range",
    "'{[1,3),[7,9)}'::int4multirange",
    "'a fat cat'::tsvector",
    "'0/16B6C50'::pg_lsn",
    "'<a>x</a>'::xml",
    "12.5::money",
    "B'101'",
    "B'101'::varbit",
    "(1, 'a')",
    "ARRAY[(1, 'a')]",
    "ROW(1, ROW(2, 'b'))",
    "'1 day 2 hours'::interval",
    "'192.168.0.1/24'::inet",
    "'10.0.0.0/8'::cidr",
    "'08:00:2b:01:02:03'::macaddr",
    "'{\"a\": [1, null]}'::jsonb",
    "'\\x00ff'::bytea",
    "'NaN'::numeric",
    "'Infinity'::float8",
    "'infinity'::timestamp",
    "'-infinity'::date",
    "'((0,0),(1,1))'::box",
    "'<(0,0),1>'::circle",
    "'{1,2,3}'::line",
    "'((0,0),(1,0),(1,1))'::polygon",
    "'[(0,0),(1,1)]'::path",
    "'a & b'::tsquery",
    "'int4'::regtype",
    "1::oid",
    "'1'::xid",
    "'(0,1)'::tid",
    "ARRAY[true, NULL]",
    "ARRAY[[1, 2], [3, 4]]",
    "'{}'::int[]",
    "'x'::\"char\"",
    "'x'::name",
    "NULL::anyelement",
    "NULL::anyarray",
    "NULL::void",
    "'12:00+02'::timetz",
    "gen_random_uuid()",
    "txid_current_snapshot()",
]

# What some of them read as, in PostgreSQL's own notation or as JSON lists (checked when answered).
EXPECTED = {
    "'(1,2)'::point": [1.0, 2.0],
    "'[1,5)'::int4range": "[1,5)",
    "int4range(1, 5)": "[1,5)",
    "'{[1,3),[7,9)}'::int4multirange": ["[1,3)", "[7,9)"],
    "B'101'": "101",
    "'((0,0),(1,0),(1,1))'::polygon": [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]],
    "'[(0,0),(1,1)]'::path": [[0.0, 0.0], [1.0, 1.0]],
    "(1, 'a')": [1, "a"],
    "'<a>x</a>'::xml": "<a>x</a>",
    "NULL::anyarray": None,
}

ODD_URIS = [
    "schema://database/../x",
    "schema://database/main/..",
    "schema://database/main/.",
    "schema://database/main/%00",
    "schema://database/main/%2F",
    "schema://database/main/customers/..",
    "schema://database/main/customers?x=1",
    "schema://database/main/customers#frag",
    "schema://database/main//customers",
    "schema://database/main/" + "a" * 5000,
    "schema://%2e%2e/main",
    "templates://analysis/",
    "templates://analysis/..",
    "templates://analysis/%2e%2e",
    "templates://analysis/churn_rate/../../x",
    "templates://analysis/%C0%AE%C0%AE",
    "templates://analysis/\u202e",
    "session://",
    "session://..",
    "session://%2F%2Fetc%2Fpasswd",
    "session:///etc/passwd",
    "data://..%2F..",
    "docs://data_dictionary/..",
    "docs://../data_dictionary",
    "file:///etc/passwd",
    "x:",
]


async def test_odd_inputs_are_each_answered_or_refused_in_one_line_never_internal_error(
    runtime, captured_logs
):
    problems = []
    async with Client(app_for(runtime, "analyst").mcp) as client:
        for query in PLACEHOLDERS:
            result = await client.call_tool(
                "query_database", {"query": query, "parameters": {"a": 1}}, raise_on_error=False
            )
            text = error_text(result) if result.is_error else ""
            if INTERNAL in text or "\n" in text:
                problems.append(f"{query!r}: {text!r}")
        for expression in ODD_TYPES:
            result = await client.call_tool(
                "query_database", {"query": f"SELECT {expression} AS v"}, raise_on_error=False
            )
            text = error_text(result) if result.is_error else ""
            if INTERNAL in text or "\n" in text:
                problems.append(f"{expression!r}: {text!r}")
            elif not result.is_error:
                (row,) = result.structured_content["rows"]
                if expression in EXPECTED and row["v"] != EXPECTED[expression]:
                    problems.append(f"{expression!r} read as {row['v']!r}")
        for uri in ODD_URIS:
            try:
                message = await read_error(client, uri)
            except AssertionError as error:
                problems.append(f"{uri!r}: {error}")
                continue
            if message is not None and INTERNAL in message:
                problems.append(f"{uri!r}: {message!r}")
        await assert_still_serving(client)
    assert problems == []
    assert_clean_log(captured_logs.getvalue())
