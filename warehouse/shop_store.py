"""The shop dataset in a source: bulk load (replacing, never adding), reset, summary and table fingerprints,
for PostgreSQL (schema `shop`), MySQL/MariaDB (the source's database) and files sources (<table>.parquet).

Loading writes through the source's `write_url` (the built-in `main` uses its own url); nothing here runs
on the read-only query pools. PostgreSQL loads in one transaction with binary COPY (keys dropped and put
back around it); MySQL/MariaDB cannot truncate inside a transaction, so it truncates in dependency order,
drops the secondary keys, sends the rows as MariaDB bulk executes of a prepared INSERT (multi-row INSERTs
on MySQL) and adds the keys back; a files source writes each file under a hidden temporary name and renames
it into place.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import secrets
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.errors import InvalidInput
from warehouse import sql
from warehouse.shop import NULL_TIME, TABLES, ShopPlan, ShopTables, generate_shop, row_counts
from warehouse.sources import MAIN, Source

Progress = Callable[[str, int, int], None]  # (stage, rows done, rows in all)
_Report = Callable[[str, int], None]  # (stage, rows just written)

DATASET = "shop"
PG_SCHEMA = "shop"
# Where the last generated window is kept: a comment on the orders table (PostgreSQL, MySQL) or the key
# of the orders file's Parquet metadata; no extra table shows up among the source's tables.
WINDOW_KEY = b"analytics_mcp.shop"
_LOCK = 0x73686F70  # 'shop': one load or reset of the shop at a time per PostgreSQL database
_COPY_BLOCK = 200_000
_INSERT_ROWS = 20_000  # rows per MySQL INSERT: a few MB, under the default 16 MB max_allowed_packet
_PG_EPOCH_SECONDS = 946_684_800  # 2000-01-01, PostgreSQL's timestamp zero, in seconds since 1970
_PG_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_PG_TRAILER = struct.pack("!h", -1)
# Tables whose text is free (names, e-mails) go through CSV COPY: binary rows need one fixed width per
# group, and free text would make nearly every row its own group. They are about 6% of the rows.
_CSV_TABLES = frozenset({"products", "customers"})


@dataclass(frozen=True)
class ShopLoad:
    counts: dict[str, int]
    seconds: float  # generation + load + keys

    @property
    def rows(self) -> int:
        return sum(self.counts.values())


async def load_shop(target: Source, plan: ShopPlan, progress: Progress | None = None) -> ShopLoad:
    """Generate the shop for `plan` and replace the shop tables of `target` with it.

    The generation runs in a thread while the engine is prepared (schema, TRUNCATE, keys dropped).
    `progress(stage, done, total)` sees: generated, cleared, each table as it lands, keys.
    """
    writer = _writer(target)
    await _refuse_telecom_customers(target, writer)
    started = time.perf_counter()
    generation = asyncio.ensure_future(asyncio.to_thread(generate_shop, plan))
    counts: dict[str, int] = {}
    done = 0

    def report(stage: str, rows: int) -> None:
        nonlocal done
        done += rows
        if progress is not None:
            progress(stage, done, sum(counts.values()))

    async def generated() -> ShopTables:
        tables = await generation
        counts.update(row_counts(tables))
        report("generated", 0)
        return tables

    window = _window(plan)
    try:
        if target.kind == "postgresql":
            await _load_postgres(writer, generated, window, report)
        elif target.kind == "mysql":
            await _load_mysql(writer, target.default_schema, generated, window, report)
        else:
            tables = await generated()
            await asyncio.to_thread(_write_files, target.directory, tables, window, report)
    finally:
        generation.cancel()  # a failure before the data was needed: nobody waits for it
    return ShopLoad(counts, time.perf_counter() - started)


async def reset_shop(target: Source) -> dict[str, tuple[int, int]]:
    """Empty every shop table of `target` (children first); each table's row count before and after."""
    writer = _writer(target)
    await _refuse_telecom_customers(target, writer)
    if target.kind == "postgresql":
        async with _pg_connection(writer) as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            before = await _pg_counts(conn)
            if await _pg_has_tables(conn):
                await conn.execute(f"TRUNCATE {', '.join(f'{PG_SCHEMA}.{t}' for t in TABLES)}")
                await conn.execute(f"COMMENT ON TABLE {PG_SCHEMA}.orders IS NULL")
            after = await _pg_counts(conn)
    elif target.kind == "mysql":
        async with _mysql_connection(writer, target.default_schema) as conn:
            before = await _mysql_counts(conn, target.default_schema)
            if any(before.values()) or await _mysql_has_tables(conn, target.default_schema):
                await _mysql_execute(conn, "SET SESSION foreign_key_checks = 0")
                for table in reversed(TABLES):
                    await _mysql_execute(conn, f"TRUNCATE TABLE `{table}`")
                await _mysql_add_keys(conn, target.default_schema)  # any a failed load left out
                await _mysql_execute(conn, "SET SESSION foreign_key_checks = 1")
                await _mysql_execute(conn, "ALTER TABLE `orders` COMMENT = ''")
            after = await _mysql_counts(conn, target.default_schema)
    else:
        folder = target.directory
        before = await asyncio.to_thread(file_counts, folder)
        empty = {
            name: {column: np.empty(0, dtype=_EMPTY[kind]) for column, kind in spec}
            for name, spec in TABLES.items()
        }
        await asyncio.to_thread(_write_files, folder, empty, None, _no_report)
        after = await asyncio.to_thread(file_counts, folder)
    return {table: (before[table], after[table]) for table in TABLES}


