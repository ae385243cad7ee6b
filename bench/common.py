"""Shared by the benchmarks: a scratch database (and Redis) on this machine's servers, else embedded ones."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@asynccontextmanager
async def scratch_database() -> AsyncIterator[str]:
    """A new, empty database for one benchmark run; dropped afterwards."""
    embedded = None
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if not admin_url and _reachable("127.0.0.1", 5432):
        admin_url = "postgresql://postgres@127.0.0.1:5432/postgres"
    home = tempfile.TemporaryDirectory(prefix="amcp-bench-")
    if not admin_url:
        from mcp_server.embedded import EmbeddedServices

        embedded = EmbeddedServices(Path(home.name))
        admin_url = embedded.start_postgres()
    name = f"amcp_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield urlunsplit(urlsplit(admin_url)._replace(path="/" + name))
    finally:
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
        if embedded is not None:
            embedded.stop()
        home.cleanup()


def redis_url_for_bench() -> str | None:
    """This machine's Redis when reachable (None means: let the runtime embed one)."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        return url
    return "redis://127.0.0.1:6379/0" if _reachable("127.0.0.1", 6379) else None
