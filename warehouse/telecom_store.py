"""The telecom dataset (warehouse/generator.py) in a MySQL/MariaDB database or a folder of Parquet files, so the
telecom model runs on every engine: the same rows, ids and instants the built-in PostgreSQL database holds.

Loading replaces the three tables (never adds); resetting empties them children first; a summary counts them
and reads the window of the last load (a comment on MariaDB's `customers`, metadata in customers.parquet,
None after a reset). PostgreSQL sources other than the built-in database are refused in one line. MariaDB gets UUIDs as CHAR(36), booleans as TINYINT(1),
instants as DATETIME(6) and amounts as DECIMAL(10,2); Parquet gets strings, booleans, timestamp[us] and
decimal128(10,2). Writing goes through the source's `write_url` (files: its folder), with the connection
and CSV helpers of warehouse/shop_store.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import InvalidInput
from warehouse.generator import (
    ACCOUNT_TYPES,
    EVENT_TYPES,
    PAYMENT_METHODS,
    SERVICE_TYPES,
    Dataset,
    GenerationPlan,
)
from warehouse.shop_store import (
    Progress,
    _mysql_connection,
    _mysql_execute,
    _mysql_fetch,
    _write_csv,
    _writer,
    decimal_cents,
    file_counts,
    generated_window,
    parse_window,
)
from warehouse.sources import Source

DATASET = "telecom"
TABLES = ("customers", "revenue", "network_events")  # parents first
WINDOW_KEY = b"analytics_mcp.telecom"
_LOCK_NAME = "analytics_mcp_telecom"
_EPOCH_2000_MICROS = 946_684_800 * 1_000_000  # the generator counts microseconds from 2000-01-01
_INSERT_ROWS = 10_000  # rows per MySQL INSERT: about 1.5 MB, under the default max_allowed_packet
_MYSQL_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS customers (
    customer_id CHAR(36) NOT NULL,
    created_at DATETIME(6) NOT NULL,
    age INT NULL,
    gender VARCHAR(20) NULL,
    location VARCHAR(100) NULL,
    account_type VARCHAR(50) NULL,
    is_churned TINYINT(1) NOT NULL DEFAULT 0,
    churn_date DATETIME(6) NULL,
    PRIMARY KEY (customer_id),
    KEY customers_created_at_idx (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS revenue (
    transaction_id CHAR(36) NOT NULL,
    customer_id CHAR(36) NOT NULL,
    transaction_date DATETIME(6) NOT NULL,
    amount DECIMAL(10, 2) NOT NULL,
    service_type VARCHAR(50) NULL,
    payment_method VARCHAR(50) NULL,
    PRIMARY KEY (transaction_id),
    KEY revenue_customer_id_idx (customer_id),
    KEY revenue_transaction_date_idx (transaction_date),
    CONSTRAINT revenue_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (customer_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS network_events (
    event_id CHAR(36) NOT NULL,
    customer_id CHAR(36) NOT NULL,
    event_timestamp DATETIME(6) NOT NULL,
    event_type VARCHAR(50) NULL,
    network_quality_score DOUBLE NULL,
    duration_seconds INT NULL,
    data_usage_mb DOUBLE NULL,
    PRIMARY KEY (event_id),
    KEY network_events_customer_id_idx (customer_id),
    KEY network_events_timestamp_idx (event_timestamp),
    CONSTRAINT network_events_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (customer_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin""",
)