async def shop_summary(target: Source) -> dict[str, Any]:
    """Counts per shop table and the last generated window (None when never loaded or reset since)."""
    writer = _writer(target)
    window: dict[str, Any] | None = None
    if target.kind == "postgresql":
        async with _pg_connection(writer) as conn:
            counts = await _pg_counts(conn)
            if await _pg_has_tables(conn):
                comment = await conn.fetchval(
                    f"SELECT obj_description('{PG_SCHEMA}.orders'::regclass, 'pg_class')"
                )
                window = parse_window(comment)
    elif target.kind == "mysql":
        async with _mysql_connection(writer, target.default_schema) as conn:
            counts = await _mysql_counts(conn, target.default_schema)
            rows = await _mysql_fetch(
                conn,
                "SELECT table_comment FROM information_schema.tables WHERE table_schema = %s AND table_name = 'orders'",
                (target.default_schema,),
            )
            window = parse_window(rows[0][0] if rows else None)
    else:
        counts = await asyncio.to_thread(file_counts, target.directory)
        window = await asyncio.to_thread(_file_window, target.directory)
    return {"dataset": DATASET, "tables": counts, "rows": sum(counts.values()), "window": window}


async def shop_fingerprints(target: Source) -> dict[str, str]:
    """Per table, the sha256 of its rows read back from the engine, ordered by key, each value in one
    canonical text (integers plain, money with two decimals, times as YYYY-MM-DD HH:MM:SS, booleans t/f,
    NULL as \\N): the same data gives the same digests in every engine."""
    writer = _writer(target)
    digests: dict[str, str] = {}
    if target.kind == "postgresql":
        async with _pg_connection(writer) as conn, conn.transaction(readonly=True):
            for table, spec in TABLES.items():
                digest = _Digest(spec)
                async for record in conn.cursor(
                    _select(table, spec, f"{PG_SCHEMA}.{table}"), prefetch=10_000
                ):
                    digest.add(record)
                digests[table] = digest.hexdigest()
    elif target.kind == "mysql":
        async with _mysql_connection(writer, target.default_schema) as conn:
            for table, spec in TABLES.items():
                digest = _Digest(spec)
                for record in await _mysql_fetch(conn, _select(table, spec, f"`{table}`")):
                    digest.add(record)
                digests[table] = digest.hexdigest()
    else:
        digests = await asyncio.to_thread(_file_fingerprints, target.directory)
    return digests


def _writer(target: Source) -> str:
    """The URL (or, for files, folder) the generator may write: `write_url`, or `main`'s own url."""
    if target.kind == "files":
        return str(target.directory)
    if target.write_url is not None:
        return target.write_url.get_secret_value()
    if target.name == MAIN:
        return target.url.get_secret_value()
    raise InvalidInput(
        f"source '{target.name}' has no write_url; add write_url (an account that may write) to its entry "
        "to generate or reset data there"
    )


async def _refuse_telecom_customers(target: Source, writer: str) -> None:
    """The shop and the telecom dataset both have a `customers` table: a MySQL/MariaDB database or folder
    holding the telecom one (it has is_churned) is never truncated or overwritten by the shop."""
    if target.kind == "mysql":
        async with _mysql_connection(writer, target.default_schema) as conn:
            rows = await _mysql_fetch(
                conn,
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = 'customers' AND column_name = 'is_churned'",
                (target.default_schema,),
            )
        telecom = bool(rows)
    elif target.kind == "files":
        path = target.directory / "customers.parquet"
        telecom = path.is_file() and "is_churned" in pq.read_schema(path).names
    else:
        return  # PostgreSQL: the shop lives in schema `shop`, apart from the telecom tables
    if telecom:
        raise InvalidInput(
            f"source '{target.name[:40]}' holds the telecom dataset's customers table; load the shop into a "
            "database or folder of its own"
        )


