"""Rate limits per API key, in a Redis window shared by every instance; refused calls do no work."""

from __future__ import annotations

import asyncio
import re

import httpx
from fastmcp import Client

from mcp_server.auth import ANALYST
from tests.conftest import app_for
from tests.security.conftest import instance
from tests.support import call, mcp_session, refusal, serving

LIMIT = 5
WINDOW = 2  # seconds


def counting_app(runtime, user, counter):
    """The real server plus a probe tool that counts the times its body actually runs."""
    app = app_for(runtime, user)

    @app.tool(roles=ANALYST, name="probe")
    async def probe() -> dict:
        counter.append(1)
        return {"ran": len(counter)}

    return app


def retry_after(message: str) -> int:
    found = re.search(r"retry after (\d+) s", message)
    assert found, message
    return int(found.group(1))


async def test_the_limit_is_shared_by_two_instances_hits_at_the_configured_count_and_lifts_after_the_window(
    runtime, fresh_prefix
):
    settings = {"rate_limit_per_minute": LIMIT, "rate_limit_window_seconds": WINDOW}
    first, second = (instance(runtime, fresh_prefix, **settings) for _ in range(2))
    ran: list[int] = []
    one, two = counting_app(first, "analyst", ran), counting_app(second, "analyst", ran)
    async with Client(one.mcp) as a, Client(two.mcp) as b:
        await a.list_tools()  # as clients do on connecting; a list counts as one call
        await b.list_tools()
        await call(a, "probe")
        await call(b, "probe")
        await call(a, "probe")
        message = await refusal(b, "probe")
        assert f"rate limit reached: {LIMIT} calls per {WINDOW} s" in message
        assert "rate limit reached" in await refusal(a, "probe")  # the other instance agrees
        assert len(ran) == LIMIT - 2, "a refused call must not run the tool"
        # Another key has its own budget.
        async with Client(counting_app(second, "analyst2", ran).mcp) as other:
            await call(other, "probe")
        await asyncio.sleep(retry_after(message) + 0.2)
        await call(b, "probe")
    assert len(ran) == LIMIT


async def test_refused_calls_do_not_extend_the_ban(runtime, fresh_prefix):
    rt = instance(runtime, fresh_prefix, rate_limit_per_minute=1, rate_limit_window_seconds=1)
    async with Client(app_for(rt, "analyst").mcp) as client:
        await client.list_tools()
        await asyncio.sleep(1.2)
        await call(client, "summary_snapshot")
        for _ in range(5):
            await refusal(client, "summary_snapshot")
        await asyncio.sleep(1.2)
        await call(client, "summary_snapshot")


async def test_raw_http_gets_429_with_retry_after_once_the_key_is_over_its_limit(
    runtime, fresh_prefix, api_keys
):
    rt = instance(runtime, fresh_prefix, rate_limit_per_minute=3, rate_limit_window_seconds=30)
    request = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "summary_snapshot"}}
    headers = {"X-API-Key": api_keys["analyst"], "Accept": "application/json, text/event-stream"}
    async with serving(rt) as url:
        async with mcp_session(url, {"X-API-Key": api_keys["analyst"]}) as session:
            for _ in range(2):  # the client lists tools after the first call: three calls in all
                assert not (await session.call_tool("summary_snapshot", {})).is_error
        async with httpx.AsyncClient() as http:
            limited = await http.post(f"{url}/mcp", headers=headers, json=request)
            # Listing tools counts too: refused the same way.
            listing = await http.post(
                f"{url}/mcp", headers=headers, json={"jsonrpc": "2.0", "id": 8, "method": "tools/list"}
            )
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 30
    body = limited.json()
    assert body["error"]["data"]["reason"] == "rate_limited" and "retry after" in body["error"]["message"]
    assert listing.status_code == 429
