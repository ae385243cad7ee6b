"""Writes batches of audit events into mcp_internal.audit_log (the server's own schema)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from warehouse import sql
from warehouse.db import Database

COLUMNS = (
    "logged_at",
    "request_id",
    "event",
    "user_id",
    "key_id",
    "tool",
    "session_id",
    "duration_ms",
    "outcome",
)


@dataclass(frozen=True)
class AuditRow:
    logged_at: dt.datetime
    request_id: str | None
    event: str
    user_id: str | None
    key_id: str | None
    tool: str | None
    session_id: str | None
    duration_ms: float | None
    outcome: str


async def insert_audit_rows(db: Database, rows: Sequence[AuditRow]) -> None:
    if not rows:
        return
    columns = [[getattr(row, name) for row in rows] for name in COLUMNS]
    async with db.connection() as conn:
        await conn.execute(sql.load("audit_log_insert"), *columns)
