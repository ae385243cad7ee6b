"""The audit trail: every authentication attempt and every call, as a JSON log line and a row in
mcp_internal.audit_log. Rows are written in batches by a background task, so a call waits only
when the queue is full (the database has been down for long): rows are never dropped.

What is recorded: user, key id (a digest prefix, never the key), tool, session id, duration,
outcome. What is not: arguments, results, error texts (they can quote data).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from mcp_server import batching, metrics
from mcp_server.batching import BatchWriter
from mcp_server.runtime import Runtime
from sessions import access
from warehouse.audit import AuditRow, insert_audit_rows

if TYPE_CHECKING:
    from starlette.types import Scope

    from mcp_server.app import App, CallInfo
    from mcp_server.auth import Identity

log = logging.getLogger("analytics_mcp.audit")

UNKNOWN = "<unknown>"


def safe_session_id(value: Any) -> str | None:
    """An agent-supplied session id, if it has the shape of one; anything else (it could be data) is
    recorded as '<invalid>'."""
    if value is None:
        return None
    return access.session_id(value) if access.is_session_id(value) else "<invalid>"


def component_name(app: App, info: CallInfo) -> str:
    """The declared name of the component called; an undeclared name (agent input) is not recorded."""
    return info.name if (info.kind, info.name) in app.roles else UNKNOWN


def _session_of(arguments: dict[str, Any]) -> str | None:
    session = arguments.get("session_id")
    if session is None:
        source = arguments.get("data_source")
        # analyze_data(data_source=<session id>) works on a session too
        if access.is_session_id(source):
            session = source
    return safe_session_id(session)


class Auditor:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.writer: BatchWriter[AuditRow] = BatchWriter("audit", self._write)

    async def _write(self, rows: list[AuditRow]) -> None:
        await insert_audit_rows(self.runtime.db, rows)

    async def record(self, row: AuditRow, **log_only: Any) -> None:
        fields = {
            name: value for name, value in row.__dict__.items() if value is not None and name != "logged_at"
        }
        log.info("audit", extra={**fields, **log_only})
        await self.writer.put(row)

    async def flush(self) -> None:
        await self.writer.flush()


def auditor(runtime: Runtime) -> Auditor:
    found = runtime.extras.get("auditor")
    if found is None:
        found = runtime.extras["auditor"] = Auditor(runtime)
        batching.register(runtime, found.writer)
    return found


def _presented_as(scope: Scope) -> str:
    names = {k.decode("latin-1").lower() for k, _ in scope.get("headers", [])}
    if "x-api-key" in names:
        return "x-api-key"
    if "authorization" in names:
        return "authorization"
    return "none"


def install(app: App) -> None:
    runtime = app.runtime
    trail = auditor(runtime)
    attempts = metrics.counter(
        runtime, "analytics_mcp_auth_attempts_total", "HTTP authentication attempts by outcome", ("outcome",)
    )

    async def audit_call(info: CallInfo) -> None:
        identity = info.identity
        await trail.record(
            AuditRow(
                logged_at=dt.datetime.now(dt.UTC),
                request_id=info.request_id,
                event=f"{info.kind}_call",
                user_id=identity.user_id if identity else None,
                key_id=identity.key_id if identity else None,
                tool=component_name(app, info),
                session_id=_session_of(info.arguments),
                duration_ms=round(info.duration_ms, 3),
                outcome=info.outcome,
            )
        )

    app.after_call.append(audit_call)

    if runtime.extras.get("audit_auth_installed"):
        return
    runtime.extras["audit_auth_installed"] = True

    async def audit_authentication(identity: Identity | None, scope: Scope) -> None:
        outcome = "success" if identity is not None else "failure"
        attempts.labels(outcome=outcome).inc()
        client = scope.get("client")
        await trail.record(
            AuditRow(
                logged_at=dt.datetime.now(dt.UTC),
                request_id=None,
                event="authentication",
                user_id=identity.user_id if identity else None,
                key_id=identity.key_id if identity else None,
                tool=None,
                session_id=None,
                duration_ms=None,
                outcome=outcome,
            ),
            presented=_presented_as(scope),
            client=client[0] if client else None,
            method=scope.get("method"),
        )

    runtime.extras.setdefault("auth_hooks", []).append(audit_authentication)
