"""query_database end to end through an in-memory MCP client on real PostgreSQL and Redis."""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid

import asyncpg
import numpy as np
import pandas as pd
import pytest
from fastmcp import Client

from mcp_server.auth import Identity
from tests.conftest import app_for
from tests.query.corpus import ATTACKS, LEGITIMATE
from tests.support import bump_version, call, refusal
from warehouse import sandbox, sql
from warehouse.sqlguard import normalised

# The analytics tables, mcp_internal (minus the server's own per-call logs, query_log and audit_log, which
# grow with every call by design), the public schema's relations, large objects and the query role.
FINGERPRINT = """
SELECT (SELECT count(*) FROM customers) AS customers,
       (SELECT sum(age) FROM customers) AS customer_ages,
       (SELECT count(*) FROM customers WHERE is_churned) AS churned,
       (SELECT count(*) FROM network_events) AS events,
       (SELECT sum(duration_seconds) FROM network_events) AS durations,
       (SELECT sum(network_quality_score) FROM network_events) AS quality,
       (SELECT count(*) FROM revenue) AS revenue_rows,
       (SELECT sum(amount) FROM revenue) AS revenue_total,
       (SELECT row_to_json(v)::text FROM mcp_internal.data_version v) AS data_version,
       (SELECT count(*) FROM mcp_internal.session_archive) AS archived_sessions,
       (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace) AS public_relations,
       (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects,
       (SELECT bool_or(rolsuper) FROM pg_roles
        WHERE rolname IN (SELECT role_name FROM mcp_internal.query_login)) AS reader_is_superuser
"""


async def fingerprint(runtime) -> dict:
    async with runtime.db.connection() as conn:
        return dict(await conn.fetchrow(FINGERPRINT))


@pytest.fixture(scope="module")
async def scratch(make_runtime):
    """A small runtime of its own for tests that attack it or change its data version."""
    async with make_runtime(customers=150, seed=3) as rt:
        yield rt


def client_for(runtime, user: str = "analyst") -> Client:
    return Client(app_for(runtime, user).mcp)


async def test_every_attack_is_refused_in_one_line_and_the_database_is_unchanged(scratch):
    before = await fingerprint(scratch)
    assert before["customers"] == 150 and before["reader_is_superuser"] is False
    failures = []
    async with client_for(scratch) as client:
        for kind, attack, fragment in ATTACKS:
            message = await refusal(client, "query_database", query=attack)
            if fragment.lower() not in message.lower():
                failures.append(f"{kind}: {attack!r} -> {message!r}")
        # The server still serves after the barrage.
        assert (await call(client, "query_database", query="SELECT count(*) AS n FROM customers"))[
            "rows"
        ] == [{"n": 150}]
    assert failures == []
    assert await fingerprint(scratch) == before


async def test_every_attack_is_logged_as_refused_by_hash_only(scratch):
    await scratch.services.query_log.flush()
    async with scratch.db.connection() as conn:
        logged = await conn.fetch(
            "SELECT query_hash, outcome FROM mcp_internal.query_log WHERE outcome = 'refused'"
        )
    refused_hashes = {row["query_hash"] for row in logged}
    for _, attack, _ in ATTACKS[:10]:
        assert hashlib.sha256(normalised(attack).encode()).hexdigest() in refused_hashes


@pytest.mark.parametrize("query", LEGITIMATE)
async def test_legitimate_queries_run(connect, query):
    async with connect("analyst") as client:
        answer = await call(client, "query_database", query=query)
    assert answer["row_count"] == len(answer["rows"]) > 0
    assert answer["truncated"] is (answer["row_count"] == 100)  # the default page; customers has 2,000 rows


