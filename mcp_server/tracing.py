"""OpenTelemetry tracing, opt-in: on when OTEL_EXPORTER_OTLP_ENDPOINT is set (or a test supplies an exporter).

One span per tool call, resource read and prompt get (with request id, user, outcome), and under it
one span per SQL statement and per Redis round trip made while serving that call. SQL text is
recorded with its literals replaced by '?', never with its parameter values. With tracing off no
hook is installed and nothing is paid.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from mcp_server.audit import component_name
from mcp_server.runtime import Runtime

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

    from mcp_server.app import App, CallInfo

log = logging.getLogger(__name__)

# The tracer of the call being served: SQL and Redis spans are made only inside a traced call.
_active: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar("analytics_mcp_tracer", default=None)

_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b")


def sanitize_statement(statement: str, limit: int = 1000) -> str:
    """SQL text without its literal values, for a span attribute."""
    statement = _NUMBER.sub("?", _STRING_LITERAL.sub("'?'", statement))
    statement = " ".join(statement.split())
    return statement[:limit]


def enable(runtime: Runtime, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """The runtime's tracer provider: exporting to `exporter` (tests) or to OTLP at the configured
    endpoint; None when tracing is off. Call before build_app."""
    found = runtime.extras.get("tracer_provider")
    if found is not None:
        return found
    if exporter is None and not runtime.settings.otel_endpoint:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "analytics-mcp"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = runtime.settings.otel_endpoint or ""
        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces"))
        )
    runtime.extras["tracer_provider"] = provider
    _trace_database(runtime)
    _trace_redis(runtime)
    return provider


def install(app: App) -> None:
    try:
        provider = enable(app.runtime)
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but opentelemetry-sdk is not installed; tracing is off"
        )
        return
    if provider is None:
        return
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    tracer = provider.get_tracer("analytics_mcp")
    open_spans: dict[int, tuple[Any, Any, contextvars.Token[Any]]] = {}

    async def start(info: CallInfo) -> None:
        name = component_name(app, info)
        span = tracer.start_span(
            f"{info.kind} {name}",
            kind=SpanKind.SERVER,
            attributes={
                "mcp.kind": info.kind,
                "mcp.name": name,
                "mcp.request_id": info.request_id,
                "enduser.id": info.identity.user_id if info.identity else "",
            },
        )
        context_token = otel_context.attach(trace.set_span_in_context(span))
        open_spans[id(info)] = (span, context_token, _active.set(tracer))

    async def finish(info: CallInfo) -> None:
        opened = open_spans.pop(id(info), None)
        if opened is None:
            return
        span, context_token, tracer_token = opened
        span.set_attribute("mcp.outcome", info.outcome)
        span.set_status(
            Status(StatusCode.OK) if info.outcome == "ok" else Status(StatusCode.ERROR, info.outcome)
        )
        span.end()
        _active.reset(tracer_token)
        otel_context.detach(context_token)

    app.before_call.insert(0, start)
    app.after_call.append(finish)


def _on_query(record: Any) -> None:
    """asyncpg query logger: called (in the query's context) right after each statement."""
    tracer = _active.get()
    if tracer is None:
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    ended = time.time_ns()
    statement = sanitize_statement(str(record.query))
    operation = statement.split(" ", 1)[0].upper() if statement else "SQL"
    span = tracer.start_span(
        f"sql {operation}",
        kind=SpanKind.CLIENT,
        start_time=ended - int(record.elapsed * 1e9),
        attributes={"db.system": "postgresql", "db.operation": operation, "db.statement": statement},
    )
    if record.exception is not None:
        span.set_status(Status(StatusCode.ERROR, type(record.exception).__name__))
    span.end(end_time=ended)


class _StatementSpan:
    """The span of one prepared statement, from PREPARE to its last fetch (asyncpg's query loggers
    see execute/fetch calls but not prepared statements and their cursors)."""

    def __init__(self, tracer: Tracer, query: str) -> None:
        from opentelemetry.trace import SpanKind

        statement = sanitize_statement(query)
        operation = statement.split(" ", 1)[0].upper() if statement else "SQL"
        self.span = tracer.start_span(
            f"sql {operation}",
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.operation": operation, "db.statement": statement},
        )
        self.last_activity = time.time_ns()
        self.ended = False

    async def around(self, awaitable: Any) -> Any:
        try:
            return await awaitable
        except BaseException as error:
            from opentelemetry.trace import Status, StatusCode

            self.span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
        finally:
            self.last_activity = time.time_ns()

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.span.end(end_time=self.last_activity)


class _TracedCursor:
    def __init__(self, cursor: Any, statement: _StatementSpan) -> None:
        self._cursor = cursor
        self._statement = statement

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._statement.around(self._cursor.fetch(*args, **kwargs))

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        return await self._statement.around(self._cursor.fetchrow(*args, **kwargs))

    async def forward(self, *args: Any, **kwargs: Any) -> Any:
        return await self._statement.around(self._cursor.forward(*args, **kwargs))


class _TracedCursorFactory:
    def __init__(self, factory: Any, statement: _StatementSpan) -> None:
        self._factory = factory
        self._statement = statement

    def __await__(self) -> Any:
        return self._opened().__await__()

    async def _opened(self) -> _TracedCursor:
        return _TracedCursor(await self._statement.around(self._factory), self._statement)

    def __aiter__(self) -> Any:
        return self._factory.__aiter__()


class _TracedStatement:
    def __init__(self, prepared: Any, statement: _StatementSpan) -> None:
        self._prepared = prepared
        self._statement = statement

    def __getattr__(self, name: str) -> Any:
        return getattr(self._prepared, name)

    def cursor(self, *args: Any, **kwargs: Any) -> _TracedCursorFactory:
        return _TracedCursorFactory(self._prepared.cursor(*args, **kwargs), self._statement)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._statement.around(self._prepared.fetch(*args, **kwargs))

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        return await self._statement.around(self._prepared.fetchrow(*args, **kwargs))

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        return await self._statement.around(self._prepared.fetchval(*args, **kwargs))


class _TracedConnection:
    """A pooled connection lent to a traced call: everything passes through, prepared statements get spans."""

    def __init__(self, conn: Any, tracer: Tracer) -> None:
        self._conn = conn
        self._tracer = tracer
        self._statements: list[_StatementSpan] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def prepare(self, query: str, *args: Any, **kwargs: Any) -> _TracedStatement:
        statement = _StatementSpan(self._tracer, query)
        self._statements.append(statement)
        return _TracedStatement(await statement.around(self._conn.prepare(query, *args, **kwargs)), statement)

    def end_statements(self) -> None:
        for statement in self._statements:
            statement.end()


def _trace_database(runtime: Runtime) -> None:
    db = runtime.db
    if getattr(db, "_analytics_mcp_traced", False):
        return
    acquire = db.connection

    @asynccontextmanager
    async def connection(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with acquire(*args, **kwargs) as conn:
            tracer = _active.get()
            if tracer is None:
                yield conn
                return
            conn.add_query_logger(_on_query)  # a set: adding it again is a no-op
            traced = _TracedConnection(conn, tracer)
            try:
                yield traced
            finally:
                traced.end_statements()

    db.connection = connection  # type: ignore[method-assign]
    db._analytics_mcp_traced = True  # type: ignore[attr-defined]


def _trace_redis(runtime: Runtime) -> None:
    client = runtime.redis
    if getattr(client, "_analytics_mcp_traced", False):
        return
    from opentelemetry.trace import SpanKind

    execute_command = client.execute_command
    make_pipeline = client.pipeline

    @functools.wraps(execute_command)
    async def traced_command(*args: Any, **options: Any) -> Any:
        tracer = _active.get()
        if tracer is None:
            return await execute_command(*args, **options)
        command = str(args[0]).upper() if args else "COMMAND"
        with tracer.start_as_current_span(
            f"redis {command}",
            kind=SpanKind.CLIENT,
            attributes={"db.system": "redis", "db.operation": command},
        ):
            return await execute_command(*args, **options)

    @functools.wraps(make_pipeline)
    def traced_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipeline = make_pipeline(*args, **kwargs)
        execute = pipeline.execute

        async def traced_execute(*execute_args: Any, **execute_kwargs: Any) -> Any:
            tracer = _active.get()
            if tracer is None:
                return await execute(*execute_args, **execute_kwargs)
            with tracer.start_as_current_span(
                "redis PIPELINE",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system": "redis",
                    "db.operation": "PIPELINE",
                    "db.redis.commands": len(pipeline),
                },
            ):
                return await execute(*execute_args, **execute_kwargs)

        pipeline.execute = traced_execute
        return pipeline

    client.execute_command = traced_command  # type: ignore[method-assign]
    client.pipeline = traced_pipeline  # type: ignore[method-assign]
    client._analytics_mcp_traced = True  # type: ignore[attr-defined]
