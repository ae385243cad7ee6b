"""MySQL/MariaDB sources: an agent's SELECT guarded, then run read-only with bounds on a pooled connection.

The boundary is the operator's account, which should hold nothing but SELECT on the source's database
(docs/sources.md). Layers on top: the dialect guard (warehouse.engines.mysql_guard), a fixed sql_mode
(so the guard reads quotes and escapes as the server does), every statement read-only (MariaDB: on the
statement itself, `SET STATEMENT tx_read_only = 1, max_statement_time = ... FOR`; MySQL: START TRANSACTION
READ ONLY, rolled back, and max_execution_time), a client-side backstop that kills
the query, rows streamed with an unbuffered cursor under row and byte caps, and oversized values cut
inside the server so they never cross the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncmy
import cachetools
from asyncmy.constants import COMMAND
from asyncmy.cursors import SSCursor
from asyncmy.errors import Error as MySQLError

from core.errors import AnalyticsError, Forbidden, InvalidInput, QueryRefused, Timeout, Unavailable
from warehouse.db import POOL_CLOSE_SECONDS
from warehouse.descriptions import Descriptions, table_comments
from warehouse.engines import GuardedStatement, RelationRules, Table
from warehouse.engines.mysql_guard import main_query_start, validate_mysql_select
from warehouse.profiles import (
    PROFILE_TIMEOUT,
    aggregate_sql,
    read_aggregate,
    table_profile,
    top_values_sql,
    wants_top_values,
)
from warehouse.query import (
    GUARD_CACHE_CHARS,
    MAX_TIMEOUT_SECONDS,
    Column,
    QueryResult,
    check_timeout,
    in_guard_thread,
)
from warehouse.query import _json_bytes as json_bytes  # the same byte accounting as PostgreSQL's answers

# Quotes and backslashes as the guard reads them: no ANSI_QUOTES, no NO_BACKSLASH_ESCAPES, no
# PIPES_AS_CONCAT, whatever the server's default is.
SQL_MODE = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION,ONLY_FULL_GROUP_BY"
BACKSTOP_SECONDS = 5  # past the server-side timeout, the client kills the query itself
ACQUIRE_SECONDS = 10  # how long a query waits for a pooled connection before it is refused
_FETCH_ROWS = 500
_RESULT = "amcp_result"  # the wrapper's name for the agent's result (a CTE)

TABLES_SQL = (
    "SELECT TABLE_NAME, TABLE_ROWS FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = %s AND TABLE_TYPE IN ('BASE TABLE', 'VIEW', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME"
)
COLUMNS_SQL = (
    "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION"
)
VERSION_SQL = (
    "SELECT TABLE_NAME, CREATE_TIME, UPDATE_TIME FROM information_schema.TABLES "
    "WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME"
)

COMMENTS_SQL = (
    "SELECT TABLE_NAME, NULL, TABLE_COMMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
    "UNION ALL SELECT TABLE_NAME, COLUMN_NAME, COLUMN_COMMENT FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = %s"
)
KEYS_SQL = (
    "SELECT COLUMN_NAME, COLUMN_KEY FROM information_schema.COLUMNS "
    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND COLUMN_KEY IN ('PRI', 'UNI')"
)
FOREIGN_KEYS_SQL = (
    "SELECT COLUMN_NAME, REFERENCED_TABLE_NAME, REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
    "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s AND REFERENCED_TABLE_SCHEMA = %s "
    "AND REFERENCED_TABLE_NAME IS NOT NULL"
)
# Field types of the protocol (asyncmy.constants.FIELD_TYPE) whose values vary in size: measured and cut.
_VARIABLE_SIZE_TYPES = {15, 16, 245, 247, 248, 249, 250, 251, 252, 253, 254, 255}
# Field types as the engine-neutral names QueryResult uses (PostgreSQL's, which to_frame reads).
_TYPE_NAMES = {
    0: "numeric",
    246: "numeric",
    1: "int4",
    2: "int4",
    3: "int4",
    9: "int4",
    13: "int4",
    8: "int8",
    4: "float4",
    5: "float8",
    7: "timestamp",
    12: "timestamp",
    10: "date",
    14: "date",
    11: "interval",
    245: "json",
    16: "bytea",
    255: "bytea",
}
_DATA_TYPE_NAMES = {
    "tinyint": "int4",
    "smallint": "int4",
    "mediumint": "int4",
    "int": "int4",
    "integer": "int4",
    "bigint": "int8",
    "year": "int4",
    "decimal": "numeric",
    "numeric": "numeric",
    "float": "float4",
    "double": "float8",
    "real": "float8",
    "date": "date",
    "datetime": "timestamp",
    "timestamp": "timestamp",
    "time": "interval",
    "json": "json",
    "bit": "bytea",
    "binary": "bytea",
    "varbinary": "bytea",
    "blob": "bytea",
    "tinyblob": "bytea",
    "mediumblob": "bytea",
    "longblob": "bytea",
}
# Server errors: max_statement_time / max_execution_time exceeded, query interrupted.
_TIMED_OUT = {1969, 3024, 1317}
_DENIED = {1044, 1045, 1142, 1143, 1227, 1370}
_CONNECTION_LOST = {2002, 2003, 2006, 2013, 2055, 1040, 1053, 1927}


class MySQLEngine:
    """One MySQL/MariaDB source: `url` is mysql:// or mariadb://user:password@host:port/database."""

    kind = "mysql"

    def __init__(
        self, url: str, *, name: str = "source", rules: RelationRules | None = None, pool_size: int = 4
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("mysql", "mariadb") or not parts.path.strip("/"):
            raise InvalidInput(f"source '{name}': url must be mysql://user:password@host:port/database")
        self.name = name
        self.database = unquote(parts.path.strip("/"))
        self.rules = rules or RelationRules()
        self._connect: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 3306,
            "user": unquote(parts.username or ""),
            "password": unquote(parts.password or ""),
            "db": self.database,
        }
        self.pool_size = pool_size  # connections at most
        self._pool: Any = None
        self.mariadb = True
        # MariaDB's name for a statement's read-only flag (`SET STATEMENT ... FOR`), found at start; None:
        # the server does not take it there, and each query opens a READ ONLY transaction instead.
        self._read_only_variable: str | None = None
        self._allowed: frozenset[str] = frozenset()
        self._single_statement: set[int] = set()  # server ids of connections with multi-statements off
        # Accepted queries' verdicts (on the event loop only), as for main and files sources: see `guarded`.
        self._verdicts: cachetools.LRUCache[tuple[Any, ...], GuardedStatement] = cachetools.LRUCache(512)

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            self._pool = await asyncmy.create_pool(
                minsize=1,
                maxsize=self.pool_size,
                charset="utf8mb4",
                init_command=f"SET SESSION sql_mode = '{SQL_MODE}'",
                autocommit=True,  # every query opens its own READ ONLY transaction
                local_infile=False,
                connect_timeout=5,
                **self._connect,
            )
            async with self._pool.acquire() as conn, conn.cursor() as cursor:
                await cursor.execute("SELECT VERSION()")
                (version,) = await cursor.fetchone()
            self.mariadb = "mariadb" in str(version).lower()
            if self.mariadb:
                self._read_only_variable = await self._statement_read_only()
            await self.refresh()
        except (MySQLError, OSError, TimeoutError) as error:
            await self.close()
            raise self._unavailable(error) from None

    async def _statement_read_only(self) -> str | None:
        """The variable that makes one statement read-only on this server (tx_read_only; 11.1 renamed it
        transaction_read_only), or None when SET STATEMENT does not take either."""
        async with self._pool.acquire() as conn, conn.cursor() as cursor:
            for variable in ("transaction_read_only", "tx_read_only"):
                try:
                    await cursor.execute(f"SET STATEMENT {variable} = 1 FOR SELECT 1")
                    await cursor.fetchall()
                except MySQLError:
                    continue
                return variable
        return None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
            try:  # at most as long as the PostgreSQL pools wait for connections still in use
                await asyncio.wait_for(pool.wait_closed(), timeout=POOL_CLOSE_SECONDS)
            except Exception:  # noqa: BLE001 - a pool that will not close cleanly is terminated
                pool.terminate()

    async def refresh(self) -> list[Table]:
        """Read the source's allowed tables again (after the operator adds one)."""
        async with self._pool.acquire() as conn, conn.cursor() as cursor:
            await cursor.execute(TABLES_SQL, (self.database,))
            rows = await cursor.fetchall()
        tables = [
            Table(str(name), None if estimate is None else int(estimate))
            for name, estimate in rows
            if self.rules.allows(self.database, str(name))
        ]
        self._allowed = frozenset(table.name for table in tables)
        return tables

    # --- catalog --------------------------------------------------------------------------------

    async def tables(self) -> list[Table]:
        try:
            return await self.refresh()
        except (MySQLError, OSError) as error:
            raise self._unavailable(error) from None

    async def columns(self, table: str) -> list[Column]:
        if table not in self._allowed:
            raise InvalidInput(
                f"table '{table}' is not part of source '{self.name}'; read schema://{self.name}"
            )
        try:
            async with self._pool.acquire() as conn, conn.cursor() as cursor:
                await cursor.execute(COLUMNS_SQL, (self.database, table))
                rows = await cursor.fetchall()
        except (MySQLError, OSError) as error:
            raise self._unavailable(error) from None
        return [Column(str(name), _DATA_TYPE_NAMES.get(str(kind).lower(), "text")) for name, kind in rows]

    async def comments(self) -> Descriptions:
        """TABLE_COMMENT and COLUMN_COMMENT of the allowed tables, by table."""
        try:
            async with self._pool.acquire() as conn, conn.cursor() as cursor:
                await cursor.execute(COMMENTS_SQL, (self.database, self.database))
                rows = await cursor.fetchall()
        except (MySQLError, OSError) as error:
            raise self._unavailable(error) from None
        return table_comments(row for row in rows if str(row[0]) in self._allowed)

    async def data_version(self) -> str | None:
        """A digest of the allowed tables' creation and last-update times (None if unknown)."""
        try:
            async with self._pool.acquire() as conn, conn.cursor() as cursor:
                await cursor.execute(VERSION_SQL, (self.database,))
                rows = await cursor.fetchall()
        except (MySQLError, OSError):
            return None
        rows = [row for row in rows if row[0] in self._allowed]
        if any(updated is None for _, _, updated in rows):
            return None  # a table whose changes the server does not date: cache with a short TTL
        return hashlib.sha256(repr(rows).encode()).hexdigest()[:32]

    async def profile(self, table: str, sample_rows: int) -> dict[str, Any]:
        """The table's profile: one aggregate over it (over a random sample of about `sample_rows` rows
        when it has more) and a top-values query per repeating column, read-only with a timeout."""
        columns = [(column.name, column.type) for column in await self.columns(table)]
        name = _quoted(table)
        try:
            conn = await self._acquire()
            reusable = False
            try:
                async with conn.cursor() as cursor:
                    if self.mariadb:
                        await cursor.execute(f"SET SESSION max_statement_time = {PROFILE_TIMEOUT:.3f}")
                    else:
                        await cursor.execute(
                            f"SET SESSION max_execution_time = {int(PROFILE_TIMEOUT * 1000)}"
                        )
                    await cursor.execute("START TRANSACTION READ ONLY")
                    await cursor.execute(f"SELECT count(*) FROM {name}")
                    (row_count,) = await cursor.fetchone()
                    relation = name
                    if row_count > sample_rows:
                        fraction = sample_rows / row_count
                        relation = f"(SELECT * FROM {name} WHERE RAND() < {fraction:.9f}) AS amcp_sample"
                    await cursor.execute(aggregate_sql(_quoted, columns, relation))
                    sample_size, stats = read_aggregate(await cursor.fetchone(), columns)
                    for column in stats:
                        if wants_top_values(column):
                            await cursor.execute(top_values_sql(_quoted, column.name, relation))
                            column.top_values = [(value, int(n)) for value, n in await cursor.fetchall()]
                    await cursor.execute(KEYS_SQL, (self.database, table))
                    keys = {str(c): "primary" if k == "PRI" else "unique" for c, k in await cursor.fetchall()}
                    await cursor.execute(FOREIGN_KEYS_SQL, (self.database, table, self.database))
                    references = {
                        str(c): f"{t}.{r}" for c, t, r in await cursor.fetchall() if str(t) in self._allowed
                    }
                await conn.rollback()
                reusable = True
            finally:
                if not reusable:
                    conn.close()
                self._pool.release(conn)
        except MySQLError as error:
            raise _mapped(error, PROFILE_TIMEOUT, self._allowed) from None
        except OSError as error:
            raise self._unavailable(error) from None
        for column in stats:
            column.key = keys.get(column.name)
            column.references = references.get(column.name)
        return table_profile(table, int(row_count), sample_size, stats)

    # --- queries --------------------------------------------------------------------------------

    async def guarded(self, sql: str, parameters: Mapping[str, Any]) -> GuardedStatement:
        """The verdict depends only on the text, the parameter names, the database and the allowed
        tables, so an accepted query is remembered under exactly those (agents repeat a text with new
        values: no parse); refusals are not remembered."""
        key = (sql, tuple(parameters), self.database, self._allowed)
        remembered = self._verdicts.get(key) if len(sql) <= GUARD_CACHE_CHARS else None
        if remembered is not None:
            return remembered
        statement = await in_guard_thread(_guard, sql, dict(parameters), self.database, self._allowed)
        if len(sql) <= GUARD_CACHE_CHARS:
            self._verdicts[key] = statement
        return statement

    async def run(
        self,
        statement: GuardedStatement,
        parameters: Mapping[str, Any],
        *,
        timeout: float = 30,
        max_rows: int = 1_000,
        max_bytes: int = 1_000_000,
    ) -> QueryResult:
        """Run a guarded SELECT read-only; at most `max_rows` rows and about `max_bytes` bytes come back."""
        started = time.perf_counter()
        check_timeout(timeout)
        arguments = tuple(_argument(name, parameters[name]) for name in statement.names) or None
        conn = await self._acquire()
        reusable = False
        try:
            work = self._run(conn, statement, arguments, timeout, max_rows, max_bytes)
            try:
                columns, rows, truncated_by, cut, reusable = await asyncio.wait_for(
                    work, timeout + BACKSTOP_SECONDS
                )
            except TimeoutError:
                await self._kill(conn)
                raise _timed_out(timeout) from None
            except MySQLError as error:
                # The server ended the statement with an error: the connection is clean once rolled back.
                reusable = _code(error) not in _CONNECTION_LOST and await _rolled_back(conn)
                raise _mapped(error, timeout, self._allowed) from None
            except OSError as error:
                raise self._unavailable(error) from None
        finally:
            if not reusable:
                conn.close()  # mid-result or broken: never back to the pool (the pool drops it)
            self._pool.release(conn)
        return QueryResult.fetched(
            columns,
            rows,
            truncated_by,
            cut,
            started=started,
            query_hash=statement.hash,
            volatile=statement.volatile,
            relations=statement.relations,
            max_bytes=max_bytes,
        )

    async def _run(
        self,
        conn: Any,
        statement: GuardedStatement,
        arguments: tuple[Any, ...] | None,
        timeout: float,
        max_rows: int,
        max_bytes: int,
    ) -> tuple[list[Column], list[tuple[Any, ...]], str | None, set[int], bool]:
        # Not `async with`: closing an unbuffered cursor reads the rest of the result, and a cut-short
        # answer must not; its connection is closed instead.
        cursor = conn.cursor(SSCursor)
        # MariaDB bounds each statement itself (SET STATEMENT ... FOR): its timeout, and read-only as its
        # own autocommit transaction (a write fails with 1792 as in START TRANSACTION READ ONLY), so
        # neither a session round trip nor a transaction to open and roll back.
        limited = ""
        if self.mariadb:
            limited = f"SET STATEMENT max_statement_time = {max(timeout, 0.001):.3f}"  # 0: none
            if self._read_only_variable is not None:
                limited += f", {self._read_only_variable} = 1"
            limited += " FOR "
        else:
            await cursor.execute(f"SET SESSION max_execution_time = {max(1, int(timeout * 1000))}")
        in_transaction = self._read_only_variable is None
        if in_transaction:
            await cursor.execute("START TRANSACTION READ ONLY")
        prefix, body = _split(statement.sql)
        # The result's columns first (LIMIT 0 reads none), to know which to measure and cut.
        await cursor.execute(f"{limited}{prefix}({body}) LIMIT 0", arguments)
        description = cursor.description or ()
        await cursor.fetchall()
        columns = _columns(description)
        measured = [index for index, field in enumerate(description) if field[1] in _VARIABLE_SIZE_TYPES]
        names = [str(field[0]) for field in description]
        await cursor.execute(
            limited + _bounded(prefix, body, names, measured, max_rows, max_bytes), arguments
        )
        rows: list[tuple[Any, ...]] = []
        cut: set[int] = set()
        keys = sum(len(column.name.encode()) + 4 for column in columns)
        size = 0
        while True:
            batch = await cursor.fetchmany(_FETCH_ROWS)
            for record in batch:
                if len(rows) == max_rows:
                    # The wrapper's LIMIT sent one row more than max_rows: nothing is left to read.
                    await cursor.close()
                    if in_transaction:
                        await conn.rollback()
                    return columns, rows, "rows", cut, True
                values, flags = record[:-1], record[-1]
                if flags:
                    cut.update(int(index) for index in str(flags).split(","))
                row = tuple(_plain(value) for value in values)
                size += 2 + keys + sum(map(json_bytes, row))
                if size > max_bytes:
                    return columns, rows, "bytes", cut, False
                rows.append(row)
            if len(batch) < _FETCH_ROWS:
                break
        await cursor.close()
        if in_transaction:
            await conn.rollback()
        return columns, rows, None, cut, True

    async def _acquire(self) -> Any:
        """A pooled connection on which the server runs one statement per query text."""
        if self._pool is None:
            raise Unavailable(f"source '{self.name}' is not started; retry in a moment")
        try:
            async with asyncio.timeout(ACQUIRE_SECONDS):
                conn = await self._pool.acquire()
        except TimeoutError:
            raise Unavailable(
                f"source '{self.name}' has no free connection after {ACQUIRE_SECONDS} s "
                f"(all {self.pool_size} in use); retry shortly"
            ) from None
        except (MySQLError, OSError) as error:
            raise self._unavailable(error) from None
        if conn.thread_id() not in self._single_statement:
            try:
                await _single_statements_only(conn)
            except (MySQLError, OSError, TimeoutError) as error:
                conn.close()
                self._pool.release(conn)
                raise self._unavailable(error) from None
            self._single_statement.add(conn.thread_id())
        return conn

    async def _kill(self, conn: Any) -> None:
        """Stop the query the server is still running for `conn` (an account may kill its own)."""
        with contextlib.suppress(MySQLError, OSError, TimeoutError, AnalyticsError):
            async with asyncio.timeout(5), self._pool.acquire() as other, other.cursor() as cursor:
                await cursor.execute(f"KILL QUERY {int(conn.thread_id())}")

    def _unavailable(self, error: BaseException) -> Unavailable:
        code = error.args[0] if isinstance(error, MySQLError) and error.args else type(error).__name__
        if isinstance(code, int) and code in _DENIED:
            return Unavailable(
                f"source '{self.name}': the server refused the login or the database ({code}); "
                "check its account"
            )
        return Unavailable(
            f"source '{self.name}' is unreachable ({code}); check that its server is up and retry"
        )


