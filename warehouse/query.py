"""Running an agent's SELECT: guarded, bound, read-only as the least-privilege role, bounded, logged.

Layers, each enough on its own for most attacks: the SQL guard (warehouse.sqlguard), a READ ONLY
transaction that is always rolled back, `SET LOCAL ROLE analytics_mcp_reader` (SELECT on the three
analytics tables only, even when DATABASE_URL is a superuser), statement and idle timeouts, and
row and byte caps on what comes back.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import json
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pandas as pd

from analytics.errors import AnalyticsError, Forbidden, InvalidInput, QueryRefused, Timeout
from warehouse import sql
from warehouse.db import ANALYTICS_TABLES, CONNECTION_ERRORS, Database
from warehouse.labels import label_statement
from warehouse.sqlguard import BoundQuery, CheckedQuery, bind_placeholders, normalised, validate_select

MAX_TIMEOUT_SECONDS = 300
# How long a client-side stall may keep the transaction open before PostgreSQL ends the session.
IDLE_GRACE_SECONDS = 10
_FETCH_CHUNK = 2_000


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # PostgreSQL type name, e.g. int4, numeric, timestamp, uuid, text[]


@dataclass
class QueryResult:
    columns: list[Column]
    rows: list[tuple[Any, ...]]
    truncated: bool
    truncated_by: str | None  # "rows" | "bytes" | None
    duration_ms: float
    query_hash: str
    volatile: bool = False  # uses now(), random()... : never cached
    relations: tuple[str, ...] = field(default_factory=tuple)

    def records(self) -> list[dict[str, Any]]:
        names = [column.name for column in self.columns]
        return [dict(zip(names, row, strict=True)) for row in self.rows]


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
    Refusals are not remembered (each one is parsed again and says why).
    """
    if len(query) > GUARD_CACHE_CHARS:
        return _guard(query, parameters)
    key = (query, tuple(parameters))
    found = _verdicts.get(key)
    if found is not None:
        _verdicts.move_to_end(key)
        return found
    guarded = _guard(query, dict.fromkeys(key[1]))
    _verdicts[key] = guarded
    if len(_verdicts) > GUARD_CACHE_SIZE:
        _verdicts.popitem(last=False)
    return guarded


def remembered_guard(query: str, names: Sequence[str]) -> GuardedQuery | None:
    """The verdict `guard` gave this text with these parameter names, if it is remembered (no parsing)."""
    return _verdicts.get((query, tuple(names))) if len(query) <= GUARD_CACHE_CHARS else None


_verdicts: OrderedDict[tuple[str, tuple[str, ...]], GuardedQuery] = OrderedDict()


