"""Fixtures for the import tool tests: a runtime whose IMPORT_DIR is a temporary folder, clients per user."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from mcp_server.runtime import Runtime
from tests.conftest import USERS, app_for

IMPORT_MAX_BYTES = 400_000


@pytest.fixture(scope="module")
def import_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="amcp-import-") as folder:
        inside = Path(folder) / "imports"
        inside.mkdir()
        yield inside


@pytest.fixture(scope="module")
async def import_runtime(make_runtime: Callable[..., Any], import_dir: Path) -> AsyncIterator[Runtime]:
    async with make_runtime(customers=None, import_dir=import_dir, import_max_bytes=IMPORT_MAX_BYTES) as rt:
        yield rt


@pytest.fixture(scope="module")
def as_user(import_runtime: Runtime) -> Callable[[str], Client]:
    """`async with as_user("analyst") as client`: an in-memory MCP client of the import runtime."""
    apps = {user: app_for(import_runtime, user) for user in USERS}

    def make(user: str) -> Client:
        return Client(apps[user].mcp)

    return make
