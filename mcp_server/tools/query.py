"""query_database: one read-only SELECT with bound parameters, cached, logged, answered as JSON plus a markdown table."""

from __future__ import annotations

import functools
import time
from typing import Annotated, Any

from fastmcp.tools.base import ToolResult
from mcp.types import TextContent
from pydantic import Field

from analytics.errors import InvalidInput
from mcp_server.app import App
from mcp_server.auth import ANALYST, Identity, current_identity
from mcp_server.batching import BatchWriter
from mcp_server.cache import Cache
from mcp_server.correlation import call_label
from mcp_server.jsonsafe import json_safe
from mcp_server.runtime import Runtime
from warehouse import query as queries

_QUERY_LOG = "query_log_writer"
CACHE_SECONDS = 300
PREVIEW_ROWS = 20
TEXT_CELL_CHARS = 80

Scalar = str | int | float | bool | None
ParameterValue = Scalar | list[Scalar]


def query_log(runtime: Runtime) -> BatchWriter[queries.QueryLogEntry]:
    """The runtime's query-log writer: entries are queued and written in batches, off the call's path."""
    writer = runtime.extras.get(_QUERY_LOG)
    if writer is None:

        async def write(entries: list[queries.QueryLogEntry]) -> None:
            await queries.write_query_log(runtime.db, entries)

        writer = runtime.extras[_QUERY_LOG] = BatchWriter("query_log", write)
        runtime.on_close.append(writer.flush)
    return writer


def register(app: App) -> None:
    runtime = app.runtime
    cache = Cache(runtime, "query", CACHE_SECONDS)
    app.prefetch("query_database", functools.partial(_likely_cache_key, runtime, cache))

    @app.tool(roles=ANALYST, annotations={"readOnlyHint": True, "openWorldHint": False})
    async def query_database(
        query: Annotated[
            str,
            Field(
                min_length=1,
                max_length=100_000,
                description="One read-only SELECT (or WITH ... SELECT). Values go in %(name)s placeholders.",
            ),
        ],
        parameters: Annotated[
            dict[str, ParameterValue],
            Field(
                description="Values for the %(name)s placeholders, e.g. {'min_age': 30}; never interpolated"
            ),
        ] = {},  # noqa: B006 - pydantic copies it; the contract's default is {}
        timeout: Annotated[float, Field(gt=0, le=300, description="statement timeout in seconds")] = 30,
        session_id: Annotated[
            str | None, Field(description="with save_as: store the full result in this session")
        ] = None,
        save_as: Annotated[
            str | None,
            Field(
                pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$",
                description="dataset name in the session; only a preview comes back",
            ),
        ] = None,
        max_rows: Annotated[int, Field(ge=1, description="rows to return (server cap applies)")] = 1_000,
    ) -> ToolResult:
        """Run one read-only SQL SELECT on customers, network_events and revenue; returns rows as JSON and a markdown table."""
        caller = current_identity()
        if (session_id is None) != (save_as is None):
            raise InvalidInput(
                "session_id and save_as go together: pass both to store the result, or neither"
            )
        if session_id is not None and save_as is not None:
            answer = await _save_dataset(runtime, caller, query, parameters, timeout, session_id, save_as)
        else:
            answer = await _select(runtime, cache, caller, query, parameters, timeout, max_rows)
        return ToolResult(
            content=[TextContent(type="text", text=_markdown(answer))], structured_content=answer
        )


async def _select(
    runtime: Runtime,
    cache: Cache,
    caller: Identity,
    query: str,
    parameters: dict[str, Any],
    timeout: float,
    max_rows: int,
) -> dict[str, Any]:
    cap = runtime.settings.query_max_rows_cap
    if max_rows > cap:
        raise InvalidInput(
            f"max_rows is at most {cap:,}; for more rows pass session_id + save_as to store the result as a dataset"
        )
    started = time.perf_counter()
    cached = version = None
    ran = False  # _run logs its own outcome
    try:
        guarded = queries.guard(query, parameters)  # once: run_select reuses it
        question = _question(runtime, guarded, parameters, max_rows)
        # One connection for the data version and the query (labelled in the query's first round trip).
        async with runtime.db.connection(read=True, label=False) as conn:
            if guarded.checked.cacheable:
                # Read before the query and used for the store too: a load meanwhile cannot be cached stale.
                version, cached = await cache.lookup(
                    question, functools.partial(runtime.db.data_version, conn)
                )
            if cached is None:
                ran = True
                result = await _run(
                    runtime,
                    caller,
                    guarded,
                    parameters,
                    timeout,
                    max_rows,
                    runtime.settings.query_max_bytes,
                    conn,
                )
    except Exception as error:
        if not ran:
            _log(runtime, caller, query, started, None, queries.outcome_of(error))
        raise
    if cached is not None:
        _log(runtime, caller, query, started, cached["row_count"], "ok", cached=True, known_hash=guarded.hash)
        return {**cached, "cached": True}
    answer = {
        "rows": json_safe(result.records()),
        "columns": [column.name for column in result.columns],
        "column_types": {column.name: column.type for column in result.columns},
        "row_count": len(result.rows),
        "truncated": result.truncated,
        "cached": False,
    }
    if result.truncated:
        answer["truncated_by"] = result.truncated_by
        answer["hint"] = (
            f"only the first {len(result.rows):,} rows are shown ({result.truncated_by} limit); narrow the "
            "query (WHERE, GROUP BY, LIMIT) or pass session_id + save_as to store the full result"
        )
    if version is not None:
        await cache.put(question, answer, version)
    return answer


