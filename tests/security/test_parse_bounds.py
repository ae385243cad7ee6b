"""Parsing cannot hurt the server: no query crashes the process, stalls other callers, or costs more
than a few tens of milliseconds of CPU, and ordinary big analytical SQL is still accepted.

Before: a 48 KB `SELECT 1+1+...` (24,000 terms) overflowed the C stack inside pglast's parser and killed
the process for every user; 16-20k terms or a 40k-item IN list blocked the event loop for seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pglast import parser

from core.errors import AnalyticsError
from tests.support import call, refusal
from warehouse import query as queries
from warehouse.sqlguard import MAX_DEPTH, MAX_PARENTHESES, MAX_QUERY_CHARS, MAX_QUERY_TOKENS

# Binary operators PostgreSQL parses into left-deep chains (a op b op c ... nests one level per op).
BINARY_OPERATORS = ["+", "-", "*", "/", "%", "^", "||", "<", ">", "=", "<=", ">=", "<>", "->", "#", "&", "|"]


def _repeat(
    head: str, unit: str, tail: str = "", *, times: int | None = None, chars: int = MAX_QUERY_CHARS
) -> str:
    """head + unit * n + tail: `times` units, or as many as fit in `chars` characters."""
    count = times if times is not None else (chars - len(head) - len(tail)) // len(unit)
    return head + unit * count + tail


def _nested(opening: str, middle: str, closing: str, levels: int) -> str:
    return "SELECT " + opening * levels + middle + closing * levels


def hostile_shapes(chars: int = MAX_QUERY_CHARS) -> Iterator[tuple[str, str]]:
    """(name, query) of every deep or long shape, as large as `chars` characters allow."""
    for operator in BINARY_OPERATORS:
        yield f"1 {operator} 1 ...", _repeat("SELECT 1", f"{operator}1", chars=chars)
    yield "age + 1 + 1 ...", _repeat("SELECT age", "+1", " FROM customers", chars=chars)
    yield "'a' || 'a' ...", _repeat("SELECT 'a'", "||'a'", chars=chars)
    yield "AND chain", _repeat("SELECT 1 WHERE true", " AND true", chars=chars)
    yield "OR chain", _repeat("SELECT 1 WHERE true", " OR true", chars=chars)
    yield "AND/OR alternating", _repeat("SELECT 1 WHERE true", " AND true OR true", chars=chars)
    yield "unary minus", _repeat("SELECT ", "- ", "age FROM customers", chars=chars)
    yield "NOT NOT ...", _repeat("SELECT ", "NOT ", "true", chars=chars)
    levels = (chars - 10) // 12
    yield "abs(abs(...))", _nested("abs(", "1", ")", levels)
    yield "coalesce(...)", _nested("coalesce(", "1", ")", (chars - 10) // 11)
    yield "((((1))))", _nested("(", "1", ")", (chars - 10) // 2)
    yield "nested CASE", _nested("CASE WHEN true THEN ", "1", " END", (chars - 10) // 24)
    yield "nested subqueries", _nested("(SELECT ", "1", ")", (chars - 10) // 9)
    yield "nested ARRAY", _nested("ARRAY[", "1", "]", (chars - 10) // 7)
    yield "casts", _repeat("SELECT 1", "::int", chars=chars)
    yield "IS NULL chain", _repeat("SELECT 1", " IS NULL", chars=chars)
    yield "UNION chain", _repeat("SELECT 1", " UNION SELECT 1", chars=chars)
    yield "JOIN chain", _repeat("SELECT 1 FROM customers c", " JOIN customers USING (age)", chars=chars)
    yield "IN list", _repeat("SELECT 1 WHERE 1 IN (1", ",1", ")", chars=chars)
    yield "ARRAY list", _repeat("SELECT ARRAY[1", ",1", "]", chars=chars)
    yield "SELECT list", _repeat("SELECT 1", ",1", chars=chars)


def crash_inputs() -> list[tuple[str, str]]:
    """The issue's inputs: 24,000-term chains (48 KB), 40k-item IN and ARRAY lists, and every shape."""
    found = [
        ("1+1+... 24,000 terms", "SELECT " + "+".join(["1"] * 24_000)),
        ("IN list of 40,000", "SELECT 1 WHERE 1 IN (" + ",".join(["1"] * 40_000) + ")"),
        ("ARRAY of 40,000", "SELECT ARRAY[" + ",".join(["1"] * 40_000) + "]"),
    ]
    return found + list(hostile_shapes())


