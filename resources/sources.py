"""Render a data source's tables and columns as markdown: the schema://{source} resource."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from warehouse.descriptions import TableDescription
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
        f"Each table's profile (null shares, ranges, top values, roles) is at schema://{name}/<table>.",
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


def render_profile(source: str, engine: str, profile: Mapping[str, Any]) -> str:
    """A table's metadata card: its rows and the sample profiled, then one line per column."""
    rows, sample = profile["row_count"], profile["sample_size"]
    measured = "all profiled" if sample >= rows else f"profiled on a random sample of {sample:,} rows"
    when = f" at {profile['profiled_at']}" if profile.get("profiled_at") else ""
    lines = [f"# `{profile['table']}` in source `{source}` ({engine})", ""]
    lines += [f"{rows:,} rows, {measured}{when}.", ""]
    lines += [
        f'Query it with query_database(query=..., source="{source}") in the {_dialect(engine)} dialect.',
        "",
        "| column | type | role | nulls | distinct | min | max | top values | key |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for column in profile["columns"]:
        top = ", ".join(f"{_value(t['value'])} ({t['count']:,})" for t in column["top_values"])
        key = column.get("key") or ""
        if column.get("references"):
            key = f"{key} references {column['references']}".strip()
        distinct = "" if column["distinct"] is None else f"{column['distinct']:,}"
        lines.append(
            f"| {_text(column['name'])} | {column['type']} | {column['role']} | {column['null_share']:.1%} "
            f"| {distinct} | {_value(column['min'])} | {_value(column['max'])} | {_text(top)} | {_text(key)} |"
        )
    return "\n".join(lines) + "\n"


def render_data_dictionary(
    name: str,
    engine: str,
    description: str,
    profiles: Sequence[Mapping[str, Any]],
    descriptions: Mapping[str, TableDescription],
) -> str:
    """docs://{source}/data_dictionary: the source's description, then per table its rows and
    description, and per column its type, guessed role, null share, range and description."""
    lines = [f"# Data dictionary of source `{name}` ({engine})", ""]
    if description:
        lines += [_text(description), ""]
    lines += [
        f'Query it with query_database(query=..., source="{name}") in the {_dialect(engine)} dialect; '
        f"full profiles (distinct values, top values, keys) are at schema://{name}/<table>.",
        "",
    ]
    if not profiles:
        lines.append("No tables are readable in this source.")
    for profile in profiles:
        described = descriptions.get(profile["table"])
        lines += [f"## {profile['table']} ({profile['row_count']:,} rows)", ""]
        if described is not None and described.description:
            lines += [_text(described.description), ""]
        lines += ["| column | type | role | nulls | range | description |", "|---|---|---|---|---|---|"]
        for column in profile["columns"]:
            low, high = _value(column["min"]), _value(column["max"])
            span = f"{low} to {high}" if low or high else ""
            meaning = described.columns.get(column["name"], "") if described is not None else ""
            lines.append(
                f"| {_text(column['name'])} | {column['type']} | {column['role']} "
                f"| {column['null_share']:.1%} | {span} | {_text(meaning)} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _value(value: Any) -> str:
    return "" if value is None else _text(str(value))[:60]


def _dialect(engine: str) -> str:
    return {"mysql": "MySQL/MariaDB", "duckdb": "DuckDB", "postgresql": "PostgreSQL"}.get(engine, engine)


def _text(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")[:200]