async def _single_statements_only(conn: Any) -> None:
    """Turn multi-statements off for this connection (asyncmy always asks for them at login), so the
    server itself refuses `SELECT 1; DROP ...` whatever reached it: COM_SET_OPTION, MULTI_STATEMENTS_OFF."""
    await conn._execute_command(COMMAND.COM_SET_OPTION, b"\x01\x00")
    await asyncio.wait_for(conn.read_packet(), 5)  # an EOF (or OK) packet; an error packet raises


async def _rolled_back(conn: Any) -> bool:
    try:
        await asyncio.wait_for(conn.rollback(), 5)
    except (MySQLError, OSError, TimeoutError):
        return False
    return True


def _code(error: MySQLError) -> int:
    return error.args[0] if error.args and isinstance(error.args[0], int) else 0


def _guard(
    sql: str, parameters: Mapping[str, Any], database: str, allowed: frozenset[str]
) -> GuardedStatement:
    return validate_mysql_select(sql, parameters, database=database, allowed=allowed)


def _quoted(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def _split(sql: str) -> tuple[str, str]:
    """A guarded query as (its WITH clause followed by a space, or "", its main query)."""
    start = main_query_start(sql)
    return (f"{sql[:start].rstrip()} ", sql[start:]) if start else ("", sql)


def _bounded(
    prefix: str, body: str, names: Sequence[str], measured: Sequence[int], max_rows: int, limit: int
) -> str:
    """The query wrapped so the server sends at most max_rows + 1 rows and nulls values over `limit`
    bytes, with a last column listing the positions it cut. The agent's columns are renamed by position
    (duplicate names are fine); `(body) LIMIT n` keeps the body's ORDER BY, which MariaDB drops from a
    CTE without a LIMIT. With unique names the CTE keeps them (MariaDB resolves a union's ORDER BY name
    against a CTE's column list, and fails)."""
    unique = len({name.lower() for name in names}) == len(names) and all(0 < len(n) <= 64 for n in names)
    if unique:
        references = ["`" + name.replace("`", "``") + "`" for name in names]
        result = _RESULT
    else:
        references = [f"c{index + 1}" for index in range(len(names))]
        result = f"{_RESULT}({', '.join(references)})"
    outputs = ", ".join(
        f"CASE WHEN OCTET_LENGTH({column}) <= {limit} THEN {column} END" if index in measured else column
        for index, column in enumerate(references)
    )
    flags = ", ".join(
        f"IF(OCTET_LENGTH({references[index]}) > {limit}, '{index}', NULL)" for index in measured
    )
    cut = f"CONCAT_WS(',', {flags})" if measured else "NULL"
    opening = f"{prefix.rstrip()}, " if prefix else "WITH "
    return f"{opening}{result} AS (({body}) LIMIT {max_rows + 1})\nSELECT {outputs}, {cut} FROM {_RESULT}"


def _columns(description: Sequence[Sequence[Any]]) -> list[Column]:
    """Column names made unique (a join of two tables has two id columns)."""
    seen: dict[str, int] = {}
    columns = []
    for field in description:
        name = str(field[0]) or "?column?"
        count = seen.get(name, 0) + 1
        seen[name] = count
        while count > 1 and f"{name}_{count}" in seen:
            count += 1
        unique = name if count == 1 else f"{name}_{count}"
        seen.setdefault(unique, 1)
        columns.append(Column(unique, _TYPE_NAMES.get(int(field[1]), "text")))
    return columns


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return value


def _argument(name: str, value: Any) -> Any:
    """A JSON parameter value as the driver binds it (escaped client-side under the fixed sql_mode)."""
    if value is None or isinstance(value, (bool, int, float, str, decimal.Decimal, dt.date, dt.time)):
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            raise InvalidInput(f"parameter '{name}' is an empty list; pass at least one value")
        for item in value:
            if not (item is None or isinstance(item, (bool, int, float, str))):
                raise InvalidInput(f"parameter '{name}' must be a list of numbers or strings")
        return tuple(value)
    raise InvalidInput(f"parameter '{name}' must be a number, a string, a boolean, null or a list of those")


def _timed_out(timeout: float) -> Timeout:
    return Timeout(
        f"the query was cancelled after the {timeout:g} s timeout; narrow it (WHERE, fewer joins, "
        f"aggregate first) or pass a larger timeout (at most {MAX_TIMEOUT_SECONDS})"
    )


def _mapped(error: MySQLError, timeout: float, allowed: frozenset[str]) -> AnalyticsError:
    """One line from the server's error (its code and first line; never the connection's details)."""
    code = _code(error)
    message = str(error.args[1] if len(error.args) > 1 else error).splitlines()[0][:300]
    tables = ", ".join(sorted(allowed)) or "(none)"
    if code in _TIMED_OUT:
        return _timed_out(timeout)
    if code in _CONNECTION_LOST:
        return Unavailable(f"the source's server went away ({code}); retry in a moment")
    if code in _DENIED:
        return Forbidden(f"{message}; queries may read only {tables}")
    if code == 1792:
        return QueryRefused(f"{message}: queries are read-only; send a SELECT")
    if code == 1146:
        return InvalidInput(f"{message}; the tables are {tables}")
    if code in (1054, 1052, 1305, 1630):
        return InvalidInput(f"{message}; read the source's schema for its columns")
    if code == 1064:
        return InvalidInput(f"syntax error: {message}")
    return InvalidInput(f"the server refused the query ({code}): {message}")
