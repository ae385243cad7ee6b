"""query_database: one read-only SELECT with bound parameters, cached, logged, answered as JSON plus a markdown table."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

from fastmcp.tools.base import ToolResult
from mcp.types import TextContent
from pydantic import Field

from core.errors import InvalidInput
from mcp_server import logs
from mcp_server.app import App
from mcp_server.auth import ANALYST, Identity, current_identity
from mcp_server.cache import Cache
from mcp_server.runtime import Runtime
from sessions.access import KeyName, SessionId
from sessions.datasets import AS_TEXT, json_ready
from warehouse import query as queries
from warehouse.engines import GuardedStatement
from warehouse.engines.active import run_on
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
RESPONSE_MAX_BYTES = 1_000_000
DEFAULT_ROWS = 100  # a page sized for a model's context; max_rows asks for more
INLINE_MAX_BYTES = 900_000

Scalar = str | int | float | bool | None
ParameterValue = Scalar | list[Scalar]


def register(app: App) -> None:
    runtime = app.runtime
    cache = Cache(runtime, "query", CACHE_SECONDS)

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
        if session_id is not None and save_as is not None:
            answer = await _save_dataset(
                runtime, caller, query, parameters, timeout, session_id, save_as, source=name
            )
        elif name != MAIN:
            answer = await _select_source(runtime, cache, caller, name, query, parameters, timeout, max_rows)
        else:
            answer = await _select(runtime, cache, caller, query, parameters, timeout, max_rows)
        text = _markdown(answer, RESPONSE_MAX_BYTES - _json_bytes(answer))
        return ToolResult(content=[TextContent(type="text", text=text)], structured_content=answer)


async def _select(
    runtime: Runtime,
    cache: Cache,
    caller: Identity,
    query: str,
    parameters: dict[str, Any],
    timeout: float,
    max_rows: int,
) -> dict[str, Any]:
    _max_rows_within_cap(runtime, max_rows)
    started = time.perf_counter()
    cached = version = None
    ran = False  # _run logs its own outcome
    try:
        guarded = await queries.guard_in_thread(query, parameters)  # once: run_select reuses it
        question = _question(runtime, caller, guarded, parameters, max_rows)
        if guarded.checked.cacheable:
            # Read before the query and used for the store too: a load meanwhile cannot be cached stale.
            # On a server connection: the query role the query runs as cannot read mcp_internal.
            version, cached = await cache.lookup(question)
        if cached is None:
            ran = True
            result = await _run(
                runtime,
                caller,
                guarded,
                parameters,
                timeout,
                max_rows,
                min(runtime.settings.query_max_bytes, INLINE_MAX_BYTES),
            )
    except Exception as error:
        if not ran:
            await _log(runtime, caller, query, started, None, queries.outcome_of(error))
        raise
    if cached is not None:
        await _log(
            runtime, caller, query, started, cached["row_count"], "ok", cached=True, known_hash=guarded.hash
        )
        return {**cached, "cached": True}
    answer = _answer(result)
    if version is not None:
        await cache.put(question, answer, version)
    return answer


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


async def _select_source(
    runtime: Runtime,
    cache: Cache,
    caller: Identity,
    source: str,
    query: str,
    parameters: dict[str, Any],
    timeout: float,
    max_rows: int,
) -> dict[str, Any]:
    """query_database on a source other than main: its engine's guard, cached on its data version."""
    _max_rows_within_cap(runtime, max_rows)
    started = time.perf_counter()
    async with runtime.sources.use(source) as engine:
        try:
            statement = await engine.guarded(query, parameters)
            version = None if statement.volatile else await engine.data_version()
        except Exception as error:
            await _log(runtime, caller, query, started, None, queries.outcome_of(error), source=source)
            raise
        question = {
            "source": source,
            "user": caller.user_id,
            "sql": statement.canonical or statement.sql,
            "arguments": {name: parameters.get(name) for name in statement.names},
            "max_rows": max_rows,
        }
        key_version = f"{source}:{version}" if version is not None else None
        cached = await cache.get(question, key_version) if key_version is not None else None
        if cached is not None:
            await _log(
                runtime,
                caller,
                query,
                started,
                cached["row_count"],
                "ok",
                cached=True,
                known_hash=statement.hash or None,
                source=source,
            )
            return {**cached, "cached": True}
        max_bytes = min(runtime.settings.query_max_bytes, INLINE_MAX_BYTES)
        result = await _run(
            runtime, caller, statement, parameters, timeout, max_rows, max_bytes, source=source, engine=engine
        )
    answer = _answer(result)
    if key_version is not None:
        await cache.put(question, answer, key_version)
    return answer