async def test_a_join_with_aggregation_matches_plain_sql(connect, runtime):
    query = (
        "SELECT c.account_type, count(DISTINCT r.customer_id) AS payers, sum(r.amount) AS total "
        "FROM customers c JOIN revenue r ON r.customer_id = c.customer_id GROUP BY c.account_type ORDER BY 1"
    )
    async with connect("analyst") as client:
        answer = await call(client, "query_database", query=query)
    async with runtime.db.connection() as conn:
        expected = await conn.fetch(
            "SELECT c.account_type, count(DISTINCT r.customer_id) AS payers, sum(r.amount) AS total "
            "FROM revenue r, customers c WHERE c.customer_id = r.customer_id GROUP BY 1 ORDER BY 1"
        )
    assert [(r["account_type"], r["payers"], r["total"]) for r in answer["rows"]] == [
        (e["account_type"], e["payers"], float(e["total"])) for e in expected
    ]


async def test_a_cte_with_a_window_function_matches_plain_sql(connect, runtime):
    query = """
        WITH per_customer AS (
            SELECT customer_id, sum(amount) AS spent FROM revenue GROUP BY customer_id
        )
        SELECT customer_id, spent, rank() OVER (ORDER BY spent DESC, customer_id) AS position
        FROM per_customer ORDER BY position LIMIT 5;
    """
    async with connect("analyst") as client:
        answer = await call(client, "query_database", query=query)
    async with runtime.db.connection() as conn:
        top = await conn.fetch(
            "SELECT customer_id, sum(amount) AS spent FROM revenue GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5"
        )
    assert [row["customer_id"] for row in answer["rows"]] == [str(row["customer_id"]) for row in top]
    assert [row["position"] for row in answer["rows"]] == [1, 2, 3, 4, 5]


async def test_information_schema_shows_the_analytics_tables_and_hides_mcp_internal(connect):
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('public', 'mcp_internal') ORDER BY 2",
        )
    assert [row["table_name"] for row in answer["rows"]] == ["customers", "network_events", "revenue"]


async def test_literals_with_dashes_semicolons_and_slashes_come_back_verbatim(connect):
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT '-- not a comment; /* nor this */' AS text, 'a;b' AS pair;",
        )
    assert answer["rows"] == [{"text": "-- not a comment; /* nor this */", "pair": "a;b"}]


async def test_bound_parameters_give_the_same_answer_as_literals(connect):
    base = "SELECT count(*) AS n, sum(age) AS ages FROM customers WHERE account_type = {t} AND age >= {a}"
    async with connect("analyst") as client:
        literal = await call(client, "query_database", query=base.format(t="'Premium'", a="40"))
        bound = await call(
            client,
            "query_database",
            query=base.format(t="%(type)s", a="%(min_age)s"),
            parameters={"type": "Premium", "min_age": 40},
        )
    assert literal["rows"][0]["n"] > 0
    assert bound["rows"] == literal["rows"]


@pytest.mark.parametrize(
    "injection",
    ["Basic' OR '1'='1", "Basic'; DROP TABLE customers; --", "' UNION SELECT rolpassword FROM pg_authid --"],
)
async def test_an_injection_string_passed_as_a_parameter_matches_nothing(connect, runtime, injection):
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT count(*) AS n FROM customers WHERE account_type = %(type)s",
            parameters={"type": injection},
        )
    assert answer["rows"] == [{"n": 0}]
    assert await runtime.db.row_count("customers") == 2_000


async def test_dates_uuids_and_lists_bind_from_json_values(connect, runtime):
    async with runtime.db.connection() as conn:
        some = await conn.fetch("SELECT customer_id FROM customers ORDER BY customer_id LIMIT 3")
        since = await conn.fetchval("SELECT count(*) FROM revenue WHERE transaction_date >= '2025-01-01'")
    async with connect("analyst") as client:
        by_ids = await call(
            client,
            "query_database",
            query="SELECT count(*) AS n FROM customers WHERE customer_id = ANY(%(ids)s)",
            parameters={"ids": [str(row["customer_id"]) for row in some]},
        )
        by_date = await call(
            client,
            "query_database",
            query="SELECT count(*) AS n FROM revenue WHERE transaction_date >= %(since)s",
            parameters={"since": "2025-01-01"},
        )
    assert by_ids["rows"] == [{"n": 3}]
    assert by_date["rows"] == [{"n": since}]


