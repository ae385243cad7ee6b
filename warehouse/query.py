"""Running an agent's SELECT: guarded, bound, read-only as the least-privilege role, bounded, logged.

The boundary is the role: the query runs on the query pool, whose connections log in as a role that
can only read the analytics and sandbox tables (warehouse/db.py), so no SQL, however nested, can act as
anyone stronger. Layers on top: the SQL guard (warehouse.sqlguard), a READ ONLY transaction that is
always rolled back, statement and idle timeouts, and row and byte caps on what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import functools
import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import cachetools
import pandas as pd

from core.errors import AnalyticsError, Forbidden, InvalidInput, QueryRefused, RateLimited, Timeout
from sessions.datasets import decimal_number
from warehouse import sql
from warehouse.db import ANALYTICS_TABLES, CONNECTION_ERRORS, Database
from warehouse.labels import label_statement
from warehouse.sqlguard import (
    BoundQuery,
    CheckedQuery,
    FunctionPolicy,
    bind_placeholders,
    function_policy,
    masked,
    normalised,
    table_aliases,
    validate_select,
)

MAX_TIMEOUT_SECONDS = 120  # a query's longest statement timeout (the default is 30 s)
# How long a client-side stall may keep the transaction open before PostgreSQL ends the session.
IDLE_GRACE_SECONDS = 10
_FETCH_CHUNK = 2_000
_FETCH_VALUES = 100_000  # most values one fetch brings (rows x columns)


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # PostgreSQL type name, e.g. int4, numeric, timestamp, uuid, text[]


@dataclass
class QueryResult:
    columns: list[Column]
    rows: list[tuple[Any, ...]]
    truncated: bool
    truncated_by: str | None  # "rows" | "bytes" (the answer stops early) | "value" (values cut) | None
    duration_ms: float
    query_hash: str
    volatile: bool = False  # uses now(), random()... : never cached
    relations: tuple[str, ...] = field(default_factory=tuple)
    # Columns where values larger than `value_limit` bytes were replaced by null (inside PostgreSQL).
    cut_columns: tuple[str, ...] = ()
    value_limit: int | None = None

    def records(self) -> list[dict[str, Any]]:
        names = [column.name for column in self.columns]
        return [dict(zip(names, row, strict=True)) for row in self.rows]

    @classmethod
    def fetched(
        cls,
        columns: list[Column],
        rows: list[tuple[Any, ...]],
        truncated_by: str | None,
        cut: set[int] | frozenset[int],
        *,
        started: float,
        query_hash: str,
        volatile: bool,
        relations: tuple[str, ...],
        max_bytes: int | None,
    ) -> QueryResult:
        """What any engine fetched: rows stopped early by `truncated_by`, values cut in the `cut` columns."""
        return cls(
            columns=columns,
            rows=rows,
            truncated=truncated_by is not None or bool(cut),
            truncated_by=truncated_by or ("value" if cut else None),
            duration_ms=(time.perf_counter() - started) * 1000,
            query_hash=query_hash,
            volatile=volatile,
            relations=relations,
            cut_columns=tuple(columns[index].name for index in sorted(cut)),
            value_limit=max_bytes if cut else None,
        )


def query_hash(query: str) -> str:
    """A stable name for a query in logs: the sha256 of its normalised text (spacing and case folded)."""
    try:
        text = normalised(query)
    except AnalyticsError:
        text = query
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class GuardedQuery:
    """An agent's query after the guard: placeholders bound, one read-only SELECT, and its log hash."""

    text: str
    bound: BoundQuery
    checked: CheckedQuery
    hash: str


# Queries up to this length have their guard verdict remembered (agents repeat the same text with new
# parameter values); GUARD_CACHE_SIZE entries of at most this length bound the memory it takes.
GUARD_CACHE_CHARS = 20_000
GUARD_CACHE_SIZE = 512


