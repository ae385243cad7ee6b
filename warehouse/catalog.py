"""The live catalog of the analytics tables: columns, constraints, indexes, row estimates and sample rows.

Only the allow-listed tables in schema public are ever described; mcp_internal never appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from core.errors import NotFound
from warehouse import sql
from warehouse.db import ANALYTICS_TABLES, Database

CONSTRAINT_KINDS = {
    "p": "primary key",
    "u": "unique",
    "f": "foreign key",
    "c": "check",
    "x": "exclusion",
}
SAMPLE_ROWS_MAX = 50


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    nullable: bool
    default: str | None
    comment: str | None


@dataclass(frozen=True)
class Constraint:
    name: str
    kind: str  # primary key | unique | foreign key | check | exclusion
    definition: str
    columns: tuple[str, ...]
    referenced_table: str | None
    referenced_columns: tuple[str, ...]


@dataclass(frozen=True)
class Index:
    name: str
    method: str
    unique: bool
    primary: bool
    key_columns: tuple[str, ...]
    predicate: str | None
    size_bytes: int


@dataclass(frozen=True)
class Table:
    name: str
    estimated_rows: int | None  # None: never analysed, the planner has no estimate yet
    total_bytes: int
    comment: str | None
    columns: tuple[Column, ...]
    constraints: tuple[Constraint, ...]
    indexes: tuple[Index, ...]

    @property
    def primary_key(self) -> tuple[str, ...]:
        return next((c.columns for c in self.constraints if c.kind == "primary key"), ())

    def constraints_on(self, column: str, kind: str) -> list[Constraint]:
        """Constraints of `kind` that involve exactly this one column."""
        return [c for c in self.constraints if c.kind == kind and c.columns == (column,)]


def check_table(name: str) -> str:
    """`name` if it is one of the analytics tables, else NotFound listing them."""
    if name not in ANALYTICS_TABLES:
        shown = name[:40] + ("..." if len(name) > 40 else "")
        raise NotFound(f"table '{shown}' is not an analytics table; tables: {', '.join(ANALYTICS_TABLES)}")
    return name


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def describe_tables(db: Database, tables: Sequence[str] = ANALYTICS_TABLES) -> list[Table]:
    """The tables as the database defines them right now, in the order given."""
    names = [check_table(t) for t in tables]
    async with db.connection(read=True) as conn:
        table_rows = await conn.fetch(sql.load("catalog_tables"), names)
        column_rows = await conn.fetch(sql.load("catalog_columns"), names)
        constraint_rows = await conn.fetch(sql.load("catalog_constraints"), names)
        index_rows = await conn.fetch(sql.load("catalog_indexes"), names)
    described = []
    for row in table_rows:
        name = row["table_name"]
        estimate = int(row["estimated_rows"])
        described.append(
            Table(
                name=name,
                estimated_rows=estimate if estimate >= 0 else None,
                total_bytes=int(row["total_bytes"]),
                comment=row["comment"],
                columns=tuple(
                    Column(c["column_name"], c["data_type"], c["nullable"], c["default_value"], c["comment"])
                    for c in column_rows
                    if c["table_name"] == name
                ),
                constraints=tuple(
                    Constraint(
                        c["constraint_name"],
                        CONSTRAINT_KINDS[c["kind"]],
                        c["definition"],
                        tuple(c["columns"]),
                        c["referenced_table"],
                        tuple(c["referenced_columns"]),
                    )
                    for c in constraint_rows
                    if c["table_name"] == name
                ),
                indexes=tuple(
                    Index(
                        i["index_name"],
                        i["method"],
                        i["is_unique"],
                        i["is_primary"],
                        tuple(i["key_columns"]),
                        i["predicate"],
                        int(i["size_bytes"]),
                    )
                    for i in index_rows
                    if i["table_name"] == name
                ),
            )
        )
    return described


async def sample_rows(db: Database, table: Table, limit: int = 5) -> list[dict[str, Any]]:
    """The first `limit` rows the table yields (no ordering: cheap, and enough to show the shape)."""
    columns = ", ".join(quote_identifier(column.name) for column in table.columns)
    statement = (
        sql.load("catalog_sample_rows")
        .replace("{columns}", columns)
        .replace("{table}", quote_identifier(check_table(table.name)))
    )
    limit = max(0, min(int(limit), SAMPLE_ROWS_MAX))
    async with db.connection(read=True) as conn, conn.transaction(readonly=True):
        rows = await conn.fetch(statement, limit)
    return [dict(row) for row in rows]
