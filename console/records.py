"""What the operator console and the read API show: the query log, the audit trail, the sources with
their tables, profiles and rows, the live sessions and the server's numbers. Reads only, by name and
by bound value: nothing here renders a key, a DSN (redact_url) or a session value."""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from core.errors import AnalyticsError, InvalidInput, NotFound
from mcp_server import metrics
from mcp_server.auth import Identity
from mcp_server.observability import latency_percentiles
from mcp_server.runtime import Runtime
from sessions.datasets import json_ready
from warehouse import catalog, profiles
from warehouse import query as queries
from warehouse.engines.active import run_on
from warehouse.sources import MAIN

MAX_LIMIT = 500  # rows of one page, at most (API and console alike)
DEFAULT_LIMIT = 50
MAX_OFFSET = 1_000_000
MAX_FILTER_CHARS = 200  # a filter value (user, source, outcome, column value)
MAX_FILTERS = 10  # column equality filters on one read of a table
ROWS_TIMEOUT_SECONDS = 30.0
RANKED_QUERIES = 10  # slowest and most frequent queries shown
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")  # user ids, outcomes and events as the server writes them


@dataclass(frozen=True)
class Page:
    """`limit` rows from row `offset` (0-based)."""

    limit: int = DEFAULT_LIMIT
    offset: int = 0

    @classmethod
    def of(cls, limit: Any = None, offset: Any = None) -> Page:
        limit = DEFAULT_LIMIT if limit in (None, "") else _integer(limit, "limit")
        offset = 0 if offset in (None, "") else _integer(offset, "offset")
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit is between 1 and {MAX_LIMIT}; ask for the next rows with offset")
        if not 0 <= offset <= MAX_OFFSET:
            raise InvalidInput(f"offset is between 0 and {MAX_OFFSET:,}; narrow the filters instead")
        return cls(limit, offset)

    def shaped(self, rows: list[Any]) -> dict[str, Any]:
        """One page of `rows` (fetched with limit + 1, so a next page is known without counting)."""
        more = len(rows) > self.limit
        return {
            "limit": self.limit,
            "offset": self.offset,
            "next_offset": self.offset + self.limit if more else None,
            "previous_offset": max(0, self.offset - self.limit) if self.offset else None,
        }


def _integer(value: Any, name: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"{name} must be a whole number, e.g. {name}=50") from None


