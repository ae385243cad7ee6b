"""The request id of a call, carried into its PostgreSQL and Redis work.

Every pooled connection lent to a call is labelled `analytics-mcp/<request id>` (its application_name:
visible in pg_stat_activity and, with %a in log_line_prefix, in PostgreSQL's own log) and given back
unlabelled by the pool's RESET ALL. With LOG_LEVEL=DEBUG each SQL statement and Redis round trip made
for a call is also a JSON log line carrying that request id: SQL with its literals masked, Redis
command names only, never keys or values.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from mcp_server.logs import request_id_var
from mcp_server.runtime import Runtime
from mcp_server.tracing import sanitize_statement
from warehouse.labels import label_connection

if TYPE_CHECKING:
    from mcp_server.app import App

log = logging.getLogger("analytics_mcp.correlation")

LABEL_PREFIX = "analytics-mcp/"


def _log_statement(record: Any) -> None:
    """asyncpg query logger, called in the statement's context (so with the call's request id)."""
    if request_id_var.get() is None:
        return
    statement = sanitize_statement(str(record.query), limit=300)
    log.debug(
        "sql statement",
        extra={
            "statement": statement,
            "duration_ms": round(record.elapsed * 1000, 3),
            "failed": record.exception is not None,
        },
    )


def call_label() -> str | None:
    """The application_name for connections serving the current call (None outside a call)."""
    request_id = request_id_var.get()
    return None if request_id is None else LABEL_PREFIX + request_id


def _label_connections(runtime: Runtime) -> None:
    db = runtime.db
    if getattr(db, "_analytics_mcp_labelled", False):
        return
    acquire = db.connection

    @asynccontextmanager
    async def connection(*args: Any, label: bool = True, **kwargs: Any) -> AsyncIterator[Any]:
        async with acquire(*args, **kwargs) as conn:
            request_id = request_id_var.get()
            if request_id is not None:
                # label=False: the caller labels it in a batch it sends anyway (call_label), or it is one
                # short internal read (the data version); either way no round trip of its own
                if label:
                    await label_connection(conn, LABEL_PREFIX + request_id)
                if log.isEnabledFor(logging.DEBUG):
                    conn.add_query_logger(_log_statement)  # a set: adding it again is a no-op
            yield conn

    db.connection = connection  # type: ignore[method-assign]
    db._analytics_mcp_labelled = True  # type: ignore[attr-defined]


def _log_redis(runtime: Runtime) -> None:
    client = runtime.redis
    if getattr(client, "_analytics_mcp_logged", False):
        return
    execute_command = client.execute_command
    make_pipeline = client.pipeline

    @functools.wraps(execute_command)
    async def logged_command(*args: Any, **options: Any) -> Any:
        if request_id_var.get() is None or not log.isEnabledFor(logging.DEBUG):
            return await execute_command(*args, **options)
        started = time.perf_counter()
        try:
            return await execute_command(*args, **options)
        finally:
            log.debug(
                "redis command",
                extra={
                    "command": str(args[0]).upper() if args else "?",
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )

    @functools.wraps(make_pipeline)
    def logged_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipeline = make_pipeline(*args, **kwargs)
        execute = pipeline.execute

        async def logged_execute(*execute_args: Any, **execute_kwargs: Any) -> Any:
            if request_id_var.get() is None or not log.isEnabledFor(logging.DEBUG):
                return await execute(*execute_args, **execute_kwargs)
            commands = len(pipeline)
            started = time.perf_counter()
            try:
                return await execute(*execute_args, **execute_kwargs)
            finally:
                log.debug(
                    "redis command",
                    extra={
                        "command": "PIPELINE",
                        "commands": commands,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    },
                )

        pipeline.execute = logged_execute  # type: ignore[method-assign]
        return pipeline

    client.execute_command = logged_command  # type: ignore[method-assign]
    client.pipeline = logged_pipeline  # type: ignore[method-assign]
    client._analytics_mcp_logged = True  # type: ignore[attr-defined]


def install(app: App) -> None:
    _label_connections(app.runtime)
    _log_redis(app.runtime)
