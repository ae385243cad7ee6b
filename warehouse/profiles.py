"""Profiles (metadata cards) of every source's tables: per table its rows and the sample profiled, per
column its type, null share, distinct values, range, top values, keys and a guessed role; computed by
each engine's `profile` in its own dialect, stored in mcp_internal.source_profiles, run in the background."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import functools
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from warehouse.db import Database

log = logging.getLogger(__name__)

SAMPLE_ROWS = 100_000  # tables with more rows are profiled on a random sample of this many
TOP_VALUES = 5
PROFILE_TIMEOUT = 60.0  # seconds per statement
# Types whose columns get distinct counts, min and max (the engine-neutral names of warehouse.query).
TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "char", "name", "citext"})
SCALAR_TYPES = frozenset(
    {"bool", "int2", "int4", "int8", "numeric", "float4", "float8", "date", "time", "timestamp"}
    | {"timestamptz", "interval"}
    | TEXT_TYPES
)
_NUMBERS = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8"})
_TIMES = frozenset({"date", "timestamp", "timestamptz"})
_LONGEST_TEXT = 200
_YES_NO = frozenset({"y", "n", "yes", "no", "true", "false", "t", "f"})


@dataclass
class ColumnStats:
    """One column's figures as an engine measured them (on the sample when the table was sampled)."""

    name: str
    type: str
    non_null: int
    distinct: int | None = None
    min: Any = None
    max: Any = None
    top_values: list[tuple[Any, int]] = field(default_factory=list)
    key: str | None = None  # "primary" or "unique"
    references: str | None = None  # "table.column" of a foreign key


def profiled(column_type: str) -> bool:
    """Whether a column of this type gets distinct, min, max and top values."""
    return column_type in SCALAR_TYPES


def aggregate_sql(
    quote: Callable[[str], str],
    columns: Sequence[tuple[str, str]],
    relation: str,
    *,
    bool_range: tuple[str, str] = ("min", "max"),
) -> str:
    """One statement over `relation`: count(*), then per column count, and for scalar types count of
    distinct values, min and max (`bool_range` for booleans: PostgreSQL has no min(boolean)).
    Identifiers come from the catalog and are quoted by `quote`."""
    outputs = ["count(*)"]
    for name, column_type in columns:
        column = quote(name)
        outputs.append(f"count({column})")
        if profiled(column_type):
            low, high = bool_range if column_type == "bool" else ("min", "max")
            outputs += [f"count(DISTINCT {column})", f"{low}({column})", f"{high}({column})"]
    return f"SELECT {', '.join(outputs)} FROM {relation}"


def top_values_sql(quote: Callable[[str], str], name: str, relation: str) -> str:
    column = quote(name)
    return (
        f"SELECT {column}, count(*) AS n FROM {relation} WHERE {column} IS NOT NULL "
        f"GROUP BY {column} ORDER BY n DESC, {column} LIMIT {TOP_VALUES}"
    )


def read_aggregate(row: Sequence[Any], columns: Sequence[tuple[str, str]]) -> tuple[int, list[ColumnStats]]:
    """The aggregate statement's one row as (rows counted, each column's figures)."""
    values = iter(row)
    counted = int(next(values))
    stats = []
    for name, column_type in columns:
        column = ColumnStats(name, column_type, int(next(values)))
        if profiled(column_type):
            column.distinct = int(next(values))
            column.min, column.max = next(values), next(values)
        stats.append(column)
    return counted, stats


def wants_top_values(column: ColumnStats) -> bool:
    """Top values say something when values repeat (not for a unique column or floats)."""
    return (
        profiled(column.type)
        and column.type not in ("float4", "float8")
        and column.distinct is not None
        and 0 < column.distinct < column.non_null
    )


def guess_role(column: ColumnStats, sample_size: int) -> str:
    """identifier, timestamp, amount, category, flag or free text, from the type, name and figures."""
    name = column.name.lower()
    distinct = column.distinct
    if _is_flag(column):
        return "flag"
    if column.type in _TIMES or name.endswith(("_at", "_date", "_time", "timestamp")):
        return "timestamp"
    unique = distinct is not None and column.non_null > 0 and distinct == column.non_null
    if column.key is not None or column.references is not None or column.type == "uuid":
        return "identifier"
    if name == "id" or name.endswith(("_id", "_key", "_uuid", "_code")):
        return "identifier"
    if column.type in ("int2", "int4", "int8") and unique and sample_size > 20:
        return "identifier"
    if column.type in _NUMBERS:
        return "amount"
    if column.type in TEXT_TYPES:
        if distinct is not None and (distinct <= 50 or distinct <= 0.05 * max(column.non_null, 1)):
            return "category"
        if unique and _short(column):
            return "identifier"
        return "free text"
    return "category" if distinct is not None and distinct <= 50 else "free text"


def _is_flag(column: ColumnStats) -> bool:
    """Booleans, and two-valued 0/1 or yes/no columns."""
    if column.type == "bool":
        return True
    if column.distinct is None or column.distinct > 2 or column.non_null == 0:
        return False
    if column.type in ("int2", "int4", "int8"):
        return _zero_one(column)
    if column.type in TEXT_TYPES:
        values = {str(column.min).lower(), str(column.max).lower()}
        return values <= _YES_NO or column.name.lower().startswith(("is_", "has_"))
    return False


