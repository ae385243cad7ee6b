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
from mcp_server.auth import ANALYST
from mcp_server.cache import Cache
from mcp_server.calls import current_identity
from mcp_server.runtime import Runtime
from sessions import access
from sessions.access import KeyName, SessionId
from sessions.datasets import json_ready
from warehouse import aggregates, source_analysis
from warehouse.models.run import MODELLED, run_modelled
from warehouse.sources import MAIN

CACHE_TTL_SECONDS = 3600
# A source whose engine dates no change (PostgreSQL): its analyses are cached this long only.
SOURCE_TTL_SECONDS = 60
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
        f"data_source '{data_source[:60]}' is neither 'database' nor a session id nor a source (list_sources); "
        "pass 'database' for the live tables, a source name, or a session_id from session_create (with "
        "parameters.dataset)"
    )


def register(app: App) -> None:
    runtime = app.runtime
    cache = Cache(runtime, "analysis", CACHE_TTL_SECONDS)
    caches = (cache, Cache(runtime, "analysis", SOURCE_TTL_SECONDS))

    @app.tool(roles=ANALYST, annotations={"readOnlyHint": False})
    async def analyze_data(
        data_source: Annotated[
            str,
            Field(
                max_length=100,
                description="'database' (the live tables), a source name (list_sources: describe, correlation, "
                "segment_compare, trend, anomalies, forecast on named columns) or a session id",
            ),
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
        """Run a statistical analysis on the live tables, a table of a source or a session dataset; returns
        results, metadata, summary."""
        started = time.perf_counter()
        analysis = find_analysis(analysis_type)
        if (session_id is None) != (save_as is None):
            raise InvalidInput("pass session_id and save_as together to save the result, or neither")
        identity = current_identity()
        # The detail level read from the cache or computed: a result saved into a session keeps all of it.
        level = "full" if session_id is not None else detail
        named = data_source.strip()
        modelled = _modelled_source(runtime, named, analysis.name, parameters)
        checked = None if modelled else parse_parameters(analysis.name, parameters)
        if modelled:
            answer = await _on_source(
                runtime,
                caches,
                modelled,
                analysis.name,
                parameters or {},
                None,
                identity.user_id,
                level,
                started,
            )
        elif named.lower() == "database" or named == MAIN:
            assert checked is not None
            source_analysis.refuse_misplaced(analysis.name, checked, None)
            question = {
                "database": runtime.settings.database_url,  # hashed into the key: one cache per database
                "analysis": analysis.name,
                "parameters": checked.model_dump(mode="json", exclude={"dataset"}),
                # Entries are per user: neither an answer nor its `cached` flag tells what another user asked.
                "user": identity.user_id,
            }
            # The version is read before computing, so the answer stored under it is never older data.
            version, found = await cache.lookup({**question, "detail": level})
            if found is not None:
                answer = _cached(found)
            else:
                outcome: Outcome = await _on_database(analysis.name)(runtime.db, checked)
                computed = _answer(analysis.name, outcome, "database", started)
                answer = await _stored(cache, question, computed, version, level)
        elif named in runtime.sources.registry:
            assert checked is not None
            answer = await _on_source(
                runtime, caches, named, analysis.name, {}, checked, identity.user_id, level, started
            )
        else:
            assert checked is not None
            source = _session_id(data_source)
            source_analysis.refuse_misplaced(analysis.name, checked, None)
            if not checked.dataset:
                raise InvalidInput(
                    "parameters.dataset is required when data_source is a session id; name a dataset saved "
                    "with query_database(session_id=..., save_as=...)"
                )
            frame = await runtime.services.session_store.load_dataset(identity, source, checked.dataset)
            outcome = await asyncio.to_thread(analysis.on_frame(), frame, checked)
            answer = _at_detail(_answer(analysis.name, outcome, source, started), level)
            answer["metadata"]["dataset"] = checked.dataset
        answer["metadata"]["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        saved = None
        if session_id is not None and save_as is not None:  # the session keeps the whole detail
            saved = await runtime.services.session_store.save_value(
                identity, session_id, save_as, answer, kind="analysis"
            )
        return _response(_at_detail(answer, detail) if level != detail else answer, include_sql, saved)


def _at_detail(answer: dict[str, Any], detail: str) -> dict[str, Any]:
    """The answer at a detail level: full as computed, or the summary (long series and curves thinned,
    metadata.omitted saying what was left out)."""
    if detail == "full":
        return answer
    results, omitted = summarised(answer["analysis_type"], answer["results"])
    if not omitted:
        return answer
    return {**answer, "results": results, "metadata": {**answer["metadata"], "omitted": omitted}}


def _cached(found: dict[str, Any]) -> dict[str, Any]:
    """An answer read from the cache, marked so."""
    found["metadata"]["cached"] = True
    return found


async def _stored(
    cache: Cache, question: dict[str, Any], answer: dict[str, Any], version: int | str, detail: str
) -> dict[str, Any]:
    """Cache a computed answer at both detail levels (keyed on the question and the level, one round trip):
    a hit reads and sends just what is asked, and a call at the other level is a hit too. Returns the
    answer at `detail`."""
    forms = {level: _at_detail(answer, level) for level in ("summary", "full")}
    await cache.put_each([({**question, "detail": level}, form) for level, form in forms.items()], version)
    return forms[detail]


def _response(answer: dict[str, Any], include_sql: bool, saved: dict[str, Any] | None) -> ToolResult:
    """What the agent receives: the summary sentence and the answer (at its detail level) as compact JSON
    with floats rounded in the text; the structured content keeps full precision."""
    metadata = {key: value for key, value in answer["metadata"].items() if key != "sql" or include_sql}
    if "omitted" in metadata:
        metadata["hint"] = "pass detail='full' for everything" + (
            ", or chart the saved result by its key" if saved else ""
        )
    lean = {**answer, "metadata": metadata}
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
            **outcome.metadata,
        },
        "summary": outcome.summary,
    }


async def _on_source(
    runtime: Runtime,
    caches: tuple[Cache, Cache],
    name: str,
    analysis: str,
    parameters: dict[str, Any],
    checked: Any,
    user: str,
    detail: str,
    started: float,
) -> dict[str, Any]:
    """An analysis on a registered source at a detail level: through its metric model (`checked` None, the
    model pushed down into its engine) or on a table; cached on the source's data version (briefly when its
    engine has none)."""
    source = runtime.sources.source(name)
    model = source.metric_model if checked is None else None
    if checked is not None:
        source_analysis.refuse_misplaced(analysis, checked, source.name)
        parameters = checked.model_dump(mode="json", exclude_unset=True)
    question = {
        "source": source.name,
        "model": [model.name, model.version] if model else None,
        "analysis": analysis,
        "parameters": json_ready(parameters),
        "user": user,
    }
    async with runtime.sources.use(source.name) as engine:
        version = await engine.data_version()
        cache = caches[0] if version is not None else caches[1]
        key_version = f"{source.name}:{version or 'unversioned'}"
        found = await cache.get({**question, "detail": detail}, key_version)
        if found is not None:
            return _cached(found)
        used: dict[str, Any] = {}
        if model is not None:
            outcome = await run_modelled(engine, model, analysis, parameters, source=source.name)
        else:
            max_bytes = runtime.settings.dataset_max_bytes
            reader = source_analysis.SourceReader(source.name, engine, runtime.db.shares, max_bytes)
            outcome, used = await source_analysis.run(reader, analysis, checked)
    answer = _answer(analysis, outcome, source.name, started)
    answer["metadata"].update(used)
    return await _stored(cache, question, answer, key_version, detail)


def _modelled_source(
    runtime: Runtime, named: str, analysis: str, parameters: dict[str, Any] | None
) -> str | None:
    """The source an analysis runs on through its metric model (warehouse/models), or None: a registered
    source other than main whose model serves the analysis, asked without named columns."""
    if named == MAIN or named.lower() == "database" or named not in runtime.sources.registry:
        return None
    source = runtime.sources.source(named)
    if source.metric_model is None or analysis not in MODELLED:
        return None
    if any(name in (parameters or {}) for name in source_analysis.SOURCE_ONLY):
        return None  # named columns (table, value_column, ...): the table analyses of source_analysis
    return source.name


def _on_database(name: str) -> aggregates.Runner:
    runner = aggregates.RUNNERS.get(name)
    if runner is None:
        raise InvalidInput(
            f"analysis '{name}' runs on session datasets only; pass a session id as data_source"
        )
    return runner
