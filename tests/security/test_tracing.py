"""OpenTelemetry tracing, opt-in: FastMCP's span per MCP call, and under it the asyncpg and redis
instrumentations' spans of its SQL and Redis work; SQL is recorded without its values. Off unless
OTEL_EXPORTER_OTLP_ENDPOINT is set."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets

import pytest
import uvicorn
from fastmcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core import tracing
from tests.conftest import app_for
from tests.support import call, free_port

pytest.importorskip("opentelemetry.sdk", reason="tracing needs the 'tracing' extra (opentelemetry-sdk)")

from opentelemetry import trace  # noqa: E402
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor  # noqa: E402
from opentelemetry.instrumentation.redis import RedisInstrumentor  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402
from opentelemetry.util._once import Once  # noqa: E402


def forget_the_global_tracer_provider() -> None:
    """What opentelemetry-test-utils' reset_trace_globals does: OpenTelemetry lets a process set its
    tracer provider once, and each test here starts tracing anew."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@pytest.fixture
async def spans(runtime):
    """Tracing on for this test, exporting to memory."""
    forget_the_global_tracer_provider()
    exporter = InMemorySpanExporter()
    provider = tracing.start(runtime.settings.otel_endpoint, exporter)
    assert provider is not None
    try:
        yield exporter
    finally:
        await runtime.services.auditor.flush()  # its background batch writes are spans too
        await tracing.stop(provider)
        forget_the_global_tracer_provider()


def attribute(span, *names):
    """The first of `names` the span has (old and stable semantic-convention names)."""
    return next((span.attributes[name] for name in names if name in span.attributes), None)


def descends_from(span, ancestor, by_id) -> bool:
    while span.parent is not None:
        if span.parent.span_id == ancestor.context.span_id:
            return True
        span = by_id.get(span.parent.span_id)
        if span is None:
            return False
    return False


async def test_a_tool_call_is_a_span_with_its_sql_and_redis_work_under_it_and_no_values(runtime, spans):
    marker = f"MARKER-{secrets.token_hex(6)}"
    async with Client(app_for(runtime, "analyst").mcp) as client:
        counted = await call(
            client,
            "query_database",
            query="SELECT count(*) AS n FROM customers WHERE location = %(city)s AND age > 17",
            parameters={"city": marker},
        )
    assert counted["rows"] == [{"n": 0}]
    finished = spans.get_finished_spans()
    by_id = {span.context.span_id: span for span in finished}
    (tool,) = [
        s
        for s in finished
        if s.kind == SpanKind.SERVER and s.attributes.get("gen_ai.tool.name") == "query_database"
    ]
    assert tool.name == "tools/call query_database"  # FastMCP's own span of the call
    work = [s for s in finished if descends_from(s, tool, by_id)]
    assert all(s.context.trace_id == tool.context.trace_id for s in work)
    sql = [s for s in work if attribute(s, "db.system", "db.system.name") == "postgresql"]
    redis = [s for s in work if attribute(s, "db.system", "db.system.name") == "redis"]
    assert sql and redis
    assert all(s.kind == SpanKind.CLIENT for s in sql + redis)
    for span in sql + redis:  # inside the call's span
        assert tool.start_time <= span.start_time <= span.end_time <= tool.end_time
    statements = " ".join(attribute(s, "db.statement", "db.query.text") for s in sql)
    assert "location = $1" in statements  # the agent's value is bound, not inlined
    assert "age > ?" in statements  # and literals are masked
    assert "17" not in statements
    everything = " ".join(str(dict(s.attributes)) + s.name for s in finished)
    assert marker not in everything


async def test_a_calls_log_lines_carry_its_trace_id_beside_its_request_id(runtime, spans, captured_logs):
    async with Client(app_for(runtime, "analyst").mcp) as client:
        await call(client, "summary_snapshot")
    (tool,) = [
        s
        for s in spans.get_finished_spans()
        if s.kind == SpanKind.SERVER and s.name == "tools/call summary_snapshot"
    ]
    (audit,) = [
        line
        for line in map(json.loads, captured_logs.getvalue().splitlines())
        if line["msg"] == "audit" and line.get("tool") == "summary_snapshot"
    ]
    assert audit["trace_id"] == format(tool.context.trace_id, "032x")
    assert len(audit["request_id"]) == 16


async def test_without_an_endpoint_tracing_stays_off_and_instruments_nothing(runtime):
    assert runtime.settings.otel_endpoint is None
    assert tracing.start(runtime.settings.otel_endpoint) is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)  # FastMCP's spans are no-ops
    assert not AsyncPGInstrumentor().is_instrumented_by_opentelemetry
    assert not RedisInstrumentor().is_instrumented_by_opentelemetry
    async with Client(app_for(runtime, "analyst").mcp) as client:
        assert (await call(client, "query_database", query="SELECT 1 AS one"))["rows"] == [{"one": 1}]


async def test_with_an_otlp_endpoint_set_spans_are_exported_over_http(make_runtime):
    received: list[bytes] = []

    async def traces(request: Request) -> Response:
        received.append(await request.body())
        return Response(ExportTraceServiceRequest().SerializeToString(), media_type="application/x-protobuf")

    port = free_port()
    collector = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_config=None,
        )
    )
    collector.capture_signals = contextlib.nullcontext
    serving = asyncio.create_task(collector.serve())
    forget_the_global_tracer_provider()
    try:
        while not collector.started:
            await asyncio.sleep(0.02)
        # Closing the runtime stops tracing: the batch exporter sends what it holds.
        async with make_runtime(customers=10, seed=22, otel_endpoint=f"http://127.0.0.1:{port}") as rt:
            async with Client(app_for(rt, "analyst").mcp) as client:
                await call(client, "summary_snapshot")
            await rt.services.auditor.flush()
        assert not AsyncPGInstrumentor().is_instrumented_by_opentelemetry
    finally:
        forget_the_global_tracer_provider()
        collector.should_exit = True
        await serving
    names = set()
    for body in received:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert service["service.name"] == "analytics-mcp"
            for scope_spans in resource_spans.scope_spans:
                names.update(span.name for span in scope_spans.spans)
    assert "tools/call summary_snapshot" in names
    assert "SELECT" in names  # an asyncpg statement span
