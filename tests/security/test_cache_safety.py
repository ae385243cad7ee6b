"""Caches that cannot lie or tell: an answer is served from the cache only for the very same question
(as PostgreSQL parses it, with the same values) asked by the same user, and the cache's memory is bounded."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
from fastmcp import Client
from pglast import parse_sql
from redis.exceptions import OutOfMemoryError

from mcp_server.config import ConfigError, Settings
from mcp_server.runtime import redis_client
from tests.conftest import app_for
from tests.security.conftest import instance
from tests.support import call, refusal
from warehouse import sqlguard
from warehouse.sqlguard import normalised, validate_select

# PostgreSQL folds only ASCII letters of unquoted identifiers: Ω and ω are two columns to it.
UPPER_OMEGA = "SELECT Ω AS v FROM (SELECT 'genuine' AS ω, 'POISONED' AS Ω) t"
LOWER_OMEGA = "SELECT ω AS v FROM (SELECT 'genuine' AS ω, 'POISONED' AS Ω) t"
COUNTS = "SELECT account_type, count(*) AS n FROM customers GROUP BY 1 ORDER BY 1"
CHURN = {"data_source": "database", "analysis_type": "churn_rate"}


def cache_keys(rt, redis=None):
    return (redis or rt.redis).scan_iter(match=rt.key("cache") + ":*")


async def test_a_query_naming_another_non_ascii_column_is_never_answered_from_the_others_entry(
    runtime, fresh_prefix
):
    rt = instance(runtime, fresh_prefix)
    async with Client(app_for(rt, "analyst2").mcp) as bob, Client(app_for(rt, "analyst").mcp) as alice:
        poisoned = await call(bob, "query_database", query=UPPER_OMEGA)
        answered = await call(alice, "query_database", query=LOWER_OMEGA)
    assert poisoned["rows"] == [{"v": "POISONED"}] and poisoned["cached"] is False
    assert answered["rows"] == [{"v": "genuine"}] and answered["cached"] is False
    # One user, both directions: the key itself tells the two apart, not only the per-user scope.
    for first, second, expected in (
        (UPPER_OMEGA, LOWER_OMEGA, "genuine"),
        (LOWER_OMEGA, UPPER_OMEGA, "POISONED"),
    ):
        scoped = instance(runtime, f"{fresh_prefix}{expected}:")
        async with Client(app_for(scoped, "analyst").mcp) as client:
            await call(client, "query_database", query=first)
            again = await call(client, "query_database", query=first)
            other = await call(client, "query_database", query=second)
        assert again["cached"] is True
        assert other["rows"] == [{"v": expected}] and other["cached"] is False


async def test_quoted_identifiers_keep_their_case_and_unquoted_ascii_ones_fold_as_postgresql_folds_them(
    runtime, fresh_prefix
):
    inner = 'FROM (SELECT 1 AS abc, 2 AS "Abc") t'
    rt = instance(runtime, fresh_prefix)
    async with Client(app_for(rt, "analyst").mcp) as client:
        quoted = await call(client, "query_database", query=f'SELECT "Abc" AS v {inner}')
        plain = await call(client, "query_database", query=f"SELECT abc AS v {inner}")
        shouted = await call(
            client, "query_database", query='select  ABC  as V FROM (select 1 as ABC, 2 as "Abc") T'
        )
    assert quoted["rows"] == [{"v": 2}] and quoted["cached"] is False
    assert plain["rows"] == [{"v": 1}] and plain["cached"] is False
    # Only spacing and ASCII case differ (the same query to PostgreSQL): the same entry, rightly.
    assert shouted["rows"] == [{"v": 1}] and shouted["cached"] is True


async def test_each_user_has_their_own_entries_so_no_cached_flag_tells_what_another_asked(
    runtime, fresh_prefix
):
    rt = instance(runtime, fresh_prefix)
    async with Client(app_for(rt, "analyst").mcp) as alice, Client(app_for(rt, "analyst2").mcp) as bob:
        first = await call(alice, "query_database", query=COUNTS)
        repeat = await call(alice, "query_database", query=COUNTS)
        bobs = await call(bob, "query_database", query=COUNTS)
        bobs_repeat = await call(bob, "query_database", query=COUNTS)
        analysed = await call(alice, "analyze_data", **CHURN)
        analysed_again = await call(alice, "analyze_data", **CHURN)
        bob_analysed = await call(bob, "analyze_data", **CHURN)
        bob_analysed_again = await call(bob, "analyze_data", **CHURN)
    assert [first["cached"], repeat["cached"], bobs["cached"], bobs_repeat["cached"]] == [
        False,
        True,
        False,
        True,
    ]
    assert first["rows"] == repeat["rows"] == bobs["rows"]
    cached = [a["metadata"]["cached"] for a in (analysed, analysed_again, bob_analysed, bob_analysed_again)]
    assert cached == [False, True, False, True]
    assert bob_analysed["results"] == analysed["results"]


async def test_queries_differing_only_in_a_constant_or_a_parameter_value_never_share_an_entry(
    runtime, fresh_prefix
):
    rt = instance(runtime, fresh_prefix)
    text = "SELECT count(*) AS n FROM customers WHERE age > {}"
    async with Client(app_for(rt, "analyst").mcp) as client:
        literal = [await call(client, "query_database", query=text.format(age)) for age in (70, 20, 70)]
        bound = [
            await call(client, "query_database", query=text.format("%(age)s"), parameters={"age": age})
            for age in (70, 20, 70)
        ]
    async with runtime.db.connection() as conn:
        expected = {age: await conn.fetchval(text.format(age)) for age in (70, 20)}
    assert expected[70] != expected[20]
    for answers in (literal, bound):
        assert [a["rows"][0]["n"] for a in answers] == [expected[70], expected[20], expected[70]]
        assert [a["cached"] for a in answers] == [False, False, True]


async def test_an_answer_larger_than_the_entry_cap_is_answered_but_never_stored(runtime, fresh_prefix):
    rt = instance(runtime, fresh_prefix, cache_max_entry_bytes=10_000)
    large = "SELECT customer_id, created_at FROM customers ORDER BY customer_id LIMIT 1000"
    async with Client(app_for(rt, "analyst").mcp) as client:
        answers = [await call(client, "query_database", query=large, max_rows=1000) for _ in range(2)]
        small = [await call(client, "query_database", query=COUNTS) for _ in range(2)]
    assert [a["row_count"] for a in answers] == [1000, 1000]
    assert [a["cached"] for a in answers] == [False, False]
    assert [a["cached"] for a in small] == [False, True]  # small answers are still cached
    stored = [key async for key in cache_keys(rt)]
    assert len(stored) == 1
    assert len(await rt.redis.get(stored[0])) <= 10_000


async def test_a_dedicated_cache_redis_holds_the_entries_and_the_session_redis_none(
    runtime, redis_url, fresh_prefix
):
    parts = urlsplit(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        pytest.skip("the test Redis is not reached by host and port")
    cache_url = urlunsplit(parts._replace(path="/1"))  # another logical database, as a stand-in
    rt = dataclasses.replace(instance(runtime, fresh_prefix), cache_redis=redis_client(cache_url))
    try:
        async with Client(app_for(rt, "analyst").mcp) as client:
            answers = [await call(client, "query_database", query=COUNTS) for _ in range(2)]
        assert [a["cached"] for a in answers] == [False, True]
        assert [key async for key in cache_keys(rt)] == []
        in_cache_redis = [key async for key in cache_keys(rt, rt.cache_redis)]
        assert len(in_cache_redis) == 1
        assert 0 < await rt.cache_redis.ttl(in_cache_redis[0]) <= 300
    finally:
        for key in [key async for key in cache_keys(rt, rt.cache_redis)]:
            await rt.cache_redis.delete(key)
        await rt.cache_redis.aclose()


def test_the_cache_key_is_the_parsers_canonical_text_not_folded_text():
    canonical = validate_select("select  Ω ,ABC, \"Abc\", 'MiXeD' from T where x > 70").canonical
    assert canonical == 'SELECT "Ω", abc, "Abc", \'MiXeD\' FROM t WHERE x > 70'
    assert validate_select("SELECT ω FROM t").canonical != validate_select("SELECT Ω FROM t").canonical
    # The query log's hash folds case the same way: ASCII only.
    assert normalised("SELECT Ω FROM t") != normalised("SELECT ω FROM t")
    assert normalised("SELECT ABC FROM T") == normalised("select abc from t")
    # A statement the printer cannot print (deeper than Python's recursion limit allows; the guard's
    # nesting limit refuses such queries before this today) has no key, and is never cached.
    deep = parse_sql("SELECT " + " + ".join(["1"] * 2_000) + " AS n")[0].stmt
    assert sqlguard._canonical(deep) is None
    assert not dataclasses.replace(validate_select("SELECT 1 AS n"), canonical=None).cacheable


def test_cache_settings_are_read_and_checked():
    settings = Settings.from_env({"CACHE_REDIS_URL": "redis://cache:6379/0", "CACHE_MAX_ENTRY_BYTES": "1000"})
    assert (settings.cache_redis_url, settings.cache_max_entry_bytes) == ("redis://cache:6379/0", 1000)
    assert Settings.from_env({}).cache_redis_url is None
    assert Settings.from_env({}).cache_max_entry_bytes == 256_000
    with pytest.raises(ConfigError, match="CACHE_REDIS_URL must start with redis://"):
        Settings.from_env({"CACHE_REDIS_URL": "http://cache"})


@pytest.fixture
def full_redis(tmp_path):
    """A private Redis configured like the compose session Redis (maxmemory, noeviction), already full."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no redis-server binary")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            "8mb",
            "--maxmemory-policy",
            "noeviction",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as attempt:
                if attempt.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()  # a throwaway server with nothing to save
        server.wait(10)


async def test_a_full_session_redis_refuses_new_sessions_in_one_line_and_queries_go_on(runtime, full_redis):
    client = redis_client(full_redis)
    rt = dataclasses.replace(instance(runtime), redis=client, cache_redis=None)
    try:
        await client.set("filler", b"x" * 3_000_000)
        await client.config_set("maxmemory", "1mb")  # now over it: Redis refuses every write
        with pytest.raises(OutOfMemoryError):
            await client.set("one-more", b"x")
        async with Client(app_for(rt, "analyst").mcp) as analyst:
            refused = await refusal(analyst, "session_create", data_source="database")
            answers = [await call(analyst, "query_database", query=COUNTS) for _ in range(2)]
        assert refused.startswith("the session store is full;") and "REDIS_MAXMEMORY" in refused
        assert answers[0]["rows"] == answers[1]["rows"] and answers[1]["cached"] is False  # nothing stored
    finally:
        await client.aclose()