def _window(plan: ShopPlan) -> dict[str, Any]:
    return {**generated_window(DATASET, plan), "products": plan.products}


def generated_window(dataset: str, plan: Any) -> dict[str, Any]:
    """What a load records of its generator's arguments (shop or telecom plan) and when it ran."""
    return {
        "dataset": dataset,
        "customers": plan.customers,
        "seed": plan.seed,
        "start_date": plan.start_date.isoformat(),
        "end_date": plan.end_date.isoformat(),
        "loaded_at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
    }


def parse_window(text: str | bytes | None, dataset: str = DATASET) -> dict[str, Any] | None:
    """A recorded window of `dataset`, or None (nothing recorded, unreadable, or another dataset's)."""
    if not text:
        return None
    try:
        window = json.loads(text)
    except ValueError:
        return None
    return window if isinstance(window, dict) and window.get("dataset") == dataset else None


def _select(table: str, spec: Iterable[tuple[str, str]], relation: str) -> str:
    # Names come from TABLES only, never from an agent.
    columns = [name for name, _ in spec]
    return f"SELECT {', '.join(columns)} FROM {relation} ORDER BY {columns[0]}"


# ---- PostgreSQL


@contextlib.asynccontextmanager
async def _pg_connection(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def _load_postgres(
    url: str, generated: Callable[[], Awaitable[ShopTables]], window: dict[str, Any], report: _Report
) -> None:
    async with _pg_connection(url) as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK)
            await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute(sql.load("shop_schema"))
            await conn.execute(f"TRUNCATE {', '.join(f'{PG_SCHEMA}.{t}' for t in TABLES)}")
            await conn.execute(sql.load("shop_load_prepare"))
            tables = await generated()
            report("cleared", 0)
            # Each table's COPY payload is built in a thread while the server takes the previous one.
            names = list(tables)
            pending = asyncio.create_task(asyncio.to_thread(_pg_payload, names[0], tables[names[0]]))
            for position, table in enumerate(names):
                payload = await pending
                if position + 1 < len(names):
                    following = names[position + 1]
                    pending = asyncio.create_task(
                        asyncio.to_thread(_pg_payload, following, tables[following])
                    )
                await conn.copy_to_table(
                    table,
                    schema_name=PG_SCHEMA,
                    source=io.BytesIO(payload),
                    columns=[name for name, _ in TABLES[table]],
                    format="csv" if table in _CSV_TABLES else "binary",
                )
                report(table, row_counts({table: tables[table]})[table])
            await conn.execute(sql.load("shop_load_finish"))
            await conn.execute(sql.load("shop_schema"))
            comment = await conn.fetchval("SELECT quote_literal($1::text)", json.dumps(window))
            await conn.execute(f"COMMENT ON TABLE {PG_SCHEMA}.orders IS {comment}")
            # Statistics for the planner, before COMMIT: the rows are this transaction's own, so no
            # visibility checks (hint bits) slow the sampling down; 30 is enough for these columns.
            await conn.execute("SET LOCAL default_statistics_target = 30")
            await conn.execute(f"ANALYZE {', '.join(f'{PG_SCHEMA}.{t}' for t in TABLES)}")
            report("keys", 0)


def _pg_payload(table: str, columns: dict[str, np.ndarray]) -> bytes:
    if table in _CSV_TABLES:
        return _csv_bytes(table, columns)
    return b"".join(_binary_chunks(TABLES[table], columns))


async def _pg_has_tables(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(f"SELECT to_regclass('{PG_SCHEMA}.orders') IS NOT NULL"))


async def _pg_counts(conn: asyncpg.Connection) -> dict[str, int]:
    counts = dict.fromkeys(TABLES, 0)
    for table in TABLES:
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{PG_SCHEMA}.{table}"):
            counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {PG_SCHEMA}.{table}"))
    return counts


_BINARY_FIXED = {"key": (">i8", 8), "int": (">i4", 4), "time": (">i8", 8), "bool": ("u1", 1)}


