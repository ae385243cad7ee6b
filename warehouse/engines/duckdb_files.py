"""Files sources: every CSV, TSV, Parquet and JSON-lines file of a directory is a table, read through an
in-process DuckDB database with the files as views and everything else locked away.

Layers: the server writes the views to a database file of the engine's own and opens it read-only (no
statement can drop, replace or add a view, table or database); the database may reach only the
registered files (`allowed_paths` to each file, not `allowed_directories`, which would let COPY write new
files beside them; then `enable_external_access=false`; then `lock_configuration=true`, so no statement
can undo them), with a memory limit and a thread count; the dialect guard (duckdb_guard) admits one
SELECT over the views; each query runs on its own cursor on a worker thread, interrupted at its timeout,
its values cut inside DuckDB and its rows fetched in bounded batches. DuckDB has no read-only grant for a
file: COPY ... TO a registered file itself would overwrite it, which only the guard refuses; operators
should give the server read-only access to the directory (a read-only mount).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import cachetools
import duckdb

from core.errors import AnalyticsError, InvalidInput, QueryRefused, Timeout, Unavailable
from warehouse.descriptions import Descriptions
from warehouse.engines import GuardedStatement, RelationRules, Table
from warehouse.engines.duckdb_guard import validate_select
from warehouse.profiles import (
    PROFILE_TIMEOUT,
    aggregate_sql,
    read_aggregate,
    table_profile,
    top_values_sql,
    wants_top_values,
)
from warehouse.query import (
    MAX_TIMEOUT_SECONDS,
    Column,
    QueryResult,
    _json_bytes,
    check_timeout,
    in_guard_thread,
)

_Result = TypeVar("_Result")
# How each kind of file becomes a view (the path is bound as a literal by the server, never by an agent).
READERS = {
    ".csv": "read_csv({path})",
    ".tsv": "read_csv({path}, delim = '\t')",
    ".parquet": "read_parquet({path})",
    ".jsonl": "read_json({path}, format = 'newline_delimited')",
    ".ndjson": "read_json({path}, format = 'newline_delimited')",
}
_REMEMBERED_CHARS = 20_000  # longer queries' verdicts are not remembered (bounds the memory it takes)
_FETCH_CHUNK = 2_000
_FETCH_VALUES = 100_000  # most values one fetch brings (rows x columns)
# DuckDB type names as the rest of the server knows them (PostgreSQL's, see warehouse.query.to_frame).
_TYPE_NAMES = {
    "BOOLEAN": "bool",
    "TINYINT": "int2",
    "SMALLINT": "int2",
    "INTEGER": "int4",
    "BIGINT": "int8",
    "UTINYINT": "int2",
    "USMALLINT": "int4",
    "UINTEGER": "int8",
    "UBIGINT": "numeric",
    "HUGEINT": "numeric",
    "UHUGEINT": "numeric",
    "FLOAT": "float4",
    "DOUBLE": "float8",
    "VARCHAR": "text",
    "BLOB": "bytea",
    "DATE": "date",
    "TIME": "time",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP_S": "timestamp",
    "TIMESTAMP_MS": "timestamp",
    "TIMESTAMP_NS": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "INTERVAL": "interval",
    "UUID": "uuid",
    "JSON": "json",
}
# Types whose values have a small fixed size: never measured, never cut.
_FIXED_SIZE = {"bool", "int2", "int4", "int8", "numeric", "float4", "float8", "date", "time", "timestamp"}
_FIXED_SIZE |= {"timestamptz", "interval", "uuid"}


def type_name(duckdb_type: Any) -> str:
    """int8, text, numeric, timestamp... ; a list of integers is int8[]; others DuckDB's own name."""
    text = str(duckdb_type)
    if text.startswith("DECIMAL"):
        return "numeric"
    if text.endswith("[]") and text.count("[") == 1:
        return type_name(text[:-2]) + "[]"
    return _TYPE_NAMES.get(text, text.lower())