async def test_a_parameter_of_the_wrong_type_is_named_without_echoing_its_value(connect):
    async with connect("analyst") as client:
        message = await refusal(
            client,
            "query_database",
            query="SELECT count(*) FROM customers WHERE age > %(min_age)s",
            parameters={"min_age": "secret-value-xyz"},
        )
    assert "min_age" in message and "whole number" in message
    assert "secret-value-xyz" not in message


async def test_missing_and_extra_parameters_are_clear_errors(connect):
    async with connect("analyst") as client:
        missing = await refusal(client, "query_database", query="SELECT %(a)s + %(b)s", parameters={"a": 1})
        extra = await refusal(client, "query_database", query="SELECT 1", parameters={"unused": 1})
    assert "%(b)s" in missing and "add 'b'" in missing
    assert "unused" in extra and "not used" in extra


async def test_pg_sleep_beyond_the_timeout_is_cancelled_with_a_timeout_error(connect):
    started = time.monotonic()
    async with connect("analyst") as client:
        message = await refusal(client, "query_database", query="SELECT pg_sleep(10)", timeout=1)
        after = await call(client, "query_database", query="SELECT 1 AS still_serving")
    assert "cancelled after the 1 s timeout" in message
    assert time.monotonic() - started < 8  # generous: proves no hang, not speed
    assert after["rows"] == [{"still_serving": 1}]


async def test_three_million_rows_come_back_truncated_and_the_server_still_serves(connect):
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT g, md5(g::text) AS h FROM generate_series(1, 3000000) AS g",
        )
        after = await call(client, "query_database", query="SELECT count(*) AS n FROM customers")
    assert answer["truncated"] is True and answer["truncated_by"] == "rows"
    assert answer["row_count"] == 100 and len(answer["rows"]) == 100  # the default page
    assert answer["rows"][0] == {"g": 1, "h": hashlib.md5(b"1").hexdigest()}  # noqa: S324
    assert "save_as" in answer["hint"]
    assert after["rows"] == [{"n": 2_000}]


async def test_wide_rows_stop_at_the_byte_cap(connect, runtime):
    cap = runtime.settings.query_max_bytes
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT g, repeat('x', 10000) AS wide FROM generate_series(1, 2000) AS g",
            max_rows=2_000,
        )
    assert answer["truncated"] is True and answer["truncated_by"] == "bytes"
    assert 0 < answer["row_count"] < 2_000
    assert answer["row_count"] * 10_000 <= cap


async def test_max_rows_above_the_server_cap_is_refused_with_the_alternative(connect, runtime):
    cap = runtime.settings.query_max_rows_cap
    async with connect("analyst") as client:
        message = await refusal(client, "query_database", query="SELECT 1", max_rows=cap + 1)
    assert f"{cap:,}" in message and "save_as" in message


async def test_queries_run_as_the_query_role_even_though_database_url_is_a_superuser(connect, runtime):
    async with runtime.db.connection() as conn:
        assert await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT current_user AS acting, has_schema_privilege('mcp_internal', 'USAGE') "
            "AS can_read_internal, current_setting('transaction_read_only') AS read_only",
        )
    assert answer["rows"] == [
        {"acting": runtime.db.query_role, "can_read_internal": False, "read_only": "on"}
    ]
    assert runtime.db.query_role.startswith("analytics_mcp_query_")


