"""The built-in database behind the engines' query interface: the guard of warehouse.query, the data
version from notifications, and run_select on the query role's pool, so query_database takes one path
whatever the source."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from warehouse import query as queries
from warehouse.db import Database
from warehouse.engines import GuardedStatement


@dataclass(frozen=True)
class MainStatement(GuardedStatement):
    """A statement of the built-in database, with what its guard made of it (no second parse)."""

    guarded: queries.GuardedQuery | None = None


class MainEngine:
    """`label`: the application_name for the connection of the current call (None: none)."""

    kind = "postgresql"
    name = "main"

    def __init__(self, db: Database, *, label: Callable[[], str | None] = lambda: None) -> None:
        self.db = db
        self.label = label

    async def guarded(self, sql: str, parameters: Mapping[str, Any]) -> GuardedStatement:
        guarded = await queries.guard_in_thread(sql, parameters)  # remembered: a repeat is not parsed
        checked = guarded.checked
        return MainStatement(
            sql=checked.sql,
            names=guarded.bound.names,
            relations=checked.relations,
            volatile=not checked.cacheable,  # also reads of what changes between loads: never cached
            canonical=checked.canonical,
            hash=guarded.hash,
            guarded=guarded,
        )

    async def data_version(self) -> str | None:
        return str(await self.db.data_version())  # as notified: no round trip

    async def run(
        self,
        statement: GuardedStatement,
        parameters: Mapping[str, Any],
        *,
        timeout: float,
        max_rows: int,
        max_bytes: int,
    ) -> queries.QueryResult:
        """On a connection of the query role's pool; the caller's share of connections is taken by
        `run_on`, as for every engine."""
        guarded = statement.guarded if isinstance(statement, MainStatement) else None
        if guarded is None:  # not ours: guard it again rather than trust it
            guarded = await queries.guard_in_thread(statement.sql, parameters)
        async with self.db.connection(query=True) as conn:
            return await queries.run_select(
                self.db,
                guarded,
                parameters,
                timeout=timeout,
                max_rows=max_rows,
                max_bytes=max_bytes,
                conn=conn,
                label=self.label(),
            )
