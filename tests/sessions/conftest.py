"""Fixtures for the session tests: a runtime on its own database (archives write to it) and clients per user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastmcp import Client

from mcp_server.runtime import Runtime
from tests.conftest import USERS, app_for


@pytest.fixture(scope="module")
async def sessions_runtime(make_runtime: Callable[..., Any]) -> AsyncIterator[Runtime]:
    """A runtime with an empty database of its own: session archives are written there."""
    async with make_runtime(customers=None) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def as_user(sessions_runtime: Runtime) -> Callable[[str], Client]:
    """`async with as_user("analyst") as client`: an in-memory MCP client acting as that user."""
    apps = {user: app_for(sessions_runtime, user) for user in USERS}

    def make(user: str) -> Client:
        return Client(apps[user].mcp)

    return make