def _guard(query: str, parameters: Mapping[str, Any]) -> GuardedQuery:
    bound = bind_placeholders(query, parameters)
    checked = validate_select(bound.sql, bound.original_position)
    return GuardedQuery(query, bound, checked, query_hash(query))


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
    read connection the caller holds (outside a transaction), else one is taken from the read pool.
    `label`: an application_name for the connection, set in the same round trip as BEGIN.
    """
    started = time.perf_counter()
    parameters = dict(parameters or {})
    if not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        raise InvalidInput(f"timeout must be between 0 and {MAX_TIMEOUT_SECONDS} seconds")
    guarded = query if isinstance(query, GuardedQuery) else guard(query, parameters)
    bound, checked = guarded.bound, guarded.checked
    statement_timeout_ms = max(1, int(timeout * 1000))
    begin = sql.load("query_begin").format(
        statement_timeout_ms=statement_timeout_ms,
        idle_timeout_ms=statement_timeout_ms + IDLE_GRACE_SECONDS * 1000,
    )
    if label is not None:
        begin += label_statement(label) + ";\n"  # inside the transaction: its rollback takes it back
    client_timeout = timeout + 5  # backstop if the server-side timeout somehow does not fire
    async with contextlib.AsyncExitStack() as stack:
        if conn is None:
            conn = await stack.enter_async_context(db.connection(read=True, label=label is None))
        await conn.execute(begin, timeout=client_timeout)
        try:
            try:
                statement = await conn.prepare(checked.sql, timeout=client_timeout)
                arguments = _coerce_arguments(bound, parameters, statement.get_parameters())
                columns = _columns(statement.get_attributes())
                cursor = await statement.cursor(*arguments, timeout=client_timeout)
                rows, truncated_by = await _fetch_bounded(cursor, max_rows, max_bytes, client_timeout)
            except asyncpg.PostgresError as error:
                if isinstance(error, CONNECTION_ERRORS):
                    raise
                raise _mapped(error, bound, timeout) from None
            except TimeoutError:
                raise _timed_out(timeout) from None
        finally:
            await _roll_back(conn)
    return QueryResult(
        columns=columns,
        rows=rows,
        truncated=truncated_by is not None,
        truncated_by=truncated_by,
        duration_ms=(time.perf_counter() - started) * 1000,
        query_hash=guarded.hash,
        volatile=checked.volatile,
        relations=checked.relations,
    )


async def _roll_back(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("ROLLBACK", timeout=5)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        # A connection we cannot roll back is never reused.
        conn.terminate()


async def _fetch_bounded(
    cursor: Any, max_rows: int, max_bytes: int | None, timeout: float
) -> tuple[list[tuple[Any, ...]], str | None]:
    rows: list[tuple[Any, ...]] = []
    size = 0
    while len(rows) <= max_rows:
        wanted = min(_FETCH_CHUNK if max_bytes else 50_000, max_rows + 1 - len(rows))
        batch = await cursor.fetch(wanted, timeout=timeout)
        for record in batch:
            row = tuple(_plain(value) for value in record)
            if max_bytes is not None:
                size += sum(_approximate_bytes(value) for value in row) + 2 * len(row)
                if size > max_bytes:
                    return rows, "bytes"
            rows.append(row)
        if len(batch) < wanted:
            break
    if len(rows) > max_rows:
        return rows[:max_rows], "rows"
    return rows, None


def _plain(value: Any) -> Any:
    """Composite values (rows) come back as asyncpg Records; make them plain tuples/lists."""
    if isinstance(value, asyncpg.Record):
        return tuple(_plain(v) for v in value.values())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, asyncpg.Range):
        return str(value)
    return value


def _approximate_bytes(value: Any) -> int:
    if value is None:
        return 4
    if isinstance(value, (str, bytes)):
        return len(value) + 2
    if isinstance(value, (list, tuple)):
        return sum(_approximate_bytes(v) for v in value) + 2
    return 24 if isinstance(value, (dt.datetime, uuid.UUID)) else 12


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


def _mapped(error: asyncpg.PostgresError, bound: BoundQuery, timeout: float) -> AnalyticsError:
    """One line from PostgreSQL's error: the message, where in the agent's text, and PostgreSQL's hint."""
    message = str(getattr(error, "message", "") or error).splitlines()[0]
    position = getattr(error, "position", None)
    where = ""
    if position:
        try:
            where = f" (character {bound.original_position(int(position) - 1) + 1})"
        except ValueError:
            where = ""
    hint = getattr(error, "hint", None)
    hint_text = f"; hint: {hint.splitlines()[0]}" if hint else ""
    tables = ", ".join(ANALYTICS_TABLES)
    if isinstance(error, asyncpg.QueryCanceledError):
        return _timed_out(timeout)
    if isinstance(error, asyncpg.InsufficientPrivilegeError):
        return Forbidden(
            f"{message}; queries may read only {tables}, sandbox tables (load_to_table) and the public catalogs"
        )
    if isinstance(error, asyncpg.ReadOnlySQLTransactionError):
        return QueryRefused(f"{message}: queries are read-only; {hint_text or 'send a SELECT'}")
    if isinstance(error, asyncpg.UndefinedTableError):
        return InvalidInput(f"{message}{where}; the tables are {tables}{hint_text}")
    if isinstance(error, asyncpg.PostgresSyntaxError):
        return InvalidInput(f"syntax error: {message}{where}{hint_text}")
    if isinstance(error, (asyncpg.UndefinedColumnError, asyncpg.UndefinedFunctionError)):
        return InvalidInput(f"{message}{where}{hint_text or '; read schema://database/main for the columns'}")
    if isinstance(error, asyncpg.DataError):
        return InvalidInput(f"{message}{where}{hint_text}; check the values and casts")
    if isinstance(error, asyncpg.ProgramLimitExceededError):
        return InvalidInput(f"{message}; simplify the query")
    if isinstance(error, asyncpg.InsufficientResourcesError):
        return InvalidInput(f"{message}; the query needs too much memory or disk: aggregate or filter first")
    return InvalidInput(f"PostgreSQL refused the query ({error.sqlstate}): {message}{where}{hint_text}")


# --- the query log --------------------------------------------------------------------------

OUTCOMES: dict[type[AnalyticsError], str] = {
    QueryRefused: "refused",
    Timeout: "timeout",
    Forbidden: "forbidden",
    InvalidInput: "invalid",
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
    ) -> QueryLogEntry:
        """`known_hash`: query_hash(query) when the caller has it already (saves parsing the query again)."""
        digest = known_hash or query_hash(query)
        return cls(user_id, digest, float(duration_ms), row_count, outcome, cached)


async def write_query_log(db: Database, entries: Sequence[QueryLogEntry]) -> None:
    """Rows in mcp_internal.query_log (parameter values are never part of an entry)."""
    if not entries:
        return
    async with db.connection() as conn:
        await conn.executemany(
            sql.load("query_log_insert"),
            [(e.user_id, e.query_hash, e.duration_ms, e.row_count, e.outcome, e.cached) for e in entries],
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
