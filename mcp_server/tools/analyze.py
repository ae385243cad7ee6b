"""analyze_data: churn, ARPU, network quality, correlation (and any analysis in analytics.parameters.ANALYSES)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Annotated, Any, Literal

from fastmcp.tools.base import ToolResult
from mcp.types import TextContent
from pydantic import Field

from analytics.lean import rounded, summarised
from analytics.parameters import ANALYSES, parse_parameters
from analytics.parameters import analysis_type as find_analysis
from analytics.summary import Outcome
from core.errors import InvalidInput
from mcp_server.app import App
from mcp_server.auth import ANALYST, current_identity
from mcp_server.cache import Cache
from sessions import access
from sessions.access import KeyName, SessionId
from sessions.datasets import json_ready
from warehouse import aggregates

CACHE_TTL_SECONDS = 3600
AnalysisName = Literal[tuple(sorted(ANALYSES))]  # type: ignore[valid-type]


def _described(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter model's JSON schema without the titles pydantic adds to every property."""
    return {
        key: {name: _described(value) for name, value in item.items()} if key == "properties" else item
        for key, item in schema.items()
        if key != "title"
    }


# The input schema of `parameters`: one branch per analysis type, described by its name, so a model sees
# every parameter, its default and its allowed values without reading a template first (they are
# validated for the chosen analysis_type by analytics.parameters).
PARAMETERS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            **_described(ANALYSES[name].parameters.model_json_schema()),
            "description": f"analysis_type='{name}'",
        }
        for name in sorted(ANALYSES)
    ]
    + [{"type": "null"}]
}


def _session_id(data_source: str) -> str:
    if access.is_session_id(data_source):
        return access.session_id(data_source)
    raise InvalidInput(
        f"data_source '{data_source[:60]}' is neither 'database' nor a session id; pass 'database' for "
        "the live tables or a session_id from session_create (with parameters.dataset)"
    )


def register(app: App) -> None:
    runtime = app.runtime
    cache = Cache(runtime, "analysis", CACHE_TTL_SECONDS)

    @app.tool(roles=ANALYST, annotations={"readOnlyHint": False})
    async def analyze_data(
        data_source: Annotated[
            str, Field(max_length=100, description="'database' (the live tables) or a session id")
        ],
        analysis_type: Annotated[
            AnalysisName,  # type: ignore[valid-type]  # an enum in the input schema: a model sees every choice
            Field(description="the analysis; templates://analysis/{type} describes its parameters"),
        ],
        parameters: Annotated[
            dict[str, Any] | None,
            Field(
                description="the analysis's own parameters: the branch described by its analysis_type",
                json_schema_extra=PARAMETERS_SCHEMA,
            ),
        ] = None,
        session_id: Annotated[
            SessionId | None, Field(description="save the result into this session")
        ] = None,
        save_as: Annotated[
            KeyName | None, Field(description="key to save the result under (with session_id)")
        ] = None,
        detail: Annotated[
            Literal["summary", "full"],
            Field(
                description="summary: the headline figures (long series and curves thinned, "
                "metadata.omitted says what); full: everything the analysis computed"
            ),
        ] = "summary",
        include_sql: Annotated[bool, Field(description="add the SQL statements behind the result")] = False,
    ) -> ToolResult:
        """Run a statistical analysis on the live tables or a session dataset; returns results, metadata, summary."""
        started = time.perf_counter()
        analysis = find_analysis(analysis_type)
        checked = parse_parameters(analysis.name, parameters)
        if (session_id is None) != (save_as is None):
            raise InvalidInput("pass session_id and save_as together to save the result, or neither")
        identity = current_identity()
        if data_source.strip().lower() == "database":
            question = {
                "database": runtime.settings.database_url,  # hashed into the key: one cache per database
                "analysis": analysis.name,
                "parameters": checked.model_dump(mode="json", exclude={"dataset"}),
                # Entries are per user: neither an answer nor its `cached` flag tells what another user asked.
                "user": identity.user_id,
            }
            # The version is read before computing, so the answer stored under it is never older data.
            version, answer = await cache.lookup(question)
            if answer is not None:
                answer["metadata"]["cached"] = True
            else:
                outcome: Outcome = await _on_database(analysis.name)(runtime.db, checked)
                answer = _answer(analysis.name, outcome, "database", started)
                await cache.put(question, answer, version)
        else:
            source = _session_id(data_source)
            if not checked.dataset:
                raise InvalidInput(
                    "parameters.dataset is required when data_source is a session id; name a dataset saved "
                    "with query_database(session_id=..., save_as=...)"
                )
            frame = await runtime.services.session_store.load_dataset(identity, source, checked.dataset)
            outcome = await asyncio.to_thread(analysis.on_frame(), frame, checked)
            answer = _answer(analysis.name, outcome, source, started)
            answer["metadata"]["dataset"] = checked.dataset
        answer["metadata"]["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        saved = None
        if session_id is not None and save_as is not None:  # the session keeps the whole detail
            saved = await runtime.services.session_store.save_value(
                identity, session_id, save_as, answer, kind="analysis"
            )
        return _response(answer, detail, include_sql, saved)


def _response(
    answer: dict[str, Any], detail: str, include_sql: bool, saved: dict[str, Any] | None
) -> ToolResult:
    """What the agent receives: the summary sentence and the (lean by default) result as compact JSON
    with floats rounded in the text; the structured content keeps full precision."""
    results, omitted = (
        (answer["results"], [])
        if detail == "full"
        else summarised(answer["analysis_type"], answer["results"])
    )
    metadata = {key: value for key, value in answer["metadata"].items() if key != "sql" or include_sql}
    if omitted:
        metadata["omitted"] = omitted
        metadata["hint"] = "pass detail='full' for everything" + (
            ", or chart the saved result by its key" if saved else ""
        )
    lean = {**answer, "results": results, "metadata": metadata}
    if saved is not None:
        lean["saved"] = {"session_id": saved["session_id"], "key": saved["key"]}
    body = {key: value for key, value in lean.items() if key != "summary"}
    text = answer["summary"] + "\n" + json.dumps(rounded(body), separators=(",", ":"), default=str)
    return ToolResult(content=[TextContent(type="text", text=text)], structured_content=lean)


def _answer(name: str, outcome: Outcome, data_source: str, started: float) -> dict[str, Any]:
    return {
        "analysis_type": name,
        "results": json_ready(outcome.results),
        "metadata": {
            "data_source": data_source,
            "row_count": outcome.row_count,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "sql": outcome.sql or None,
            "cached": False,
        },
        "summary": outcome.summary,
    }


def _on_database(name: str) -> aggregates.Runner:
    runner = aggregates.RUNNERS.get(name)
    if runner is None:
        raise InvalidInput(
            f"analysis '{name}' runs on session datasets only; pass a session id as data_source"
        )
    return runner