async def load_telecom(
    target: Source, data: Dataset, progress: Progress | None = None, plan: GenerationPlan | None = None
) -> dict[str, int]:
    """Replace the telecom tables of a MySQL/MariaDB or files source with `data`; rows per table.
    `progress(stage, done, total)` sees each table as it lands; `plan`, when given, is recorded as the
    window summary_snapshot shows."""
    _check_kind(target)
    writer = _writer(target)  # InvalidInput without a write_url
    tables = await asyncio.to_thread(telecom_tables, data)
    total = sum(table.num_rows for table in tables.values())
    done = 0

    def report(table: str) -> None:
        nonlocal done
        done += tables[table].num_rows
        if progress is not None:
            progress(table, done, total)

    window = None if plan is None else _window(plan)
    if target.kind == "mysql":
        await _load_mysql(target.name, writer, target.default_schema, tables, window, report)
    else:
        await asyncio.to_thread(_check_file_customers, target.directory, target.name)
        await asyncio.to_thread(_write_files, target.directory, tables, window, report)
    return {name: table.num_rows for name, table in tables.items()}


async def reset_telecom(target: Source) -> dict[str, tuple[int, int]]:
    """Empty the telecom tables of a MySQL/MariaDB or files source (children first); each table's row
    count before and after."""
    _check_kind(target)
    writer = _writer(target)
    if target.kind == "mysql":
        async with _mysql_connection(writer, target.default_schema) as conn:
            await _mysql_execute(conn, f"SELECT GET_LOCK('{_LOCK_NAME}', 60)")
            try:
                await _mysql_check_customers(conn, target.default_schema, target.name)
                before = await _mysql_counts(conn, target.default_schema)
                present = await _mysql_present(conn, target.default_schema)
                await _mysql_execute(conn, "SET SESSION foreign_key_checks = 0")
                for table in reversed(TABLES):  # children first
                    if table in present:
                        await _mysql_execute(conn, f"TRUNCATE TABLE `{table}`")
                if "customers" in present:
                    await _mysql_execute(conn, "ALTER TABLE `customers` COMMENT = ''")
                after = await _mysql_counts(conn, target.default_schema)
            finally:
                await _mysql_execute(conn, "SET SESSION foreign_key_checks = 1")
                await _mysql_execute(conn, f"SELECT RELEASE_LOCK('{_LOCK_NAME}')")
    else:
        folder = target.directory
        await asyncio.to_thread(_check_file_customers, folder, target.name)
        before = await asyncio.to_thread(file_counts, folder, TABLES)
        await asyncio.to_thread(_empty_files, folder)
        after = await asyncio.to_thread(file_counts, folder, TABLES)
    return {table: (before[table], after[table]) for table in reversed(TABLES)}


async def telecom_summary(target: Source) -> dict[str, Any]:
    """Rows per telecom table of a MySQL/MariaDB or files source and the window of the last load (None when
    never loaded through the generator, or reset since)."""
    _check_kind(target)
    if target.kind == "mysql":
        async with _mysql_connection(_writer(target), target.default_schema) as conn:
            await _mysql_check_customers(conn, target.default_schema, target.name)
            counts = await _mysql_counts(conn, target.default_schema)
            rows = await _mysql_fetch(
                conn,
                "SELECT table_comment FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = 'customers'",
                (target.default_schema,),
            )
            window = parse_window(rows[0][0] if rows else None, DATASET)
    else:
        await asyncio.to_thread(_check_file_customers, target.directory, target.name)
        counts = await asyncio.to_thread(file_counts, target.directory, TABLES)
        window = await asyncio.to_thread(_file_window, target.directory)
    return {"dataset": DATASET, "tables": counts, "rows": sum(counts.values()), "window": window}


def check_writable(target: Source) -> None:
    """Refuse, before any work, a source the telecom tables cannot be written to (one line)."""
    _check_kind(target)
    _writer(target)  # InvalidInput without a write_url


def _check_kind(target: Source) -> None:
    if target.kind not in ("mysql", "files"):
        raise InvalidInput(
            f"source '{target.name}' is {target.kind}; the telecom loader writes MySQL/MariaDB and files "
            "sources (the built-in database loads with generate_data, source='main')"
        )


def _not_telecom(name: str) -> InvalidInput:
    """A customers table of another dataset (the shop's) is there: never truncated or overwritten."""
    return InvalidInput(
        f"source '{name[:40]}' holds a customers table of another dataset (no is_churned column); load the "
        "telecom dataset into a database or folder of its own, or into main"
    )


