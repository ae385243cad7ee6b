"""OpenTelemetry tracing, opt-in: on when OTEL_EXPORTER_OTLP_ENDPOINT is set.

FastMCP opens a span per MCP request; the OpenTelemetry instrumentations of asyncpg and redis add one
per SQL statement and Redis command, under the request's span when made while serving it. SQL text is
exported with its literals masked (MaskSqlLiterals); parameter values are never captured, and the redis
instrumentation records command names only.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?\b")
# Where the asyncpg instrumentation puts the SQL text: the old and the stable semantic conventions.
STATEMENT_ATTRIBUTES = ("db.statement", "db.query.text")
STOP_SECONDS = 5.0


def sanitize_statement(statement: str, limit: int = 1000) -> str:
    """SQL text without its literal values, for a span attribute."""
    statement = _NUMBER.sub("?", _STRING_LITERAL.sub("'?'", statement))
    statement = " ".join(statement.split())
    return statement[:limit]


def _mask_sql_literals() -> Any:
    from opentelemetry.sdk.trace import SpanProcessor

    class MaskSqlLiterals(SpanProcessor):
        """Masks the literals of the SQL text a span starts with (asyncpg's spans set it at creation).

        on_start is where a processor may still change a span; an ended span is read-only."""

        def on_start(self, span: Any, parent_context: Any = None) -> None:
            for key in STATEMENT_ATTRIBUTES:
                statement = (span.attributes or {}).get(key)
                if isinstance(statement, str):
                    span.set_attribute(key, sanitize_statement(statement))

    return MaskSqlLiterals()


def start(endpoint: str | None, exporter: SpanExporter | None = None) -> TracerProvider | None:
    """Install the process's tracer provider and instrument asyncpg and redis; None when tracing is off.

    Spans go to `exporter` (tests) or over OTLP/HTTP to `endpoint` (OTEL_EXPORTER_OTLP_ENDPOINT). Once
    per process, at start-up: OpenTelemetry's global provider can be set only once."""
    if exporter is None and not endpoint:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.warning(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but the 'tracing' extra is not installed; tracing is off"
        )
        return None
    provider = TracerProvider(resource=Resource.create({"service.name": "analytics-mcp"}))
    provider.add_span_processor(_mask_sql_literals())
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        traces = (endpoint or "").rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces)))
    trace.set_tracer_provider(provider)  # FastMCP's spans use the global provider
    AsyncPGInstrumentor(capture_parameters=False).instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument(tracer_provider=provider)
    return provider


async def stop(provider: TracerProvider) -> None:
    """Remove the instrumentation and export what is left, for at most STOP_SECONDS (off the event loop:
    the exporter blocks)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    RedisInstrumentor().uninstrument()
    try:
        await asyncio.wait_for(asyncio.to_thread(provider.shutdown), timeout=STOP_SECONDS)
    except TimeoutError:
        log.warning("the trace collector did not take the last spans in time; they are lost")
