"""query_database: one read-only SELECT with bound parameters, cached, logged, answered as JSON plus a markdown table."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastmcp.tools.base import ToolResult
from mcp.types import TextContent
from pydantic import Field

from core.errors import InvalidInput
from mcp_server import logs
from mcp_server.app import App
from mcp_server.auth import ANALYST, Identity
from mcp_server.cache import Cache
from mcp_server.calls import current_identity
from mcp_server.pipelines import one_trip
from mcp_server.responses import RESPONSE_MAX_BYTES
from mcp_server.runtime import Runtime
from sessions.access import KeyName, SessionId
from sessions.datasets import AS_TEXT, json_ready
from warehouse import query as queries
from warehouse.engines import GuardedStatement, QueryEngine
from warehouse.engines.active import run_on
from warehouse.engines.main import MainEngine
from warehouse.labels import request_label
from warehouse.sources import MAIN
from warehouse.sqlguard import MAX_QUERY_CHARS

CACHE_SECONDS = 300
PREVIEW_ROWS = 10  # a save_as preview: enough to see the shape, the dataset holds the rest
PREVIEW_MAX_BYTES = 16_000  # a save_as preview's rows, as JSON
PREVIEW_TEXT_CHARS = 200  # longer texts in a preview are shortened, ending in …
TEXT_CELL_CHARS = 80
# The official MCP client refuses a server-sent event over 1 MiB: a whole response (JSON rows, the
# markdown table, the JSON-RPC envelope) stays under RESPONSE_MAX_BYTES, and the rows alone under
# INLINE_MAX_BYTES whatever QUERY_MAX_BYTES says; the markdown table is shortened to fit what is left.
DEFAULT_ROWS = 100  # a page sized for a model's context; max_rows asks for more
INLINE_MAX_BYTES = 900_000

Scalar = str | int | float | bool | None
ParameterValue = Scalar | list[Scalar]


def register(app: App) -> None:
    runtime = app.runtime
    cache = Cache(runtime, "query", CACHE_SECONDS)
    engines = Engines(runtime, MainEngine(runtime.db, label=lambda: request_label(logs.request_id_var.get())))

    @app.tool(roles=ANALYST, annotations={"readOnlyHint": True, "openWorldHint": False})
    async def query_database(
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_QUERY_CHARS,
                description="One read-only SELECT (or WITH ... SELECT). Values go in %(name)s placeholders.",
            ),
        ],
        parameters: Annotated[
            dict[str, ParameterValue],
            Field(
                description="Values for the %(name)s placeholders, e.g. {'min_age': 30}; never interpolated"
            ),
        ] = {},  # noqa: B006 - pydantic copies it; the contract's default is {}
        timeout: Annotated[
            float, Field(gt=0, le=queries.MAX_TIMEOUT_SECONDS, description="statement timeout in seconds")
        ] = 30,
        session_id: Annotated[
            SessionId | None, Field(description="with save_as: store the full result in this session")
        ] = None,
        save_as: Annotated[
            KeyName | None, Field(description="dataset name in the session; only a preview comes back")
        ] = None,
        max_rows: Annotated[
            int, Field(ge=1, description="rows to return (default 100; QUERY_MAX_ROWS_CAP is the most)")
        ] = DEFAULT_ROWS,
        source: Annotated[
            str,
            Field(
                min_length=1,
                max_length=64,
                description="the data source to query (list_sources); main is the built-in database",
            ),
        ] = MAIN,
    ) -> ToolResult:
        """Run one read-only SQL SELECT (in the source's SQL dialect) on a data source, by default the
        built-in database (customers, network_events, revenue); returns rows as JSON and a markdown table."""
        caller = current_identity()
        if (session_id is None) != (save_as is None):
            raise InvalidInput(
                "session_id and save_as go together: pass both to store the result, or neither"
            )
        name = runtime.sources.source(source).name  # NotFound lists the sources
        asked = Asked(runtime, caller, name, query, parameters, timeout)
        if session_id is not None and save_as is not None:
            answer = await _save_dataset(asked, engines, session_id, save_as)
        else:
            answer = await _select(asked, engines, cache, max_rows)
        text = _markdown(answer, RESPONSE_MAX_BYTES - _json_bytes(answer))
        return ToolResult(content=[TextContent(type="text", text=text)], structured_content=answer)


@dataclass(frozen=True)
class Asked:
    """One query_database call as every helper needs it: who asks what of which source, and for how long."""

    runtime: Runtime
    caller: Identity
    source: str
    query: str
    parameters: dict[str, Any]
    timeout: float


class Engines:
    """The engine of each source: main's own, the others' from the active sources (holding a slot)."""

    def __init__(self, runtime: Runtime, main: MainEngine) -> None:
        self.runtime, self.main = runtime, main

    def use(self, source: str) -> contextlib.AbstractAsyncContextManager[QueryEngine]:
        if source == MAIN:
            return contextlib.nullcontext(self.main)
        return self.runtime.sources.use(source)


async def _select(asked: Asked, engines: Engines, cache: Cache, max_rows: int) -> dict[str, Any]:
    """One path for every source: its engine's guard, one Redis round trip for the cached answer (keyed
    on the source's data version) and the caller's query seconds, the run, one more for the charge and
    the store."""
    _max_rows_within_cap(asked.runtime, max_rows)
    started = time.perf_counter()
    async with engines.use(asked.source) as engine:
        async with _failure_logged(asked, started):
            statement = await engine.guarded(asked.query, asked.parameters)
            # Read before the query and used for the store too: a load meanwhile cannot be cached stale.
            version = None if statement.volatile else await engine.data_version()
            key = None
            if version is not None:
                key = cache.key(_question(asked, statement, max_rows), f"{asked.source}:{version}")
            cached = await _before_run(asked, cache, key)  # a spent budget refuses the run
        if cached is not None:
            await _log(asked, started, cached["row_count"], "ok", True, statement.hash)
            return {**cached, "cached": True}
        max_bytes = min(asked.runtime.settings.query_max_bytes, INLINE_MAX_BYTES)
        result, spent = await _run(asked, engine, statement, max_rows, max_bytes)
    answer = _answer(result)
    await _after_run(asked, cache, spent, key, answer)
    return answer


@contextlib.asynccontextmanager
async def _failure_logged(asked: Asked, started: float) -> AsyncIterator[None]:
    """A refusal before the run (guard, budget, data version) goes to the query log with its outcome."""
    try:
        yield
    except Exception as error:
        await _log(asked, started, None, queries.outcome_of(error))
        raise


async def _before_run(asked: Asked, cache: Cache, key: str | None) -> Any | None:
    """The answer cached under `key` (None: a miss, or no key), else the caller's query seconds
    checked (RateLimited when spent): both read in one round trip."""
    seconds = asked.runtime.services.query_seconds
    parts = [(seconds.redis, lambda pipe: seconds.read(pipe, asked.caller.user_id))]
    if key is not None:
        parts.append((cache.redis, lambda pipe: cache.read(pipe, key)))
    budget, *cached = await one_trip(*parts)
    answer = cache.answer(cached[0]) if cached else None
    if answer is None:
        seconds.refuse_if_spent(budget)
    return answer


async def _after_run(asked: Asked, cache: Cache, spent: float, key: str | None, answer: Any) -> None:
    """The run's seconds charged and its answer stored under `key` (when given and not too large):
    one round trip."""
    seconds = asked.runtime.services.query_seconds
    payload = cache.encoded(answer) if key is not None else None
    parts = [(seconds.redis, lambda pipe: seconds.add(pipe, asked.caller.user_id, spent))]
    if key is not None and payload is not None:
        parts.append((cache.redis, lambda pipe: cache.write(pipe, key, payload)))
    charged, *stored = await one_trip(*parts)
    seconds.charged(charged)
    if stored:
        cache.written(stored[0])


def _answer(result: queries.QueryResult) -> dict[str, Any]:
    """A query's rows as the tool answers them, with the truncation flags and hints."""
    rows = json_ready(result.records())
    answer = {
        "rows": rows,
        "columns": [column.name for column in result.columns],
        "column_types": _column_types(result.columns, rows),
        "row_count": len(result.rows),
        "truncated": result.truncated,
        "cached": False,
    }
    if result.truncated:
        answer["truncated_by"] = result.truncated_by
        hints = []
        if result.truncated_by != "value":
            hints.append(
                f"only the first {len(result.rows):,} rows are shown ({result.truncated_by} limit); narrow "
                "the query (WHERE, GROUP BY, LIMIT) or pass session_id + save_as to store the full result"
            )
        answer["hint"] = "; ".join([*hints, *_cut_hint(answer, result)])
    return answer


def _max_rows_within_cap(runtime: Runtime, max_rows: int) -> None:
    cap = runtime.settings.query_max_rows_cap
    if max_rows > cap:
        raise InvalidInput(
            f"max_rows is at most {cap:,}; for more rows pass session_id + save_as to store the result as a dataset"
        )


def _question(asked: Asked, statement: GuardedStatement, max_rows: int) -> dict[str, Any]:
    """What the query cache keys on: the statement as the source's parser made it (never case-folded
    text) with every value bound to it, and the caller, so that no answer (nor its `cached` flag) ever
    reaches another user."""
    return {
        "database": asked.runtime.settings.database_url,  # hashed into the key: one cache per deployment
        "source": asked.source,
        "user": asked.caller.user_id,
        "sql": statement.canonical or statement.sql,
        "arguments": [asked.parameters.get(name) for name in statement.names],  # in the order they are bound
        "max_rows": max_rows,
    }


async def _run(
    asked: Asked, engine: QueryEngine, statement: GuardedStatement, max_rows: int, max_bytes: int
) -> tuple[queries.QueryResult, float]:
    """Run on `engine` within the caller's share of connections, logged; the result and the seconds it
    took (charged by the caller, with the next Redis work). A failed run is charged here."""
    started = time.perf_counter()
    try:
        result = await run_on(
            engine,
            statement,
            asked.parameters,
            shares=asked.runtime.db.shares,
            timeout=asked.timeout,
            max_rows=max_rows,
            max_bytes=max_bytes,
        )
    except BaseException as error:
        if isinstance(error, Exception):
            await _log(asked, started, None, queries.outcome_of(error), False, statement.hash)
        await asked.runtime.services.query_seconds.charge(asked.caller.user_id, time.perf_counter() - started)
        raise
    outcome = queries.outcome_of(None, result.truncated)
    await _log(asked, started, len(result.rows), outcome, False, result.query_hash)
    return result, time.perf_counter() - started


async def _save_dataset(asked: Asked, engines: Engines, session_id: str, save_as: str) -> dict[str, Any]:
    runtime, caller = asked.runtime, asked.caller
    limit, max_bytes = runtime.settings.dataset_max_rows, runtime.settings.dataset_max_bytes
    started = time.perf_counter()
    async with engines.use(asked.source) as engine:
        async with _failure_logged(asked, started):
            statement = await engine.guarded(asked.query, asked.parameters)
            await runtime.services.query_seconds.check(caller.user_id)
        result, spent = await _run(asked, engine, statement, limit, max_bytes)
    await runtime.services.query_seconds.charge(caller.user_id, spent)
    origin = {
        "tool": "query_database",
        "source": asked.source,
        "query": asked.query,
        "parameter_names": sorted(asked.parameters),
        "query_hash": result.query_hash,
        "truncated": result.truncated,
    }
    preview = _preview(result)
    row_count = len(result.rows)
    frame = queries.to_frame(result)
    result.rows.clear()  # the frame holds the values now: free the rows before the frame is encoded
    stored = await runtime.services.session_store.save_dataset(caller, session_id, save_as, frame, origin)
    del frame
    answer: dict[str, Any] = {
        "rows": preview,
        "columns": [column.name for column in result.columns],
        "column_types": _column_types(result.columns, preview),
        "row_count": len(preview),
        "truncated": result.truncated,
        "cached": False,
        "dataset": {
            "session_id": session_id,
            "name": stored.get("name", save_as),
            "rows": row_count,
            "shape": [row_count, len(result.columns)],
            "columns": stored.get("columns"),
            "size_bytes": stored.get("size_bytes"),
        },
        "hint": f"showing {len(preview)} of {row_count:,} rows (long texts shortened); the full result is "
        f"dataset '{save_as}' in session {session_id} (analyze_data / create_visualization can use it)",
    }
    if result.truncated:
        answer["truncated_by"] = result.truncated_by
    if result.truncated_by == "rows":
        answer["hint"] += f"; only the first {limit:,} rows were stored (the dataset cap)"
    elif result.truncated_by == "bytes":
        answer["hint"] += (
            f"; only the first {row_count:,} rows were stored (the dataset cap of {max_bytes:,} bytes): "
            "select fewer or narrower columns, or aggregate first"
        )
    answer["hint"] = "; ".join([answer["hint"], *_cut_hint(answer, result)])
    return answer


def _column_types(columns: list[queries.Column], rows: list[dict[str, Any]]) -> dict[str, str]:
    """PostgreSQL's type of each column; a numeric column some of whose values come back as text (a
    double would change them: json_ready) says so, e.g. "numeric (as text: exceeds float precision)"."""
    types = {}
    for column in columns:
        as_text = column.type == "numeric" and any(isinstance(row.get(column.name), str) for row in rows)
        types[column.name] = f"{column.type} ({AS_TEXT})" if as_text else column.type
    return types


def _cut_hint(answer: dict[str, Any], result: queries.QueryResult) -> list[str]:
    """Names the columns where PostgreSQL replaced values too large for the answer by null."""
    if not result.cut_columns:
        return []
    answer["cut_columns"] = list(result.cut_columns)
    return [
        f"values larger than {result.value_limit:,} bytes were replaced by null in column(s) "
        f"{', '.join(result.cut_columns)[:300]}; select a part of them (left(x, 1000), length(x))"
    ]


def _preview(result: queries.QueryResult) -> list[dict[str, Any]]:
    """The first rows as JSON, at most PREVIEW_ROWS and about PREVIEW_MAX_BYTES: long texts shortened."""
    names = [column.name for column in result.columns]
    rows: list[dict[str, Any]] = []
    size = 0
    for row in result.rows[:PREVIEW_ROWS]:
        record = {name: _shortened(json_ready(value)) for name, value in zip(names, row, strict=True)}
        size += _json_bytes(record)
        if rows and size > PREVIEW_MAX_BYTES:
            break
        rows.append(record)
    return rows


def _shortened(value: Any) -> Any:
    if isinstance(value, str) and len(value) > PREVIEW_TEXT_CHARS:
        return value[: PREVIEW_TEXT_CHARS - 1] + "…"
    if isinstance(value, list) and len(json.dumps(value, default=str)) > PREVIEW_TEXT_CHARS:
        return _shortened(json.dumps(value, default=str))
    return value


def _json_bytes(value: Any) -> int:
    """The size of `value` as JSON on the wire (UTF-8, no spaces)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode())


async def _log(
    asked: Asked,
    started: float,
    row_count: int | None,
    outcome: str,
    cached: bool = False,
    known_hash: str | None = None,
) -> None:
    if not known_hash:  # hashing scans the query: off the event loop, like the guard
        known_hash = await queries.in_guard_thread(queries.query_hash, asked.query)
    entry = queries.QueryLogEntry.of(
        user_id=asked.caller.user_id,
        query=asked.query,
        duration_ms=(time.perf_counter() - started) * 1000,
        row_count=row_count,
        outcome=outcome,
        cached=cached,
        known_hash=known_hash,
        source=asked.source,
    )
    await asked.runtime.services.query_log.put(entry)  # waits only while the log's queue is full: never drops


def _markdown(answer: dict[str, Any], budget: int = RESPONSE_MAX_BYTES) -> str:
    """The answer as a compact markdown table: far fewer tokens than the JSON for the same rows.

    At most `budget` bytes (as a JSON string): rows that do not fit are left out of the table, and
    the summary says so (the structured content has them all)."""
    columns = answer["columns"]
    lines: list[str] = []
    budget -= 2_000  # the summary line
    shown = 0
    if columns:
        lines.append("| " + " | ".join(_cell(name) for name in columns) + " |")
        lines.append("|" + "---|" * len(columns))
        budget -= sum(_json_bytes(line) for line in lines)
        for row in answer["rows"]:
            line = "| " + " | ".join(_cell(row.get(name)) for name in columns) + " |"
            budget -= _json_bytes(line)
            if budget < 0:
                break
            lines.append(line)
            shown += 1
    summary = f"{answer['row_count']} row{'s' if answer['row_count'] != 1 else ''}"
    if shown < len(answer["rows"]):
        summary += (
            f" (the table shows the first {shown:,}: a response is at most {RESPONSE_MAX_BYTES:,} bytes; "
            "the structured content has every row)"
        )
    if answer.get("cached"):
        summary += " (cached)"
    if answer.get("dataset"):
        dataset = answer["dataset"]
        summary += f"; saved dataset '{dataset['name']}' with shape {dataset['shape']}"
    if answer.get("hint"):
        summary += f"; {answer['hint']}"
    lines.append(summary)
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    text = text.replace("|", "\\|").replace("\n", " ").replace("\r", " ")
    return text if len(text) <= TEXT_CELL_CHARS else text[: TEXT_CELL_CHARS - 1] + "…"
