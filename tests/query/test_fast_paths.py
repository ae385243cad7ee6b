"""The per-call fast paths keep every guarantee: cached answers follow the data version across instances
(even while a lookup guesses the version), remembered guard verdicts depend on the text and parameter
names only, and the cheap argument-size estimate never changes a verdict."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from fastmcp import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.errors import InvalidInput, QueryRefused
from mcp_server.cache import Cache
from mcp_server.limits import MAX_NESTING, argument_problem
from mcp_server.runtime import start_runtime
from tests.conftest import app_for
from tests.support import call
from warehouse import query as queries
from warehouse.generator import generate, make_plan


def fresh_prefix(settings) -> str:
    """Redis keys of this test's own (under the run's prefix, which the session cleanup removes)."""
    return f"{settings.redis_key_prefix}fast-{uuid.uuid4().hex[:8]}:"


COUNTS = "SELECT account_type, count(*) AS n FROM customers GROUP BY 1 ORDER BY 1"


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


async def test_an_instance_never_serves_an_answer_cached_before_another_instance_regenerated_the_data(
    make_runtime, base_settings
):
    async with make_runtime(customers=120, seed=5, redis_key_prefix=fresh_prefix(base_settings)) as first:
        second = await start_runtime(first.settings, seed_demo=False)  # another instance: own pools
        try:
            one, two = app_for(first, "analyst"), app_for(second, "analyst")
            churn = {"data_source": "database", "analysis_type": "churn_rate"}
            prefetched: list[dict] = []  # per call of `a`: the cache entries read with the rate limit

            async def record(info) -> None:
                prefetched.append(dict(info.prefetched))

            one.after_call.append(record)
            async with Client(one.mcp) as a, Client(two.mcp) as b:
                before = await call(a, "query_database", query=COUNTS)
                again = await call(a, "query_database", query=COUNTS)  # `a` now guesses this version
                shared = await call(b, "query_database", query=COUNTS)
                analysed = await call(a, "analyze_data", **churn)
                analysed_again = await call(a, "analyze_data", **churn)
                assert before["rows"] == await plain_counts(first)
                assert (before["cached"], again["cached"], shared["cached"]) == (False, True, True)
                assert analysed_again["metadata"]["cached"] is True

                # The other instance regenerates the data (a new version, other customers).
                data = await asyncio.to_thread(generate, make_plan(90, 11))
                await second.db.replace_data(data)

                after = await call(a, "query_database", query=COUNTS)
                reanalysed = await call(a, "analyze_data", **churn)
                after_again = await call(a, "query_database", query=COUNTS)
        finally:
            await second.close()
        # `a`'s repeats found their entries in the rate limit's round trip; after the regeneration it
        # read the old entries there too (the guessed version) and served neither; then the new one.
        hits = [bool(reads) and all(value is not None for value in reads.values()) for reads in prefetched]
        assert hits == [False, True, False, True, True, True, True]
        expected = await plain_counts(first)
        assert sum(row["n"] for row in expected) == 90
        assert after["cached"] is False and after["rows"] == expected != before["rows"]
        assert after_again["cached"] is True and after_again["rows"] == expected
        assert reanalysed["metadata"]["cached"] is False
        assert churn_counts(reanalysed) == await plain_churn(first) != churn_counts(analysed)


async def test_a_lookup_trusts_only_the_version_it_read_never_the_one_it_guessed(make_runtime, base_settings):
    async with make_runtime(customers=None, redis_key_prefix=fresh_prefix(base_settings)) as rt:
        cache = Cache(rt, "probe", 60)
        question = {"q": "the same question"}
        version, found = await cache.lookup(question)
        assert found is None and version == await rt.db.data_version()
        await cache.put(question, {"answer": "old data"}, version)
        assert await cache.lookup(question) == (version, {"answer": "old data"})

        async with rt.db.connection() as conn:  # data regenerated elsewhere: only the row changes
            await conn.execute("UPDATE mcp_internal.data_version SET version = version + 1")
        # The entry under the guessed (old) version is still in Redis, and is not served.
        assert await cache.get(question, version) == {"answer": "old data"}
        assert await cache.lookup(question) == (version + 1, None)
        await cache.put(question, {"answer": "new data"}, version + 1)
        assert await cache.lookup(question) == (version + 1, {"answer": "new data"})


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
    long_text = "SELECT " + " + ".join(["1"] * (queries.GUARD_CACHE_CHARS // 4)) + " AS n"
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


def _exact_verdict(arguments: dict, max_bytes: int) -> str | None:
    """The rule written out plainly: depth first (a value deeper than MAX_NESTING), then the exact size."""

    def depth(value: object) -> int:
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        if isinstance(value, (list, tuple)):
            return 1 + max((depth(v) for v in value), default=0)
        return 1

    if depth(arguments) > MAX_NESTING:
        return "deep"
    size = len(json.dumps(arguments, ensure_ascii=False).encode("utf-8", "replace"))
    return "large" if size > max_bytes else None


def _verdict(problem: str | None) -> str | None:
    if problem is None:
        return None
    return "deep" if "nested deeper" in problem else "large" if "MAX_ARGUMENT_BYTES" in problem else problem


_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["\ud800 lone surrogate", '\x00\x1f"\\', "\u2028\x7f", "é" * 9])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=_values, max_bytes=st.integers(min_value=2, max_value=600))
def test_the_argument_size_estimate_never_changes_a_verdict(value, max_bytes):
    arguments = {"value": value}
    assert _verdict(argument_problem(arguments, max_bytes)) == _exact_verdict(arguments, max_bytes)


@pytest.mark.parametrize("levels", [MAX_NESTING - 2, MAX_NESTING - 1, MAX_NESTING, MAX_NESTING + 1])
@pytest.mark.parametrize("leaf", ["x", 7, [], {}, None])
def test_the_nesting_limit_is_exact_whatever_sits_at_the_bottom(levels, leaf):
    value: object = leaf
    for level in range(levels):
        value = [value] if level % 2 else {"k": value}
    arguments = {"value": value}
    assert _verdict(argument_problem(arguments, 10**6)) == _exact_verdict(arguments, 10**6)


def test_many_inline_rows_are_measured_without_being_refused_or_missed():
    rows = [
        {"id": i, "name": "é" * 20, "score": i / 7, "ok": i % 2 == 0, "tags": ["a", "b"]} for i in range(1000)
    ]
    size = len(json.dumps({"value": rows}, ensure_ascii=False).encode())
    assert argument_problem({"value": rows}, size) is None
    refused = argument_problem({"value": rows}, size - 1)
    assert refused is not None and f"{size:,} bytes" in refused


async def test_reads_riding_with_the_rate_limit_leave_it_exact_and_survive_an_unloaded_script(runtime):
    from mcp_server.ratelimit import _ADMIT, rate_limiter
    from tests.security.conftest import instance

    rt = instance(
        runtime, fresh_prefix(runtime.settings), rate_limit_per_minute=3, rate_limit_window_seconds=60
    )
    limiter = rate_limiter(rt)
    app = app_for(rt, "analyst")
    reads: list[dict] = []

    async def record(info) -> None:
        reads.append(dict(info.prefetched))

    app.after_call.append(record)
    async with Client(app.mcp) as client:
        answers = [await call(client, "query_database", query=COUNTS)]
        # A script Redis has never seen: the next (pipelined) EVALSHA fails with NOSCRIPT and is run again
        # through the script object, which loads it; the call is counted once.
        limiter._admit = rt.redis.register_script(_ADMIT + f"\n-- {uuid.uuid4().hex}")
        answers += [await call(client, "query_database", query=COUNTS) for _ in range(2)]
        refused = await client.call_tool("query_database", {"query": COUNTS}, raise_on_error=False)
    assert [answer["cached"] for answer in answers] == [False, True, True]
    assert [bool(r) for r in reads] == [False, True, True, True]  # the refused call read too, and ran nothing
    assert refused.is_error and "rate limit reached: 3 tool calls per 60 s" in refused.content[0].text
    assert await rt.redis.zcard(rt.key("ratelimit", app.local_identity.key_id)) == 3


async def test_an_answer_stored_later_is_read_at_once_here_and_lands_in_redis_by_close(
    make_runtime, base_settings
):
    prefix = fresh_prefix(base_settings)
    async with make_runtime(customers=None, redis_key_prefix=prefix) as rt:
        cache, elsewhere = Cache(rt, "probe", 60), Cache(rt, "probe", 60)  # two instances' caches
        question = {"q": "stored later"}
        version, _ = await cache.lookup(question)
        cache.store_later(question, {"answer": 42}, version)
        # This instance reads its own entry before the write has landed ...
        assert await cache.lookup(question) == (version, {"answer": 42})
        await cache.flush()
        # ... and once it has, every instance reads it from Redis.
        assert await elsewhere.lookup(question) == (version, {"answer": 42})
        key = cache._key_for(cache._digest(question), version)
        assert 0 < await rt.redis.ttl(key) <= 60
        cache.store_later({"q": "at shutdown"}, {"answer": 7}, version)
        at_shutdown = cache._key_for(cache._digest({"q": "at shutdown"}), version)
        redis_url = rt.settings.redis_url
    # Closing the runtime waited for the write still under way.
    import redis.asyncio as aioredis

    if redis_url:
        client = aioredis.from_url(redis_url)
        try:
            assert await client.exists(at_shutdown) == 1
        finally:
            await client.aclose()


async def test_an_analysis_started_before_its_version_was_confirmed_is_stored_only_if_it_was_unchanged(
    make_runtime, base_settings
):
    churn = {"data_source": "database", "analysis_type": "churn_rate"}

    async def entries(rt) -> list[bytes]:
        return [key async for key in rt.redis.scan_iter(match=rt.key("cache", "analysis") + "*")]

    async def clear(rt) -> None:
        for key in await entries(rt):
            await rt.redis.delete(key)

    async with make_runtime(customers=200, seed=5, redis_key_prefix=fresh_prefix(base_settings)) as rt:
        async with Client(app_for(rt, "analyst").mcp) as client:
            first = await call(client, "analyze_data", **churn)  # no version seen yet: read, then computed
            assert first["metadata"]["cached"] is False and len(await entries(rt)) == 1
            await clear(rt)
            # The entry under the version seen last is gone: the next call computes while it reads the
            # version; the version is unchanged, so its answer is stored.
            second = await call(client, "analyze_data", **churn)
            assert second["metadata"]["cached"] is False and second["results"] == first["results"]
            assert (await call(client, "analyze_data", **churn))["metadata"]["cached"] is True
            await clear(rt)
            async with rt.db.connection() as conn:  # a data load elsewhere, as the call starts
                await conn.execute("UPDATE mcp_internal.data_version SET version = version + 1")
                version = await conn.fetchval("SELECT version FROM mcp_internal.data_version")
            third = await call(client, "analyze_data", **churn)
            # Computed before the new version was confirmed: answered, and not stored under it.
            assert third["metadata"]["cached"] is False and third["results"] == first["results"]
            for task in list(rt.on_close):
                if getattr(task, "__name__", "") == "flush":
                    await task()
            assert await entries(rt) == []
            fourth = await call(client, "analyze_data", **churn)  # now the guess is right again
            assert fourth["metadata"]["cached"] is False
            assert (await call(client, "analyze_data", **churn))["metadata"]["cached"] is True
            assert [key.decode().split(":")[-2] for key in await entries(rt)] == [str(version)]
