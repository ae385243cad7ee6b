"""Render the live catalog of the analytics tables as markdown: the schema:// resources agents read first."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from warehouse.catalog import Table

CELL_MAX = 60


def render_schema(tables: Sequence[Table]) -> str:
    """The whole schema: an overview line per table, then each table in full."""
    lines = [
        "# Database schema: the analytics tables",
        "",
        "Read live from the PostgreSQL catalog (schema `public`). Query these tables with "
        "`query_database` (one read-only SELECT, values as `%(name)s` parameters). Per-table detail "
        "with sample rows: `schema://database/main/{table}`. What each column means and the business "
        "definitions (churn, ARPU, quality score, tenure): `docs://data_dictionary`.",
        "",
        "| table | columns | estimated rows | size |",
        "|---|---|---|---|",
    ]
    for table in tables:
        lines.append(
            f"| {table.name} | {len(table.columns)} | {_estimate(table.estimated_rows)} "
            f"| {_size(table.total_bytes)} |"
        )
    for table in tables:
        lines.extend(["", *_table_section(table, level=2)])
    return "\n".join(lines) + "\n"


def render_table(table: Table, samples: Sequence[dict[str, Any]]) -> str:
    """One table in full, followed by a few of its rows."""
    lines = _table_section(table, level=1)
    lines.extend(["", f"## Sample rows (first {len(samples)}, in storage order)", ""])
    if samples:
        names = list(samples[0].keys())
        lines.append("| " + " | ".join(names) + " |")
        lines.append("|" + "---|" * len(names))
        for row in samples:
            lines.append("| " + " | ".join(_cell(row[name]) for name in names) + " |")
    else:
        lines.append("The table is empty.")
    return "\n".join(lines) + "\n"


def _table_section(table: Table, level: int) -> list[str]:
    heading = "#" * level
    lines = [f"{heading} {table.name}", ""]
    if table.comment:
        lines.extend([_text(table.comment), ""])
    key = ", ".join(table.primary_key) or "none"
    lines.append(
        f"Estimated rows: {_estimate(table.estimated_rows)} (planner statistics, not an exact count) · "
        f"size on disk: {_size(table.total_bytes)} · primary key: {key}"
    )
    lines.extend(["", "| column | type | nullable | default | key | check |", "|---|---|---|---|---|---|"])
    for column in table.columns:
        keys = []
        if column.name in table.primary_key:
            keys.append("PK")
        for foreign in table.constraints_on(column.name, "foreign key"):
            target = ", ".join(foreign.referenced_columns)
            keys.append(f"FK → {foreign.referenced_table}.{target}")
        for unique in table.constraints_on(column.name, "unique"):
            keys.append(f"unique ({unique.name})")
        checks = [c.definition for c in table.constraints_on(column.name, "check")]
        lines.append(
            f"| {column.name} | {column.data_type} | {'yes' if column.nullable else 'no'} "
            f"| {_text(column.default) if column.default else ''} | {_text('; '.join(keys))} "
            f"| {_text('; '.join(checks))} |"
        )
    lines.extend(["", f"{heading}# Constraints of {table.name}", ""])
    if table.constraints:
        for constraint in table.constraints:
            lines.append(f"- `{constraint.name}` ({constraint.kind}): `{_text(constraint.definition)}`")
    else:
        lines.append("- none")
    lines.extend(["", f"{heading}# Indexes of {table.name}", ""])
    if table.indexes:
        for index in table.indexes:
            traits = ["primary key" if index.primary else "unique" if index.unique else None, index.method]
            where = f" WHERE {index.predicate}" if index.predicate else ""
            lines.append(
                f"- `{index.name}` on ({', '.join(index.key_columns)}){where}: "
                f"{', '.join(t for t in traits if t)}, {_size(index.size_bytes)}"
            )
    else:
        lines.append("- none")
    return lines


def _estimate(rows: int | None) -> str:
    return "unknown (not analysed yet)" if rows is None else f"~{rows:,}"


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover - the loop returns at GB


def _text(value: str) -> str:
    """Safe inside a markdown table cell: one line, pipes escaped."""
    return " ".join(value.split()).replace("|", "\\|")


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID, int, float)):
        return str(value)
    text = _text(str(value))
    return text if len(text) <= CELL_MAX else text[: CELL_MAX - 1] + "…"
