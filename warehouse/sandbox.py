"""Copy a DataFrame into a new table of schema `sandbox` (COPY, one transaction) so SQL can join it."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from core.errors import InvalidInput
from warehouse import sql
from warehouse.db import Database

SCHEMA = "sandbox"
_TABLE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MAX_IDENTIFIER_BYTES = 63  # PostgreSQL cuts longer names, which could make two columns one
_BATCH_ROWS = 50_000


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_name(raw: str) -> str:
    if not _TABLE.match(raw):
        raise InvalidInput(
            f"table name '{raw[:70]}' is not allowed: use 1-63 lower-case letters, digits and '_', "
            "starting with a letter or '_'"
        )
    return raw


def column_types(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """(column name, PostgreSQL type) per column; names are checked, later quoted, never trusted."""
    columns: list[tuple[str, str]] = []
    for name in frame.columns:
        text = str(name)
        if not text or "\x00" in text or len(text.encode()) > _MAX_IDENTIFIER_BYTES:
            raise InvalidInput(
                f"column name '{text[:70]}' cannot be a PostgreSQL column (1-63 bytes, no NUL); rename it"
            )
        dtype = frame[name].dtype
        if pd.api.types.is_bool_dtype(dtype):
            kind = "boolean"
        elif pd.api.types.is_integer_dtype(dtype):
            kind = "bigint"
        elif pd.api.types.is_float_dtype(dtype):
            kind = "double precision"
        elif isinstance(dtype, pd.DatetimeTZDtype):
            kind = "timestamptz"
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            kind = "timestamp"
        else:
            kind = "text"
        columns.append((text, kind))
    if len({name for name, _ in columns}) != len(columns):
        raise InvalidInput("the dataset has duplicate column names; rename them before loading")
    return columns


def _records(frame: pd.DataFrame, columns: list[tuple[str, str]]) -> Iterator[list[tuple[Any, ...]]]:
    """Rows as Python values asyncpg can COPY: None for gaps, datetimes, ints, floats, text."""
    converters = [_converter(kind) for _, kind in columns]
    for start in range(0, len(frame), _BATCH_ROWS):
        block = frame.iloc[start : start + _BATCH_ROWS]
        yield [
            tuple(convert(value) for convert, value in zip(converters, row, strict=True))
            for row in block.itertuples(index=False, name=None)
        ]


def _converter(kind: str) -> Any:
    def missing(value: Any) -> bool:
        return (
            value is None
            or value is pd.NaT
            or value is pd.NA
            or (isinstance(value, float) and math.isnan(value))
        )

    def convert(value: Any) -> Any:
        if missing(value):
            return None
        if kind == "bigint":
            return int(value)
        if kind == "double precision":
            return float(value)
        if kind == "boolean":
            return bool(value)
        if kind in ("timestamp", "timestamptz"):
            stamp = pd.Timestamp(value).to_pydatetime()
            return stamp if kind == "timestamptz" else stamp.replace(tzinfo=None)
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()
        return str(value.item() if isinstance(value, np.generic) else value)

    return convert


async def load_frame(
    db: Database, table: str, frame: pd.DataFrame, *, replace: bool = False
) -> dict[str, Any]:
    """Create sandbox.<table> and COPY `frame` into it, all or nothing; the query role may SELECT it."""
    table = table_name(table)
    columns = column_types(frame)
    target = f"{quote_identifier(SCHEMA)}.{quote_identifier(table)}"
    definition = ", ".join(f"{quote_identifier(name)} {kind}" for name, kind in columns)
    async with db.connection() as conn, conn.transaction():
        await conn.execute(sql.load("sandbox_prepare"))
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{SCHEMA}.{table}")
        if exists and not replace:
            raise InvalidInput(f"table {SCHEMA}.{table} exists; choose another name or pass replace=true")
        if exists:
            await conn.execute(f"DROP TABLE {target}")
        await conn.execute(f"CREATE TABLE {target} ({definition})")
        batches = _records(frame, columns)
        # Building Python rows is CPU work: done in a thread, batch by batch, so the loop keeps serving.
        while (batch := await asyncio.to_thread(next, batches, None)) is not None:
            await conn.copy_records_to_table(
                table, schema_name=SCHEMA, columns=[name for name, _ in columns], records=batch
            )
        if db.query_role is not None:  # the role agent queries log in as (set by apply_schema)
            reader = quote_identifier(db.query_role)
            await conn.execute(f"GRANT USAGE ON SCHEMA {quote_identifier(SCHEMA)} TO {reader}")
            await conn.execute(f"GRANT SELECT ON {target} TO {reader}")
    return {
        "table": f"{SCHEMA}.{table}",
        "rows": len(frame),
        "columns": [{"name": name, "type": kind} for name, kind in columns],
        "replaced": bool(exists),
    }