def _one_line_saying_why(text: str) -> None:
    assert "\n" not in text and "Traceback" not in text and "internal error" not in text, text
    assert any(
        reason in text
        for reason in (
            "tokens (at most",
            "levels deep (at most",
            "parentheses",
            "characters",
            "syntax error",
            "memory exhausted",
        )
    ), text


# --- the real server in a subprocess survives every input ----------------------------------------


@pytest.mark.slow
@pytest.mark.http
async def test_the_server_process_survives_every_deep_or_long_query_and_keeps_answering_others(
    create_database, redis_url, redis_prefix, tmp_path
):
    from cryptography.fernet import Fernet

    from mcp_server.config import digest_key
    from tests.production.services import ServerProcess, mcp_session
    from tests.production.services import call as call_over_http
    from tests.production.services import refusal as refusal_over_http

    mallory, bob = f"key-{secrets.token_hex(8)}", f"key-{secrets.token_hex(8)}"
    server = ServerProcess(
        {
            "DATABASE_URL": await create_database(),
            "REDIS_URL": redis_url,
            "REDIS_KEY_PREFIX": f"{redis_prefix}parse-{uuid.uuid4().hex[:6]}:",
            "API_KEYS": f"mallory:analyst:{digest_key(mallory)},bob:analyst:{digest_key(bob)}",
            "SESSION_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "ANALYTICS_MCP_HOME": str(tmp_path),
            "DB_POOL_MIN_SIZE": "1",
            "DB_POOL_MAX_SIZE": "4",
            "RATE_LIMIT_PER_MINUTE": "100000",
            "LOG_LEVEL": "WARNING",
        }
    )
    await server.start()
    try:
        async with mcp_session(server.url, mallory) as attacker, mcp_session(server.url, bob) as other:
            slowest = 0.0
            done = asyncio.Event()

            async def bob_keeps_asking() -> None:
                nonlocal slowest
                while not done.is_set():
                    started = time.perf_counter()
                    answer = await call_over_http(other, "query_database", query="SELECT 41 + 1 AS n")
                    slowest = max(slowest, time.perf_counter() - started)
                    assert answer["rows"] == [{"n": 42}]
                    await asyncio.sleep(0.05)

            asker = asyncio.create_task(bob_keeps_asking())
            try:
                for name, sql in crash_inputs():
                    text = await refusal_over_http(attacker, "query_database", query=sql)
                    _one_line_saying_why(text)
                    assert server.process is not None and server.process.poll() is None, f"died on {name}"
            finally:
                done.set()
                await asker
            assert slowest < 2.0, f"bob waited {slowest:.2f} s while the attack ran"
            status, _ = await server.health()
            assert status == 200
            answer = await call_over_http(other, "query_database", query="SELECT 6 * 7 AS n")
            assert answer["rows"] == [{"n": 42}]
    finally:
        alive = server.process is not None and server.process.poll() is None
        await server.stop()
    assert alive, server.output()[-3000:]


# --- fuzz: every shape at every size, the event loop never stalls ---------------------------------


@pytest.fixture
def started_server_heap() -> Iterator[None]:
    """The heap as `serve` leaves it once started: what is loaded is frozen out of the collector (a full
    collection of this test process's 300k+ objects would stall the loop whatever the guard does)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.asynccontextmanager
async def lag_probe() -> Any:
    """Measures the event loop's worst oversleep of a 10 ms sleep while the block runs: `probe.worst`."""

    class Probe:
        worst = 0.0

    probe = Probe()
    running = True

    async def sample() -> None:
        while running:
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            probe.worst = max(probe.worst, time.perf_counter() - started - 0.01)

    task = asyncio.create_task(sample())
    await asyncio.sleep(0.02)
    try:
        yield probe
    finally:
        running = False
        await task


