"""Dependencies restarting under a running server: clean one-line errors while they are down, service back
by itself when they return (no server restart), and nothing lost (Redis runs append-only)."""

from __future__ import annotations

import uuid

import pytest

from tests.production.services import ServerProcess, call, mcp_session, refusal, tool_names

pytestmark = [pytest.mark.http, pytest.mark.slow]


@pytest.fixture(scope="module")
async def server(seeded_database, server_env):
    process = ServerProcess(server_env(await seeded_database(), f"amcp-fault-{uuid.uuid4().hex[:8]}:"))
    await process.start()
    yield process
    await process.stop()


async def test_redis_restart_fails_calls_cleanly_then_recovers_with_no_session_lost(
    server, private_redis, server_keys
):
    key = server_keys["analyst"]
    async with mcp_session(server.url, key) as session:
        if not {"session_create", "session_read", "session_update"} <= await tool_names(session):
            pytest.skip("session tools not built yet")
        session_id = (await call(session, "session_create", data_source="database"))["session_id"]
        await call(session, "session_update", session_id=session_id, key="finding", value={"churn": "high"})

        private_redis.stop()
        try:
            error = await refusal(session, "session_read", session_id=session_id, key="finding")
            assert "Redis" in error and "retry" in error
            status, health = await server.health()
            assert status == 503 and health["failing"] == ["redis"]
            # PostgreSQL-only tools keep working while Redis is away.
            assert (await call(session, "summary_snapshot"))["tables"]["customers"]["rows"] == 300
        finally:
            private_redis.start()

        read = await call(session, "session_read", session_id=session_id, key="finding")
        assert read["value"] == {"churn": "high"}
        await call(session, "session_update", session_id=session_id, key="after", value={"ok": True})
        assert (await call(session, "session_read", session_id=session_id, key="after"))["value"] == {
            "ok": True
        }
    assert (await server.health())[0] == 200


async def test_postgres_restart_fails_calls_cleanly_then_recovers_without_a_server_restart(
    server, private_postgres, server_keys
):
    async with mcp_session(server.url, server_keys["analyst"]) as session:
        before = await call(session, "summary_snapshot")
        has_query = "query_database" in await tool_names(session)
        session_id = (await call(session, "session_create", data_source="database"))["session_id"]
        await call(session, "session_update", session_id=session_id, key="finding", value={"kept": True})

        private_postgres.stop()
        try:
            error = await refusal(session, "summary_snapshot")
            assert "PostgreSQL" in error and "retry" in error
            if has_query:
                error = await refusal(session, "query_database", query="SELECT count(*) AS n FROM customers")
                assert "PostgreSQL" in error
            status, health = await server.health()
            assert status == 503 and health["failing"] == ["postgres"]
            # Archiving needs PostgreSQL: the close is refused and the live session stays as it was.
            error = await refusal(session, "session_close", session_id=session_id, archive=True)
            assert "PostgreSQL" in error and "retry" in error
            read = await call(session, "session_read", session_id=session_id, key="finding")
            assert read["value"] == {"kept": True}
        finally:
            private_postgres.start()

        closed = await call(session, "session_close", session_id=session_id, archive=True)
        assert closed["archived"] is True
        await call(session, "session_restore", session_id=session_id)
        read = await call(session, "session_read", session_id=session_id, key="finding")
        assert read["value"] == {"kept": True}

        # The pool dropped its dead connections and opens new ones: same answers as before.
        after = await call(session, "summary_snapshot")
        assert (after["tables"], after["data_version"]) == (before["tables"], before["data_version"])
        if has_query:
            rows = (await call(session, "query_database", query="SELECT count(*) AS n FROM customers"))[
                "rows"
            ]
            assert rows == [{"n": 300}]
    assert (await server.health())[0] == 200