def _binary_chunks(spec: tuple[tuple[str, str], ...], columns: dict[str, np.ndarray]) -> Iterator[bytes]:
    """PostgreSQL binary COPY of one table without a Python object per row: rows are grouped by the byte
    lengths of their text values and NULLs (a few per table: statuses, methods, carriers), so that each
    group is one numpy structured array of fixed-width rows."""
    yield _PG_HEADER
    n = len(columns[spec[0][0]])
    prepared: list[tuple[str, str, np.ndarray]] = []
    keys: list[np.ndarray] = []
    for name, kind in spec:
        values = columns[name]
        if kind == "text":
            encoded = _utf8(values)
            prepared.append((name, kind, encoded))
            keys.append(np.char.str_len(encoded).astype(np.int64))
        elif kind == "time":
            micros = (values - _PG_EPOCH_SECONDS) * 1_000_000
            prepared.append((name, kind, micros))
            keys.append(np.where(values == NULL_TIME, -1, 8))
        elif kind == "money":
            prepared.append((name, kind, _numeric_cents(values)))
        else:
            prepared.append((name, kind, values))
    if keys:
        widths = np.column_stack(keys)
        if widths.max(initial=0) >= 511 or len(keys) > 7:
            raise ValueError("text too long for a binary COPY group key")
        # One integer per row naming its widths (each below 511, or -1 for NULL): a fast 1-D unique.
        code = np.zeros(n, dtype=np.int64)
        for column in (widths + 1).T:
            code = code * 512 + column
        _, first, inverse = np.unique(code, return_index=True, return_inverse=True)
        groups = widths[first]
        by_group = np.argsort(inverse, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(inverse, minlength=len(groups)))]
    else:
        groups, by_group, bounds = np.zeros((1, 0), dtype=np.int64), np.arange(n), np.array([0, n])
    for group, widths in enumerate(groups):
        picked = by_group[bounds[group] : bounds[group + 1]]
        fields: list[Any] = [("nfields", ">i2")]
        sized = iter(widths.tolist())
        layout: list[tuple[str, str, int]] = []
        for name, kind, _ in prepared:
            width = (
                next(sized)
                if kind in ("text", "time")
                else (16 if kind == "money" else _BINARY_FIXED[kind][1])
            )
            layout.append((name, kind, width))
            fields.append((f"{name}_len", ">i4"))
            if width <= 0:  # NULL (-1) or empty text (0): the length alone
                continue
            if kind == "text":
                fields.append((name, f"S{width}"))
            elif kind == "money":
                fields.append((name, ">i2", 8))
            else:
                fields.append((name, _BINARY_FIXED[kind][0]))
        dtype = np.dtype(fields)
        for start in range(0, len(picked), _COPY_BLOCK):
            block = picked[start : start + _COPY_BLOCK]
            rows = np.empty(len(block), dtype=dtype)
            rows["nfields"] = len(prepared)
            for (name, _, values), (_, _, width) in zip(prepared, layout, strict=True):
                rows[f"{name}_len"] = width
                if width <= 0:
                    continue
                rows[name] = values[block]  # text: S(longest) cast to this group's exact S(width)
            yield rows.tobytes()
    yield _PG_TRAILER


def _utf8(values: np.ndarray) -> np.ndarray:
    """Text as a numpy bytes array (UTF-8): numpy's own ASCII cast when it can, else each value encoded."""
    try:
        return values.astype("S")
    except UnicodeEncodeError:
        return np.array([value.encode() for value in values.tolist()], dtype="S")


def _numeric_cents(cents: np.ndarray) -> np.ndarray:
    """NUMERIC binary of whole cents below 10^12: four base-10000 digits, weight 2, scale 2 (PostgreSQL
    strips the leading and trailing zero digits itself)."""
    whole = cents // 100
    out = np.empty((len(cents), 8), dtype=">i2")
    out[:, 0] = 4  # ndigits
    out[:, 1] = 2  # weight: the first digit counts 10000^2
    out[:, 2] = 0  # sign: positive
    out[:, 3] = 2  # display scale
    out[:, 4] = whole // 100_000_000
    out[:, 5] = (whole // 10_000) % 10_000
    out[:, 6] = whole % 10_000
    out[:, 7] = (cents % 100) * 100
    return out


# ---- Arrow: Parquet files, CSV for COPY and LOAD DATA

_EMPTY = {"key": np.int64, "int": np.int32, "text": object, "money": np.int64, "time": np.int64, "bool": bool}


def _arrow_table(table: str, columns: dict[str, np.ndarray], *, for_mysql: bool = False) -> pa.Table:
    return _arrow_of(TABLES[table], columns, for_mysql=for_mysql)


def _arrow_of(
    spec: Iterable[tuple[str, str]], columns: dict[str, np.ndarray], *, for_mysql: bool = False
) -> pa.Table:
    arrays: dict[str, pa.Array] = {}
    for name, kind in spec:
        values = columns[name]
        if kind == "money":
            arrays[name] = decimal_cents(values)
        elif kind == "time":
            instants = values.view("datetime64[s]")  # NULL_TIME is NaT
            arrays[name] = pa.array(instants.astype("datetime64[us]"), from_pandas=True)
            if for_mysql:  # 'YYYY-MM-DD HH:MM:SS', quoted by the CSV writer like text
                arrays[name] = pa.array(instants, from_pandas=True).cast(pa.string())
        elif kind == "text":
            arrays[name] = pa.array(values, type=pa.string())
        elif kind == "bool" and for_mysql:
            arrays[name] = pa.array(values.astype(np.int8))
        elif kind == "int":
            arrays[name] = pa.array(values, type=pa.int32())
        else:
            arrays[name] = pa.array(values, type=pa.bool_() if kind == "bool" else pa.int64())
    return pa.table(arrays)


def decimal_cents(cents: np.ndarray, precision: int = 12) -> pa.Array:
    """DECIMAL(precision, 2) from whole cents, exactly: the 128-bit unscaled integers written directly."""
    unscaled = np.empty(2 * len(cents), dtype="<i8")
    unscaled[0::2] = cents
    unscaled[1::2] = np.where(cents < 0, -1, 0)
    return pa.Array.from_buffers(
        pa.decimal128(precision, 2), len(cents), [None, pa.py_buffer(unscaled.tobytes())]
    )


def _csv_bytes(table: str, columns: dict[str, np.ndarray]) -> bytes:
    """PostgreSQL CSV: NULL is an empty unquoted field, text always quoted (so '' stays a string)."""
    out = io.BytesIO()
    _write_csv(_arrow_table(table, columns), out, null="")
    return out.getvalue()


def _write_csv(data: pa.Table, sink: Any, *, null: str) -> None:
    options = pa_csv.WriteOptions(include_header=False, quoting_style="needed", null_string=null)
    pa_csv.write_csv(data, sink, options)


# ---- MySQL / MariaDB


@contextlib.asynccontextmanager
async def _mysql_connection(url: str, database: str) -> AsyncIterator[Any]:
    import asyncmy

    parts = urlsplit(url)
    conn = await asyncmy.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else "",
        db=database,
        autocommit=True,
        charset="utf8mb4",
        **_mysql_options(parts.query),
    )
    try:
        yield conn
    finally:
        conn.close()