def _sizes() -> list[int]:
    """Query sizes in characters from small to the cap: around every limit and far past them."""
    return [60, 200, 400, 1_000, 3_000, 6_000, 12_000, 25_000, MAX_QUERY_CHARS]


async def test_every_deep_or_long_shape_up_to_the_size_cap_is_refused_or_accepted_without_stalling_the_loop(
    started_server_heap,
):
    outcomes: dict[str, int] = {"accepted": 0, "refused": 0}
    async with lag_probe() as probe:
        for chars in _sizes():
            batch = [sql for _, sql in hostile_shapes(chars)]
            # Four callers at once, as several agents would: the loop must still be free.
            for start in range(0, len(batch), 4):
                results = await asyncio.gather(
                    *(queries.guard_in_thread(sql, {}) for sql in batch[start : start + 4]),
                    return_exceptions=True,
                )
                for sql, result in zip(batch[start : start + 4], results, strict=True):
                    if isinstance(result, AnalyticsError):
                        _one_line_saying_why(str(result))
                        outcomes["refused"] += 1
                    else:
                        assert isinstance(result, queries.GuardedQuery), (sql[:80], result)
                        outcomes["accepted"] += 1
    print(f"\nworst event-loop stall while guarding: {probe.worst * 1000:.1f} ms; {outcomes}")
    assert probe.worst < 0.5
    assert outcomes["accepted"] > 20 and outcomes["refused"] > 100  # both sides of every limit were reached