async def test_the_query_role_alone_refuses_internal_tables_files_and_writes(runtime):
    """The layers under the guard, exercised with the guard out of the way."""
    begin = sql.load("query_begin").format(statement_timeout_ms=5_000, idle_timeout_ms=10_000)
    statements = {
        "SELECT count(*) FROM mcp_internal.query_log": asyncpg.InsufficientPrivilegeError,
        "SELECT pg_read_file('/etc/hostname')": asyncpg.InsufficientPrivilegeError,
        "SELECT pg_ls_dir('.')": asyncpg.InsufficientPrivilegeError,
        "DELETE FROM revenue": asyncpg.ReadOnlySQLTransactionError,
        "SELECT lo_import('/etc/hostname')": asyncpg.InsufficientPrivilegeError,
        "CREATE TABLE public.stolen AS SELECT * FROM customers": asyncpg.ReadOnlySQLTransactionError,
    }
    async with runtime.db.connection(read=True, query=True) as conn:
        for statement, expected in statements.items():
            await conn.execute(begin)
            try:
                with pytest.raises(expected):
                    await conn.execute(statement)
            finally:
                await conn.execute("ROLLBACK")
        assert await conn.fetchval("SELECT current_user") == runtime.db.query_role  # its login, not a SET


async def test_json_output_handles_uuid_decimal_timestamps_intervals_and_nan(connect):
    query = (
        "SELECT '6f1c3f5e-8d2a-4a53-9a55-6f4d7c1e2b3a'::uuid AS id, 12.34::numeric(10,2) AS amount, "
        "'2024-02-29 13:45:00'::timestamp AS at, '2024-02-29 13:45:00+00'::timestamptz AS at_utc, "
        "'2024-02-29'::date AS day, '1 day 2 hours'::interval AS span, 'NaN'::float8 AS nan, "
        "'Infinity'::float8 AS inf, 'NaN'::numeric AS nan_numeric, ARRAY[1, 2] AS list, "
        "'{\"k\": 1}'::jsonb AS doc, NULL::text AS nothing"
    )
    async with connect("analyst") as client:
        answer = await call(client, "query_database", query=query)
    json.dumps(answer, allow_nan=False)  # strict JSON, no NaN tokens
    row = answer["rows"][0]
    assert uuid.UUID(row["id"]) == uuid.UUID("6f1c3f5e-8d2a-4a53-9a55-6f4d7c1e2b3a")
    assert math.isclose(row["amount"], 12.34)
    assert row["at"] == "2024-02-29T13:45:00"
    assert row["at_utc"].startswith("2024-02-29T13:45:00")
    assert row["day"] == "2024-02-29"
    assert row["span"] == 26 * 3600
    assert row["nan"] is None and row["inf"] is None and row["nan_numeric"] is None
    assert row["list"] == [1, 2] and row["nothing"] is None
    assert answer["column_types"]["amount"] == "numeric" and answer["column_types"]["span"] == "interval"


async def test_the_text_content_is_a_compact_markdown_table(connect):
    async with connect("analyst") as client:
        result = await client.call_tool(
            "query_database",
            {"query": "SELECT account_type, count(*) AS n FROM customers GROUP BY 1 ORDER BY 1"},
        )
    lines = result.content[0].text.splitlines()
    assert lines[0] == "| account_type | n |"
    assert lines[1] == "|---|---|"
    assert lines[2].startswith("| Basic | ")
    assert lines[-1] == "3 rows"
    assert len(result.content[0].text) < len(json.dumps(result.structured_content["rows"]))


async def test_a_join_with_clashing_column_names_keeps_every_column(connect):
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT c.customer_id, r.customer_id FROM customers c JOIN revenue r "
            "ON r.customer_id = c.customer_id LIMIT 2",
        )
    assert answer["columns"] == ["customer_id", "customer_id_2"]
    assert all(row["customer_id"] == row["customer_id_2"] for row in answer["rows"])