def _mysql_options(query: str) -> dict[str, Any]:
    options = dict(parse_qsl(query))
    return {"unix_socket": options["unix_socket"]} if "unix_socket" in options else {}


async def _mysql_execute(conn: Any, statement: str, arguments: Any = None) -> None:
    async with conn.cursor() as cursor:
        await cursor.execute(statement, arguments)


async def _mysql_fetch(conn: Any, statement: str, arguments: Any = None) -> list[tuple[Any, ...]]:
    async with conn.cursor() as cursor:
        await cursor.execute(statement, arguments)
        return list(await cursor.fetchall())


async def _mysql_has_tables(conn: Any, database: str) -> bool:
    rows = await _mysql_fetch(
        conn,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'orders'",
        (database,),
    )
    return bool(rows[0][0])


async def _mysql_counts(conn: Any, database: str) -> dict[str, int]:
    present = {
        row[0]
        for row in await _mysql_fetch(
            conn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (database,)
        )
    }
    counts = dict.fromkeys(TABLES, 0)
    for table in TABLES:
        if table in present:
            counts[table] = int((await _mysql_fetch(conn, f"SELECT count(*) FROM `{table}`"))[0][0])
    return counts


async def _load_mysql(
    url: str,
    database: str,
    generated: Callable[[], Awaitable[ShopTables]],
    window: dict[str, Any],
    report: _Report,
) -> None:
    """Truncate, drop the secondary keys of the big tables, insert in primary-key order, add the keys back
    (one ALTER per table: each index built once, by a sort). MySQL/MariaDB cannot truncate inside a
    transaction, so each step commits on its own; a load that fails part-way leaves the keys out until the
    next load or reset.

    unique_checks stays on: with it off, MariaDB (10.7+) takes its bulk path for inserts into an empty
    table, which cost about twice the server CPU of plain inserts into a table holding only its primary
    key (bench/seed.py, docs/benchmarks.md). foreign_key_checks is off, so that TRUNCATE and ADD FOREIGN
    KEY do no checks (the generator's keys are consistent by construction)."""
    async with _mysql_connection(url, database) as conn:
        await _mysql_execute(conn, "SELECT GET_LOCK('analytics_mcp_shop', 60)")
        try:
            present = await _mysql_fetch(
                conn,
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s AND table_name IN "
                f"({', '.join(['%s'] * len(TABLES))})",
                (database, *TABLES),
            )
            if present[0][0] < len(TABLES):  # (IF NOT EXISTS on existing tables would only add notes)
                for statement in sql.load("shop_mysql_schema").split(";"):
                    if statement.strip():
                        await _mysql_execute(conn, statement)
            await _mysql_loading_session(conn)
            for table in reversed(TABLES):  # children first
                await _mysql_execute(conn, f"TRUNCATE TABLE `{table}`")
            await _mysql_drop_keys(conn, database)
            async with contextlib.AsyncExitStack() as stack:
                sessions = [conn]
                for _ in range(_MYSQL_SESSIONS - 1):
                    sessions.append(await stack.enter_async_context(_mysql_connection(url, database)))
                    await _mysql_loading_session(sessions[-1])
                tables = await generated()
                report("cleared", 0)
                # Largest tables first, each taken by whichever session is free.
                pending = iter(sorted(tables, key=lambda table: -len(tables[table][TABLES[table][0][0]])))
                bulk = [True]

                async def insert(session: Any) -> None:
                    for table in pending:
                        bulk[0] = await _mysql_insert(
                            session, table, TABLES[table], tables[table], report, bulk=bulk[0]
                        )

                await _side_by_side(insert(session) for session in sessions)
                repairs = iter(await _mysql_key_repairs(conn, database))

                async def alter(session: Any) -> None:
                    for statements in repairs:
                        for statement in statements:
                            await _mysql_execute(session, statement)

                await _side_by_side(alter(session) for session in sessions)
            await _mysql_execute(conn, "ALTER TABLE `orders` COMMENT = %s", (json.dumps(window),))
            report("keys", 0)
        finally:
            if conn.connected:  # (a statement cancelled part-way closes it: the server drops the lock)
                await _mysql_execute(conn, "SET SESSION foreign_key_checks = 1")
                await _mysql_execute(conn, "SELECT RELEASE_LOCK('analytics_mcp_shop')")


