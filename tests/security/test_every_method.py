"""Every method counts: the rate limit covers resources, prompts and lists; a session holds a bounded
number of keys; an MCP session id works only for the key that opened it; /metrics needs a key and
names no user; the documented size limits are the ones the HTTP stack really applies."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from fastmcp import Client
from fastmcp.exceptions import McpError
from prometheus_client.parser import text_string_to_metric_families

from mcp_server.config import MCP_MAX_BODY_BYTES, Settings
from tests.conftest import app_for
from tests.security.conftest import instance
from tests.support import call, error_text, mcp_session, refusal, serving

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def rate_limited(action) -> str:
    """The one-line refusal of a list, resource read or prompt get that the rate limit stops."""
    with pytest.raises(McpError) as refused:
        await action
    message = str(refused.value)
    assert "rate limit reached" in message and "\n" not in message, message
    return message


async def test_resource_reads_prompt_gets_and_every_list_spend_the_same_budget_as_tools(
    runtime, fresh_prefix
):
    rt = instance(runtime, fresh_prefix, rate_limit_per_minute=7, rate_limit_window_seconds=60)
    app = app_for(rt, "analyst")
    async with Client(app.mcp) as client:
        await client.list_tools()
        await client.list_resources()
        await client.list_resource_templates()
        await client.list_prompts()
        await client.read_resource("docs://data_dictionary")
        await client.get_prompt("churn_analysis", {})
        await call(client, "summary_snapshot")  # the seventh call: the budget is spent
        message = await rate_limited(client.list_resources())
        assert "7 calls per 60 s" in message
        await rate_limited(client.list_tools())
        await rate_limited(client.list_resource_templates())
        await rate_limited(client.list_prompts())
        await rate_limited(client.read_resource("docs://data_dictionary"))
        await rate_limited(client.get_prompt("churn_analysis", {}))
        assert "rate limit reached" in await refusal(client, "summary_snapshot")
    # Seven admitted, the refusals recorded nothing.
    assert await rt.redis.zcard(rt.key("ratelimit", app.local_identity.key_id)) == 7


async def test_a_resources_list_loop_by_one_key_is_stopped_while_another_key_is_unaffected(
    runtime, fresh_prefix
):
    limit = 40
    rt = instance(runtime, fresh_prefix, rate_limit_per_minute=limit, rate_limit_window_seconds=60)
    # The attacker owns sessions, so each resources/list reads them all from Redis.
    async with Client(app_for(rt, "analyst").mcp) as attacker, Client(app_for(rt, "analyst2").mcp) as other:
        for _ in range(3):
            await call(attacker, "session_create", data_source="database")
        admitted = refused = 0

        async def loop() -> None:
            nonlocal admitted, refused
            for _ in range(100):
                try:
                    await attacker.list_resources()
                    admitted += 1
                except McpError as error:
                    assert "rate limit reached" in str(error)
                    refused += 1

        loops = [asyncio.create_task(loop()) for _ in range(4)]
        latencies = []
        while not all(task.done() for task in loops) and len(latencies) < 20:
            started = time.perf_counter()
            await call(other, "summary_snapshot")
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
        await asyncio.gather(*loops)
        await call(other, "summary_snapshot")
    assert admitted == limit - 3 - 1  # three session_create calls and the client's own tools/list
    assert refused == 400 - admitted
    assert max(latencies) < 2, latencies  # liveness, not speed: the other key was answered throughout


async def test_a_session_holds_at_most_session_max_keys_new_keys_but_overwrites_are_fine(
    runtime, fresh_prefix
):
    rt = instance(runtime, fresh_prefix, session_max_keys=5)
    async with Client(app_for(rt, "analyst").mcp) as client:
        session = (await call(client, "session_create", data_source="database"))["session_id"]
        for index in range(5):
            await call(client, "session_update", session_id=session, key=f"k{index}", value=index)
        message = await refusal(client, "session_update", session_id=session, key="k5", value=5)
        assert message == (
            f"session '{session}' has 5 keys (SESSION_MAX_KEYS); delete some with session_delete_key, "
            "overwrite an existing key or use a new session"
        )
        # A dataset is a key too: save_as is refused the same way, with nothing stored.
        saved = await refusal(
            client, "query_database", query="SELECT 1 AS one", session_id=session, save_as="extra"
        )
        assert "has 5 keys (SESSION_MAX_KEYS)" in saved
        await call(client, "session_update", session_id=session, key="k0", value="replaced")  # overwrite
        deleted = await call(client, "session_delete_key", session_id=session, key="k1")
        assert deleted["status"] == "deleted"
        await call(client, "session_update", session_id=session, key="k5", value=5)  # room again
        listed = await call(client, "session_list")
        keys = sorted(item["key"] for item in listed["sessions"][0]["keys"])
        assert keys == ["k0", "k2", "k3", "k4", "k5"]
        assert (await call(client, "session_read", session_id=session, key="k0"))["value"] == "replaced"
        gone = await refusal(client, "session_read", session_id=session, key="k1")
        assert "key 'k1' not in session" in gone
        missing = await refusal(client, "session_delete_key", session_id=session, key="nope")
        assert missing.startswith("key 'nope' not in session") and "k0, k2, k3, k4, k5" in missing


async def test_the_key_cap_holds_under_concurrent_writes_of_new_keys(runtime, fresh_prefix):
    rt = instance(runtime, fresh_prefix, session_max_keys=5)
    async with Client(app_for(rt, "analyst").mcp) as client:
        session = (await call(client, "session_create", data_source="database"))["session_id"]
        for index in range(4):
            await call(client, "session_update", session_id=session, key=f"k{index}", value=index)
        results = await asyncio.gather(
            *(
                client.call_tool(
                    "session_update",
                    {"session_id": session, "key": f"new{n}", "value": n},
                    raise_on_error=False,
                )
                for n in range(12)
            )
        )
        described = await call(client, "session_list")
    assert sum(not result.is_error for result in results) == 1
    assert all("SESSION_MAX_KEYS" in error_text(result) for result in results if result.is_error)
    assert len(described["sessions"][0]["keys"]) == 5


async def test_a_viewer_granted_read_cannot_delete_a_key(runtime, fresh_prefix):
    rt = instance(runtime, fresh_prefix)
    async with Client(app_for(rt, "analyst").mcp) as owner, Client(app_for(rt, "viewer").mcp) as viewer:
        session = (await call(owner, "session_create", data_source="database", user_id="viewer"))[
            "session_id"
        ]
        await call(owner, "session_update", session_id=session, key="kept", value=1)
        await refusal(viewer, "session_delete_key", session_id=session, key="kept")
        assert (await call(owner, "session_read", session_id=session, key="kept"))["value"] == 1


def label_values(text: str) -> set[str]:
    return {
        value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        for value in sample.labels.values()
    }


@pytest.mark.http
async def test_metrics_needs_a_valid_key_and_names_no_user_or_key(runtime, fresh_prefix, api_keys):
    rt = instance(runtime, fresh_prefix)
    for user in ("analyst", "analyst2"):
        async with Client(app_for(rt, user).mcp) as client:
            await call(client, "session_create", data_source="database")
            await client.read_resource("docs://data_dictionary")
            await refusal(client, "generate_data")
    async with serving(rt) as url, httpx.AsyncClient() as http:
        anonymous = await http.get(f"{url}/metrics")
        wrong = await http.get(f"{url}/metrics", headers={"X-API-Key": "not-a-key"})
        scraped = await http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {api_keys['viewer']}"})
        health = await http.get(f"{url}/health")
    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert "valid key" in anonymous.json()["detail"] and "analytics_mcp" not in anonymous.text
    assert health.status_code == 200  # the load balancer's check stays open
    assert scraped.status_code == 200
    assert "analytics_mcp_tool_calls_total" in scraped.text
    identities = {entry.user_id for entry in rt.settings.api_keys} | {
        entry.key_id for entry in rt.settings.api_keys
    }
    assert not label_values(scraped.text) & identities
    assert not any(key_id in scraped.text for key_id in (entry.key_id for entry in rt.settings.api_keys))


@pytest.mark.http
async def test_metrics_public_true_serves_metrics_without_a_key(runtime, fresh_prefix):
    assert Settings.from_env({"METRICS_PUBLIC": "true"}).metrics_public
    assert not Settings.from_env({}).metrics_public
    rt = instance(runtime, fresh_prefix, metrics_public=True)
    async with serving(rt) as url, httpx.AsyncClient() as http:
        response = await http.get(f"{url}/metrics")
    assert response.status_code == 200 and "analytics_mcp" in response.text


async def _open_session(http: httpx.AsyncClient, url: str, key: str) -> str:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "probe", "version": "1"},
        },
    }
    response = await http.post(f"{url}/mcp", headers={**MCP_HEADERS, "X-API-Key": key}, json=initialize)
    assert response.status_code == 200, response.text
    session = response.headers["mcp-session-id"]
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    headers = {
        **MCP_HEADERS,
        "X-API-Key": key,
        "Mcp-Session-Id": session,
        "MCP-Protocol-Version": "2025-06-18",
    }
    assert (await http.post(f"{url}/mcp", headers=headers, json=initialized)).status_code == 202
    return session


@pytest.mark.http
async def test_an_mcp_session_id_works_only_for_the_key_that_opened_it(runtime, api_keys):
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    async with serving(runtime) as url, httpx.AsyncClient(timeout=30) as http:
        session = await _open_session(http, url, api_keys["analyst"])

        def as_user(user: str) -> dict[str, str]:
            return {
                **MCP_HEADERS,
                "X-API-Key": api_keys[user],
                "Mcp-Session-Id": session,
                "MCP-Protocol-Version": "2025-06-18",
            }

        stolen = await http.post(f"{url}/mcp", headers=as_user("analyst2"), json=listing)
        by_admin = await http.post(f"{url}/mcp", headers=as_user("admin"), json=listing)
        deleted = await http.delete(f"{url}/mcp", headers=as_user("analyst2"))
        owner = await http.post(f"{url}/mcp", headers=as_user("analyst"), json=listing)
        # A made-up id is answered the same way: the 404 does not confirm that an id exists.
        made_up = await http.post(
            f"{url}/mcp", headers={**as_user("analyst2"), "Mcp-Session-Id": "0" * 32}, json=listing
        )
        closed = await http.delete(f"{url}/mcp", headers=as_user("analyst"))
        after_close = await http.post(f"{url}/mcp", headers=as_user("analyst"), json=listing)
    for refused in (stolen, by_admin, deleted, made_up):
        assert refused.status_code == 404, refused.text[:200]
        assert refused.json()["error"]["message"] == "Session not found"
    assert owner.status_code == 200 and "summary_snapshot" in owner.text  # the session survived
    assert closed.status_code in (200, 204)
    assert after_close.status_code == 404


def _session_update_arguments(session: str, total: int) -> dict:
    """session_update arguments whose JSON encoding (as MAX_ARGUMENT_BYTES measures it) is `total` bytes."""
    arguments = {"session_id": session, "key": "big", "value": ""}
    overhead = len(json.dumps(arguments, ensure_ascii=False).encode())
    arguments["value"] = "x" * (total - overhead)
    assert len(json.dumps(arguments, ensure_ascii=False).encode()) == total
    return arguments


def test_the_default_size_limits_fit_inside_what_the_mcp_transport_accepts():
    settings = Settings()
    assert settings.max_argument_bytes + 10_000 <= settings.max_request_bytes <= MCP_MAX_BODY_BYTES
    from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

    assert MCP_MAX_BODY_BYTES == DEFAULT_MAX_REQUEST_BODY_SIZE


@pytest.mark.http
async def test_arguments_just_under_the_documented_limit_pass_and_just_over_get_one_line_over_http(
    runtime, base_settings, api_keys
):
    # The defaults, exactly as documented (the test runtime changes nothing about them).
    assert runtime.settings.max_argument_bytes == Settings().max_argument_bytes == 3_900_000
    assert runtime.settings.max_request_bytes == Settings().max_request_bytes == 4_000_000
    limit = runtime.settings.max_argument_bytes
    async with serving(runtime) as url:
        async with mcp_session(url, {"X-API-Key": api_keys["analyst"]}) as client:
            created = await client.call_tool("session_create", {"data_source": "size limits"})
            session = created.structured_content["session_id"]
            under = await client.call_tool("session_update", _session_update_arguments(session, limit - 10))
            assert not under.is_error, under.content[0].text
            assert under.structured_content["status"] == "stored"
            over = await client.call_tool("session_update", _session_update_arguments(session, limit + 10))
            assert over.is_error
            text = over.content[0].text
            assert "\n" not in text
            assert (
                f"arguments are {limit + 10:,} bytes, more than the {limit:,} allowed (MAX_ARGUMENT_BYTES)"
                in text
            )
        # A body over MAX_REQUEST_BYTES (but under the transport's 4 MiB) gets our 413, naming the setting.
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {
                    "name": "session_update",
                    "arguments": _session_update_arguments(session, 4_050_000),
                },
            }
        )
        async with httpx.AsyncClient(timeout=30) as http:
            too_large = await http.post(
                f"{url}/mcp", headers={**MCP_HEADERS, "X-API-Key": api_keys["analyst"]}, content=body
            )
    assert too_large.status_code == 413
    assert "MAX_REQUEST_BYTES" in too_large.json()["error"]["message"]