def parse_time(value: Any, name: str) -> dt.datetime | None:
    """An ISO 8601 date or date-time (UTC when no offset is given); None for none."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"{name} must be an ISO date or date-time such as 2025-01-31 or 2025-01-31T12:00:00Z"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _name_filter(value: Any, name: str) -> str | None:
    if value in (None, ""):
        return None
    text = str(value).strip()
    if not _NAME.match(text):
        raise InvalidInput(f"{name} is 1-64 letters, digits or _.@- (as the log writes it)")
    return text


@dataclass(frozen=True)
class LogFilter:
    """Filters of the query log (`kind` is the source) and the audit trail (`kind` is the event)."""

    user: str | None = None
    kind: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @classmethod
    def of(cls, values: Mapping[str, Any], kind: str) -> LogFilter:
        return cls(
            _name_filter(values.get("user"), "user"),
            _name_filter(values.get(kind), kind),
            _name_filter(values.get("outcome"), "outcome"),
            parse_time(values.get("since"), "since"),
            parse_time(values.get("until"), "until"),
        )

    def arguments(self) -> tuple[Any, ...]:
        return (self.user, self.kind, self.outcome, self.since, self.until)

    def query(self, kind: str) -> dict[str, str]:
        """The filters as URL query parameters (for the console's links to other pages)."""
        pairs = {
            "user": self.user,
            kind: self.kind,
            "outcome": self.outcome,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
        }
        return {name: value for name, value in pairs.items() if value}


# --- query log and audit trail ----------------------------------------------------------------------


async def query_log(runtime: Runtime, filters: LogFilter, page: Page) -> dict[str, Any]:
    """One page of the query log, newest first: who, where, outcome, duration, rows, the query with its
    literals shown as ? (never a parameter value)."""
    rows = await runtime.db.fetch_named(
        "console_query_log", *filters.arguments(), page.limit + 1, page.offset, read=False
    )
    entries = [
        {
            "id": row["id"],
            "logged_at": row["logged_at"].isoformat(),
            "user_id": row["user_id"],
            "source": row["source"],
            "outcome": row["outcome"],
            "cached": row["cached"],
            "duration_ms": round(row["duration_ms"], 3),
            "row_count": row["row_count"],
            "query_hash": row["query_hash"],
            "query": row["query_text"],
        }
        for row in rows[: page.limit]
    ]
    return {"entries": entries, **page.shaped(rows)}


async def ranked_queries(runtime: Runtime, filters: LogFilter, most: int = RANKED_QUERIES) -> dict[str, Any]:
    """The slowest (by longest run) and most frequent queries under the same filters."""
    rows = await runtime.db.fetch_named("console_query_groups", *filters.arguments(), most, read=False)
    ranked: dict[str, list[dict[str, Any]]] = {"slowest": [], "frequent": []}
    for row in rows:
        ranked[row["ranking"]].append(
            {
                "query_hash": row["query_hash"],
                "query": row["query_text"],
                "source": row["source"],
                "calls": row["calls"],
                "mean_ms": round(row["mean_ms"], 3),
                "p95_ms": round(row["p95_ms"], 3),
                "max_ms": round(row["max_ms"], 3),
                "failures": row["failures"],
            }
        )
    return ranked


async def audit_log(runtime: Runtime, filters: LogFilter, page: Page) -> dict[str, Any]:
    """One page of the audit trail, newest first: who did what (key ids, never keys), and refusals."""
    rows = await runtime.db.fetch_named(
        "console_audit_log", *filters.arguments(), page.limit + 1, page.offset, read=False
    )
    entries = [
        {
            "id": row["id"],
            "logged_at": row["logged_at"].isoformat(),
            "event": row["event"],
            "user_id": row["user_id"],
            "key_id": row["key_id"],
            "tool": row["tool"],
            "session_id": row["session_id"],
            "duration_ms": None if row["duration_ms"] is None else round(row["duration_ms"], 3),
            "outcome": row["outcome"],
        }
        for row in rows[: page.limit]
    ]
    return {"entries": entries, **page.shaped(rows)}


# --- sources ----------------------------------------------------------------------------------------


async def sources(runtime: Runtime) -> list[dict[str, Any]]:
    """Every source: engine, description, URL without its password, when profiled, tables with row estimates."""
    times = await profiles.profiled_times(runtime.db)
    listed = []
    for source in runtime.sources.registry:
        entry: dict[str, Any] = {
            "name": source.name,
            "engine": "postgresql",
            "description": source.description,
            "url": source.redacted_url,  # the password (and password-like options) already ***
            "profiled_at": times.get(source.name),
            "error": None,
        }
        try:
            entry["tables"] = [
                {"name": table["name"], "row_estimate": table["row_estimate"]}
                for table in await tables(runtime, source.name)
            ]
            if source.name != MAIN:
                entry["engine"] = runtime.sources.engine_now(source.name).kind
        except AnalyticsError as error:  # one source down never hides the others
            entry["tables"], entry["error"] = [], error.message
        listed.append(entry)
    return listed


async def tables(runtime: Runtime, source: str) -> list[dict[str, Any]]:
    """The tables of a source with their columns (name and type) and row estimates."""
    name = runtime.sources.source(source).name  # NotFound lists the sources
    if name == MAIN:
        return [
            {
                "name": table.name,
                "row_estimate": table.estimated_rows,
                "columns": [{"name": c.name, "type": c.data_type} for c in table.columns],
            }
            for table in await catalog.describe_tables(runtime.db)
        ]
    engine = runtime.sources.engine_now(name)
    described = []
    for table in await engine.tables():
        columns = await engine.columns(table.name)
        described.append(
            {
                "name": table.name,
                "row_estimate": table.row_estimate,
                "columns": [{"name": c.name, "type": c.type} for c in columns],
            }
        )
    return described


async def source_profiles(runtime: Runtime, source: str) -> list[dict[str, Any]]:
    """The stored profiles of a source's tables (the built-in database: its catalog, unprofiled)."""
    name = runtime.sources.source(source).name
    if name == MAIN:
        return [
            {
                "table": table["name"],
                "row_count": table["row_estimate"],
                "profiled_at": None,
                "columns": [{**column, "role": None} for column in table["columns"]],
            }
            for table in await tables(runtime, MAIN)
        ]
    return await profiles.stored(runtime.db, name)


async def freshness(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Per source: does it answer (within 2 s), its data version and when it was profiled."""
    times = await profiles.profiled_times(runtime.db)
    states: dict[str, dict[str, Any]] = {}
    for source in runtime.sources.registry:
        state: dict[str, Any] = {"profiled_at": times.get(source.name)}
        try:
            if source.name == MAIN:
                version: Any = await asyncio.wait_for(runtime.db.data_version(), timeout=2)
            else:
                engine = runtime.sources.engine_now(source.name)
                version = await asyncio.wait_for(engine.data_version(), timeout=2)
            state.update(status="ok", data_version=None if version is None else str(version))
        except Exception as error:  # noqa: BLE001 - any failure means "down", named by its type
            state.update(status=f"down ({type(error).__name__})", data_version=None)
        states[source.name] = state
    return states


# --- rows of a table --------------------------------------------------------------------------------


def _quoter(engine_kind: str) -> Any:
    if engine_kind == "mysql":
        return lambda name: "`" + name.replace("`", "``") + "`"
    return catalog.quote_identifier


@dataclass(frozen=True)
class RowFilter:
    """Which rows of a table: column = value pairs, and a [since, until) range on one date column."""

    equals: tuple[tuple[str, str], ...] = ()
    date_column: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    order_by: str | None = None

    @classmethod
    def of(
        cls,
        pairs: list[str],
        date_column: str | None,
        since: Any,
        until: Any,
        order_by: str | None,
    ) -> RowFilter:
        if len(pairs) > MAX_FILTERS:
            raise InvalidInput(f"at most {MAX_FILTERS} filters; narrow with fewer columns")
        equals = []
        for pair in pairs:
            column, separator, value = pair.partition(":")
            if not separator or not column:
                raise InvalidInput("a filter is column:value, e.g. filter=account_type:Basic")
            if len(value) > MAX_FILTER_CHARS:
                raise InvalidInput(f"a filter value is at most {MAX_FILTER_CHARS} characters")
            equals.append((column, value))
        found = cls(
            tuple(equals),
            date_column or None,
            parse_time(since, "since"),
            parse_time(until, "until"),
            order_by,
        )
        if (found.since or found.until) and not found.date_column:
            raise InvalidInput("since and until need date_column: the column the range applies to")
        return found


async def table_rows(
    runtime: Runtime, source: str, table: str, which: RowFilter, page: Page
) -> dict[str, Any]:
    """One page of a table's rows: names checked against the source's catalog, values bound, run through
    the source's read-only guard like any agent query."""
    name = runtime.sources.source(source).name
    known = {entry["name"]: entry for entry in await tables(runtime, name)}
    if table not in known:
        shown = ", ".join(sorted(known)[:20]) or "none"
        raise NotFound(f"table '{table[:60]}' is not in source '{name}'; tables: {shown}")
    columns = [column["name"] for column in known[table]["columns"]]
    kind = "postgresql" if name == MAIN else runtime.sources.engine_now(name).kind
    quote = _quoter(kind)

    def checked(column: str) -> str:
        if column not in columns:
            raise InvalidInput(
                f"column '{column[:40]}' is not in {name}.{table[:60]}; columns: {', '.join(columns[:30])}"
            )
        return str(quote(column))

    conditions, parameters = [], {}
    for index, (column, value) in enumerate(which.equals):
        conditions.append(f"{checked(column)} = %(value_{index})s")
        parameters[f"value_{index}"] = value
    if which.date_column is not None:
        date_column = checked(which.date_column)
        if which.since is not None:
            conditions.append(f"{date_column} >= %(since)s")
            parameters["since"] = _moment(which.since, kind)
        if which.until is not None:
            conditions.append(f"{date_column} < %(until)s")
            parameters["until"] = _moment(which.until, kind)
    relation = ".".join(quote(part) for part in table.split("."))
    order = checked(which.order_by) if which.order_by else quote(columns[0])
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    sql = f"SELECT * FROM {relation}{where} ORDER BY {order} LIMIT {page.limit + 1} OFFSET {page.offset}"
    max_bytes = runtime.settings.query_max_bytes
    if name == MAIN:
        result = await queries.run_select(
            runtime.db,
            sql,
            parameters,
            timeout=ROWS_TIMEOUT_SECONDS,
            max_rows=page.limit + 1,
            max_bytes=max_bytes,
        )
    else:
        async with runtime.sources.use(name) as engine:
            statement = await engine.guarded(sql, parameters)
            result = await run_on(
                engine,
                statement,
                parameters,
                shares=runtime.db.shares,
                timeout=ROWS_TIMEOUT_SECONDS,
                max_rows=page.limit + 1,
                max_bytes=max_bytes,
            )
    records = result.records()
    return {
        "source": name,
        "table": table,
        "columns": [column.name for column in result.columns],
        "rows": json_ready(records[: page.limit]),
        "truncated_by": result.truncated_by if result.truncated_by != "rows" else None,
        **page.shaped(records),
    }


def _moment(moment: dt.datetime, kind: str) -> str:
    # PostgreSQL binds the ISO text to the column's type; MySQL and DuckDB compare it as a naive UTC time.
    if kind == "postgresql":
        return moment.isoformat()
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ")


# --- sessions ---------------------------------------------------------------------------------------


async def sessions(runtime: Runtime, admin: Identity, page: Page) -> dict[str, Any]:
    """Live sessions of every user, newest first: owner, grant, size, expiry and key names (the names
    only: no value is read or decrypted)."""
    listed = (await runtime.services.session_store.list_sessions(admin, all_users=True))["sessions"]
    window = listed[page.offset : page.offset + page.limit + 1]
    shown = [
        {
            "session_id": item["session_id"],
            "owner_id": item["owner_id"],
            "data_source": item["data_source"],
            "status": item["status"],
            "created_at": item["created_at"],
            "expires_at": item["expires_at"],
            "size_bytes": item["size_bytes"],
            "granted_to": item["granted_to"],
            "keys": [{"key": key["key"], "kind": key["kind"]} for key in item["keys"]],
        }
        for item in window[: page.limit]
    ]
    return {"sessions": shown, "total": len(listed), **page.shaped(window)}


# --- numbers ----------------------------------------------------------------------------------------


class CallRate:
    """Tool calls per minute, from the Prometheus counter: the increase since a sample a minute or more
    old (or since the first sample, when the console is younger than that)."""

    def __init__(self, window_seconds: float = 60.0) -> None:
        self.window = window_seconds
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=256)

    def observe(self, total: float, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        while len(self.samples) > 1 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()  # keep one sample at least `window` old
        self.samples.append((now, total))
        first_time, first_total = self.samples[0]
        if now - first_time <= 0:
            return None
        return round((total - first_total) * 60 / (now - first_time), 2)


def _counter(registry: CollectorRegistry, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (sample.labels, sample.value)
        for family in registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


def numbers(runtime: Runtime, rate: CallRate) -> dict[str, Any]:
    """Calls per minute, per-tool calls, errors and p50/p95/p99, error rate and cache hit ratio: the same
    series /metrics serves, read from this instance's registry."""
    registry = runtime.metrics
    calls: dict[str, dict[str, float]] = {}
    for labels, value in _counter(registry, "analytics_mcp_tool_calls_total"):
        per_tool = calls.setdefault(labels["tool"], {"calls": 0, "errors": 0})
        per_tool["calls"] += value
        if labels["outcome"] != "ok":
            per_tool["errors"] += value
    total = sum(tool["calls"] for tool in calls.values())
    errors = sum(tool["errors"] for tool in calls.values())
    hits = misses = 0.0
    for labels, value in _counter(registry, "analytics_mcp_cache_events_total"):
        if labels["outcome"] == "hit":
            hits += value
        elif labels["outcome"] == "miss":
            misses += value
    latency = latency_percentiles(metrics.tool_durations(registry))
    tools = [
        {
            "tool": tool,
            "calls": int(counts["calls"]),
            "errors": int(counts["errors"]),
            **{key: latency.get(tool, {}).get(key) for key in ("p50_ms", "p95_ms", "p99_ms")},
        }
        for tool, counts in sorted(calls.items())
        if counts["calls"]
    ]
    return {
        "calls": int(total),
        "calls_per_minute": rate.observe(total),
        "error_rate": round(errors / total, 4) if total else None,
        "cache_hit_ratio": round(hits / (hits + misses), 4) if hits + misses else None,
        "tools": tools,
    }


async def health(runtime: Runtime) -> tuple[int, dict[str, Any]]:
    """What /health answers: the dependencies, the background writers, 503 when one dependency is down."""
    components = await runtime.health()
    failing = [name for name, state in components.items() if state != "ok"]
    writers = runtime.services.writer_states()
    lagging = [name for name, state in writers.items() if state["status"] != "ok"]
    status = "unavailable" if failing else "degraded" if lagging else "ok"
    body = {"status": status, "components": components, "failing": failing, "writers": json_ready(writers)}
    return (503 if failing else 200), body