def _window(plan: GenerationPlan) -> dict[str, Any]:
    return generated_window(DATASET, plan)


def telecom_tables(data: Dataset) -> dict[str, pa.Table]:
    """The three tables as Arrow tables, columns in the built-in schema's order."""
    people, events, payments = data.customers, data.events, data.transactions
    ids = _uuid_text(people.customer_id)
    return {
        "customers": pa.table(
            {
                "customer_id": pa.array(ids, type=pa.string()),
                "created_at": _instants(people.created_at),
                "age": pa.array(people.age, type=pa.int32()),
                "gender": pa.array(people.gender, type=pa.string()),
                "location": pa.array(people.location, type=pa.string()),
                "account_type": pa.array(ACCOUNT_TYPES[people.account_type], type=pa.string()),
                "is_churned": pa.array(people.is_churned, type=pa.bool_()),
                "churn_date": _instants(people.churn_date, missing=~people.is_churned),
            }
        ),
        "revenue": pa.table(
            {
                "transaction_id": pa.array(_uuid_text(payments.transaction_id), type=pa.string()),
                "customer_id": pa.array(ids[payments.customer_index], type=pa.string()),
                "transaction_date": _instants(payments.transaction_date),
                "amount": decimal_cents(payments.amount_cents, precision=10),
                "service_type": pa.array(SERVICE_TYPES[payments.service_type], type=pa.string()),
                "payment_method": pa.array(PAYMENT_METHODS[payments.payment_method], type=pa.string()),
            }
        ),
        "network_events": pa.table(
            {
                "event_id": pa.array(_uuid_text(events.event_id), type=pa.string()),
                "customer_id": pa.array(ids[events.customer_index], type=pa.string()),
                "event_timestamp": _instants(events.event_timestamp),
                "event_type": pa.array(EVENT_TYPES[events.event_type], type=pa.string()),
                "network_quality_score": pa.array(events.network_quality_score, type=pa.float64()),
                "duration_seconds": pa.array(events.duration_seconds, type=pa.int32()),
                "data_usage_mb": pa.array(events.data_usage_mb, type=pa.float64()),
            }
        ),
    }


def _uuid_text(raw: np.ndarray) -> np.ndarray:
    """(n, 16) bytes as the canonical UUID text PostgreSQL prints (lowercase, 8-4-4-4-12), without a
    Python object per id until the final decode."""
    digits = np.frombuffer(raw.tobytes().hex().encode(), dtype=np.uint8).reshape(len(raw), 32)
    text = np.full((len(raw), 36), ord("-"), dtype=np.uint8)
    for start, end, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
        text[:, at : at + end - start] = digits[:, start:end]
    return np.char.decode(text.view("S36").ravel(), "ascii")


