"""OpenTelemetry tracing, opt-in: a span per tool call, and under it a span per SQL statement and per Redis
round trip; SQL is recorded without its values. Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import uvicorn
from fastmcp import Client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mcp_server import tracing
from mcp_server.audit import auditor
from mcp_server.observability import reservoir
from tests.conftest import app_for
from tests.mcp_server.test_http import free_port
from tests.support import call, refusal

pytest.importorskip("opentelemetry.sdk", reason="tracing needs the 'tracing' extra (opentelemetry-sdk)")

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402


async def settle(runtime) -> None:
    """Let the background writers finish before the runtime closes (they write outside any call)."""
    await auditor(runtime).flush()
    await reservoir(runtime).writer.flush()


def children_of(spans, parent):
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_a_tool_call_gets_a_span_with_its_sql_statements_and_redis_round_trips_under_it(make_runtime):
    exporter = InMemorySpanExporter()
    marker = f"MARKER-{secrets.token_hex(6)}"
    async with make_runtime(customers=40, seed=21) as rt:
        assert tracing.enable(rt, exporter) is not None
        async with Client(app_for(rt, "analyst").mcp) as client:
            await call(client, "summary_snapshot")
            created = await call(client, "session_create", data_source="database")
            counted = await call(
                client,
                "query_database",
                query="SELECT count(*) AS n FROM customers WHERE location = %(city)s AND age > 17",
                parameters={"city": marker},
            )
            await refusal(client, "session_read", session_id=created["session_id"], key="missing")
        await settle(rt)
    assert counted["rows"] == [{"n": 0}]
    spans = exporter.get_finished_spans()
    calls = {s.name: s for s in spans if s.kind == SpanKind.SERVER}
    assert {
        "tool summary_snapshot",
        "tool session_create",
        "tool query_database",
        "tool session_read",
    } <= set(calls)
    # Every tool span is a root, carries who called and how it ended.
    for span in calls.values():
        assert span.parent is None
        assert span.attributes["enduser.id"] == "analyst"
        assert len(span.attributes["mcp.request_id"]) == 16
    assert calls["tool summary_snapshot"].status.status_code == StatusCode.OK
    assert calls["tool session_read"].attributes["mcp.outcome"] == "NotFound"
    assert calls["tool session_read"].status.status_code == StatusCode.ERROR

    snapshot_sql = [
        s for s in children_of(spans, calls["tool summary_snapshot"]) if s.name.startswith("sql ")
    ]
    assert snapshot_sql and all(s.attributes["db.system"] == "postgresql" for s in snapshot_sql)
    assert any("customers" in s.attributes["db.statement"] for s in snapshot_sql)
    for span in snapshot_sql:  # the statement spans sit inside the call's span
        assert calls["tool summary_snapshot"].start_time <= span.start_time <= span.end_time
        assert span.end_time <= calls["tool summary_snapshot"].end_time

    session_redis = [
        s for s in children_of(spans, calls["tool session_create"]) if s.name.startswith("redis ")
    ]
    assert session_redis and all(s.attributes["db.system"] == "redis" for s in session_redis)

    query_sql = [s for s in children_of(spans, calls["tool query_database"]) if s.name.startswith("sql ")]
    statements = " ".join(s.attributes["db.statement"] for s in query_sql)
    assert "location = $1" in statements  # the agent's query, with its value bound, not inlined
    assert "age > ?" in statements  # literals are masked too
    assert marker not in " ".join(str(s.attributes) for s in spans)


async def test_without_an_endpoint_tracing_stays_off_and_spans_nothing(runtime):
    assert runtime.settings.otel_endpoint is None
    assert tracing.enable(runtime) is None
    assert "tracer_provider" not in runtime.extras


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
    collector.capture_signals = lambda: __import__("contextlib").nullcontext()
    serving = asyncio.create_task(collector.serve())
    try:
        while not collector.started:
            await asyncio.sleep(0.02)
        async with make_runtime(customers=10, seed=22, otel_endpoint=f"http://127.0.0.1:{port}") as rt:
            async with Client(app_for(rt, "analyst").mcp) as client:
                await call(client, "summary_snapshot")
            await settle(rt)
            provider = rt.extras["tracer_provider"]
            # The batch exporter posts from its own thread: flush it off the event loop serving the collector.
            assert await asyncio.to_thread(provider.force_flush, 10_000)
            await asyncio.to_thread(provider.shutdown)
    finally:
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
    assert "tool summary_snapshot" in names
    assert any(name.startswith("sql ") for name in names)
