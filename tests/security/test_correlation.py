"""Structured JSON logs carrying each call's request id, which also names the PostgreSQL connection of
an agent's query; LOG_LEVEL deciding what is written."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets

import asyncpg
import pytest
from fastmcp import Client

from mcp_server import logs
from mcp_server.config import ConfigError, Settings
from tests.conftest import app_for
from tests.security.conftest import instance
from tests.security.test_audit_and_logs import audit_rows
from tests.support import call
from warehouse.labels import LABEL_PREFIX


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def labelled_backends(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT application_name, query FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name LIKE $1",
        LABEL_PREFIX + "%",
    )


async def test_a_running_query_carries_its_request_id_into_pg_stat_activity_and_the_audit_trail(runtime):
    rt = instance(runtime)
    watcher = await asyncpg.connect(runtime.settings.database_url)
    try:
        async with Client(app_for(rt, "analyst").mcp) as client:
            running = asyncio.create_task(
                call(client, "query_database", query="SELECT pg_sleep(0.6) AS slept, 'h89' AS tag")
            )
            seen: list[asyncpg.Record] = []
            while not seen and not running.done():
                seen = [r for r in await labelled_backends(watcher) if "pg_sleep(0.6)" in r["query"]]
                await asyncio.sleep(0.02)
            await running
        assert len(seen) == 1, "the query never showed up under its request id"
        request_id = seen[0]["application_name"].removeprefix(LABEL_PREFIX)
        # Given back to the pool, the connection loses the label (the pool's RESET ALL).
        assert await labelled_backends(watcher) == []
        async with rt.db.connection() as conn:
            assert not (await conn.fetchval("SHOW application_name")).startswith(LABEL_PREFIX)
    finally:
        await watcher.close()
    await rt.services.auditor.flush()
    (row,) = await audit_rows(rt, request_id=request_id)
    assert (row["event"], row["tool"], row["user_id"], row["outcome"]) == (
        "tool_call",
        "query_database",
        "analyst",
        "ok",
    )


async def test_each_call_logs_its_own_request_id_and_caller_and_no_values(runtime, captured_logs):
    rt = instance(runtime)
    marker = f"MVAL{secrets.token_hex(8)}"
    async with Client(app_for(rt, "analyst").mcp) as client:
        await call(client, "summary_snapshot")
        created = await call(client, "session_create", data_source="database")
        await call(client, "session_update", session_id=created["session_id"], key="note", value=marker)
        await call(
            client,
            "query_database",
            query=f"SELECT count(*) AS n FROM customers WHERE location <> '{marker}'",
        )
    lines = json_lines(captured_logs.getvalue())
    audit = [line for line in lines if line["msg"] == "audit" and "tool" in line]
    calls = {line["tool"]: line["request_id"] for line in audit}
    assert len(set(calls.values())) == len(calls) == 4  # one request id per call
    assert all(len(request_id) == 16 for request_id in calls.values())
    assert all(line["user_id"] == "analyst" for line in audit)
    assert marker not in captured_logs.getvalue()  # neither the query's literal nor the session value


async def test_log_level_decides_what_is_written(runtime):
    buffer = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        logs.install_handler(
            logging.StreamHandler(buffer), Settings.from_env({"LOG_LEVEL": "warning"}).log_level
        )
        async with Client(app_for(instance(runtime), "analyst").mcp) as client:
            await call(client, "summary_snapshot")
        quiet = buffer.getvalue()
        logs.install_handler(
            logging.StreamHandler(buffer), Settings.from_env({"LOG_LEVEL": "INFO"}).log_level
        )
        async with Client(app_for(instance(runtime), "analyst").mcp) as client:
            await call(client, "summary_snapshot")
        informative = buffer.getvalue()[len(quiet) :]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    assert not [line for line in json_lines(quiet) if line["level"] in ("debug", "info")]
    lines = json_lines(informative)
    assert any(line["msg"] == "audit" and line["tool"] == "summary_snapshot" for line in lines)
    assert not [line for line in lines if line["level"] == "debug"]
    with pytest.raises(ConfigError, match="LOG_LEVEL must be DEBUG, INFO"):
        Settings.from_env({"LOG_LEVEL": "chatty"})
