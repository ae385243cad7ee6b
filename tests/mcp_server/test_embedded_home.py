"""One embedded home, many processes: a stdio server started while `make run` serves attaches to the
running embedded PostgreSQL and Redis, never stops what it did not start, and the last one out stops them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.support import free_port, mcp_session

pytestmark = [pytest.mark.slow, pytest.mark.http]


def _embedded_processes(home: Path) -> list[psutil.Process]:
    """The embedded PostgreSQL and Redis of `home` (their command lines name its folder)."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            if process.info["name"] in ("postgres", "redis-server") or "redis" in (
                process.info["name"] or ""
            ):
                if any(str(home) in part for part in process.info["cmdline"] or []):
                    found.append(process)
        except psutil.Error:
            continue
    return found


def _environment(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "API_KEYS", "SESSION_ENCRYPTION_KEY", "MCP_API_KEY"}
    }
    env.update({"ANALYTICS_MCP_HOME": str(home), "DEMO_CUSTOMERS": "200"})
    return env


async def _wait_healthy(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient() as http:
        while True:
            assert process.poll() is None, "the HTTP server exited during start-up: see http.log"
            try:
                if (await http.get(f"http://127.0.0.1:{port}/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server did not become healthy within 90 s"
            await asyncio.sleep(0.25)


async def _count_customers(port: int, key: str) -> int:
    async with mcp_session(f"http://127.0.0.1:{port}", {"X-API-Key": key}) as session:
        result = await session.call_tool("query_database", {"query": "SELECT count(*) AS n FROM customers"})
    assert not result.is_error, result.content
    return int(result.structured_content["rows"][0]["n"])


async def test_a_stdio_server_on_the_same_home_leaves_the_http_servers_services_running(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    env = _environment(home)
    port = free_port()
    http_server = subprocess.Popen(
        [sys.executable, "-m", "mcp_server.cli", "serve", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "http.log").open("wb"),
    )
    try:
        await _wait_healthy(port, http_server)
        key = (home / "api-key").read_text().strip()
        assert await _count_customers(port, key) == 200
        running = {p.pid for p in _embedded_processes(home)}
        assert running, "the HTTP server should have started embedded services"

        # The documented Claude Desktop set-up: the client starts `analytics-mcp serve --transport stdio`.
        parameters = StdioServerParameters(
            command=sys.executable, args=["-m", "mcp_server.cli", "serve", "--transport", "stdio"], env=env
        )
        with open(os.devnull, "w") as quiet:
            async with stdio_client(parameters, errlog=quiet) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    result = await session.call_tool(
                        "query_database", {"query": "SELECT count(*) AS n FROM customers"}
                    )
                    assert not result.is_error, result.content
                    assert result.structured_content["rows"][0]["n"] == 200
        # The stdio server attached to the same servers rather than starting its own...
        assert {p.pid for p in _embedded_processes(home)} == running
        await asyncio.sleep(1)
        # ...and, now that it has exited, they still run and the HTTP server still answers.
        assert {p.pid for p in _embedded_processes(home) if p.is_running()} == running
        assert await _count_customers(port, key) == 200
    finally:
        http_server.send_signal(signal.SIGINT)
        await asyncio.to_thread(http_server.wait, 30)
    assert http_server.returncode == 0
    deadline = time.monotonic() + 10
    while _embedded_processes(home) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert _embedded_processes(home) == [], "the last process out must stop the embedded services"