def _question(
    runtime: Runtime, guarded: queries.GuardedQuery, parameters: dict[str, Any], max_rows: int
) -> dict[str, Any]:
    """What the query cache keys on."""
    return {
        "database": runtime.settings.database_url,  # hashed into the key: one cache per database
        "sql": guarded.hash,  # of the normalised text: spacing and keyword case do not matter
        "parameters": parameters,
        "max_rows": max_rows,
    }


# A prefetch guess hashes the raw parameters before their size is checked: only small ones are guessed.
_GUESS_MAX_PARAMETERS = 32
_GUESS_MAX_TEXT = 1_000


def _likely_cache_key(runtime: Runtime, cache: Cache, arguments: dict[str, Any]) -> list[str]:
    """The cache entry a query_database call will read first, guessed from its raw arguments without
    parsing anything (the guard's verdict must be remembered already): read with the rate limit."""
    query, parameters = arguments.get("query"), arguments.get("parameters", {})
    max_rows = arguments.get("max_rows", 1_000)
    if (
        not isinstance(query, str)
        or not isinstance(parameters, dict)
        or len(parameters) > _GUESS_MAX_PARAMETERS
        or arguments.get("session_id") is not None
        or type(max_rows) is not int
    ):
        return []
    for value in parameters.values():
        if not (value is None or type(value) in (int, float, bool)) and not (
            type(value) is str and len(value) <= _GUESS_MAX_TEXT
        ):
            return []  # lists and long texts: no guess
    guarded = queries.remembered_guard(query, tuple(parameters))
    if guarded is None or not guarded.checked.cacheable:
        return []
    key = cache.likely_key(_question(runtime, guarded, parameters, max_rows))
    return [key] if key else []


async def _run(
    runtime: Runtime,
    caller: Identity,
    query: str | queries.GuardedQuery,
    parameters: dict[str, Any],
    timeout: float,
    max_rows: int,
    max_bytes: int | None,
    conn: Any = None,
) -> queries.QueryResult:
    started = time.perf_counter()
    text, known_hash = (query.text, query.hash) if isinstance(query, queries.GuardedQuery) else (query, None)
    try:
        result = await queries.run_select(
            runtime.db,
            query,
            parameters,
            timeout=timeout,
            max_rows=max_rows,
            max_bytes=max_bytes,
            conn=conn,
            label=call_label(),
        )
    except Exception as error:
        _log(runtime, caller, text, started, None, queries.outcome_of(error), known_hash=known_hash)
        raise
    outcome = queries.outcome_of(None, result.truncated)
    _log(runtime, caller, text, started, len(result.rows), outcome, known_hash=result.query_hash)
    return result


async def _save_dataset(
    runtime: Runtime,
    caller: Identity,
    query: str,
    parameters: dict[str, Any],
    timeout: float,
    session_id: str,
    save_as: str,
) -> dict[str, Any]:
    from mcp_server.stores import session_store  # the session feature is optional for plain queries

    limit = runtime.settings.dataset_max_rows
    result = await _run(runtime, caller, query, parameters, timeout, limit, None)
    source = {
        "tool": "query_database",
        "query": query,
        "parameter_names": sorted(parameters),
        "query_hash": result.query_hash,
        "truncated": result.truncated,
    }
    frame = queries.to_frame(result)
    stored = await session_store(runtime).save_dataset(caller, session_id, save_as, frame, source)
    preview = result.records()[:PREVIEW_ROWS]
    answer = {
        "rows": json_safe(preview),
        "columns": [column.name for column in result.columns],
        "column_types": {column.name: column.type for column in result.columns},
        "row_count": len(preview),
        "truncated": result.truncated,
        "cached": False,
        "dataset": {
            "session_id": session_id,
            "name": stored.get("name", save_as),
            "rows": len(result.rows),
            "shape": [len(result.rows), len(result.columns)],
            "columns": stored.get("columns"),
            "size_bytes": stored.get("size_bytes"),
        },
        "hint": f"showing {len(preview)} of {len(result.rows):,} rows; the full result is dataset "
        f"'{save_as}' in session {session_id} (analyze_data / create_visualization can use it)",
    }
    if result.truncated:
        answer["hint"] += f"; only the first {limit:,} rows were stored (the dataset cap)"
    return answer


def _log(
    runtime: Runtime,
    caller: Identity,
    query: str,
    started: float,
    row_count: int | None,
    outcome: str,
    cached: bool = False,
    known_hash: str | None = None,
) -> None:
    entry = queries.QueryLogEntry.of(
        user_id=caller.user_id,
        query=query,
        duration_ms=(time.perf_counter() - started) * 1000,
        row_count=row_count,
        outcome=outcome,
        cached=cached,
        known_hash=known_hash,
    )
    query_log(runtime).submit(entry)


def _markdown(answer: dict[str, Any]) -> str:
    """The answer as a compact markdown table: far fewer tokens than the JSON for the same rows."""
    columns = answer["columns"]
    lines = []
    if columns:
        lines.append("| " + " | ".join(_cell(name) for name in columns) + " |")
        lines.append("|" + "---|" * len(columns))
        for row in answer["rows"]:
            lines.append("| " + " | ".join(_cell(row.get(name)) for name in columns) + " |")
    summary = f"{answer['row_count']} row{'s' if answer['row_count'] != 1 else ''}"
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
