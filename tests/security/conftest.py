"""Helpers for the security and observability tests: server "instances" sharing one Redis, log capture."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mcp_server import logs
from mcp_server.runtime import Runtime


def instance(runtime: Runtime, prefix: str | None = None, **settings: Any) -> Runtime:
    """Another server instance on the same PostgreSQL and Redis: its own services and metrics.

    With `prefix` (a fresh one per test) several instances share state in Redis under it, isolated
    from every other test; it stays under the run's prefix, so the session cleanup removes it."""
    changes = dict(settings)
    if prefix is not None:
        changes["redis_key_prefix"] = prefix
    return replace(
        runtime,
        settings=runtime.settings.with_changes(**changes),
        metrics=CollectorRegistry(),
    )


@pytest.fixture
def fresh_prefix(runtime: Runtime) -> str:
    return f"{runtime.settings.redis_key_prefix}sec-{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line the process writes (JSON, as in production, at DEBUG) while the test runs."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    buffer = io.StringIO()
    logs.install_handler(logging.StreamHandler(buffer), "DEBUG")
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
