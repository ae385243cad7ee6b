"""The analysis cache holds each answer in the form it is sent: its summary and its full detail, so a repeat
at either level is a hit that reads only what it sends, with `cached`, the text and saved results right."""

from __future__ import annotations

import json
import uuid
from typing import Any

from fastmcp import Client

from analytics.lean import CURVE_DAYS, rounded
from mcp_server.auth import Identity
from mcp_server.cache import Cache
from tests.conftest import app_for
from tests.support import call

RETENTION = {"data_source": "database", "analysis_type": "retention"}
# What differs between two answers to one question: when and how fast it was answered, and whether cached.
PER_CALL = ("duration_ms", "cached", "hint")


def _settled(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer without what differs from call to call."""
    metadata = {key: value for key, value in answer["metadata"].items() if key not in PER_CALL}
    return {**answer, "metadata": metadata}


async def _entries(runtime: Any) -> list[dict[str, Any]]:
    """Every analysis answer in Redis, decrypted."""
    cache = Cache(runtime, "analysis", 60)
    keys = [key async for key in runtime.redis.scan_iter(match=runtime.key("cache", "analysis") + "*")]
    return [cache.answer([await runtime.redis.get(key)]) for key in keys]


def _fresh(base_settings: Any) -> str:
    return f"{base_settings.redis_key_prefix}shape-{uuid.uuid4().hex[:8]}:"


async def test_an_analysis_is_stored_as_its_summary_and_its_full_detail_and_nothing_more(
    make_runtime, base_settings
):
    async with make_runtime(customers=400, seed=7, redis_key_prefix=_fresh(base_settings)) as rt:
        async with Client(app_for(rt, "analyst").mcp) as client:
            summary = await call(client, "analyze_data", **RETENTION, include_sql=True)
            full = await call(client, "analyze_data", **RETENTION, include_sql=True, detail="full")
        stored = sorted(
            (_settled(entry) for entry in await _entries(rt)), key=lambda entry: len(json.dumps(entry))
        )
    assert summary["metadata"]["cached"] is False and full["metadata"]["cached"] is True
    assert (
        len(full["results"]["overall"]["curve"])
        > len(CURVE_DAYS)
        >= len(summary["results"]["overall"]["curve"])
    )
    assert stored == [_settled(summary), _settled(full)]


async def test_a_repeat_at_either_detail_is_a_hit_equal_to_the_first_answer_at_that_detail(
    make_runtime, base_settings
):
    async with make_runtime(customers=400, seed=7, redis_key_prefix=_fresh(base_settings)) as rt:
        async with Client(app_for(rt, "analyst").mcp) as client:
            full = await call(client, "analyze_data", **RETENTION, detail="full")
            summary = await call(client, "analyze_data", **RETENTION)
            summary_again = await call(client, "analyze_data", **RETENTION)
            full_again = await call(client, "analyze_data", **RETENTION, detail="full")
        async with Client(app_for(rt, "analyst2").mcp) as other:
            others = await call(other, "analyze_data", **RETENTION)  # another user: own entries
    assert [a["metadata"]["cached"] for a in (full, summary, summary_again, full_again)] == [
        False,
        True,
        True,
        True,
    ]
    assert others["metadata"]["cached"] is False and others["results"] == summary["results"]
    assert _settled(summary_again) == _settled(summary) and _settled(full_again) == _settled(full)
    # The summary served from the cache thins the full curve at CURVE_DAYS, as a computed one does.
    curve = full["results"]["overall"]["curve"]
    for point in summary["results"]["overall"]["curve"]:
        assert point["survival"] == [p for p in curve if p["day"] <= point["day"]][-1]["survival"]
    assert summary["metadata"]["omitted"] and "detail='full'" in summary["metadata"]["hint"]
    assert "omitted" not in full["metadata"] and "sql" not in summary["metadata"]


async def test_a_cached_answer_says_so_in_its_text_and_shows_its_sql_only_when_asked(
    make_runtime, base_settings
):
    async with make_runtime(customers=400, seed=7, redis_key_prefix=_fresh(base_settings)) as rt:
        async with Client(app_for(rt, "analyst").mcp) as client:
            await call(client, "analyze_data", **RETENTION)
            hit = await client.call_tool("analyze_data", RETENTION)
            with_sql = await call(client, "analyze_data", **RETENTION, include_sql=True)
    summary_line, _, body = hit.content[0].text.partition("\n")
    text = json.loads(body)
    assert summary_line == hit.structured_content["summary"]
    assert text["metadata"]["cached"] is True is hit.structured_content["metadata"]["cached"]
    assert text["metadata"]["duration_ms"] == hit.structured_content["metadata"]["duration_ms"]
    assert text["results"] == rounded(hit.structured_content["results"])
    assert "sql" not in hit.structured_content["metadata"] and "sql" not in text["metadata"]
    assert with_sql["metadata"]["cached"] is True and with_sql["metadata"]["sql"]


async def test_a_summary_saved_into_a_session_from_the_cache_keeps_the_full_detail(
    make_runtime, base_settings
):
    async with make_runtime(customers=400, seed=7, redis_key_prefix=_fresh(base_settings)) as rt:
        store = rt.services.session_store
        analyst = Identity("analyst", "analyst", "test")
        session = (await store.create(analyst, "database", "read"))["session_id"]
        async with Client(app_for(rt, "analyst").mcp) as client:
            summary = await call(client, "analyze_data", **RETENTION)
            saved = await call(client, "analyze_data", **RETENTION, session_id=session, save_as="retention")
            full = await call(client, "analyze_data", **RETENTION, detail="full")
        kept = (await store.read(analyst, session, "retention"))["value"]
    assert [summary["metadata"]["cached"], saved["metadata"]["cached"]] == [False, True]
    assert saved["results"] == summary["results"] and saved["saved"]["key"] == "retention"
    assert "chart the saved result" in saved["metadata"]["hint"]
    assert kept["results"] == full["results"] and "omitted" not in kept["metadata"]