async def _side_by_side(work: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run `work` concurrently; on a failure the rest is cancelled and the first error raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            for item in work:
                group.create_task(item)
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None


# The shop's secondary keys in MySQL/MariaDB as sql/shop_mysql_schema.sql declares them (a foreign key's
# index takes the key's name), in the order SHOW CREATE TABLE lists them: dropped before a load, added
# back after it, so that the tables end exactly as the schema file makes them.
MYSQL_SECONDARY_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "products": (("products_sku_key", "UNIQUE KEY products_sku_key (sku)"),),
    "customers": (("customers_email_key", "UNIQUE KEY customers_email_key (email)"),),
    "orders": (
        ("orders_order_date_idx", "KEY orders_order_date_idx (order_date)"),
        (
            "orders_customer_id_fkey",
            "CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (customer_id)",
        ),
    ),
    "order_items": (
        (
            "order_items_order_id_fkey",
            "CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id) REFERENCES orders (order_id)",
        ),
        (
            "order_items_product_id_fkey",
            "CONSTRAINT order_items_product_id_fkey FOREIGN KEY (product_id) REFERENCES products (product_id)",
        ),
    ),
    "payments": (
        ("payments_order_id_key", "UNIQUE KEY payments_order_id_key (order_id)"),
        (
            "payments_order_id_fkey",
            "CONSTRAINT payments_order_id_fkey FOREIGN KEY (order_id) REFERENCES orders (order_id)",
        ),
    ),
    "shipments": (
        (
            "shipments_order_id_fkey",
            "CONSTRAINT shipments_order_id_fkey FOREIGN KEY (order_id) REFERENCES orders (order_id)",
        ),
    ),
}
# Tables by the cost of building their secondary keys, costliest first: the order the ALTERs are handed out.
_KEY_COST = ("order_items", "orders", "payments", "shipments", "customers", "products")
# The tables whose keys a load drops and builds after the rows are in. products and customers (about 6% of
# the rows) keep theirs: maintaining them row by row costs less than the two ALTERs (tens of ms each, most of
# it waiting on the disk) that dropping and adding them would.
_KEYS_AFTER = ("order_items", "orders", "payments", "shipments")
_MYSQL_SESSIONS = 2  # connections inserting (then building keys) side by side: the server works on two cores
_MYSQL_BATCH_ROWS = 20_000  # per bulk execute or INSERT: 1-4 MB, under the default 16 MB max_allowed_packet


async def _mysql_keys(conn: Any, database: str) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """The (table, index) and (table, foreign key) pairs of `database` other than primary keys."""
    rows = await _mysql_fetch(
        conn,
        "SELECT DISTINCT 'index', table_name, index_name FROM information_schema.statistics "
        "WHERE table_schema = %s AND index_name <> 'PRIMARY' "
        "UNION ALL SELECT 'foreign', table_name, constraint_name FROM information_schema.table_constraints "
        "WHERE table_schema = %s AND constraint_type = 'FOREIGN KEY'",
        (database, database),
    )
    indexes = {(str(table), str(name)) for kind, table, name in rows if kind == "index"}
    return indexes, {(str(table), str(name)) for kind, table, name in rows if kind == "foreign"}