def _worst_accepted() -> dict[str, str]:
    """The most expensive queries the guard accepts: as many tokens as allowed (less a few for the
    LIMIT added below) of the costliest shapes measured, operator chains each MAX_DEPTH - 6 deep."""

    def fill(unit: str, tail: str = "") -> str:
        per_unit = len(parser.scan(unit + ","))
        units = (MAX_QUERY_TOKENS - 4 - len(parser.scan("SELECT" + tail))) // per_unit
        return "SELECT " + ", ".join([unit] * units) + tail

    chain = MAX_DEPTH - 6
    return {
        "column chains": fill("(" + " + ".join(["age"] * chain) + ")", " FROM customers"),
        "constant chains": fill("(" + "+".join(["1"] * chain) + ")"),
        "text chains": fill("(" + "||".join(["'a'"] * chain) + ")"),
        "casts": fill("age::int::text::int::text::int::text", " FROM customers"),
        "CASE lists": fill(
            "CASE WHEN age = 1 THEN 'x' WHEN age = 2 THEN 'y' ELSE 'z' END", " FROM customers"
        ),
        "IN list": "SELECT 1 WHERE 1 IN (" + ",".join(["1"] * ((MAX_QUERY_TOKENS - 12) // 2)) + ")",
    }


def _guard_cpu_ms(sql: str) -> float:
    """CPU time of guarding `sql` in this (worker) thread, with a text the verdict cache has not seen."""
    fresh = f"{sql} LIMIT {secrets.randbelow(10**9) + 1}"
    started = time.thread_time()
    queries.guard(fresh, {})
    return (time.thread_time() - started) * 1000


async def test_guarding_the_worst_accepted_query_takes_under_250_ms_of_cpu(started_server_heap):
    """Bounded: the costliest shape took 95 ms of CPU alone on this 2-core machine (2026-12-04), 102 during
    a full test run; the bound is far below what an unbounded parse costs (seconds), not a speed target."""
    spent = {}
    for name, sql in _worst_accepted().items():
        await asyncio.to_thread(_guard_cpu_ms, sql)  # accepted (raises otherwise); warms pglast up
        spent[name] = min([await asyncio.to_thread(_guard_cpu_ms, sql) for _ in range(3)])
    print(
        "\nCPU ms to guard the worst accepted queries: " + ", ".join(f"{k} {v:.1f}" for k, v in spent.items())
    )
    assert max(spent.values()) < 250, spent


def test_the_limits_are_said_in_one_line_with_the_numbers():
    with pytest.raises(AnalyticsError, match=rf"has 24,\d{{3}} tokens \(at most {MAX_QUERY_TOKENS:,}\)"):
        queries.guard("SELECT " + "+".join(["1"] * 12_000), {})
    with pytest.raises(AnalyticsError, match=rf"nests 1\d\d levels deep \(at most {MAX_DEPTH}\)"):
        queries.guard("SELECT " + "+".join(["1"] * 150), {})
    with pytest.raises(AnalyticsError, match=rf"parentheses 150 levels deep \(at most {MAX_PARENTHESES}\)"):
        queries.guard("SELECT " + "(" * 150 + "1" + ")" * 150, {})
    with pytest.raises(AnalyticsError, match=rf"longer than {MAX_QUERY_CHARS:,} characters"):
        queries.guard("SELECT '" + "x" * MAX_QUERY_CHARS + "'", {})
    # Just inside the limits: accepted.
    queries.guard("SELECT " + "+".join(["1"] * (MAX_DEPTH - 5)), {})
    queries.guard("SELECT " + "(" * MAX_PARENTHESES + "1" + ")" * MAX_PARENTHESES, {})


# --- non-ASCII text: pglast's position mapping is quadratic in it --------------------------------


def test_long_non_ascii_text_costs_no_more_than_ascii_and_is_refused_when_it_would():
    # 2,000 tokens before 20,000 multi-byte characters: pglast alone took 4 s to scan this.
    sql = "SELECT " + ",".join(["1"] * 1_000) + ", '" + "Ω" * 20_000 + "'"
    spent = []
    for _ in range(3):  # the least of three: CPU time, not a stall somebody else caused
        started = time.thread_time()
        with pytest.raises(AnalyticsError, match="non-ASCII characters among") as refused:
            queries.guard(sql, {})
        spent.append(time.thread_time() - started)
    assert min(spent) < 0.5  # linear: 3-6 ms on an idle machine; the quadratic scan took 4.4 s
    _one_line_saying_why(str(refused.value))
    # A long non-ASCII literal in a short query is fine, and so are non-ASCII names.
    accepted = queries.guard("SELECT '" + "Ω" * 20_000 + "' AS \"Größe\", 'Zürich' AS city", {})
    assert accepted.checked.sql.endswith("'Zürich' AS city")
    with pytest.raises(AnalyticsError, match=r"dollar-quote tag \$Ω\$ .*has non-ASCII characters"):
        queries.guard("SELECT $Ω$ $ω$; DROP TABLE customers; $Ω$", {})


# --- ordinary big queries are still accepted, and answered right -----------------------------------


async def test_ordinary_big_analytical_queries_are_still_accepted(connect, runtime):
    async with runtime.db.connection() as conn:
        known = [
            str(row["customer_id"]) for row in await conn.fetch("SELECT customer_id FROM customers LIMIT 700")
        ]
        ages = {
            row["age"]: row["n"]
            for row in await conn.fetch("SELECT age, count(*) AS n FROM customers GROUP BY age")
        }
    unknown = [str(uuid.uuid4()) for _ in range(1_000 - len(known))]
    in_list = ", ".join(f"'{value}'" for value in known + unknown)
    ctes = ",\n".join(
        ["c1 AS (SELECT customer_id, age FROM customers WHERE age >= 18)"]
        + [f"c{i} AS (SELECT customer_id, age FROM c{i - 1} WHERE age >= {17 + i})" for i in range(2, 31)]
    )
    big_case = (
        "SELECT CASE "
        + " ".join(f"WHEN age = {age} THEN 'age {age}'" for age in range(18, 121))
        + " ELSE 'other' END AS label, count(*) AS n FROM customers GROUP BY 1"
    )
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query=f"SELECT count(*) AS n FROM customers WHERE customer_id IN ({in_list})",
        )
        assert answer["rows"] == [{"n": len(known)}]
        answer = await call(client, "query_database", query=f"WITH {ctes}\nSELECT count(*) AS n FROM c30")
        assert answer["rows"] == [{"n": sum(n for age, n in ages.items() if age is not None and age >= 47)}]
        answer = await call(client, "query_database", query=big_case, max_rows=200)
        assert {row["label"]: row["n"] for row in answer["rows"]} == {
            (f"age {age}" if age is not None else "other"): n for age, n in ages.items()
        }
        text = await refusal(client, "query_database", query="SELECT " + "+".join(["1"] * 24_000))
        assert f"(at most {MAX_QUERY_TOKENS:,})" in text