def guard(query: str, parameters: Mapping[str, Any]) -> GuardedQuery:
    """Bind `%(name)s` placeholders and validate the result (raises InvalidInput / QueryRefused).

    The verdict depends only on the text and the parameter names (never on their values), so an
    accepted query is remembered under exactly those: the same text with other values skips parsing.
    Refusals are not remembered (each one is parsed again and says why). It parses: from async code,
    call guard_in_thread.
    """
    if len(query) > GUARD_CACHE_CHARS:
        return _guard(query, parameters)
    return _remembered(query, tuple(parameters), function_policy())


async def guard_in_thread(query: str, parameters: Mapping[str, Any]) -> GuardedQuery:
    """`guard` on the guard's thread, so that no query holds up the event loop while it is parsed."""
    remembered = remembered_guard(query, tuple(parameters))
    if remembered is not None:
        return remembered
    return await in_guard_thread(guard, query, dict(parameters))


_Result = TypeVar("_Result")
# Scanning and parsing agent SQL runs on one thread of its own. pglast keeps the GIL while it builds
# the tree (the interpreter hands it to the event loop every few ms); several such threads at once
# would add no speed, only more threads for the loop to wait behind (4 at once: 300 ms stalls).
_GUARD_THREAD = ThreadPoolExecutor(1, thread_name_prefix="sqlguard")


async def in_guard_thread(function: Callable[..., _Result], *arguments: Any) -> _Result:
    """`function(*arguments)` on the guard's thread: for work that scans or parses an agent's SQL."""
    return await asyncio.get_running_loop().run_in_executor(_GUARD_THREAD, function, *arguments)


def remembered_guard(query: str, names: Sequence[str]) -> GuardedQuery | None:
    """The verdict `guard` gave this text with these parameter names, if it is remembered (no parsing)."""
    if len(query) > GUARD_CACHE_CHARS:
        return None
    with _verdicts_lock:
        return _remembered.cache.get(_remembered.cache_key(query, tuple(names), function_policy()))


_verdicts_lock = threading.Lock()


@cachetools.cached(cachetools.LRUCache(GUARD_CACHE_SIZE), lock=_verdicts_lock)
def _remembered(query: str, names: tuple[str, ...], policy: FunctionPolicy) -> GuardedQuery:
    """Remembered per function policy too: an operator's allowlist changes what is accepted."""
    return _guard(query, dict.fromkeys(names))  # a refusal raises, and is not remembered


def _guard(query: str, parameters: Mapping[str, Any]) -> GuardedQuery:
    bound = bind_placeholders(query, parameters)
    checked = validate_select(bound.sql, bound.original_position)
    return GuardedQuery(query, bound, checked, query_hash(query))


def check_timeout(timeout: float) -> None:
    """Every engine's query timeout: more than 0, at most MAX_TIMEOUT_SECONDS."""
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise InvalidInput(f"timeout must be between 0 and {MAX_TIMEOUT_SECONDS} seconds")


async def run_select(
    db: Database,
    query: str | GuardedQuery,
    parameters: Mapping[str, Any] | None = None,
    *,
    timeout: float = 30,
    max_rows: int = 1_000,
    max_bytes: int | None = None,
    conn: asyncpg.Connection | None = None,
    label: str | None = None,
) -> QueryResult:
    """Run one guarded SELECT and return at most `max_rows` rows (and about `max_bytes` bytes).

    `query` is the agent's text, or what `guard` made of it with these same `parameters`. `conn`: a
    query-pool connection the caller holds (outside a transaction), else one is taken from the query pool.
    `label`: an application_name for the connection, set in the same round trip as BEGIN.
    """
    started = time.perf_counter()
    parameters = dict(parameters or {})
    check_timeout(timeout)
    guarded = query if isinstance(query, GuardedQuery) else await guard_in_thread(query, parameters)
    bound, checked = guarded.bound, guarded.checked
    statement_timeout_ms = max(1, int(timeout * 1000))
    begin = sql.load("query_begin").format(
        statement_timeout_ms=statement_timeout_ms,
        idle_timeout_ms=statement_timeout_ms + IDLE_GRACE_SECONDS * 1000,
    )
    if label is not None:
        begin += label_statement(label) + ";\n"  # inside the transaction: its rollback takes it back
    async with contextlib.AsyncExitStack() as stack:
        if conn is None:
            conn = await stack.enter_async_context(db.connection(read=True, query=True))
        assert conn is not None
        columns, rows, truncated_by, cut = await fetch_checked(
            conn,
            begin,
            bound,
            checked.sql,
            parameters,
            timeout=timeout,
            max_rows=max_rows,
            max_bytes=max_bytes,
        )
    return QueryResult.fetched(
        columns,
        rows,
        truncated_by,
        cut,
        started=started,
        query_hash=guarded.hash,
        volatile=checked.volatile,
        relations=checked.relations,
        max_bytes=max_bytes,
    )


