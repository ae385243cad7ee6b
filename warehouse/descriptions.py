"""Operator-written descriptions of a source's tables and columns: the YAML file a source's TOML entry
names (`descriptions = "shop.yaml"`), validated into plain dictionaries, merged over database comments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class DescriptionsError(ValueError):
    """The descriptions file is malformed; one line saying where and how to fix it (never its path)."""


@dataclass(frozen=True)
class TableDescription:
    description: str | None = None
    columns: Mapping[str, str] = field(default_factory=dict)


Descriptions = dict[str, TableDescription]  # by table name, as the source names its tables


def read_descriptions(path: Path) -> Descriptions:
    """The tables and columns described in the YAML file at `path`:
    `{tables: {orders: {description: ..., columns: {amount: ...}}}}`. Raises DescriptionsError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DescriptionsError(
            f"cannot read the descriptions file ({error.strerror}); check the path"
        ) from None
    except UnicodeDecodeError:
        raise DescriptionsError("the descriptions file is not UTF-8 text") from None
    return parse_descriptions(text)


def parse_descriptions(text: str) -> Descriptions:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DescriptionsError(f"the descriptions file is not valid YAML{where}") from None
    if document is None:
        return {}
    if not isinstance(document, dict) or set(document) - {"tables"}:
        raise DescriptionsError(
            "the descriptions file must hold one key, tables: {TABLE: {description: ..., columns: {COLUMN: ...}}}"
        )
    tables = document.get("tables") or {}
    if not isinstance(tables, dict):
        raise DescriptionsError("tables must map each table name to {description: ..., columns: {...}}")
    described: Descriptions = {}
    for table, entry in tables.items():
        where = f"tables.{str(table)[:60]}"
        if not isinstance(table, str):
            raise DescriptionsError(f"{where}: a table name must be text")
        if entry is None:
            entry = {}
        if not isinstance(entry, dict) or set(entry) - {"description", "columns"}:
            raise DescriptionsError(f"{where} must be {{description: ..., columns: {{COLUMN: ...}}}}")
        description = entry.get("description")
        if description is not None and not isinstance(description, str):
            raise DescriptionsError(f"{where}.description must be text")
        columns = entry.get("columns") or {}
        if not isinstance(columns, dict):
            raise DescriptionsError(f"{where}.columns must map each column name to its description")
        for column, text in columns.items():
            if not isinstance(column, str) or not isinstance(text, str):
                raise DescriptionsError(
                    f"{where}.columns.{str(column)[:60]} must be text: the column's description"
                )
        described[table] = TableDescription(
            description.strip() if description else None,
            {column: text.strip() for column, text in columns.items()},
        )
    return described


def merged(comments: Mapping[str, TableDescription], written: Mapping[str, TableDescription]) -> Descriptions:
    """Database comments with the operator's descriptions laid over them (the operator's file wins)."""
    result: Descriptions = {}
    for table in {*comments, *written}:
        comment, text = comments.get(table, TableDescription()), written.get(table, TableDescription())
        result[table] = TableDescription(
            text.description or comment.description, {**comment.columns, **text.columns}
        )
    return result


def table_comments(rows: Any) -> Descriptions:
    """Comments as catalog rows (table, column or None for the table itself, comment) by table."""
    tables: dict[str, tuple[str | None, dict[str, str]]] = {}
    for table, column, comment in rows:
        if not comment:
            continue
        description, columns = tables.setdefault(str(table), (None, {}))
        if column is None:
            tables[str(table)] = (str(comment), columns)
        else:
            columns[str(column)] = str(comment)
    return {table: TableDescription(description, columns) for table, (description, columns) in tables.items()}