async def test_postgres_errors_come_back_as_one_line_with_position_and_hint(connect):
    async with connect("analyst") as client:
        unknown_column = await refusal(
            client,
            "query_database",
            query="SELECT c.acount_type FROM customers c WHERE age > %(a)s",
            parameters={"a": 1},
        )
        unknown_table = await refusal(client, "query_database", query="SELECT * FROM custmers")
        syntax = await refusal(
            client, "query_database", query="SELECT %(a)s, FROM customers", parameters={"a": 1}
        )
        division = await refusal(client, "query_database", query="SELECT 1 / 0")
    assert "column c.acount_type does not exist (character 8)" in unknown_column
    assert "account_type" in unknown_column  # PostgreSQL's hint
    assert "custmers" in unknown_table and "customers, network_events, revenue" in unknown_table
    assert syntax.startswith("syntax error") and "character 15" in syntax
    assert "division by zero" in division


async def test_a_viewer_may_not_query(connect):
    async with connect("viewer") as client:
        message = await refusal(client, "query_database", query="SELECT 1")
    assert "analyst" in message and "viewer" in message


async def test_a_repeated_query_is_served_from_the_cache_until_the_data_changes(scratch):
    query = "SELECT account_type, count(*) AS n FROM customers GROUP BY 1 ORDER BY 1"
    async with client_for(scratch) as client:
        first = await call(client, "query_database", query=query)
        second = await call(
            client,
            "query_database",
            query="  select ACCOUNT_TYPE, count(*) as n from customers group by 1 order by 1;",
        )
        await bump_version(scratch)
        third = await call(client, "query_database", query=query)
    assert first["cached"] is False and second["cached"] is True and third["cached"] is False
    assert first["rows"] == second["rows"] == third["rows"]


async def test_different_parameters_and_volatile_queries_are_not_served_from_the_cache(scratch):
    async with client_for(scratch) as client:
        query = "SELECT count(*) AS n FROM customers WHERE age >= %(a)s"
        young = await call(client, "query_database", query=query, parameters={"a": 18})
        old = await call(client, "query_database", query=query, parameters={"a": 60})
        clock = [
            await call(client, "query_database", query="SELECT clock_timestamp() AS t") for _ in range(2)
        ]
    assert old["cached"] is False and young["rows"] != old["rows"]
    assert [answer["cached"] for answer in clock] == [False, False]
    assert clock[0]["rows"] != clock[1]["rows"]


async def test_every_query_is_logged_with_user_hash_rows_and_never_parameter_values(scratch):
    needle = f"needle-{uuid.uuid4().hex}"
    query = "SELECT count(*) AS n FROM customers WHERE location = %(place)s"
    async with client_for(scratch, "analyst2") as client:
        await call(client, "query_database", query=query, parameters={"place": needle})
        await refusal(client, "query_database", query="SELECT pg_sleep(5)", timeout=0.2)
    await scratch.services.query_log.flush()
    async with scratch.db.connection() as conn:
        rows = await conn.fetch(
            "SELECT q.*, row_to_json(q)::text AS everything FROM mcp_internal.query_log q "
            "WHERE user_id = 'analyst2' ORDER BY id"
        )
    assert [(row["outcome"], row["row_count"]) for row in rows] == [("ok", 1), ("timeout", None)]
    assert rows[0]["query_hash"] == hashlib.sha256(normalised(query).encode()).hexdigest()
    assert rows[0]["duration_ms"] > 0
    assert all(needle not in row["everything"] for row in rows)