class FilesEngine:
    """One files source: a directory whose data files are tables, in one DuckDB database of its own."""

    kind = "duckdb"

    def __init__(
        self,
        name: str,
        directory: str | os.PathLike[str],
        *,
        rules: RelationRules | None = None,
        memory_limit: str = "512MB",
        threads: int = 2,
        concurrency: int = 4,
    ) -> None:
        self.name = name
        self.directory = Path(directory)
        self.rules = rules or RelationRules()
        self.memory_limit = memory_limit
        self.threads = threads
        self.files: dict[str, Path] = {}  # table name -> file
        self._database: duckdb.DuckDBPyConnection | None = None
        # Queries to this source run side by side on at most `concurrency` threads.
        self.pool_size = concurrency
        self._workers = ThreadPoolExecutor(concurrency, thread_name_prefix=f"duckdb-{name}")
        self._slots = asyncio.Semaphore(concurrency)
        self._lock = threading.Lock()
        self._verdicts: cachetools.LRUCache[tuple[Any, ...], GuardedStatement] = cachetools.LRUCache(512)
        self._shapes: cachetools.LRUCache[tuple[Any, ...], list[Column]] = cachetools.LRUCache(512)
        self._row_estimates: dict[str, tuple[tuple[int, int], int | None]] = {}
        self._scratch: tempfile.TemporaryDirectory[str] | None = None  # holds the views' database file

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await (await self._submit(self._open))

    def _open(self) -> None:
        """The views are written to a small database file of the engine's own, which is then opened
        read-only: no statement can drop or replace a view, create a table or attach a database."""
        self.files = data_files(self.directory, self.rules, source=self.name)
        self._scratch = tempfile.TemporaryDirectory(prefix="analytics-mcp-files-")
        catalog = str(Path(self._scratch.name) / "views.duckdb")
        try:
            with duckdb.connect(catalog) as writer:
                for table, path in self.files.items():
                    self._create_view(writer, table, path)
            database = duckdb.connect(
                catalog,
                read_only=True,
                config={
                    "memory_limit": self.memory_limit,
                    "threads": str(self.threads),
                    "autoinstall_known_extensions": "false",
                    "autoload_known_extensions": "false",
                },
            )
            paths = ", ".join(_literal(str(path)) for path in self.files.values())
            # Order matters: the allowed files first, then no other access, then nothing can be changed.
            database.execute(f"SET allowed_paths = [{paths}]")
            database.execute("SET enable_external_access = false")
            database.execute("SET lock_configuration = true")
        except duckdb.Error as error:
            self._scratch.cleanup()
            raise Unavailable(
                f"files source '{self.name}' could not be opened ({type(error).__name__}); check its files"
            ) from None
        except BaseException:
            self._scratch.cleanup()
            raise
        self._database = database

    def _create_view(self, writer: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
        reader = READERS[path.suffix.lower()].format(path=_literal(str(path)))
        try:  # DuckDB reads the file's header (or footer) here, to know the view's columns
            writer.execute(f"CREATE VIEW {_identifier(table)} AS SELECT * FROM {reader}")
        except duckdb.Error as error:
            reason = (str(error).splitlines() or [""])[0].replace(str(path), path.name)[:200]
            raise Unavailable(
                f"files source '{self.name}': {path.name} cannot be read as a table ({reason}); "
                "fix or remove the file, or exclude it"
            ) from None

    async def close(self) -> None:
        database, self._database = self._database, None
        if database is not None:
            database.close()
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
        self._workers.shutdown(wait=False, cancel_futures=True)

    # --- queries ------------------------------------------------------------------------------

    async def guarded(self, sql: str, parameters: Mapping[str, Any]) -> GuardedStatement:
        """The guard's verdict depends only on the text, the parameter names and the tables, so an
        accepted query is remembered under those (agents repeat a text with new values); refusals are
        not remembered."""
        key = (sql, tuple(parameters), tuple(self.files))
        with self._lock:
            remembered = self._verdicts.get(key) if len(sql) <= _REMEMBERED_CHARS else None
        if remembered is not None:
            return remembered
        checked = await in_guard_thread(validate_select, sql, list(parameters), list(self.files))
        statement = GuardedStatement(
            sql=checked.sql,
            names=checked.names,
            relations=checked.relations,
            volatile=checked.volatile,
            canonical=checked.canonical,
            hash=checked.hash,
        )
        if len(sql) <= _REMEMBERED_CHARS:
            with self._lock:
                self._verdicts[key] = statement
        return statement

    async def run(
        self,
        statement: GuardedStatement,
        parameters: Mapping[str, Any],
        *,
        timeout: float,
        max_rows: int,
        max_bytes: int,
    ) -> QueryResult:
        check_timeout(timeout)
        missing = [name for name in statement.names if name not in parameters]
        if missing:
            raise InvalidInput(f"parameters {', '.join(missing)} have no value; pass them in parameters")
        values = [parameters[name] for name in statement.names]
        started = time.perf_counter()
        # Its own cursor (a connection to the same database): interrupting it stops this query only.
        cursor = self._connection().cursor()
        future = await self._submit(self._run, cursor, statement, values, max_rows, max_bytes, timeout)
        # The timeout from when the query has its worker: the event loop interrupts it (interrupt is
        # thread-safe), no timer thread started and stopped per query.
        timer = asyncio.get_running_loop().call_later(timeout, _interrupt, cursor)
        future.add_done_callback(lambda _: timer.cancel())
        try:
            columns, rows, truncated_by, cut = await asyncio.wait_for(asyncio.shield(future), timeout + 5)
        except TimeoutError:
            cursor.interrupt()  # the backstop, if DuckDB did not stop at the timer's interrupt
            raise _timed_out(timeout) from None
        except asyncio.CancelledError:
            cursor.interrupt()  # the caller gave up: the worker thread stops too
            raise
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

    def _run(
        self,
        cursor: duckdb.DuckDBPyConnection,
        statement: GuardedStatement,
        values: list[Any],
        max_rows: int,
        max_bytes: int,
        timeout: float,
    ) -> tuple[list[Column], list[tuple[Any, ...]], str | None, set[int]]:
        try:
            columns = self._shape(cursor, statement, values)
            types = [column.type for column in columns]
            cursor.execute(bounded_statement(statement.sql, types, max_bytes, max_rows), values or None)
            return (columns, *_fetch_bounded(cursor, columns, max_rows, max_bytes))
        except duckdb.InterruptException:
            raise _timed_out(timeout) from None
        except duckdb.Error as error:
            raise self._mapped(error) from None
        except OSError:
            raise Unavailable(
                f"a file of source '{self.name}' cannot be read (moved or deleted?); refresh the source"
            ) from None
        finally:
            cursor.close()

    async def _submit(self, function: Callable[..., _Result], *arguments: Any) -> asyncio.Future[_Result]:
        """`function` on a worker thread once one of the source's slots is free. The slot is held until
        the work ends (not when a caller stops waiting), so a stuck query keeps its slot and nothing
        queues behind it unseen; time spent waiting for a slot is not part of a query's timeout."""
        await self._slots.acquire()
        try:
            future = asyncio.get_running_loop().run_in_executor(self._workers, function, *arguments)
        except BaseException:
            self._slots.release()
            raise

        def finished(done: asyncio.Future[_Result]) -> None:
            self._slots.release()
            if not done.cancelled():
                done.exception()  # retrieved: a caller that stopped waiting is not an unhandled error

        future.add_done_callback(finished)
        return future

    def _shape(
        self, cursor: duckdb.DuckDBPyConnection, statement: GuardedStatement, values: list[Any]
    ) -> list[Column]:
        """The result's columns, from DuckDB binding the statement (which re-reads CSV headers), and
        remembered while the files it reads keep their size and mtime and the values their types."""
        stamps = []
        for table in statement.relations:
            status = self.files[table].stat()
            stamps.append((status.st_size, status.st_mtime_ns))
        key = (statement.sql, tuple(type(value).__name__ for value in values), tuple(stamps))
        with self._lock:
            remembered = self._shapes.get(key)
        if remembered is not None:
            return remembered
        relation = cursor.sql(statement.sql, params=values or None)
        columns = unique_columns(list(relation.columns), [type_name(t) for t in relation.types])
        with self._lock:
            self._shapes[key] = columns
        return columns

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._database is None:
            raise Unavailable(f"files source '{self.name}' is not open; retry in a moment")
        return self._database

    def _mapped(self, error: duckdb.Error) -> AnalyticsError:
        """One line from DuckDB's error, with the files' paths replaced by their table names."""
        message = (str(error).splitlines() or [type(error).__name__])[0]
        for table, path in self.files.items():
            message = message.replace(str(path), table)
        message = message.replace(str(self.directory), f"<{self.name}>")[:300]
        if isinstance(error, duckdb.OutOfMemoryException):
            return InvalidInput(
                f"the query needs more memory than allowed ({message}); aggregate or filter first"
            )
        if isinstance(error, duckdb.PermissionException):
            return QueryRefused(f"{message}; queries may read only this source's tables")
        if isinstance(error, (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException)):
            return InvalidInput(f"{message}; read schema://{self.name} for the tables and columns")
        return InvalidInput(f"DuckDB refused the query: {message}")

    # --- catalog ------------------------------------------------------------------------------

    async def tables(self) -> list[Table]:
        return [Table(name, self._row_estimate(name)) for name in sorted(self.files)]

    async def columns(self, table: str) -> list[Column]:
        if table.lower() not in self.files:
            shown = ", ".join(sorted(self.files)) or "none"
            raise InvalidInput(f"table '{table[:60]}' is not in source '{self.name}'; the tables are {shown}")

        def describe() -> list[Column]:
            cursor = self._connection().cursor()
            try:
                relation = cursor.sql(f"SELECT * FROM {_identifier(table.lower())}")
                return unique_columns(list(relation.columns), [type_name(t) for t in relation.types])
            finally:
                cursor.close()

        return await (await self._submit(describe))

    async def profile(self, table: str, sample_rows: int) -> dict[str, Any]:
        """The table's profile: one aggregate over its view (over a reservoir sample of `sample_rows`
        rows when it has more) and a top-values query per repeating column, interrupted at the timeout."""
        columns = [(column.name, column.type) for column in await self.columns(table)]
        name = _identifier(table.lower())

        def measure() -> dict[str, Any]:
            cursor = self._connection().cursor()
            timer = threading.Timer(PROFILE_TIMEOUT, cursor.interrupt)
            timer.start()
            try:
                (row_count,) = cursor.execute(f"SELECT count(*) FROM {name}").fetchone() or (0,)
                relation = name
                if row_count > sample_rows:
                    relation = (
                        f"(SELECT * FROM {name} USING SAMPLE reservoir({int(sample_rows)} ROWS) "
                        "REPEATABLE (21)) AS amcp_sample"
                    )
                row = cursor.execute(aggregate_sql(_identifier, columns, relation)).fetchone()
                sample_size, stats = read_aggregate(row or (), columns)
                for column in stats:
                    if wants_top_values(column):
                        found = cursor.execute(top_values_sql(_identifier, column.name, relation)).fetchall()
                        column.top_values = [(value, int(n)) for value, n in found]
                return table_profile(table.lower(), int(row_count), sample_size, stats)
            except duckdb.InterruptException:
                raise _timed_out(PROFILE_TIMEOUT) from None
            except duckdb.Error as error:
                raise self._mapped(error) from None
            finally:
                timer.cancel()
                cursor.close()

        return await (await self._submit(measure))

    async def comments(self) -> Descriptions:
        return {}  # files carry no comments; the operator's descriptions file may describe them

    async def data_version(self) -> str | None:
        """The registered files' sizes and modification times, and the directory's data file names."""
        digest = hashlib.sha256()
        for table, path in sorted(self.files.items()):
            try:
                status = path.stat()
            except OSError:
                digest.update(f"{table}:missing\n".encode())
                continue
            digest.update(f"{table}:{status.st_size}:{status.st_mtime_ns}\n".encode())
        try:
            present = sorted(entry.name for entry in os.scandir(self.directory) if _is_data_file(entry.name))
        except OSError:
            present = []
        digest.update("\n".join(present).encode("utf-8", "surrogateescape"))
        return digest.hexdigest()[:32]

    def _row_estimate(self, table: str) -> int | None:
        """Parquet: the row count its footer states; text files: lines counted (read the first 4 MB,
        extrapolated for larger files). Remembered until the file's size or mtime changes."""
        path = self.files[table]
        try:
            status = path.stat()
        except OSError:
            return None
        key = (status.st_size, status.st_mtime_ns)
        remembered = self._row_estimates.get(table)
        if remembered is not None and remembered[0] == key:
            return remembered[1]
        estimate = _estimate_rows(path, status.st_size)
        self._row_estimates[table] = (key, estimate)
        return estimate


def data_files(directory: Path, rules: RelationRules, *, source: str) -> dict[str, Path]:
    """The tables of a files source: every data file directly in `directory`, named by its stem."""
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError:
        raise Unavailable(f"files source '{source}': its directory cannot be read; check the url") from None
    files: dict[str, Path] = {}
    for entry in entries:
        if not entry.is_file() or not _is_data_file(entry.name):
            continue
        table = Path(entry.name).stem.lower()
        if not rules.allows(None, table):
            continue
        path = Path(entry.path).resolve()
        if path.parent != directory.resolve():
            continue  # a link to a file elsewhere: only the directory's own files are tables
        if table in files:
            raise InvalidInput(
                f"files source '{source}': two files are named '{table}' ({files[table].name}, {entry.name}); "
                "rename one or exclude it"
            )
        files[table] = path
    return files


def _is_data_file(name: str) -> bool:
    return Path(name).suffix.lower() in READERS and not name.startswith(".")


def _estimate_rows(path: Path, size: int) -> int | None:
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as parquet

            return int(parquet.ParquetFile(path).metadata.num_rows)
        except (OSError, ValueError, ImportError):
            return None
    sample_bytes = 4 * 1024 * 1024
    try:
        with path.open("rb") as file:
            sample = file.read(sample_bytes)
    except OSError:
        return None
    lines = sample.count(b"\n") + (1 if sample and not sample.endswith(b"\n") else 0)
    header = 1 if path.suffix.lower() in (".csv", ".tsv") else 0
    if size <= sample_bytes or not sample:
        return max(0, lines - header)
    return max(0, round(lines * size / len(sample)) - header)


def unique_columns(names: Sequence[str], types: Sequence[str]) -> list[Column]:
    """Column names made unique (a join of two tables has two id columns): id, id_2."""
    seen: set[str] = set()
    columns = []
    for name, kind in zip(names, types, strict=True):
        unique, count = name, 1
        while unique in seen:
            count += 1
            unique = f"{name}_{count}"
        seen.add(unique)
        columns.append(Column(unique, kind))
    return columns


def bounded_statement(text: str, types: Sequence[str], limit: int, max_rows: int) -> str:
    """The guarded statement wrapped so that DuckDB replaces every value larger than `limit` bytes by
    null (and says which it cut), and stops after max_rows + 1 rows. Columns are renamed by position,
    so duplicate names are fine; a projection keeps the statement's row order."""
    positions = ", ".join(f'"c{index}"' for index in range(len(types)))
    outputs, cut = [], []
    for index, kind in enumerate(types):
        column = f'q."c{index}"'
        if kind in _FIXED_SIZE:
            outputs.append(column)
            continue
        size = f"octet_length({column})" if kind == "bytea" else f"strlen(CAST({column} AS VARCHAR))"
        outputs.append(f"CASE WHEN {size} <= {limit} THEN {column} END")
        cut.append(f"CASE WHEN {size} > {limit} THEN {index} END")
    flags = f"list_distinct([{', '.join(cut)}])" if cut else "[]::INTEGER[]"  # list_distinct drops nulls
    return (
        f"SELECT {', '.join(outputs)}, {flags} AS cut_values\n"
        f"FROM (\n{text}\n) AS q({positions})\nLIMIT {max_rows + 1}"
    )


def _fetch_bounded(
    cursor: duckdb.DuckDBPyConnection, columns: Sequence[Column], max_rows: int, max_bytes: int
) -> tuple[list[tuple[Any, ...]], str | None, set[int]]:
    """Rows until max_rows or max_bytes (their JSON size, names included). Every value arrives at most
    `max_bytes` long (DuckDB cut the rest); the batch size shrinks so that one batch of the largest rows
    seen so far stays within the bytes still allowed."""
    rows: list[tuple[Any, ...]] = []
    cut: set[int] = set()
    keys = sum(len(column.name.encode()) + 4 for column in columns)
    size = 0
    widest = 64  # bytes of the largest row seen so far
    batch_rows = max(1, min(_FETCH_CHUNK, _FETCH_VALUES // max(1, len(columns))))
    while len(rows) <= max_rows:
        wanted = max(1, min(batch_rows, max_rows + 1 - len(rows), (max_bytes - size) // widest + 1))
        batch = cursor.fetchmany(wanted)
        for record in batch:
            values, cut_here = tuple(record[:-1]), record[-1]
            cut.update(cut_here or ())
            row_size = 2 + keys + sum(map(_json_bytes, values))
            widest = max(widest, row_size)
            size += row_size
            if size > max_bytes:
                return rows, "bytes", cut
            rows.append(values)
        if len(batch) < wanted:
            break
    if len(rows) > max_rows:
        return rows[:max_rows], "rows", cut
    return rows, None, cut


def _interrupt(cursor: duckdb.DuckDBPyConnection) -> None:
    """Stop the query running on `cursor`; one that has just ended (its cursor closed) needs nothing."""
    with contextlib.suppress(duckdb.Error):
        cursor.interrupt()


def _timed_out(timeout: float) -> Timeout:
    return Timeout(
        f"the query was cancelled after the {timeout:g} s timeout; narrow it (WHERE, fewer joins, "
        f"aggregate first) or pass a larger timeout (at most {MAX_TIMEOUT_SECONDS})"
    )


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
