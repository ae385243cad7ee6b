"""This machine's MariaDB for engine tests: root connections and a scratch database made and dropped."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncmy

HOST, PORT = "127.0.0.1", 3306


async def root(database: str | None = None) -> Any:
    return await asyncmy.connect(host=HOST, port=PORT, user="root", password="", db=database, autocommit=True)


async def root_fetch(database: str, sql: str, arguments: Any = None) -> list[tuple[Any, ...]]:
    """Plain SQL as root: the independent computation an engine's answers are checked against."""
    conn = await root(database)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, arguments)
            return list(await cursor.fetchall())
    finally:
        conn.close()


@asynccontextmanager
async def scratch(setup: Sequence[str], teardown: Sequence[str]) -> AsyncIterator[None]:
    """Run `setup` as root, yield, and always run `teardown` (databases and users dropped)."""
    conn = await root()
    try:
        async with conn.cursor() as cursor:
            try:
                for statement in setup:
                    await cursor.execute(statement)
                yield
            finally:
                for statement in teardown:
                    await cursor.execute(statement)
    finally:
        conn.close()


def reader_database(label: str) -> tuple[str, str, str, list[str], list[str]]:
    """Names for an empty scratch database and a user that may only SELECT from it: (database, reader,
    password, setup, teardown), the last two for `scratch`."""
    suffix = secrets.token_hex(4)
    database, reader, password = (
        f"amcp_{label}_{suffix}",
        f"amcp_{label}_r_{suffix}",
        secrets.token_urlsafe(12),
    )
    setup = [
        f"CREATE DATABASE {database}",
        f"CREATE USER '{reader}'@'%' IDENTIFIED BY '{password}'",
        f"GRANT SELECT ON {database}.* TO '{reader}'@'%'",
    ]
    teardown = [f"DROP USER IF EXISTS '{reader}'@'%'", f"DROP DATABASE IF EXISTS {database}"]
    return database, reader, password, setup, teardown