def _zero_one(column: ColumnStats) -> bool:
    try:
        return {float(column.min), float(column.max)} <= {0.0, 1.0}
    except (TypeError, ValueError):
        return False


def _short(column: ColumnStats) -> bool:
    return all(isinstance(v, str) and len(v) <= 40 and " " not in v for v in (column.min, column.max))


def plain(value: Any) -> Any:
    """A measured value as JSON: numbers, ISO dates and times, text cut at 200 characters."""
    if value is None or isinstance(value, (bool, int, str)):
        return value[:_LONGEST_TEXT] if isinstance(value, str) else value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None
    return str(value)[:_LONGEST_TEXT]


def table_profile(
    table: str, row_count: int, sample_size: int, columns: Sequence[ColumnStats]
) -> dict[str, Any]:
    """The profile of one table as stored and answered."""
    described = []
    for column in columns:
        described.append(
            {
                "name": column.name,
                "type": column.type,
                "null_share": 1 - column.non_null / sample_size if sample_size else 0.0,
                "distinct": column.distinct,
                "min": plain(column.min),
                "max": plain(column.max),
                "top_values": [{"value": plain(v), "count": int(n)} for v, n in column.top_values],
                "key": column.key,
                "references": column.references,
                "role": guess_role(column, sample_size),
            }
        )
    return {
        "table": table,
        "row_count": row_count,
        "sample_size": sample_size,
        "sampled": sample_size < row_count,
        "columns": described,
    }


# --- storage (mcp_internal.source_profiles) ---------------------------------------------------------


async def store(db: Database, source: str, profiles: Sequence[Mapping[str, Any]]) -> dt.datetime:
    """Replace the stored profiles of `source` by `profiles`; the time they were stored."""
    from warehouse import sql

    async with db.connection() as conn, conn.transaction():
        profiled_at: dt.datetime = await conn.fetchval("SELECT now()")
        await conn.execute(sql.load("source_profiles_prune"), source, [p["table"] for p in profiles])
        for profile in profiles:
            await conn.execute(
                sql.load("source_profiles_upsert"), source, profile["table"], json.dumps(profile)
            )
    return profiled_at


async def stored(db: Database, source: str) -> list[dict[str, Any]]:
    """The stored profiles of `source`, each with its `profiled_at` (ISO), in table order."""
    rows = await db.fetch_named("source_profiles_list", source, read=False)
    return [{**_json(row["profile"]), "profiled_at": row["profiled_at"].isoformat()} for row in rows]


async def profiled_times(db: Database) -> dict[str, str]:
    """When each source's profiles were last stored (ISO), by source name."""
    rows = await db.fetch_named("source_profiles_times", read=False)
    return {row["source"]: row["profiled_at"].isoformat() for row in rows}


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


# --- running ----------------------------------------------------------------------------------------


async def profile_tables(engine: Any, *, sample_rows: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """Every allowed table of the engine's source, profiled one after the other."""
    return [await engine.profile(table.name, sample_rows) for table in await engine.tables()]


class Sources(Protocol):
    """What the profiler needs of the running sources (warehouse.engines.active.ActiveSources, which
    imports the engines that import this module: named by its shape, not imported)."""

    @property
    def registry(self) -> Any: ...

    def source(self, name: str | None) -> Any: ...

    def has_engine(self, name: str) -> bool: ...

    def use(self, name: str) -> AbstractAsyncContextManager[Any]: ...


class Profiler:
    """Profiles sources in the background (on start and when the sources file adds or changes one) and
    on demand; a profile run holds one of the source's connections, never a query's lock."""

    def __init__(self, db: Database, sources: Sources, *, sample_rows: int = SAMPLE_ROWS) -> None:
        self.db = db
        self.sources = sources
        self.sample_rows = sample_rows
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def schedule(self, names: Iterable[str]) -> None:
        """Profile these sources in the background (a run already going for one is replaced)."""
        for name in names:
            if name not in self.sources.registry or not self.sources.has_engine(name):
                continue
            running = self._tasks.pop(name, None)
            if running is not None:
                running.cancel()
            task = asyncio.create_task(self._background(name), name=f"profile-{name}")
            self._tasks[name] = task
            task.add_done_callback(functools.partial(self._forget, name))

    def _forget(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]

    async def _background(self, name: str) -> None:
        try:
            await self.refresh(name)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - a source that cannot be profiled is logged, not fatal
            message = getattr(error, "message", None) or type(error).__name__
            log.warning("profiling source '%s' failed: %s", name, str(message).splitlines()[0])

    async def refresh(self, name: str) -> tuple[str, list[dict[str, Any]]]:
        """Profile source `name` now and store it: (its source name, the stored profiles)."""
        source = self.sources.source(name)
        async with self.sources.use(source.name) as engine:
            profiles = await profile_tables(engine, sample_rows=self.sample_rows)
        profiled_at = await store(self.db, source.name, profiles)
        return source.name, [{**p, "profiled_at": profiled_at.isoformat()} for p in profiles]

    async def wait(self) -> None:
        """Until the background runs scheduled so far end (tests, shutdown)."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
