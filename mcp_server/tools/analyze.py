"""analyze_data: churn, ARPU, network quality, correlation (and any analysis in analytics.parameters.ANALYSES)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from typing import Annotated, Any

from pydantic import Field

from analytics.errors import InvalidInput
from analytics.parameters import ANALYSES, parse_parameters
from analytics.parameters import analysis_type as find_analysis
from analytics.summary import Outcome
from mcp_server.app import App
from mcp_server.auth import ANALYST, current_identity
from mcp_server.cache import Cache
from mcp_server.jsonsafe import json_safe
from mcp_server.stores import session_store

CACHE_TTL_SECONDS = 3600


def _session_id(data_source: str) -> str:
    try:
        return str(uuid.UUID(data_source.strip()))
    except ValueError:
        raise InvalidInput(
            f"data_source '{data_source[:60]}' is neither 'database' nor a session id; pass 'database' for "
            "the live tables or a session_id from session_create (with parameters.dataset)"
        ) from None


def register(app: App) -> None:
    runtime = app.runtime
    cache = Cache(runtime, "analysis", CACHE_TTL_SECONDS)
    # The cache question each raw (analysis_type, parameters) was validated into, so the next identical
    # call's cache entry can be read with the rate limit (App.prefetch) without validating anything.
    questions: dict[tuple[str, str], dict[str, Any]] = {}

    def likely_cache_key(arguments: dict[str, Any]) -> list[str]:
        source = arguments.get("data_source")
        if not isinstance(source, str) or source.strip().lower() != "database":
            return []
        asked = _asked(arguments.get("analysis_type"), arguments.get("parameters"))
        question = questions.get(asked) if asked is not None else None
        key = cache.likely_key(question) if question is not None else None
        return [key] if key else []

    app.prefetch("analyze_data", likely_cache_key)

    @app.tool(roles=ANALYST, annotations={"readOnlyHint": False})
    async def analyze_data(
        data_source: Annotated[
            str, Field(max_length=100, description="'database' (the live tables) or a session id")
        ],
        analysis_type: Annotated[
            str, Field(max_length=100, description="one of: " + ", ".join(sorted(ANALYSES)))
        ],
        parameters: Annotated[
            dict[str, Any] | None,
            Field(description="per analysis; templates://analysis/{type} lists them with defaults"),
        ] = None,
        session_id: Annotated[str | None, Field(description="save the result into this session")] = None,
        save_as: Annotated[
            str | None, Field(description="key to save the result under (with session_id)")
        ] = None,
    ) -> dict[str, Any]:
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
            }
            asked = _asked(analysis_type, parameters)
            if asked is not None:
                questions[asked] = question
                if len(questions) > _QUESTIONS_KEPT:
                    questions.pop(next(iter(questions)))
            compute = analysis.resolve("database")
            guess = cache.guessed_miss(question)
            # The rate limit's round trip found no entry under the version seen last: start computing
            # now, while the lookup confirms the version (nearly always the same) or finds an entry.
            work = asyncio.ensure_future(compute(runtime.db, checked)) if guess is not None else None
            try:
                version, answer = await cache.lookup(question)
                if answer is not None:
                    answer["metadata"]["cached"] = True
                else:
                    outcome: Outcome = await (work if work is not None else compute(runtime.db, checked))
                    answer = _answer(analysis.name, outcome, "database", started)
                    # Computed after `version` was read, or (speculatively) after the version seen last
                    # was read, which the lookup found unchanged: otherwise the answer is not stored.
                    if work is None or version == guess:
                        cache.store_later(question, answer, version)
            finally:
                if work is not None and not work.done():
                    work.cancel()
                    await asyncio.gather(work, return_exceptions=True)
        else:
            source = _session_id(data_source)
            if not checked.dataset:
                raise InvalidInput(
                    "parameters.dataset is required when data_source is a session id; name a dataset saved "
                    "with query_database(session_id=..., save_as=...)"
                )
            frame = await session_store(runtime).load_dataset(identity, source, checked.dataset)
            outcome = await asyncio.to_thread(analysis.resolve("frame"), frame, checked)
            answer = _answer(analysis.name, outcome, source, started)
            answer["metadata"]["dataset"] = checked.dataset
        answer["metadata"]["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        if session_id is not None and save_as is not None:
            saved = await session_store(runtime).save_value(
                identity, session_id, save_as, answer, kind="analysis"
            )
            answer["saved"] = {"session_id": saved["session_id"], "key": saved["key"]}
        return answer


_QUESTIONS_KEPT = 256
_ASKED_MAX_CHARS = 2_000


def _asked(analysis_type: Any, parameters: Any) -> tuple[str, str] | None:
    """A raw request's identity for the question memo: small JSON scalars only, else None."""
    if not isinstance(analysis_type, str) or len(analysis_type) > 100:
        return None
    if parameters is None:
        return analysis_type, ""
    if not isinstance(parameters, dict) or len(parameters) > 32:
        return None
    for name, value in parameters.items():
        if not isinstance(name, str) or not (value is None or type(value) in (str, int, float, bool)):
            return None
        if len(name) > 100 or (type(value) is str and len(value) > 200):
            return None
    text = json.dumps(parameters, sort_keys=True)
    return (analysis_type, text) if len(text) <= _ASKED_MAX_CHARS else None


def _answer(name: str, outcome: Outcome, data_source: str, started: float) -> dict[str, Any]:
    return {
        "analysis_type": name,
        "results": json_safe(outcome.results),
        "metadata": {
            "data_source": data_source,
            "row_count": outcome.row_count,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(),
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
            "sql": outcome.sql or None,
            "cached": False,
        },
        "summary": outcome.summary,
    }