async def _mysql_drop_keys(conn: Any, database: str) -> None:
    """Drop the secondary and foreign keys of the big tables (_KEYS_AFTER) before a load."""
    indexes, foreign = await _mysql_keys(conn, database)
    for table in _KEYS_AFTER:
        keys = MYSQL_SECONDARY_KEYS[table]
        drops = [f"DROP FOREIGN KEY {name}" for name, _ in keys if (table, name) in foreign]
        drops += [f"DROP KEY {name}" for name, _ in keys if (table, name) in indexes]
        if drops:
            await _mysql_execute(conn, f"ALTER TABLE `{table}` {', '.join(drops)}")


async def _mysql_add_keys(conn: Any, database: str) -> None:
    """Put back whichever of MYSQL_SECONDARY_KEYS a table lacks (`conn` needs foreign_key_checks = 0)."""
    for statements in await _mysql_key_repairs(conn, database):
        for statement in statements:
            await _mysql_execute(conn, statement)


async def _mysql_key_repairs(conn: Any, database: str) -> list[list[str]]:
    """Per table lacking any of MYSQL_SECONDARY_KEYS, the ALTERs (in order) that give it all of them in the
    declared order: the ones it has dropped first when it has some, then all added in one statement. The
    costliest tables first. With foreign_key_checks = 0, a foreign key is added in place, rows unchecked."""
    indexes, foreign = await _mysql_keys(conn, database)
    repairs = []
    for table in _KEY_COST:
        keys = MYSQL_SECONDARY_KEYS[table]
        held = [(table, name) in (foreign if d.startswith("CONSTRAINT") else indexes) for name, d in keys]
        if all(held):
            continue
        statements = []
        if any(held):
            drops = [f"DROP FOREIGN KEY {name}" for name, _ in keys if (table, name) in foreign]
            drops += [f"DROP KEY {name}" for name, _ in keys if (table, name) in indexes]
            statements.append(f"ALTER TABLE `{table}` {', '.join(drops)}")
        statements.append(f"ALTER TABLE `{table}` {', '.join(f'ADD {d}' for _, d in keys)}")
        repairs.append(statements)
    return repairs


async def _mysql_loading_session(conn: Any) -> None:
    # Text is written "..." with "" for a quote: no ANSI_QUOTES, and a backslash is a backslash.
    await _mysql_execute(
        conn,
        "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_BACKSLASH_ESCAPES,NO_ENGINE_SUBSTITUTION', "
        "foreign_key_checks = 0",
    )


async def _mysql_insert(
    conn: Any,
    table: str,
    spec: tuple[tuple[str, str], ...],
    columns: dict[str, np.ndarray],
    report: _Report,
    *,
    bulk: bool = True,
) -> bool:
    """Insert `columns` into `table` in batches, in row order (the primary key's), in one transaction, each
    batch built in a thread while the server takes the one before. `bulk`: try MariaDB's
    COM_STMT_BULK_EXECUTE (a prepared INSERT bound to a whole batch of binary values: no SQL text to parse);
    a batch it cannot take (a column NULL in every row) goes as a multi-row INSERT, and so does every batch
    once the server refuses bulk executes (MySQL). Returns whether bulk executes are still worth trying."""
    from asyncmy.errors import NotSupportedError

    names = ", ".join(name for name, _ in spec)
    statement = await conn.prepare(f"INSERT INTO `{table}` ({names}) VALUES ({', '.join(['?'] * len(spec))})")
    batches = _mysql_batches(spec, columns)
    pending = asyncio.create_task(asyncio.to_thread(next, batches, None))
    try:
        # One commit (one redo log flush) per table, not per batch; with unique_checks on, no bulk path.
        await _mysql_execute(conn, "START TRANSACTION")
        while (batch := await pending) is not None:
            pending = asyncio.create_task(asyncio.to_thread(next, batches, None))
            part, rows = batch
            sent = False
            if bulk:
                try:
                    await statement.execute_bulk(rows)  # refused before anything is sent
                    sent = True
                except NotSupportedError:
                    bulk = False
                except ValueError:
                    pass
            if not sent:
                await conn.query(_mysql_insert_text(table, spec, part))
            report(table, len(rows))
        await conn.commit()
    finally:
        pending.cancel()  # (after a failure: nobody waits for the batch being built)
        if conn.connected:
            await statement.close()
    return bulk


