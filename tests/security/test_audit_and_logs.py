"""The audit trail (JSON lines + mcp_internal.audit_log) and PII-safe logs: keys and values never logged."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from dataclasses import replace

import asyncpg
import httpx

from mcp_server.auth import KeyRegistry
from mcp_server.config import ApiKeyEntry, digest_key
from mcp_server.logs import redact, sanitize_error
from tests.security.conftest import instance
from tests.support import mcp_session, serving


async def audit_rows(runtime, **where):
    conn = await asyncpg.connect(runtime.settings.database_url)
    try:
        rows = await conn.fetch("SELECT * FROM mcp_internal.audit_log ORDER BY id")
    finally:
        await conn.close()
    return [dict(r) for r in rows if all(r[k] == v for k, v in where.items())]


def with_marker_key(runtime, user: str, key: str):
    rt = instance(runtime)
    entries = (*runtime.settings.api_keys, ApiKeyEntry(user, "analyst", digest_key(key)))
    return replace(rt, keys=KeyRegistry(entries), settings=rt.settings.with_changes(api_keys=entries))


async def test_after_calls_with_a_marker_key_and_marker_values_neither_marker_is_in_logs_or_audit_rows(
    runtime, captured_logs
):
    user = f"marker-user-{secrets.token_hex(3)}"
    key, value, wrong_key = (f"{tag}{secrets.token_hex(12)}" for tag in ("MKEY", "MVAL", "MBAD"))
    rt = with_marker_key(runtime, user, key)
    async with serving(rt) as url:
        async with mcp_session(url, {"X-API-Key": key}) as session:
            calls = [
                ("summary_snapshot", {}),
                (
                    "query_database",
                    {
                        "query": "SELECT count(*) AS n FROM customers WHERE location = %(v)s",
                        "parameters": {"v": value},
                    },
                ),
                ("query_database", {"query": "SELECT %(v)s::int AS n", "parameters": {"v": value}}),
                ("query_database", {"query": f"SELECT '{value}'::int AS n"}),
                (
                    "analyze_data",
                    {
                        "data_source": "database",
                        "analysis_type": "churn_rate",
                        "parameters": {"group_by": value},
                    },
                ),
                ("analyze_data", {"data_source": value, "analysis_type": value}),
                ("create_visualization", {"data": {"x": [value], "y": [1]}, "chart_type": value}),
                ("summary_snapshot", {"unexpected": value}),
            ]
            created = await session.call_tool("session_create", {"data_source": "database"})
            assert not created.is_error, created.content
            sid = created.structured_content["session_id"]
            calls += [
                ("session_update", {"session_id": sid, "key": "notes", "value": {"text": value}}),
                ("session_read", {"session_id": sid, "key": "notes"}),
                ("session_read", {"session_id": value, "key": value}),
            ]
            results = [await session.call_tool(name, arguments) for name, arguments in calls]
        async with mcp_session(url, {"Authorization": f"Bearer {key}"}) as session:
            assert not (await session.call_tool("summary_snapshot", {})).is_error
        async with httpx.AsyncClient() as http:
            for headers in ({"X-API-Key": wrong_key}, {"Authorization": f"Bearer {wrong_key}"}):
                response = await http.post(
                    f"{url}/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
                )
                assert response.status_code == 401
    assert any(not r.is_error for r in results) and any(r.is_error for r in results)
    await rt.services.auditor.flush()
    log_text = captured_logs.getvalue()
    assert user in log_text and '"event": "authentication"' in log_text  # the capture did see the server
    rows = await audit_rows(rt)
    mine = [r for r in rows if r["user_id"] == user]
    assert {r["tool"] for r in mine} >= {"summary_snapshot", "query_database", "session_update"}
    audit_text = json.dumps(rows, default=str)
    for marker in (key, value, wrong_key):
        assert marker not in log_text
        assert marker not in audit_text
    assert sid in audit_text  # a session id is an id, not content: it is audited


async def test_every_authentication_attempt_is_audited_with_the_key_id_never_the_key(runtime, api_keys):
    rt = instance(runtime)
    async with serving(rt) as url, httpx.AsyncClient() as http:
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        for headers in (
            {},
            {"X-API-Key": "nope-" + secrets.token_hex(8)},
            {"Authorization": "Bearer nope-x1234567"},
        ):
            assert (await http.post(f"{url}/mcp", headers=headers, json=listing)).status_code == 401
        async with mcp_session(url, {"X-API-Key": api_keys["viewer"]}):
            pass
    await rt.services.auditor.flush()
    rows = [r for r in await audit_rows(rt) if r["event"] == "authentication"]
    failures = [r for r in rows if r["outcome"] == "failure"]
    successes = [r for r in rows if r["outcome"] == "success" and r["user_id"] == "viewer"]
    assert len(failures) >= 3 and all(r["key_id"] is None and r["user_id"] is None for r in failures)
    viewer_key_id = next(e.key_id for e in runtime.settings.api_keys if e.user_id == "viewer")
    assert successes and all(r["key_id"] == viewer_key_id for r in successes)
    assert api_keys["viewer"] not in json.dumps(rows, default=str)


async def test_every_tool_call_is_audited_with_user_tool_session_duration_and_outcome(runtime):
    from fastmcp import Client

    from tests.conftest import app_for
    from tests.support import call, refusal

    rt = instance(runtime)
    # Rows of this test only: another instance's writer may still write an earlier test's rows now.
    started = dt.datetime.now(dt.UTC)
    async with Client(app_for(rt, "analyst").mcp) as client:
        await call(client, "summary_snapshot")
        await refusal(client, "session_read", session_id="00000000-0000-4000-8000-000000000000", key="k")
        await refusal(client, "generate_data")
        await refusal(client, "no_such_tool_" + secrets.token_hex(4))
    await rt.services.auditor.flush()
    rows = [
        r
        for r in await audit_rows(rt)
        if r["event"] == "tool_call" and r["user_id"] == "analyst" and r["logged_at"] >= started
    ]
    assert [(r["tool"], r["outcome"]) for r in rows] == [
        ("summary_snapshot", "ok"),
        ("session_read", "NotFound"),
        ("generate_data", "Forbidden"),
        ("<unknown>", "Forbidden"),  # a name the agent made up is not recorded
    ]
    assert rows[1]["session_id"] == "00000000-0000-4000-8000-000000000000"
    assert all(r["duration_ms"] >= 0 and r["request_id"] and r["key_id"] for r in rows)


def test_the_log_filter_masks_dsn_passwords_bearer_tokens_and_amcp_keys():
    line = (
        "connect postgresql://app:s3cr3t-pw@db:5432/x failed; redis://:r3dpass@cache:6379/0; "
        "Authorization: Bearer abcdef123456; key amcp_Zx81kq0Pmmm_aa; password=hunter22"
    )
    masked = redact(line)
    for secret in ("s3cr3t-pw", "r3dpass", "abcdef123456", "amcp_Zx81kq0Pmmm_aa", "hunter22"):
        assert secret not in masked
    assert "postgresql://app:***@db:5432/x" in masked and "amcp_***" in masked


def test_error_messages_for_agents_lose_file_paths_and_secrets_but_keep_their_meaning():
    message = sanitize_error(
        "file /srv/analytics/imports/private/x.csv not readable; DATABASE_URL postgresql://u:pw@h/db; "
        "read schema://database/main or ./data/x.csv"
    )
    assert "/srv/analytics" not in message and ":pw@" not in message
    assert "<path>" in message and "schema://database/main" in message and "./data/x.csv" in message


async def test_logged_exceptions_carry_types_and_frames_but_not_their_messages(captured_logs):
    import logging

    try:
        raise ValueError("secret value 4242-SECRET")
    except ValueError:
        logging.getLogger("analytics_mcp.test").exception("unexpected error")
    line = json.loads(captured_logs.getvalue().strip().splitlines()[-1])
    assert "ValueError" in line["exc"] and "test_audit_and_logs.py" in line["exc"]
    assert "4242-SECRET" not in captured_logs.getvalue()


async def test_rows_still_queued_at_shutdown_are_written_before_the_database_closes(make_runtime):
    """A clean shutdown flushes the background writers while PostgreSQL is still open: no audit row lost."""
    import datetime as dt

    from warehouse.audit import AuditRow

    marker = f"shutdown-{secrets.token_hex(4)}"
    async with make_runtime(customers=None) as rt:
        url = rt.settings.database_url
        writer = rt.services.auditor
        # Queued but not yet picked up by the background task (as when calls finish during shutdown).
        for n in range(3):
            writer.writer._items.append(
                AuditRow(dt.datetime.now(dt.UTC), None, "test", marker, None, f"t{n}", None, None, "ok")
            )
        await rt.close()
        conn = await asyncpg.connect(url)
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM mcp_internal.audit_log WHERE user_id = $1", marker
            )
        finally:
            await conn.close()
    assert count == 3
