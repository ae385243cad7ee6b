"""Real streamable HTTP over loopback: authentication before MCP, /health, and the embedded `serve` end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import psutil
import pytest

from mcp_server.runtime import redis_client
from tests.support import free_port, mcp_session, serving

pytestmark = pytest.mark.http


@pytest.fixture(scope="module")
async def base_url(runtime):
    async with serving(runtime) as url:
        yield url


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong-key"},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
)
async def test_mcp_without_a_valid_key_gets_401_before_any_mcp_handling(base_url, headers):
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{base_url}/mcp",
            headers={**headers, "Accept": "application/json, text/event-stream"},
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
        )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization"])
async def test_the_official_mcp_client_works_with_either_header(base_url, api_keys, header):
    value = api_keys["analyst"] if header == "X-API-Key" else f"Bearer {api_keys['analyst']}"
    async with mcp_session(base_url, {header: value}) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert "summary_snapshot" in tools
        result = await session.call_tool("summary_snapshot", {})
        assert not result.is_error
        assert result.structured_content["tables"]["customers"]["rows"] > 0


async def test_a_viewer_over_http_is_refused_analyst_tools(base_url, api_keys):
    async with mcp_session(base_url, {"X-API-Key": api_keys["viewer"]}) as session:
        result = await session.call_tool("summary_snapshot", {})
    assert result.is_error
    assert "viewer" in result.content[0].text


async def test_health_is_200_when_postgres_and_redis_answer(base_url):
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base_url}/health")
    assert response.status_code == 200
    assert response.json()["components"] == {"postgres": "ok", "redis": "ok"}


async def test_health_is_503_naming_redis_when_redis_is_unreachable(runtime):
    dead_port = free_port()  # nothing listens here
    broken = replace(runtime, redis=redis_client(f"redis://127.0.0.1:{dead_port}/0"))
    async with serving(broken) as url, httpx.AsyncClient() as http:
        response = await http.get(f"{url}/health")
    await broken.redis.aclose()
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["redis"]
    assert body["components"]["postgres"] == "ok"


def _processes_under(home: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if any(str(home) in part for part in process.info["cmdline"] or []):
                found.append(process)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
async def test_serve_with_no_settings_starts_embedded_services_and_leaves_nothing_behind(tmp_path):
    """What `make run` does: embedded PostgreSQL and Redis, demo data, a printed key, clean Ctrl-C."""
    home = tmp_path / "home"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "API_KEYS", "SESSION_ENCRYPTION_KEY", "MCP_API_KEY"}
    }
    env.update({"ANALYTICS_MCP_HOME": str(home), "DEMO_CUSTOMERS": "300"})
    process = subprocess.Popen(
        [sys.executable, "-m", "mcp_server.cli", "serve", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as http:
            while True:
                assert process.poll() is None, process.stderr.read().decode()[-2000:]
                try:
                    if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not become healthy within 60 s"
                await asyncio.sleep(0.25)
        key_file = home / "api-key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        key = key_file.read_text().strip()
        async with mcp_session(f"http://127.0.0.1:{port}", {"X-API-Key": key}) as session:
            result = await session.call_tool("summary_snapshot", {})
        assert result.structured_content["tables"]["customers"]["rows"] == 300
        assert _processes_under(home), "embedded services should be running"
    finally:
        process.send_signal(signal.SIGINT)
        stderr = (await asyncio.to_thread(process.communicate, timeout=30))[1].decode()
    assert process.returncode == 0, stderr[-2000:]
    assert key in stderr  # printed at start-up with the client configuration
    assert '"mcpServers"' in stderr
    await asyncio.sleep(0.5)
    assert _processes_under(home) == []