def _instants(micros: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    values = (micros + _EPOCH_2000_MICROS).view("datetime64[us]")
    return pa.array(values, type=pa.timestamp("us"), mask=missing)


# ---- MySQL / MariaDB


async def _load_mysql(
    name: str,
    url: str,
    database: str,
    tables: dict[str, pa.Table],
    window: dict[str, Any] | None,
    report: Any,
) -> None:
    async with _mysql_connection(url, database) as conn:
        await _mysql_execute(conn, f"SELECT GET_LOCK('{_LOCK_NAME}', 60)")
        try:
            await _mysql_check_customers(conn, database, name)
            for statement in _MYSQL_SCHEMA:
                await _mysql_execute(conn, statement)
            # Text is written "..." with "" for a quote: no ANSI_QUOTES, and a backslash is a backslash.
            await _mysql_execute(
                conn,
                "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES,NO_ENGINE_SUBSTITUTION'",
            )
            await _mysql_execute(conn, "SET SESSION time_zone = '+00:00'")
            await _mysql_execute(conn, "SET SESSION foreign_key_checks = 0")
            for table in reversed(TABLES):  # children first
                await _mysql_execute(conn, f"TRUNCATE TABLE `{table}`")
            for table in TABLES:
                for insert in _mysql_inserts(table, tables[table]):
                    await conn.query(insert)
                report(table)
            comment = "" if window is None else json.dumps(window)
            await _mysql_execute(conn, "ALTER TABLE `customers` COMMENT = %s", (comment,))
        finally:
            await _mysql_execute(conn, "SET SESSION foreign_key_checks = 1")
            await _mysql_execute(conn, f"SELECT RELEASE_LOCK('{_LOCK_NAME}')")


async def _mysql_check_customers(conn: Any, database: str, name: str) -> None:
    rows = await _mysql_fetch(
        conn,
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'customers'",
        (database,),
    )
    if rows and "is_churned" not in {row[0] for row in rows}:
        raise _not_telecom(name)


async def _mysql_present(conn: Any, database: str) -> set[str]:
    rows = await _mysql_fetch(
        conn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (database,)
    )
    return {row[0] for row in rows}


async def _mysql_counts(conn: Any, database: str) -> dict[str, int]:
    present = await _mysql_present(conn, database)
    counts = dict.fromkeys(TABLES, 0)
    for table in TABLES:
        if table in present:
            counts[table] = int((await _mysql_fetch(conn, f"SELECT count(*) FROM `{table}`"))[0][0])
    return counts


def _mysql_inserts(table: str, data: pa.Table) -> Iterator[bytes]:
    """Multi-row INSERTs whose VALUES are Arrow's CSV lines (text and instants quoted, NULL unquoted,
    booleans 0/1). Generated text never holds a line break, so a line is a row."""
    columns: dict[str, pa.Array] = {}
    for name in data.column_names:
        column = data.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.string())  # 'YYYY-MM-DD HH:MM:SS.ffffff', quoted like text
        elif pa.types.is_boolean(column.type):
            column = column.cast(pa.int8())
        columns[name] = column
    prepared = pa.table(columns)
    head = f"INSERT INTO `{table}` ({', '.join(data.column_names)}) VALUES (".encode()
    for offset in range(0, prepared.num_rows, _INSERT_ROWS):
        out = io.BytesIO()
        _write_csv(prepared.slice(offset, _INSERT_ROWS), out, null="NULL")
        yield head + out.getvalue().rstrip(b"\n").replace(b"\n", b"),(") + b")"


# ---- Files (DuckDB reads them)


def _write_files(
    folder: Path, tables: dict[str, pa.Table], window: dict[str, Any] | None, report: Any
) -> None:
    for table, data in tables.items():
        if table == "customers" and window is not None:
            data = data.replace_schema_metadata({WINDOW_KEY: json.dumps(window).encode()})
        final = folder / f"{table}.parquet"
        temporary = folder / f".{table}.parquet.{secrets.token_hex(6)}.tmp"  # hidden: never served as a table
        try:
            pq.write_table(data, temporary)
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        report(table)


def _check_file_customers(folder: Path, name: str) -> None:
    path = folder / "customers.parquet"
    if path.is_file() and "is_churned" not in pq.read_schema(path).names:
        raise _not_telecom(name)


def _empty_files(folder: Path) -> None:
    """Each telecom file there replaced by an empty one of the same columns (and no window), children first."""
    present = {table for table in TABLES if (folder / f"{table}.parquet").is_file()}
    empty = {
        table: pq.read_schema(folder / f"{table}.parquet").remove_metadata().empty_table()
        for table in reversed(TABLES)
        if table in present
    }
    _write_files(folder, empty, None, lambda table: None)


def _file_window(folder: Path) -> dict[str, Any] | None:
    path = folder / "customers.parquet"
    if not path.is_file():
        return None
    return parse_window((pq.read_schema(path).metadata or {}).get(WINDOW_KEY), DATASET)
