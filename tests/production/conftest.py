"""Fixtures for the production tests: private PostgreSQL and Redis that tests may stop and restart,
and `analytics-mcp serve` subprocesses configured for them."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from mcp_server.config import digest_key
from tests.production.services import PrivatePostgres, PrivateRedis, ServerProcess, with_database
from warehouse.db import Database
from warehouse.generator import generate, make_plan

CUSTOMERS = 300
SEED = 11


@pytest.fixture(scope="session")
def private_folder() -> Any:
    with tempfile.TemporaryDirectory(prefix="amcp-prod-") as folder:
        yield Path(folder)


@pytest.fixture(scope="session")
def private_redis(private_folder: Path) -> Any:
    server = PrivateRedis(private_folder / "redis", password=secrets.token_hex(12))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def private_postgres(private_folder: Path) -> Any:
    server = PrivatePostgres(private_folder / "pgdata")
    yield server
    server.close()


@pytest.fixture(scope="session")
def server_keys() -> dict[str, str]:
    return {"analyst": f"prod-analyst-{secrets.token_hex(8)}", "admin": f"prod-admin-{secrets.token_hex(8)}"}


@pytest.fixture(scope="session")
async def seeded_database(private_postgres: PrivatePostgres) -> Callable[..., Any]:
    """`await seeded_database()`: a new database on the private server with demo data; returns its URL."""

    async def make(customers: int = CUSTOMERS, seed: int = SEED) -> str:
        name = f"amcp_prod_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(private_postgres.url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        url = with_database(private_postgres.url, name)
        db = Database(url, min_size=1, max_size=2)
        await db.start()
        try:
            await db.apply_schema()
            await db.replace_data(await asyncio.to_thread(generate, make_plan(customers, seed)))
        finally:
            await db.close()
        return url

    return make


@pytest.fixture(scope="session")
def server_env(private_folder: Path, private_redis: PrivateRedis, server_keys: dict[str, str]) -> Callable:
    """The environment of a server instance; every instance of one deployment shares it."""
    encryption_key = Fernet.generate_key().decode()

    def make(database_url: str, prefix: str, **extra: str) -> dict[str, str]:
        return {
            "DATABASE_URL": database_url,
            "REDIS_URL": private_redis.url,
            "REDIS_KEY_PREFIX": prefix,
            "API_KEYS": ",".join(f"{user}:{user}:{digest_key(key)}" for user, key in server_keys.items()),
            "SESSION_ENCRYPTION_KEY": encryption_key,
            "ANALYTICS_MCP_HOME": str(private_folder / "home"),
            "DB_POOL_MIN_SIZE": "1",
            "DB_POOL_MAX_SIZE": "5",
            "RATE_LIMIT_PER_MINUTE": "100000",
            "LOG_LEVEL": "WARNING",
            "FASTMCP_STATELESS_HTTP": "true",
            **extra,
        }

    return make


@pytest.fixture(scope="module")
async def deployment(seeded_database: Callable[..., Any], server_env: Callable) -> AsyncIterator[Any]:
    """Two server processes on one PostgreSQL database and one Redis: a stateless deployment."""
    env = server_env(await seeded_database(), f"amcp-prod-{uuid.uuid4().hex[:8]}:")
    servers = [ServerProcess(env), ServerProcess(env)]
    try:
        await asyncio.gather(*(server.start() for server in servers))
        yield servers
    finally:
        await asyncio.gather(*(server.stop() for server in servers))