async def test_save_as_stores_the_full_result_in_the_session_and_returns_a_preview(connect, runtime):
    analyst = Identity("analyst", "analyst", "test")
    store = runtime.services.session_store
    session = await store.create(analyst, "database", access_level="write")
    query = (
        "SELECT transaction_id, customer_id, amount, transaction_date FROM revenue WHERE amount > %(floor)s"
    )
    async with runtime.db.connection() as conn:
        expected_rows, expected_total = await conn.fetchrow(
            "SELECT count(*), sum(amount) FROM revenue WHERE amount > 5"
        )
    assert expected_rows > 1_000  # more than a plain answer would carry
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query=query,
            parameters={"floor": 5},
            session_id=session["session_id"],
            save_as="big_payments",
        )
    assert answer["row_count"] == len(answer["rows"]) == 10  # the preview; the session has them all
    assert answer["dataset"]["name"] == "big_payments"
    assert answer["dataset"]["shape"] == [expected_rows, 4]
    types = {column["name"]: column["type"] for column in answer["dataset"]["columns"]}
    assert list(types) == ["transaction_id", "customer_id", "amount", "transaction_date"]
    assert types["amount"] == "double" and types["transaction_date"].startswith("timestamp")
    assert answer["column_types"]["amount"] == "numeric"  # PostgreSQL's own type, for the preview
    frame = await store.load_dataset(analyst, session["session_id"], "big_payments")
    assert len(frame) == expected_rows
    assert math.isclose(frame["amount"].sum(), float(expected_total), rel_tol=1e-9)
    assert str(frame["transaction_date"].dtype).startswith("datetime64")


async def test_save_as_without_a_session_and_a_foreign_session_are_refused(connect, runtime):
    other = await runtime.services.session_store.create(Identity("analyst2", "analyst", "t"), "database")
    async with connect("analyst") as client:
        alone = await refusal(client, "query_database", query="SELECT 1", save_as="x")
        foreign = await refusal(
            client, "query_database", query="SELECT 1", session_id=other["session_id"], save_as="x"
        )
    assert "session_id and save_as go together" in alone
    assert "not found" in foreign


async def test_a_sandbox_table_from_load_to_table_is_readable_and_joinable_but_mcp_internal_is_not(scratch):
    async with scratch.db.connection() as conn:
        customers = pd.DataFrame(
            [
                dict(r)
                for r in await conn.fetch(
                    "SELECT customer_id::text AS customer_id, account_type FROM customers"
                )
            ]
        )
    scores = pd.DataFrame(
        {"customer_id": customers["customer_id"].iloc[:60], "score": np.arange(60, dtype=float) / 4}
    )
    table = f"scores_{uuid.uuid4().hex[:8]}"
    await sandbox.load_frame(scratch.db, table, scores)
    query = (
        f"SELECT c.account_type, count(*) AS n, sum(s.score) AS total FROM sandbox.{table} s "
        "JOIN customers c ON c.customer_id = s.customer_id::uuid GROUP BY 1 ORDER BY 1"
    )
    expected = scores.merge(customers, on="customer_id").groupby("account_type")["score"].agg(["size", "sum"])
    async with client_for(scratch) as client:
        first = await call(client, "query_database", query=query)
        # load_to_table(replace=true) changes the table without a data load: the answer must follow it.
        await sandbox.load_frame(scratch.db, table, scores.assign(score=scores["score"] * 2), replace=True)
        second = await call(client, "query_database", query=query)
        internal = await refusal(client, "query_database", query="SELECT * FROM mcp_internal.session_archive")
        quoted = await refusal(client, "query_database", query='TABLE "mcp_internal"."query_log"')
    assert [(r["account_type"], r["n"]) for r in first["rows"]] == list(zip(expected.index, expected["size"]))
    assert [r["total"] for r in first["rows"]] == pytest.approx(expected["sum"].tolist())
    assert [r["total"] for r in second["rows"]] == pytest.approx((expected["sum"] * 2).tolist())
    assert first["cached"] is False and second["cached"] is False
    for message in (internal, quoted):
        assert "mcp_internal" in message and "internal to the server" in message and "sandbox" in message


async def test_permission_denied_from_postgres_comes_back_as_one_line_naming_what_is_readable(connect):
    async with connect("analyst") as client:
        message = await refusal(client, "query_database", query="SELECT subconninfo FROM pg_subscription")
    assert message.startswith("permission denied for table pg_subscription")
    assert "customers, network_events, revenue" in message and "sandbox" in message
