"""Shared by the benchmarks: a scratch database (and Redis) on this machine's servers, else embedded ones."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from warehouse.db import query_role_name


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
        from core.embedded import EmbeddedServices

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
        await conn.execute(f'DROP ROLE IF EXISTS "{query_role_name(name)}"')  # the server made it for it
        await conn.close()
        if embedded is not None:
            embedded.stop()
        home.cleanup()


@asynccontextmanager
async def seeded_database(customers: int, seed: int = 42) -> AsyncIterator[str]:
    """A scratch database with the schema and the generated telecom data, for servers started on it."""
    import asyncio

    from warehouse.db import Database
    from warehouse.generator import generate, make_plan

    async with scratch_database() as url:
        db = Database(url, min_size=1, max_size=2)
        await db.start()
        await db.apply_schema()
        await db.replace_data(await asyncio.to_thread(generate, make_plan(customers, seed)))
        await db.close()
        yield url


def redis_url_for_bench() -> str | None:
    """This machine's Redis when reachable (None means: let the runtime embed one)."""
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        return url
    return "redis://127.0.0.1:6379/0" if _reachable("127.0.0.1", 6379) else None


@asynccontextmanager
async def bench_runtime(
    url: str, customers: int | None = None, seed: int = 42, extra_env: dict[str, str] | None = None
) -> AsyncIterator[Any]:
    """A server runtime on `url` under its own Redis key prefix (removed afterwards), seeded with
    `customers` customers when given (the load time is printed); `extra_env` adds settings (e.g.
    ANALYTICS_MCP_SOURCES)."""
    import asyncio
    import time

    from cryptography.fernet import Fernet

    from mcp_server.config import Settings
    from mcp_server.runtime import start_runtime
    from warehouse.generator import generate, make_plan

    prefix = f"amcp-bench-{uuid.uuid4().hex[:8]}:"
    env = {
        "DATABASE_URL": url,
        "REDIS_KEY_PREFIX": prefix,
        "SESSION_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "API_KEYS": "bench:analyst:" + "0" * 64,
        "RATE_LIMIT_PER_MINUTE": "1000000",  # a bench makes thousands of calls a minute as one user
        "ANALYTICS_MCP_HOME": os.path.join(os.getcwd(), ".analytics-mcp-bench"),
    }
    redis_url = redis_url_for_bench()
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra_env or {})
    runtime = await start_runtime(Settings.from_env(env), seed_demo=False)
    try:
        if customers:
            started = time.perf_counter()
            report = await runtime.db.replace_data(
                await asyncio.to_thread(generate, make_plan(customers, seed))
            )
            elapsed = time.perf_counter() - started
            print(f"loaded {report.rows:,} rows ({customers:,} customers) in {elapsed:.1f} s")
        yield runtime
    finally:
        # Closed first: its background writers (latency, audit) flush on close, under the prefix too.
        await runtime.close()
        if redis_url:  # an embedded Redis went away with the runtime
            import redis.asyncio as aioredis

            client = aioredis.from_url(redis_url)
            try:
                async for key in client.scan_iter(match=prefix + "*", count=1000):
                    await client.delete(key)
            finally:
                await client.aclose()


async def best_of(
    repeats: int, run: Callable[[], Awaitable[Any]], before: Callable[[], Awaitable[Any]] | None = None
) -> float:
    """The fastest of `repeats` timed runs of `run` (seconds), each after an untimed `before`."""
    import time

    best = float("inf")
    for _ in range(repeats):
        if before is not None:
            await before()
        started = time.perf_counter()
        await run()
        best = min(best, time.perf_counter() - started)
    return best


async def pull(runtime: Any, table: str) -> tuple[Any, float]:
    """The naive way: SELECT * into a pandas DataFrame (timestamps parsed); returns it and the seconds taken."""
    import time

    import pandas as pd

    started = time.perf_counter()
    chunks = []
    # Every row still passes through Python; a cursor only keeps 30 million asyncpg records (1,000,000
    # customers) from being in memory at once.
    async with runtime.db.connection() as conn, conn.transaction():
        cursor = await conn.cursor(f"SELECT * FROM {table}")  # noqa: S608 - our constant table names
        while records := await cursor.fetch(200_000):
            columns = list(records[0].keys())
            chunks.append(pd.DataFrame([tuple(record) for record in records], columns=columns))
    del records
    frame = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame()
    del chunks
    for name in ("created_at", "churn_date", "event_timestamp", "transaction_date"):
        if name in frame.columns:
            frame[name] = pd.to_datetime(frame[name])
    return frame, time.perf_counter() - started


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    """Until `process` listens on `port`; an error if it exits first or takes longer than `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {seconds} s")


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile (0-100) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]