async def fetch_checked(
    conn: asyncpg.Connection,
    begin: str,
    bound: BoundQuery,
    text: str,
    parameters: Mapping[str, Any],
    *,
    timeout: float,
    max_rows: int,
    max_bytes: int | None,
    tables: Sequence[str] = ANALYTICS_TABLES,
    schema_uri: str = "schema://database/main",
) -> tuple[list[Column], list[tuple[Any, ...]], str | None, set[int]]:
    """Run the guarded `text` on `conn` inside the transaction `begin` opens, always rolled back:
    columns, at most `max_rows` rows (about `max_bytes` bytes, oversized values cut inside PostgreSQL),
    why it stopped early and the cut columns' indexes. Connection errors are raised as asyncpg's;
    others as one-line errors naming `tables` (what the source may read) and `schema_uri`."""
    client_timeout = timeout + 5  # backstop if the server-side timeout somehow does not fire
    shift = 0
    await conn.execute(begin, timeout=client_timeout)
    try:
        try:
            statement = await _prepare(conn, text, client_timeout)
            arguments = _coerce_arguments(bound, parameters, statement.get_parameters())
            attributes = statement.get_attributes()
            columns = _columns(attributes)
            # No LIMIT is added to the agent's statement: it would make PostgreSQL prefer a fast-start
            # plan (a sorted GroupAggregate over a nested loop instead of a HashAggregate: 3x slower on a
            # 600,000-row GROUP BY); the cursor's portal stops after max_rows + 1 rows instead.
            bounded = _bounded_statement(text, attributes, max_bytes)
            if bounded is not None:
                shift = bounded.index(text)  # error positions in the wrapper map back to the agent's
                statement = await _prepare(conn, bounded, client_timeout)
            cursor = await statement.cursor(*arguments, timeout=client_timeout)
            rows, truncated_by, cut = await _fetch_bounded(
                cursor, columns, max_rows, max_bytes, client_timeout, flagged=bounded is not None
            )
        except asyncpg.PostgresError as error:
            if isinstance(error, CONNECTION_ERRORS):
                raise
            raise _mapped(error, bound, timeout, shift, tables=tables, schema_uri=schema_uri) from None
        except TimeoutError:
            raise _timed_out(timeout) from None
    finally:
        await _roll_back(conn)
    return columns, rows, truncated_by, cut


# Pseudo-types asyncpg has no codec for; a column can still have one (pg_stats.most_common_vals is
# anyarray, whose values may be of any type). Their text form is what PostgreSQL prints for them.
_PSEUDO_TYPES = (
    "any",
    "anyarray",
    "anycompatible",
    "anycompatiblearray",
    "anycompatiblemultirange",
    "anycompatiblenonarray",
    "anycompatiblerange",
    "anyelement",
    "anyenum",
    "anymultirange",
    "anynonarray",
    "anyrange",
    "pg_ddl_command",
)


async def _prepare(conn: asyncpg.Connection, text: str, timeout: float) -> Any:
    """Prepare the statement; columns of a pseudo-type (anyarray...) are read as their text form.

    As the unnamed statement (name ""): an agent's statement runs once, and the unnamed one is simply
    replaced by the next, where a named one would stay on the server until asyncpg closes it, one
    more round trip each, on the connection's next prepare."""
    try:
        return await conn.prepare(text, name="", timeout=timeout)
    except asyncpg.InternalClientError:
        pass  # asyncpg could not resolve a column type: register text codecs (client-side, no round trip)
    for name in _PSEUDO_TYPES:
        await conn.set_type_codec(name, schema="pg_catalog", encoder=str, decoder=str, format="text")
    try:
        return await conn.prepare(text, name="", timeout=timeout)
    except asyncpg.InternalClientError:
        raise InvalidInput(
            "a result column has a type the server cannot read; cast unusual columns to text "
            "(e.g. most_common_vals::text) and retry"
        ) from None


