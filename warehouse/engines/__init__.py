"""Data engines behind one small interface: each source's engine guards, runs read-only with bounds,
and lists only the source's allowed relations. One module per engine, its dialect guard beside it."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from warehouse.descriptions import Descriptions
from warehouse.query import Column, QueryResult


@dataclass(frozen=True)
class Table:
    name: str
    row_estimate: int | None = None


@dataclass(frozen=True)
class GuardedStatement:
    """An agent's query the dialect guard accepted, ready for the driver."""

    sql: str  # the checked SQL in the driver's parameter style
    names: tuple[str, ...]  # parameter names, in the order the driver binds them
    relations: tuple[str, ...]  # the relations it reads
    volatile: bool  # uses now(), rand()...: never cached
    canonical: str | None  # a normalised text from the dialect's parser, for cache keys
    hash: str = ""  # the sha256 of the canonical (else the raw) text, for the query log


@dataclass(frozen=True)
class RelationRules:
    """A source's allow rules: globs over `schema.table` or `table` (`tables`), minus `exclude`."""

    tables: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = field(default_factory=tuple)

    def allows(self, schema: str | None, table: str) -> bool:
        """A glob with a dot matches `schema.table` (both parts), one without matches the table name
        alone (so `s*` is tables starting with s, not every table of a schema starting with s)."""
        qualified = f"{schema}.{table}".lower() if schema else None

        def matches(patterns: Sequence[str]) -> bool:
            for pattern in patterns:
                pattern = pattern.lower()
                if "." in pattern:
                    if qualified is not None and fnmatch.fnmatchcase(qualified, pattern):
                        return True
                elif fnmatch.fnmatchcase(table.lower(), pattern):
                    return True
            return False

        return matches(self.tables) and not matches(self.exclude)


class QueryEngine(Protocol):
    """What query_database needs of a source, the built-in one included: guard, data version, run."""

    kind: str  # "mysql" | "duckdb" | "postgresql"

    async def guarded(self, sql: str, parameters: Mapping[str, Any]) -> GuardedStatement: ...

    async def run(
        self,
        statement: GuardedStatement,
        parameters: Mapping[str, Any],
        *,
        timeout: float,
        max_rows: int,
        max_bytes: int,
    ) -> QueryResult: ...

    async def data_version(self) -> str | None: ...


class Engine(QueryEngine, Protocol):
    pool_size: int  # statements it runs at once: its connections (or worker threads) at most

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def tables(self) -> list[Table]: ...

    async def columns(self, table: str) -> list[Column]: ...

    async def comments(self) -> Descriptions:
        """Database comments of the allowed tables and their columns (none for files)."""
        ...

    async def profile(self, table: str, sample_rows: int) -> dict[str, Any]:
        """The table's profile (warehouse.profiles.table_profile), sampled above `sample_rows` rows."""
        ...
