"""The PostgreSQL side of session archiving: closed sessions, still encrypted, in mcp_internal.session_archive."""

from __future__ import annotations

import datetime as dt

from sessions.store import ArchivedSession
from warehouse import sql
from warehouse.db import Database


class SessionArchive:
    """The archive backend the session store is given (sessions/ never imports warehouse/)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, session_id: str, owner_id: str, metadata: bytes, payload: bytes) -> None:
        """One transaction: committed before the caller deletes the live session, or not at all."""
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute(sql.load("session_archive_insert"), session_id, owner_id, metadata, payload)

    async def fetch(self, session_id: str) -> ArchivedSession | None:
        async with self.db.connection() as conn:
            row = await conn.fetchrow(sql.load("session_archive_fetch"), session_id)
        if row is None:
            return None
        return ArchivedSession(
            row["session_id"],
            row["owner_id"],
            row["archived_at"],
            bytes(row["metadata"]),
            bytes(row["payload"]),
        )

    async def remove(self, session_id: str) -> bool:
        async with self.db.connection() as conn:
            status = await conn.execute(sql.load("session_archive_delete"), session_id)
        return bool(status.endswith(" 1"))

    async def session_ids(self) -> list[str]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql.load("session_archive_ids"))
        return [row["session_id"] for row in rows]

    async def replace(
        self, session_id: str, archived_at: dt.datetime, metadata: bytes, payload: bytes
    ) -> bool:
        """Swap in re-encrypted contents unless the archive changed since it was read (compare-and-set)."""
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                sql.load("session_archive_replace"), session_id, archived_at, metadata, payload
            )
        return row is not None

    async def list_for(self, owner_id: str | None) -> list[tuple[str, str, dt.datetime]]:
        async with self.db.connection() as conn:
            rows = await conn.fetch(sql.load("session_archive_list"), owner_id)
        return [(row["session_id"], row["owner_id"], row["archived_at"]) for row in rows]
