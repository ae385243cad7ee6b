"""Stateless scale-out: two `analytics-mcp serve` processes on one PostgreSQL and one Redis answer for each other."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from tests.production.services import call, mcp_session, tool_names

pytestmark = [pytest.mark.http, pytest.mark.slow]

SESSION_TOOLS = {"session_create", "session_read", "session_update"}


class RoundRobin:
    """A load balancer in the client: each HTTP request goes to the next instance in turn."""

    def __init__(self, ports: list[int]) -> None:
        import httpx2

        self.ports = itertools.cycle(ports)
        self.transport = httpx2.AsyncHTTPTransport()
        self.seen: list[int] = []

    async def handle_async_request(self, request: Any) -> Any:
        port = next(self.ports)
        self.seen.append(port)
        request.url = request.url.copy_with(port=port)
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self.transport.aclose()


def balanced_client(ports: list[int], key: str) -> tuple[Any, RoundRobin]:
    import httpx2

    balancer = RoundRobin(ports)

    class Transport(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: Any) -> Any:
            return await balancer.handle_async_request(request)

        async def aclose(self) -> None:
            await balancer.aclose()

    return httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=30, transport=Transport()), balancer


async def needs_session_tools(session: Any) -> None:
    missing = SESSION_TOOLS - await tool_names(session)
    if missing:
        pytest.skip(f"session tools not built yet: {', '.join(sorted(missing))}")


async def test_both_instances_answer_from_the_same_database(deployment, server_keys):
    answers = []
    for server in deployment:
        async with mcp_session(server.url, server_keys["analyst"]) as session:
            answers.append(await call(session, "summary_snapshot"))
    assert answers[0]["tables"]["customers"]["rows"] == 300
    assert [a["tables"] for a in answers] == [answers[0]["tables"]] * 2
    assert answers[0]["data_version"] == answers[1]["data_version"]


async def test_a_session_created_on_one_instance_is_read_and_updated_on_the_other(deployment, server_keys):
    first, second = deployment
    key = server_keys["analyst"]
    async with mcp_session(first.url, key) as on_first:
        await needs_session_tools(on_first)
        created = await call(on_first, "session_create", data_source="database")
        session_id = created["session_id"]
        await call(on_first, "session_update", session_id=session_id, key="note", value={"by": "first"})
    async with mcp_session(second.url, key) as on_second:
        read = await call(on_second, "session_read", session_id=session_id, key="note")
        assert read["value"] == {"by": "first"}
        await call(on_second, "session_update", session_id=session_id, key="note", value={"by": "second"})
    async with mcp_session(first.url, key) as on_first:
        read = await call(on_first, "session_read", session_id=session_id, key="note")
    assert read["value"] == {"by": "second"}


async def test_one_mcp_client_behind_a_round_robin_balancer_works_across_instances(deployment, server_keys):
    """Every request may land on another instance (FASTMCP_STATELESS_HTTP, as docker-compose.scale.yml sets)."""
    client, balancer = balanced_client([server.port for server in deployment], server_keys["analyst"])
    async with mcp_session(deployment[0].url, server_keys["analyst"], http_client=client) as session:
        snapshots = [await call(session, "summary_snapshot") for _ in range(4)]
        if SESSION_TOOLS <= await tool_names(session):
            created = await call(session, "session_create", data_source="database")
            await call(session, "session_update", session_id=created["session_id"], key="k", value={"n": 1})
            read = await call(session, "session_read", session_id=created["session_id"], key="k")
            assert read["value"] == {"n": 1}
    assert all(snapshot["tables"] == snapshots[0]["tables"] for snapshot in snapshots)
    assert set(balancer.seen) == {server.port for server in deployment}
