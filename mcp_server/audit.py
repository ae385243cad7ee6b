"""The audit trail: every authentication attempt and call as a JSON log line and a row of mcp_internal.audit_log
(written in batches, never dropped): user, key id, tool, session id, duration, outcome; never arguments,
results or error texts (they can quote data)."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from typing import TYPE_CHECKING, Any

from fastmcp.server.middleware import Middleware, MiddlewareContext
from prometheus_client import CollectorRegistry

from core.batching import BatchWriter
from mcp_server import metrics
from mcp_server.auth import Identity
from mcp_server.calls import current_call
from sessions import access
from warehouse.audit import AuditRow, insert_audit_rows
from warehouse.db import Database

if TYPE_CHECKING:
    from starlette.types import Scope

log = logging.getLogger("analytics_mcp.audit")

UNKNOWN = "<unknown>"


def _session_of(arguments: dict[str, Any]) -> str | None:
    """The call's session id, if it has the shape of one; anything else (it could be data) is recorded as
    '<invalid>'."""
    session = arguments.get("session_id")
    if session is None:
        source = arguments.get("data_source")
        # analyze_data(data_source=<session id>) works on a session too
        if access.is_session_id(source):
            session = source
    if session is None:
        return None
    return access.session_id(session) if access.is_session_id(session) else "<invalid>"


class Auditor:
    def __init__(self, db: Database, registry: CollectorRegistry) -> None:
        self.writer: BatchWriter[AuditRow] = BatchWriter("audit", functools.partial(insert_audit_rows, db))
        self._attempts = metrics.counter(
            registry,
            "analytics_mcp_auth_attempts_total",
            "HTTP authentication attempts by outcome",
            ("outcome",),
        )

    async def event(
        self,
        event: str,
        identity: Identity | None,
        outcome: str,
        *,
        request_id: str | None = None,
        tool: str | None = None,
        session_id: str | None = None,
        duration_ms: float | None = None,
        **log_only: Any,
    ) -> None:
        """One audit row (who, what, how it ended) and its log line. A failure is logged, never raised: the
        trail must not break the call, authentication or action it records."""
        try:
            row = AuditRow(
                logged_at=dt.datetime.now(dt.UTC),
                request_id=request_id,
                event=event,
                user_id=identity.user_id if identity else None,
                key_id=identity.key_id if identity else None,
                tool=tool,
                session_id=session_id,
                duration_ms=duration_ms,
                outcome=outcome,
            )
            fields = {k: v for k, v in vars(row).items() if v is not None and k != "logged_at"}
            log.info("audit", extra={**fields, **log_only})
            await self.writer.put(row)
        except Exception:  # noqa: BLE001 - the trail must not break what it records
            log.exception("audit record failed")

    async def flush(self) -> None:
        await self.writer.flush()

    async def authentication(self, identity: Identity | None, scope: Scope) -> None:
        """An HTTP authentication attempt (the ASGI auth middleware calls this for every MCP request)."""
        outcome = "success" if identity is not None else "failure"
        self._attempts.labels(outcome=outcome).inc()
        client = scope.get("client")
        await self.event(
            "authentication",
            identity,
            outcome,
            presented=_presented_as(scope),
            client=client[0] if client else None,
            method=scope.get("method"),
        )


def _presented_as(scope: Scope) -> str:
    names = {k.decode("latin-1").lower() for k, _ in scope.get("headers", [])}
    if "x-api-key" in names:
        return "x-api-key"
    if "authorization" in names:
        return "authorization"
    return "none"


class AuditTrail(Middleware):
    """One audit row per tool call, resource read and prompt get, whatever its outcome."""

    def __init__(self, auditor: Auditor) -> None:
        self.auditor = auditor

    async def _audited(self, context: MiddlewareContext[Any], call_next: Any) -> Any:
        try:
            return await call_next(context)
        finally:
            call = current_call()
            if call is not None:
                await self.auditor.event(
                    f"{call.kind}_call",
                    call.identity,
                    call.outcome,
                    request_id=call.request_id,
                    tool=call.name if call.declared else UNKNOWN,
                    session_id=_session_of(call.arguments),
                    duration_ms=round(call.duration_ms, 3),
                )

    on_call_tool = on_read_resource = on_get_prompt = _audited