def _mysql_batches(
    spec: tuple[tuple[str, str], ...], columns: dict[str, np.ndarray]
) -> Iterator[tuple[dict[str, np.ndarray], list[tuple[Any, ...]]]]:
    """Per batch of _MYSQL_BATCH_ROWS: its slice of the columns and its rows as Python values a bulk execute
    binds. Money goes as a double, cents / 100, which the server reads into DECIMAL by its decimal digits:
    every amount DECIMAL(12,2) holds comes back exact (tests/warehouse/test_shop.py, up to its largest)."""
    n = len(columns[spec[0][0]])
    for start in range(0, n, _MYSQL_BATCH_ROWS):
        part = {name: columns[name][start : start + _MYSQL_BATCH_ROWS] for name, _ in spec}
        values: list[list[Any]] = []
        for name, kind in spec:
            column = part[name]
            if kind == "money":
                values.append((column / 100).tolist())
            elif kind == "time":  # NULL_TIME is NaT: None
                values.append(column.view("datetime64[s]").tolist())
            else:
                values.append(column.tolist())
        yield part, list(zip(*values, strict=True))


def _mysql_insert_text(table: str, spec: tuple[tuple[str, str], ...], part: dict[str, np.ndarray]) -> bytes:
    """One multi-row INSERT, the VALUES written by Arrow's CSV writer (text and times quoted, NULL unquoted,
    booleans 0/1): each line a (...) tuple. Generated text never holds a line break, so a line is a row."""
    out = io.BytesIO()
    _write_csv(_arrow_of(spec, part, for_mysql=True), out, null="NULL")
    head = f"INSERT INTO `{table}` ({', '.join(name for name, _ in spec)}) VALUES (".encode()
    return head + out.getvalue().rstrip(b"\n").replace(b"\n", b"),(") + b")"


def _mysql_inserts(table: str, columns: dict[str, np.ndarray]) -> Iterator[tuple[int, bytes]]:
    """(rows, INSERT statement) per batch of _INSERT_ROWS of one shop table, as _mysql_insert_text writes."""
    spec = TABLES[table]
    n = len(columns[spec[0][0]])
    for start in range(0, n, _INSERT_ROWS):
        part = {name: columns[name][start : start + _INSERT_ROWS] for name, _ in spec}
        yield len(part[spec[0][0]]), _mysql_insert_text(table, spec, part)


# ---- Files (DuckDB reads them)


def _write_files(folder: Path, tables: ShopTables, window: dict[str, Any] | None, report: _Report) -> None:
    report("cleared", 0)
    for table, columns in tables.items():
        data = _arrow_table(table, columns)
        if table == "orders" and window is not None:
            data = data.replace_schema_metadata({WINDOW_KEY: json.dumps(window).encode()})
        final = folder / f"{table}.parquet"
        temporary = folder / f".{table}.parquet.{secrets.token_hex(6)}.tmp"  # hidden: never served as a table
        try:
            pq.write_table(data, temporary)
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        report(table, data.num_rows)
    report("keys", 0)


def _no_report(stage: str, rows: int) -> None:
    pass


def file_counts(folder: Path, tables: Iterable[str] = TABLES) -> dict[str, int]:
    """Rows per `<table>.parquet` of `folder` (0 for a missing file), from the files' metadata."""
    counts = dict.fromkeys(tables, 0)
    for table in counts:
        path = folder / f"{table}.parquet"
        if path.is_file():
            counts[table] = pq.read_metadata(path).num_rows
    return counts


def _file_window(folder: Path) -> dict[str, Any] | None:
    path = folder / "orders.parquet"
    if not path.is_file():
        return None
    metadata = pq.read_schema(path).metadata or {}
    return parse_window(metadata.get(WINDOW_KEY))


def _file_fingerprints(folder: Path) -> dict[str, str]:
    import duckdb

    digests: dict[str, str] = {}
    with duckdb.connect() as conn:
        for table, spec in TABLES.items():
            digest = _Digest(spec)
            path = folder / f"{table}.parquet"
            if path.is_file():
                relation = "read_parquet($path)"
                conn.execute(_select(table, spec, relation), {"path": str(path)})
                while batch := conn.fetchmany(10_000):
                    for record in batch:
                        digest.add(record)
            digests[table] = digest.hexdigest()
    return digests


# ---- Fingerprints


class _Digest:
    """sha256 over canonical rows: tab between values, newline after each row."""

    def __init__(self, spec: tuple[tuple[str, str], ...]) -> None:
        self._kinds = [kind for _, kind in spec]
        self._hash = hashlib.sha256()

    def add(self, record: Iterable[Any]) -> None:
        text = "\t".join(_canonical(kind, value) for kind, value in zip(self._kinds, record, strict=True))
        self._hash.update(text.encode() + b"\n")

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _canonical(kind: str, value: Any) -> str:
    if value is None:
        return "\\N"
    if kind in ("key", "int"):
        return str(int(value))
    if kind == "money":
        return f"{Decimal(value):.2f}"
    if kind == "time":
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    if kind == "bool":
        return "t" if value else "f"
    return str(value)