def _question(
    runtime: Runtime,
    caller: Identity,
    guarded: queries.GuardedQuery,
    parameters: dict[str, Any],
    max_rows: int,
) -> dict[str, Any]:
    """What the query cache keys on: the statement as PostgreSQL parsed it (never case-folded text)
    with every value bound to it, and the caller, so that no answer (nor its `cached` flag) ever
    reaches another user."""
    return {
        "database": runtime.settings.database_url,  # hashed into the key: one cache per database
        "user": caller.user_id,
        "sql": guarded.checked.canonical,
        "arguments": guarded.bound.arguments(parameters),  # by position ($1, $2 ...), with their types
        "max_rows": max_rows,
    }


async def _run(
    runtime: Runtime,
    caller: Identity,
    query: str | queries.GuardedQuery | GuardedStatement,
    parameters: dict[str, Any],
    timeout: float,
    max_rows: int,
    max_bytes: int | None,
    *,
    source: str = MAIN,
    engine: Any = None,
) -> queries.QueryResult:
    """Run on the built-in database, or on `source`'s engine (`engine`: one the caller holds already)."""
    started = time.perf_counter()
    text, known_hash = (query.text, query.hash) if isinstance(query, queries.GuardedQuery) else (query, None)
    if isinstance(query, GuardedStatement):
        text, known_hash = query.sql, query.hash or None
    assert isinstance(text, str)
    seconds = runtime.services.query_seconds
    try:
        await seconds.check(caller.user_id)  # a spent budget refuses the query before it starts
        if isinstance(query, GuardedStatement) or source != MAIN:
            assert not isinstance(query, queries.GuardedQuery)
            result = await _run_on_source(
                runtime, source, engine, query, parameters, timeout, max_rows, max_bytes
            )
        else:
            result = await queries.run_select(
                runtime.db,
                query,
                parameters,
                timeout=timeout,
                max_rows=max_rows,
                max_bytes=max_bytes,
                label=request_label(logs.request_id_var.get()),
            )
    except Exception as error:
        await _log(
            runtime,
            caller,
            text,
            started,
            None,
            queries.outcome_of(error),
            known_hash=known_hash,
            source=source,
        )
        raise
    finally:
        await seconds.charge(caller.user_id, time.perf_counter() - started)
    outcome = queries.outcome_of(None, result.truncated)
    await _log(
        runtime, caller, text, started, len(result.rows), outcome, known_hash=result.query_hash, source=source
    )
    return result


async def _run_on_source(
    runtime: Runtime,
    source: str,
    engine: Any,
    query: str | GuardedStatement,
    parameters: dict[str, Any],
    timeout: float,
    max_rows: int,
    max_bytes: int | None,
) -> queries.QueryResult:
    shares, max_bytes = runtime.db.shares, max_bytes or runtime.settings.query_max_bytes
    if engine is not None and isinstance(query, GuardedStatement):
        return await run_on(
            engine, query, parameters, shares=shares, timeout=timeout, max_rows=max_rows, max_bytes=max_bytes
        )
    async with runtime.sources.use(source) as held:
        statement = query if isinstance(query, GuardedStatement) else await held.guarded(query, parameters)
        return await run_on(
            held,
            statement,
            parameters,
            shares=shares,
            timeout=timeout,
            max_rows=max_rows,
            max_bytes=max_bytes,
        )


async def _save_dataset(
    runtime: Runtime,
    caller: Identity,
    query: str,
    parameters: dict[str, Any],
    timeout: float,
    session_id: str,
    save_as: str,
    *,
    source: str = MAIN,
) -> dict[str, Any]:
    limit, max_bytes = runtime.settings.dataset_max_rows, runtime.settings.dataset_max_bytes
    result = await _run(runtime, caller, query, parameters, timeout, limit, max_bytes, source=source)
    origin = {
        "tool": "query_database",
        "source": source,
        "query": query,
        "parameter_names": sorted(parameters),
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
    runtime: Runtime,
    caller: Identity,
    query: str,
    started: float,
    row_count: int | None,
    outcome: str,
    cached: bool = False,
    known_hash: str | None = None,
    source: str = MAIN,
) -> None:
    if known_hash is None:  # hashing scans the query: off the event loop, like the guard
        known_hash = await queries.in_guard_thread(queries.query_hash, query)
    entry = queries.QueryLogEntry.of(
        user_id=caller.user_id,
        query=query,
        duration_ms=(time.perf_counter() - started) * 1000,
        row_count=row_count,
        outcome=outcome,
        cached=cached,
        known_hash=known_hash,
        source=source,
    )
    await runtime.services.query_log.put(entry)  # waits only while the log's queue is full: never drops


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
