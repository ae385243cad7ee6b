"""Cached answers follow the data version across instances and are written before the call returns;
remembered guard verdicts depend on the text and parameter names only; argument limits are exact."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from fastmcp import Client

from core.errors import InvalidInput, QueryRefused
from mcp_server.cache import Cache
from mcp_server.limits import MAX_NESTING, argument_problem
from mcp_server.runtime import start_runtime
from tests.conftest import app_for
from tests.support import bump_version, call, version_heard
from warehouse import query as queries
from warehouse.generator import generate, make_plan


def fresh_prefix(settings) -> str:
    """Redis keys of this test's own (under the run's prefix, which the session cleanup removes)."""
    return f"{settings.redis_key_prefix}cache-{uuid.uuid4().hex[:8]}:"


COUNTS = "SELECT account_type, count(*) AS n FROM customers GROUP BY 1 ORDER BY 1"
CHURN = {"data_source": "database", "analysis_type": "churn_rate"}


async def plain_counts(runtime) -> list[dict]:
    async with runtime.db.connection() as conn:
        return [dict(row) for row in await conn.fetch(COUNTS)]


async def plain_churn(runtime) -> dict[str, tuple[int, int]]:
    async with runtime.db.connection() as conn:
        rows = await conn.fetch(
            "SELECT account_type, count(*) AS n, count(*) FILTER (WHERE is_churned) AS churned "
            "FROM customers GROUP BY 1"
        )
    return {row["account_type"]: (row["n"], row["churned"]) for row in rows}


def churn_counts(answer: dict) -> dict[str, tuple[int, int]]:
    return {name: (s["customers"], s["churned"]) for name, s in answer["results"]["by_segment"].items()}


async def analysis_entries(rt) -> list[bytes]:
    return [key async for key in rt.redis.scan_iter(match=rt.key("cache", "analysis") + "*")]


async def test_an_instance_never_serves_an_answer_cached_before_another_instance_regenerated_the_data(
    make_runtime, base_settings
):
    async with make_runtime(customers=120, seed=5, redis_key_prefix=fresh_prefix(base_settings)) as first:
        second = await start_runtime(first.settings, seed_demo=False)  # another instance: own pools
        try:
            one, two = app_for(first, "analyst"), app_for(second, "analyst")
            async with Client(one.mcp) as a, Client(two.mcp) as b:
                before = await call(a, "query_database", query=COUNTS)
                again = await call(a, "query_database", query=COUNTS)
                shared = await call(b, "query_database", query=COUNTS)
                analysed = await call(a, "analyze_data", **CHURN)
                analysed_again = await call(a, "analyze_data", **CHURN)
                assert before["rows"] == await plain_counts(first)
                assert (before["cached"], again["cached"], shared["cached"]) == (False, True, True)
                assert analysed_again["metadata"]["cached"] is True

                # The other instance regenerates the data (a new version, other customers).
                data = await asyncio.to_thread(generate, make_plan(90, 11))
                await second.db.replace_data(data)
                await version_heard(first)  # its notification reaches the first instance

                after = await call(a, "query_database", query=COUNTS)
                reanalysed = await call(a, "analyze_data", **CHURN)
                after_again = await call(a, "query_database", query=COUNTS)
        finally:
            await second.close()
        expected = await plain_counts(first)
        assert sum(row["n"] for row in expected) == 90
        assert after["cached"] is False and after["rows"] == expected != before["rows"]
        assert after_again["cached"] is True and after_again["rows"] == expected
        assert reanalysed["metadata"]["cached"] is False
        assert churn_counts(reanalysed) == await plain_churn(first) != churn_counts(analysed)


async def test_a_lookup_serves_only_the_entry_under_the_version_it_reads_now(make_runtime, base_settings):
    async with make_runtime(customers=None, redis_key_prefix=fresh_prefix(base_settings)) as rt:
        cache = Cache(rt, "probe", 60)
        question = {"q": "the same question"}
        version, found = await cache.lookup(question)
        assert found is None and version == await rt.db.data_version()
        await cache.put_each([(question, {"answer": "old data"})], version)
        assert await cache.lookup(question) == (version, {"answer": "old data"})

        await bump_version(rt)  # data regenerated elsewhere: only the row changes
        # The entry under the old version is still in Redis, and is not served.
        assert await cache.get(question, version) == {"answer": "old data"}
        assert await cache.lookup(question) == (version + 1, None)
        await cache.put_each([(question, {"answer": "new data"})], version + 1)
        assert await cache.lookup(question) == (version + 1, {"answer": "new data"})


async def test_an_analysis_answer_is_in_redis_under_the_current_version_when_the_call_returns(
    make_runtime, base_settings
):
    async with make_runtime(customers=200, seed=5, redis_key_prefix=fresh_prefix(base_settings)) as rt:
        async with Client(app_for(rt, "analyst").mcp) as client:
            first = await call(client, "analyze_data", **CHURN)
            keys = await analysis_entries(rt)  # read at once: no write left running after the answer
            # Two entries: the answer as a summary and at full detail, each a hit for the next call.
            assert first["metadata"]["cached"] is False and len(keys) == 2
            assert 0 < await rt.redis.ttl(keys[0]) <= 3600
            version = await bump_version(rt)  # a data load elsewhere, between two calls
            second = await call(client, "analyze_data", **CHURN)
            assert second["metadata"]["cached"] is False and second["results"] == first["results"]
            assert (await call(client, "analyze_data", **CHURN))["metadata"]["cached"] is True
        versions = sorted(key.decode().split(":")[-2] for key in await analysis_entries(rt))
        assert versions == sorted([str(version - 1), str(version)] * 2)


def test_a_remembered_guard_verdict_depends_on_the_text_and_the_parameter_names_only():
    text = "SELECT count(*) AS n FROM customers WHERE age >= %(low)s AND age < %(high)s"
    first = queries.guard(text, {"low": 20, "high": 30})
    second = queries.guard(text, {"low": 50, "high": 70})  # other values: the same verdict
    assert second is first and first.bound.sql.endswith("age >= $1 AND age < $2")
    assert first.bound.names == ("low", "high")
    with pytest.raises(InvalidInput, match="has no value in parameters"):
        queries.guard(text, {"low": 20})
    with pytest.raises(InvalidInput, match="not used by any"):
        queries.guard(text, {"low": 20, "high": 30, "extra": 1})
    for _ in range(2):  # a refusal is never remembered as an acceptance
        with pytest.raises(QueryRefused):
            queries.guard("SELECT 1; DROP TABLE customers", {})
    long_text = "SELECT '" + "x" * queries.GUARD_CACHE_CHARS + "' AS n"
    assert len(long_text) > queries.GUARD_CACHE_CHARS
    assert queries.guard(long_text, {}) is not queries.guard(long_text, {})  # too long to remember


async def test_the_same_text_with_new_values_is_bound_afresh(connect, runtime):
    text = "SELECT count(*) AS n FROM customers WHERE age >= %(low)s"
    async with connect("analyst") as client:
        answers = [
            await call(client, "query_database", query=text, parameters={"low": low}) for low in (20, 50)
        ]
    async with runtime.db.connection() as conn:
        expected = [
            await conn.fetchval(f"SELECT count(*) FROM customers WHERE age >= {low}") for low in (20, 50)
        ]
    assert [answer["rows"][0]["n"] for answer in answers] == expected
    assert expected[0] != expected[1]


@pytest.mark.parametrize("levels", [MAX_NESTING - 2, MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1])
@pytest.mark.parametrize("leaf", ["x", 7, [], {}, None])
def test_arguments_may_nest_exactly_max_nesting_levels_whatever_sits_at_the_bottom(levels, leaf):
    value: object = leaf
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    # {"value": ...} is one level, each wrapper one more, a scalar or an empty container the last.
    depth = 1 + levels + 1
    problem = argument_problem({"value": value}, 10**6)
    assert (problem is not None and "nested deeper" in problem) == (depth > MAX_NESTING)


def test_many_inline_rows_are_measured_exactly():
    rows = [
        {"id": i, "name": "é" * 20, "score": i / 7, "ok": i % 2 == 0, "tags": ["a", "b"]} for i in range(1000)
    ]
    size = len(json.dumps({"value": rows}, ensure_ascii=False).encode())
    assert argument_problem({"value": rows}, size) is None
    refused = argument_problem({"value": rows}, size - 1)
    assert refused is not None and f"{size:,} bytes" in refused
