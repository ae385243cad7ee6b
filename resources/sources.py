"""Render a data source's tables and columns as markdown: the schema://{source} resource."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from warehouse.engines import Table
    from warehouse.query import Column


def render_source(
    name: str, engine: str, description: str, tables: Sequence[tuple[Table, Sequence[Column]]]
) -> str:
    """One section per table: its estimated rows, then a column table (name, type)."""
    lines = [f"# Source `{name}` ({engine})", ""]
    if description:
        lines += [_text(description), ""]
    lines += [
        f'Query it with query_database(query=..., source="{name}") in the {_dialect(engine)} dialect.',
        "",
    ]
    if not tables:
        lines.append("No tables are readable in this source.")
    for table, columns in tables:
        rows = "unknown rows" if table.row_estimate is None else f"~{table.row_estimate:,} rows"
        lines += [f"## {table.name} ({rows})", "", "| column | type |", "|---|---|"]
        lines += [f"| {_text(column.name)} | {column.type} |" for column in columns]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _dialect(engine: str) -> str:
    return {"mysql": "MySQL/MariaDB", "duckdb": "DuckDB", "postgresql": "PostgreSQL"}.get(engine, engine)


def _text(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")[:200]