async def _roll_back(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("ROLLBACK", timeout=5)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        # A connection we cannot roll back is never reused.
        conn.terminate()


async def _fetch_bounded(
    cursor: Any,
    columns: Sequence[Column],
    max_rows: int,
    max_bytes: int | None,
    timeout: float,
    *,
    flagged: bool = False,
) -> tuple[list[tuple[Any, ...]], str | None, set[int]]:
    """Rows until `max_rows` or `max_bytes` (their JSON size, column names included), and the indexes
    of columns whose values PostgreSQL cut. `flagged`: the statement is `_bounded_statement`'s, whose
    two last columns say which values were cut and whether the row is past the byte budget.

    Batches hold at most _FETCH_VALUES values; with the wrapper, PostgreSQL itself nulls every value
    past the budget, so a batch never carries more than `max_bytes` of variable-size data."""
    rows: list[tuple[Any, ...]] = []
    cut: set[int] = set()
    keys = [len(column.name.encode()) + 4 for column in columns]  # "name": ,
    batch_rows = max(1, min(_FETCH_CHUNK, _FETCH_VALUES // max(1, len(columns))))
    size = 0
    while len(rows) <= max_rows:
        wanted = min(batch_rows, max_rows + 1 - len(rows))
        batch = await cursor.fetch(wanted, timeout=timeout)
        for record in batch:
            values = tuple(record)
            if flagged:
                values, cut_here, over_budget = values[:-2], values[-2], values[-1]
                if over_budget:
                    return rows, "bytes", cut
                cut.update(cut_here or ())
            row = tuple(_plain(value) for value in values)
            if max_bytes is not None:
                size += 2 + sum(map(_json_bytes, row)) + sum(keys)
                if size > max_bytes:
                    return rows, "bytes", cut
            rows.append(row)
        if len(batch) < wanted:
            break
    if len(rows) > max_rows:
        return rows[:max_rows], "rows", cut
    return rows, None, cut


# Types whose values have a small fixed size: never cut, not counted in PostgreSQL's running budget.
_FIXED_SIZE_TYPES = {
    *("int2", "int4", "int8", "float4", "float8", "bool", "oid", "money", "char", "name", "void"),
    *("date", "time", "timetz", "timestamp", "timestamptz", "interval", "uuid", "pg_lsn"),
    *("macaddr", "macaddr8", "point", "tid", "xid", "xid8", "cid"),
    *("regclass", "regtype", "regproc", "regprocedure", "regoper", "regoperator", "regnamespace"),
    *("regrole", "regconfig", "regdictionary", "regcollation"),
}
# Bytes counted per array element on top of its text: a list of small numbers takes ~36 bytes an
# element in Python, far more than its text form ("1,").
_ARRAY_ELEMENT_BYTES = 32


def _size_expression(column: str, pg_type: Any) -> str | None:
    """SQL for the size of one value as it will arrive (None: fixed size, nothing to measure).

    octet_length of text and bytea reads the stored length without decompressing; other types are
    measured by their text form, since pg_column_size reports the compressed size of stored values."""
    if pg_type.kind == "scalar" and pg_type.name in _FIXED_SIZE_TYPES:
        return None
    if pg_type.kind == "scalar" and pg_type.name in ("text", "varchar", "bpchar", "bytea"):
        return f"octet_length({column})::int8"
    if pg_type.kind == "array" or pg_type.name == "anyarray":
        return f"(octet_length({column}::text)::int8 + {_ARRAY_ELEMENT_BYTES} * cardinality({column}))"
    return f"octet_length({column}::text)::int8"


def _bounded_statement(text: str, attributes: Sequence[Any], limit: int | None) -> str | None:
    """The agent's (guarded) statement wrapped so that PostgreSQL cuts what would not fit, before sending.

    A value larger than `limit` bytes comes back null, and once the rows' running size passes `limit`
    every variable-size value comes back null, and the row is flagged (the caller stops there). Two
    columns are added: the indexes of the values cut in the row (or null) and that flag. The agent's
    columns are renamed by position (duplicate names are fine), keep their types, and keep the agent's
    order: the window has no ORDER BY, so rows pass through it in the order they come. Returns None when
    every column has a fixed size (nothing to cut) or there is no limit."""
    sizes = {index: _size_expression(f'q."{index + 1}"', a.type) for index, a in enumerate(attributes)}
    measured = {index: expression for index, expression in sizes.items() if expression is not None}
    if limit is None or not measured:
        return None
    names = ", ".join(f'"{index + 1}"' for index in range(len(attributes)))
    measures = ", ".join(f'{expression} AS "s{index + 1}"' for index, expression in measured.items())
    kept = " + ".join(f'CASE WHEN s."s{i + 1}" <= {limit} THEN s."s{i + 1}" ELSE 0 END' for i in measured)
    outputs = ", ".join(
        f'CASE WHEN r."s{i + 1}" <= {limit} AND r.running <= {limit} THEN r."{i + 1}" END'
        if i in measured
        else f'r."{i + 1}"'
        for i in range(len(attributes))
    )
    cut = ", ".join(f'CASE WHEN r."s{i + 1}" > {limit} THEN {i} END' for i in measured)
    # OFFSET 0 keeps the sizes computed once per row (the subquery is not merged into the outer query).
    return (
        f"SELECT {outputs},\n"
        f"  NULLIF(array_remove(ARRAY[{cut}]::int4[], NULL), '{{}}') AS cut_values,\n"
        f"  r.running > {limit} AS over_budget\n"
        f"FROM (SELECT s.*, sum({kept}) OVER (ROWS UNBOUNDED PRECEDING) AS running\n"
        f"  FROM (SELECT q.*, {measures} FROM (\n{text}\n) AS q({names}) OFFSET 0) AS s) AS r"
    )


def _plain(value: Any) -> Any:
    """Composite values (rows) come back as asyncpg Records; make them plain tuples/lists. Ranges and
    bit strings read as PostgreSQL prints them, paths and polygons as lists of points."""
    if isinstance(value, asyncpg.Record):
        return tuple(_plain(v) for v in value.values())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, asyncpg.Range):
        if value.isempty:
            return "empty"
        lower = "" if value.lower is None else value.lower
        upper = "" if value.upper is None else value.upper
        return f"{'[' if value.lower_inc else '('}{lower},{upper}{']' if value.upper_inc else ')'}"
    if isinstance(value, asyncpg.BitString):
        return value.as_string()
    if isinstance(value, asyncpg.Path):  # and Polygon
        return [tuple(point) for point in value.points]
    return value


def _json_bytes(value: Any) -> int:
    """About the bytes of `value` in the JSON answer, plus one for the separator (never much less)."""
    if value is None:
        return 5
    if isinstance(value, str):
        size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
        if _ESCAPED.search(value):  # at worst \u0001 for one character
            size += 5 * (len(value) - len(value.translate(_UNESCAPED)))
        return size + 3
    if isinstance(value, (bytes, bytearray, memoryview)):
        return (len(value) + 2) // 3 * 4 + 3  # base64
    if isinstance(value, (list, tuple)):
        return 3 + sum(_json_bytes(item) + _LIST_ITEM_BYTES for item in value)
    if isinstance(value, (bool, int, float, decimal.Decimal)):
        return len(str(value)) + 1
    return 40 if isinstance(value, (dt.datetime, dt.time, uuid.UUID)) else 16


_ESCAPED = re.compile(r'[\x00-\x1f"\\]')
_UNESCAPED = dict.fromkeys([*range(0x20), ord('"'), ord("\\")])  # what str.translate deletes
_LIST_ITEM_BYTES = 8  # on top of the JSON: a Python list holds a pointer per item


def _columns(attributes: Sequence[Any]) -> list[Column]:
    """Column names made unique (a join of two tables has two customer_id columns)."""
    seen: dict[str, int] = {}
    columns = []
    for attribute in attributes:
        name = attribute.name or "?column?"
        count = seen.get(name, 0) + 1
        seen[name] = count
        while count > 1 and f"{name}_{count}" in seen:
            count += 1
        unique = name if count == 1 else f"{name}_{count}"
        seen.setdefault(unique, 1)
        columns.append(Column(unique, attribute.type.name))
    return columns


# --- parameters -----------------------------------------------------------------------------

_INTEGER_TYPES = {"int2", "int4", "int8", "oid"}
_FLOAT_TYPES = {"float4", "float8"}
_TEXT_TYPES = {"text", "varchar", "bpchar", "name", "char", "unknown", "citext"}


def _coerce_arguments(bound: BoundQuery, parameters: Mapping[str, Any], types: Sequence[Any]) -> list[Any]:
    """JSON values to what asyncpg expects for each parameter's inferred type; values are never echoed."""
    if len(types) != len(bound.names):  # a placeholder PostgreSQL did not read as a parameter
        raise InvalidInput(
            f"the query has {len(bound.names)} placeholder(s) but PostgreSQL sees {len(types)} "
            "parameter(s); write each %(name)s where a value goes, with spaces around it"
        )
    arguments = []
    for position, (name, pg_type) in enumerate(zip(bound.names, types, strict=True), start=1):
        try:
            arguments.append(_coerce(parameters[name], pg_type.name))
        except (ValueError, TypeError, decimal.InvalidOperation, OverflowError):
            raise InvalidInput(
                f"parameter '{name}' (${position}) must be a {_describe(pg_type.name)} for this query; "
                "fix its value or cast the placeholder, e.g. %(" + name + ")s::text"
            ) from None
    return arguments


def _describe(type_name: str) -> str:
    if type_name.endswith("[]"):
        return f"list of {_describe(type_name[:-2])}"
    return {
        "date": "date like 2024-01-31",
        "timestamp": "timestamp like 2024-01-31T12:00:00",
        "timestamptz": "timestamp like 2024-01-31T12:00:00+00:00",
        "uuid": "UUID string",
        "bool": "boolean",
        "interval": "number of seconds",
        **dict.fromkeys(_INTEGER_TYPES, "whole number"),
        **dict.fromkeys((*_FLOAT_TYPES, "numeric"), "number"),
    }.get(type_name, f"value of type {type_name}")


def _coerce(value: Any, type_name: str) -> Any:
    if value is None:
        return None
    if type_name.endswith("[]"):
        if not isinstance(value, (list, tuple)):
            raise TypeError("expected a list")
        return [_coerce(item, type_name[:-2]) for item in value]
    if isinstance(value, (list, tuple, dict)) and type_name not in ("json", "jsonb"):
        raise TypeError("a scalar is expected")
    if type_name in _INTEGER_TYPES:
        if isinstance(value, bool):
            raise TypeError("not an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError("not an integer")
            return int(value)
        return int(value)
    if type_name in _FLOAT_TYPES:
        if isinstance(value, bool):
            raise TypeError("not a number")
        return float(value)
    if type_name == "numeric":
        if isinstance(value, bool):
            raise TypeError("not a number")
        return decimal.Decimal(str(value))
    if type_name == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise TypeError("not a boolean")
    if type_name in _TEXT_TYPES:
        if isinstance(value, bool):
            return "true" if value else "false"
        return value if isinstance(value, str) else str(value)
    if type_name == "uuid":
        return uuid.UUID(str(value))
    if type_name == "date":
        return dt.date.fromisoformat(str(value)[:10]) if isinstance(value, str) else _strict(value, dt.date)
    if type_name in ("timestamp", "timestamptz"):
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else _strict(value, dt.datetime)
        if type_name == "timestamp" and moment.tzinfo is not None:
            return moment.astimezone(dt.UTC).replace(tzinfo=None)
        if type_name == "timestamptz" and moment.tzinfo is None:
            return moment.replace(tzinfo=dt.UTC)
        return moment
    if type_name == "time":
        return dt.time.fromisoformat(value) if isinstance(value, str) else _strict(value, dt.time)
    if type_name == "interval":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError("not a number of seconds")
        return dt.timedelta(seconds=value)
    if type_name in ("json", "jsonb"):
        return json.dumps(value)
    return value


def _strict(value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise TypeError("wrong type")
    return value


# --- errors ---------------------------------------------------------------------------------


def _timed_out(timeout: float) -> Timeout:
    return Timeout(
        f"the query was cancelled after the {timeout:g} s timeout; narrow it (WHERE, fewer joins, "
        f"aggregate first) or pass a larger timeout (at most {MAX_TIMEOUT_SECONDS})"
    )


def _mapped(
    error: asyncpg.PostgresError,
    bound: BoundQuery,
    timeout: float,
    shift: int = 0,
    *,
    tables: Sequence[str] = ANALYTICS_TABLES,
    schema_uri: str = "schema://database/main",
) -> AnalyticsError:
    """One line from PostgreSQL's error: the message, where in the agent's text, and PostgreSQL's hint.

    `shift`: where the agent's statement starts in the text PostgreSQL ran (the bounding wrapper)."""
    message = str(getattr(error, "message", "") or error).splitlines()[0]
    position = getattr(error, "position", None)
    where = ""
    if position and 0 < int(position) - shift <= len(bound.sql):
        try:
            where = f" (character {bound.original_position(int(position) - shift - 1) + 1})"
        except ValueError:
            where = ""
    hint = getattr(error, "hint", None)
    hint_text = f"; hint: {hint.splitlines()[0]}" if hint else ""
    main = tables is ANALYTICS_TABLES
    tables_text = ", ".join(tables) or "(none)"
    if isinstance(error, asyncpg.QueryCanceledError):
        return _timed_out(timeout)
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        readable = "sandbox tables (load_to_table) and the public catalogs" if main else "nothing else"
        return Forbidden(f"{message}; queries may read only {tables_text}, {readable}")
    if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        return QueryRefused(f"{message}: queries are read-only; {hint_text or 'send a SELECT'}")
    if isinstance(error, asyncpg.UndefinedTableError):
        return InvalidInput(f"{message}{where}; the tables are {tables_text}{hint_text}")
    if isinstance(error, asyncpg.PostgresSyntaxError):
        return InvalidInput(f"syntax error: {message}{where}{hint_text}")
    if isinstance(error, asyncpg.AmbiguousColumnError):
        return InvalidInput(f"{message}{where}; {_qualify_hint(message, bound.sql)}")
    if isinstance(error, (asyncpg.UndefinedColumnError, asyncpg.UndefinedFunctionError)):
        return InvalidInput(f"{message}{where}{hint_text or f'; read {schema_uri} for the columns'}")
    if isinstance(error, asyncpg.DataError):
        return InvalidInput(f"{message}{where}{hint_text}; check the values and casts")
    if isinstance(error, asyncpg.ProgramLimitExceededError):
        return InvalidInput(f"{message}; simplify the query")
    if isinstance(error, asyncpg.InsufficientResourcesError):
        return InvalidInput(f"{message}; the query needs too much memory or disk: aggregate or filter first")
    return InvalidInput(f"PostgreSQL refused the query ({error.sqlstate}): {message}{where}{hint_text}")


def _qualify_hint(message: str, text: str) -> str:
    """For an ambiguous column: qualify it, with the query's own table aliases as the example."""
    column = re.search(r'column reference "([^"]+)"', message)
    name = column.group(1) if column else "column"
    aliases = table_aliases(text)[:3] or ["c"]
    examples = " or ".join(f"{alias}.{name}" for alias in aliases)
    return f"qualify it with its table alias, e.g. {examples}"


# --- the query log --------------------------------------------------------------------------

OUTCOMES: dict[type[AnalyticsError], str] = {
    QueryRefused: "refused",
    Timeout: "timeout",
    Forbidden: "forbidden",
    InvalidInput: "invalid",
    RateLimited: "limited",  # over the caller's share of connections or query seconds
}


def outcome_of(error: BaseException | None, truncated: bool = False) -> str:
    if error is None:
        return "truncated" if truncated else "ok"
    for kind, outcome in OUTCOMES.items():
        if isinstance(error, kind):
            return outcome
    return "error"


@dataclass(frozen=True)
class QueryLogEntry:
    """One query_database call as logged: who, which query (hash only), how long, rows, outcome."""

    user_id: str
    query_hash: str
    duration_ms: float
    row_count: int | None
    outcome: str
    cached: bool = False
    source: str = "main"  # the data source it ran on
    # The query with its literals shown as ? (sqlguard.masked): no value, bound or written, is kept.
    query_text: str | None = None

    @classmethod
    def of(
        cls,
        *,
        user_id: str,
        query: str,
        duration_ms: float,
        row_count: int | None,
        outcome: str,
        cached: bool = False,
        known_hash: str | None = None,
        source: str = "main",
    ) -> QueryLogEntry:
        """`known_hash`: query_hash(query) when the caller has it already (saves parsing the query again)."""
        digest = known_hash or query_hash(query)
        return cls(
            user_id, digest, float(duration_ms), row_count, outcome, cached, source, masked_text(query)
        )


# The longest query text the query log keeps (longer texts are cut, ending in ...).
LOGGED_TEXT_CHARS = 4_000


def masked_text(query: str) -> str | None:
    """The query as the query log shows it: literals hidden; None when it does not scan as SQL.

    Remembered for texts the guard remembers too: an agent repeats a text with new values."""
    return _masked_remembered(query) if len(query) <= GUARD_CACHE_CHARS else _masked_text(query)


def _masked_text(query: str) -> str | None:
    try:
        text = masked(query)
    except AnalyticsError:
        return None
    return text if len(text) <= LOGGED_TEXT_CHARS else text[: LOGGED_TEXT_CHARS - 3] + "..."


_masked_remembered = functools.lru_cache(GUARD_CACHE_SIZE)(_masked_text)


async def write_query_log(db: Database, entries: Sequence[QueryLogEntry]) -> None:
    """Rows in mcp_internal.query_log (parameter values are never part of an entry)."""
    if not entries:
        return
    async with db.connection() as conn:
        await conn.executemany(
            sql.load("query_log_insert"),
            [
                (
                    e.user_id,
                    e.query_hash,
                    e.duration_ms,
                    e.row_count,
                    e.outcome,
                    e.cached,
                    e.source,
                    e.query_text,
                )
                for e in entries
            ],
            timeout=10,
        )


# --- datasets -------------------------------------------------------------------------------


def to_frame(result: QueryResult) -> pd.DataFrame:
    """The result as a DataFrame with columnar-friendly dtypes (Arrow/parquet can store every column)."""
    data: dict[str, Any] = {}
    for index, column in enumerate(result.columns):
        values = [row[index] for row in result.rows]
        data[column.name] = _series(values, column.type)
    return pd.DataFrame(data, index=pd.RangeIndex(len(result.rows)))


def _series(values: list[Any], type_name: str) -> Any:
    if type_name in _INTEGER_TYPES:
        return pd.array(values, dtype="Int64")
    if type_name == "numeric" and any(isinstance(decimal_number(v), str) for v in values if v is not None):
        # A double would change some values (json_ready says how): the column keeps them exact, as text.
        return pd.array([None if v is None else str(v) for v in values], dtype="string")
    if type_name in _FLOAT_TYPES or type_name == "numeric":
        return pd.array([math.nan if v is None else float(v) for v in values], dtype="float64")
    if type_name == "bool":
        return pd.array(values, dtype="boolean")
    if type_name in ("timestamp", "date"):
        return pd.to_datetime(pd.Series(values, dtype=object))
    if type_name == "timestamptz":
        return pd.to_datetime(pd.Series(values, dtype=object), utc=True)
    if type_name == "interval":
        return pd.to_timedelta(pd.Series(values, dtype=object))
    return pd.array(
        [None if v is None else v if isinstance(v, str) else _text(v) for v in values], dtype="string"
    )


def _text(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)
