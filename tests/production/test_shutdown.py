"""Graceful shutdown: SIGTERM lets in-flight calls finish (uvicorn drains, up to 20 s) before the process exits."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import httpx2
import pytest

from tests.production.services import ROOT, ServerProcess, call, mcp_session, tool_names

pytestmark = [pytest.mark.http, pytest.mark.slow]


async def _wait_until(condition, what: str, attempts: int = 300) -> None:
    for _ in range(attempts):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_sigterm_during_calls_finishes_them_then_exits_cleanly(
    seeded_database, server_env, server_keys, private_folder
):
    markers = private_folder / f"markers-{uuid.uuid4().hex[:6]}"
    markers.mkdir()
    database_url = await seeded_database()
    env = server_env(database_url, f"amcp-stop-{uuid.uuid4().hex[:8]}:", TEST_MARKER_DIR=str(markers))
    server = ServerProcess(env, launcher=[str(ROOT / "tests" / "production" / "slow_server.py")])
    await server.start()
    key = server_keys["analyst"]
    results: list = []
    try:
        async with mcp_session(server.url, key) as first, mcp_session(server.url, key) as second:
            # The client validates structured output against the tool list it fetched; fetch it now,
            # while the server is up, so nothing new is asked of the server once it drains.
            has_query = "query_database" in await tool_names(first)
            await tool_names(second)
            in_flight = [
                asyncio.create_task(call(first, "wait_then_answer", seconds=2, label="a")),
                asyncio.create_task(call(second, "wait_then_answer", seconds=3, label="b")),
            ]
            if has_query:
                in_flight.append(
                    asyncio.create_task(call(first, "query_database", query="SELECT pg_sleep(2) AS slept"))
                )

            async def started() -> bool:
                return (markers / "a").exists() and (markers / "b").exists()

            await _wait_until(started, "both slow calls started")
            if has_query:

                async def sleeping() -> bool:
                    conn = await asyncpg.connect(database_url)
                    try:
                        count = await conn.fetchval(
                            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(2)%' "
                            "AND pid <> pg_backend_pid()"
                        )
                    finally:
                        await conn.close()
                    return count > 0

                await _wait_until(sleeping, "the pg_sleep query is running")

            server.terminate()
            results = await asyncio.gather(*in_flight)
            returncode = await server.wait()
    except BaseExceptionGroup as group:
        # Closing the client after the server has gone cannot reach it; anything else is a failure.
        _, rest = group.split(httpx2.ConnectError)
        if rest is not None:
            raise rest from None
    finally:
        await server.stop()

    assert results[0] == {"slept": 2, "label": "a"}
    assert results[1] == {"slept": 3, "label": "b"}
    if has_query:
        assert results[2]["row_count"] == 1
    assert returncode == 0, server.output()[-2000:]
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient() as http:
            await http.get(f"{server.url}/health", timeout=2)
