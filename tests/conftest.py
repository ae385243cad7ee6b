"""Fixtures: real PostgreSQL and Redis (this machine's when reachable, else embedded), one database and
one Redis key prefix per test run, cleaned up at the end; in-memory MCP clients per role."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from fastmcp import Client

from mcp_server.app import App
from mcp_server.config import Settings, digest_key
from mcp_server.runtime import Runtime, start_runtime
from mcp_server.server import build_app
from warehouse import sql, sqlguard
from warehouse.db import query_role_name
from warehouse.generator import generate, make_plan

SEED_CUSTOMERS = 2_000
SEED = 7
USERS = {
    "admin": "admin",
    "analyst": "analyst",
    "analyst2": "analyst",
    "viewer": "viewer",
    "viewer2": "viewer",
}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def embedded_home() -> Any:
    with tempfile.TemporaryDirectory(prefix="amcp-test-") as home:
        yield Path(home)


@pytest.fixture(scope="session")
def pg_admin_url(embedded_home: Path) -> Any:
    """A PostgreSQL URL with the right to create databases."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    if _reachable("127.0.0.1", 5432):
        yield "postgresql://postgres@127.0.0.1:5432/postgres"
        return
    from core.embedded import EmbeddedServices

    services = EmbeddedServices(embedded_home / "pg")
    yield services.start_postgres()
    services.stop()


@pytest.fixture(scope="session", autouse=True)
async def function_policy(pg_admin_url: str) -> None:
    """The SQL guard's function policy as a server on this PostgreSQL has it (the built-ins read from
    the catalog), so the guard's own tests need no runtime; every runtime started installs it again."""
    conn = await asyncpg.connect(pg_admin_url)
    try:
        rows = await conn.fetch(sql.load("builtin_functions"))
    finally:
        await conn.close()
    sqlguard.use_function_policy(sqlguard.FunctionPolicy(frozenset(row["name"] for row in rows)))


@pytest.fixture(scope="session")
def redis_url(embedded_home: Path) -> Any:
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    if _reachable("127.0.0.1", 6379):
        yield "redis://127.0.0.1:6379/0"
        return
    from core.embedded import EmbeddedServices

    services = EmbeddedServices(embedded_home / "redis")
    yield services.start_redis()
    services.stop()


def _with_database(url: str, name: str) -> str:
    """The same server URL pointing at database `name` (works for host:port and socket URLs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="session")
async def create_database(pg_admin_url: str) -> AsyncIterator[Callable[[], Any]]:
    """Makes empty databases for this run; drops them all at the end, and the query roles the server
    made for them (one per database, warehouse/db.py query_role_name: roles outlive their database)."""
    made: list[str] = []

    async def create() -> str:
        name = f"amcp_test_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(pg_admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        made.append(name)
        return _with_database(pg_admin_url, name)

    yield create
    conn = await asyncpg.connect(pg_admin_url)
    try:
        for name in made:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'DROP ROLE IF EXISTS "{query_role_name(name)}"')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def api_keys() -> dict[str, str]:
    """user id -> plaintext key; each user has the role USERS gives it."""
    return {user: f"test-{user}-{secrets.token_hex(8)}" for user in USERS}


@pytest.fixture(scope="session")
def redis_prefix() -> str:
    return f"amcp-test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture(scope="session")
async def redis_cleanup(redis_url: str, redis_prefix: str) -> AsyncIterator[None]:
    yield
    client = aioredis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=redis_prefix + "*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def base_settings(
    redis_url: str, redis_prefix: str, api_keys: dict[str, str], embedded_home: Path
) -> Settings:
    entries = ",".join(f"{user}:{USERS[user]}:{digest_key(key)}" for user, key in api_keys.items())
    env = {
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": redis_prefix,
        "API_KEYS": entries,
        "SESSION_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "ANALYTICS_MCP_HOME": str(embedded_home / "home"),
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "10",
        "RATE_LIMIT_PER_MINUTE": "100000",
        "DATABASE_URL": "postgresql://placeholder/replaced-per-runtime",
    }
    return Settings.from_env(env)


@pytest.fixture(scope="session")
async def make_runtime(
    base_settings: Settings, create_database: Callable[[], Any], redis_cleanup: None
) -> AsyncIterator[Callable[..., Any]]:
    """`async with make_runtime(customers=..., seed=..., **setting_changes) as rt`: a runtime on a new database."""

    @asynccontextmanager
    async def make(
        customers: int | None = SEED_CUSTOMERS, seed: int = SEED, **changes: Any
    ) -> AsyncIterator[Runtime]:
        url = await create_database()
        settings = base_settings.with_changes(database_url=url, **changes)
        runtime = await start_runtime(settings, seed_demo=False)
        try:
            if customers:
                data = await asyncio.to_thread(generate, make_plan(customers, seed))
                await runtime.db.replace_data(data)
            yield runtime
        finally:
            await runtime.close()

    yield make


@pytest.fixture(scope="session")
async def runtime(make_runtime: Callable[..., Any]) -> AsyncIterator[Runtime]:
    """The shared runtime: seeded with SEED_CUSTOMERS customers, seed SEED. Treat its data as read-only."""
    async with make_runtime() as rt:
        yield rt


def app_for(runtime: Runtime, user: str) -> App:
    """A server whose non-HTTP caller (the in-memory client) is `user`."""
    from mcp_server.auth import Identity

    entry = next(e for e in runtime.settings.api_keys if e.user_id == user)
    return build_app(runtime, local_identity=Identity(entry.user_id, entry.role, entry.key_id))


@pytest.fixture(scope="session")
def apps(runtime: Runtime) -> dict[str, App]:
    return {user: app_for(runtime, user) for user in USERS}


@pytest.fixture(scope="session")
def connect(apps: dict[str, App]) -> Callable[[str], Client]:
    """`async with connect("analyst") as client`: an in-memory MCP client acting as that user."""

    def make(user: str = "analyst") -> Client:
        return Client(apps[user].mcp)

    return make
