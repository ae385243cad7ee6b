"""Memory is bounded by the caps, not by the data: what a query costs the server, and what it sends.

The RSS tests run the server in a process of their own (tests/security/memory_probe.py) and read
its peak RSS before and after one call, so nothing else the test process did can hide the growth.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client

from tests.conftest import app_for
from tests.security.conftest import instance
from tests.support import call

MB = 1_000_000
NOISE = 60 * MB  # allocator and interpreter noise a call may add whatever its size
DATASET_CAP = 20 * MB  # the probe's DATASET_MAX_BYTES: small, so the test stays quick
ROOT = Path(__file__).resolve().parents[2]


def probe(runtime, query: str, *, save_as: bool = False, **env: str) -> dict[str, Any]:
    """One query_database call in a fresh server process; its peak RSS growth and a summary of the answer."""
    settings = runtime.settings
    keys = sorted(settings.api_keys, key=lambda entry: entry.role != "analyst")  # an analyst first
    environment = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_KEY_PREFIX": settings.redis_key_prefix + "memory:",
        "API_KEYS": ",".join(f"{e.user_id}:{e.role}:{e.digest}" for e in keys),
        "SESSION_ENCRYPTION_KEY": ",".join(settings.session_encryption_keys),
        "ANALYTICS_MCP_HOME": str(settings.home),
        "DB_POOL_MIN_SIZE": "1",
        "DB_POOL_MAX_SIZE": "4",
        "RATE_LIMIT_PER_MINUTE": "100000",
        "DATASET_MAX_BYTES": str(DATASET_CAP),
        "SESSION_MAX_VALUE_BYTES": str(64 * MB),
        **env,
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.security.memory_probe",
            json.dumps({"query": query, "save_as": save_as}),
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{query[:60]!r} save_as={save_as}: +{measured['growth_bytes'] / MB:.1f} MB")  # noqa: T201
    return measured


@pytest.mark.slow
def test_a_query_of_a_thousand_one_megabyte_values_costs_the_server_about_its_inline_cap(runtime):
    cap = runtime.settings.query_max_bytes
    measured = probe(runtime, "SELECT repeat('y', 1000000 + g * 0) AS v FROM generate_series(1, 1000) AS g")
    answer = measured["answer"]
    assert not measured["is_error"], measured["text"]
    assert answer["truncated"] is True and answer["cut_columns"] == ["v"]
    assert f"{cap:,} bytes" in answer["hint"] and "'v'" not in answer["hint"] and "v;" in answer["hint"]
    assert measured["growth_bytes"] <= 5 * cap + NOISE


@pytest.mark.slow
def test_save_as_fetches_at_most_its_byte_cap_and_says_so(runtime):
    measured = probe(
        runtime,
        "SELECT g, repeat('y', 1000000 + g * 0) AS v FROM generate_series(1, 400) AS g",
        save_as=True,
    )
    answer = measured["answer"]
    assert not measured["is_error"], measured["text"]
    stored = answer["dataset"]["rows"]
    assert 0 < stored < 400 and stored * MB <= DATASET_CAP
    assert answer["truncated_by"] == "bytes" and f"{DATASET_CAP:,} bytes" in answer["hint"]
    assert answer["rows_json_bytes"] <= 20_000  # the preview: 1 MB texts shortened
    assert measured["growth_bytes"] <= 5 * DATASET_CAP + NOISE


@pytest.mark.slow
def test_the_thousand_row_repeat_query_with_save_as_stays_within_the_dataset_cap(runtime):
    measured = probe(
        runtime, "SELECT repeat('y', 1000000 + g * 0) AS v FROM generate_series(1, 1000) AS g", save_as=True
    )
    assert not measured["is_error"], measured["text"]
    assert measured["answer"]["dataset"]["rows"] < 1000
    assert measured["growth_bytes"] <= 5 * DATASET_CAP + NOISE


@pytest.mark.slow
@pytest.mark.parametrize("save_as", [False, True], ids=["inline", "save_as"])
def test_a_single_200_megabyte_value_is_cut_inside_postgresql(runtime, save_as):
    measured = probe(runtime, "SELECT 1 AS id, repeat('y', 200000000) AS huge", save_as=save_as)
    answer = measured["answer"]
    assert not measured["is_error"], measured["text"]
    assert answer["cut_columns"] == ["huge"] and answer["truncated"] is True
    assert "huge" in answer["hint"] and "replaced by null" in answer["hint"]
    cap = DATASET_CAP if save_as else runtime.settings.query_max_bytes
    assert measured["growth_bytes"] <= 5 * cap + NOISE


async def test_a_value_too_large_for_the_answer_is_null_and_named_while_the_rest_is_unchanged(
    connect, runtime
):
    cap = runtime.settings.query_max_bytes
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT g, CASE WHEN g = 2 THEN repeat('y', %(size)s) ELSE 'short' END AS body "
            "FROM generate_series(1, 3) AS g ORDER BY g DESC",
            parameters={"size": cap + 1},
        )
    assert answer["rows"] == [{"g": 3, "body": "short"}, {"g": 2, "body": None}, {"g": 1, "body": "short"}]
    assert answer["truncated"] is True and answer["truncated_by"] == "value"
    assert answer["cut_columns"] == ["body"]
    assert f"values larger than {cap:,} bytes were replaced by null in column(s) body" in answer["hint"]
    assert answer["column_types"] == {"g": "int4", "body": "text"}


ORDINARY = """
SELECT g AS n, g::text AS n, (g * 1.5)::numeric(6, 2) AS price, NULLIF(g % 3, 0) AS maybe,
       ARRAY[g, g + 1] AS pair, jsonb_build_object('k', g) AS doc, %(label)s AS label,
       timestamptz '2024-01-31 12:00:00+00' + g * interval '1 day' AS at, md5(g::text)::uuid AS id,
       ROW(g, 'x') AS pair_row
FROM generate_series(1, 30) AS g
ORDER BY g % 7 DESC, g
"""


async def test_ordinary_results_keep_their_values_types_order_and_nulls(connect, runtime):
    async with connect("analyst") as client:
        answer = await call(client, "query_database", query=ORDINARY, parameters={"label": "a|b"})
    async with runtime.db.connection() as conn:  # the same query straight to PostgreSQL
        expected = await conn.fetch(ORDINARY.replace("%(label)s", "'a|b'::text"))
    assert answer["truncated"] is False and "cut_columns" not in answer
    assert answer["columns"] == ["n", "n_2", "price", "maybe", "pair", "doc", "label", "at", "id", "pair_row"]
    assert answer["column_types"] == {
        "n": "int4",
        "n_2": "text",
        "price": "numeric",
        "maybe": "int4",
        "pair": "int4[]",
        "doc": "jsonb",
        "label": "text",
        "at": "timestamptz",
        "id": "uuid",
        "pair_row": "record",
    }
    assert [row["n"] for row in answer["rows"]] == [record[0] for record in expected]
    assert [row["maybe"] for row in answer["rows"]] == [record["maybe"] for record in expected]
    assert [row["pair"] for row in answer["rows"]] == [list(record["pair"]) for record in expected]
    assert [row["doc"] for row in answer["rows"]] == [record["doc"] for record in expected]
    assert answer["rows"][0]["at"] == expected[0]["at"].isoformat()
    assert answer["rows"][0]["id"] == str(expected[0]["id"])
    assert {row["label"] for row in answer["rows"]} == {"a|b"}


def tool_result_bytes(result: Any) -> int:
    """The CallToolResult as JSON on the wire: text content + structured content."""
    return len(
        json.dumps(
            {
                "content": [{"type": "text", "text": block.text} for block in result.content],
                "structuredContent": result.structured_content,
                "isError": result.is_error,
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
    )


MAXIMAL = [
    "SELECT g, md5(g::text) AS h FROM generate_series(1, 10000) AS g",
    "SELECT g AS a_rather_long_column_name_for_an_integer FROM generate_series(1, 10000) AS g",
    "SELECT repeat('|', 40) AS bars, repeat(chr(1), 30) AS controls FROM generate_series(1, 10000)",
    "SELECT repeat('é€', 100) AS wide, g FROM generate_series(1, 10000) AS g",
]


@pytest.mark.parametrize("query", MAXIMAL, ids=["md5", "long-names", "escapes", "non-ascii"])
@pytest.mark.parametrize("query_max_bytes", [None, 4_000_000], ids=["default-cap", "operator-4MB"])
async def test_the_largest_inline_answer_fits_the_official_clients_one_mebibyte_event(
    runtime, fresh_prefix, query, query_max_bytes
):
    changes = {} if query_max_bytes is None else {"query_max_bytes": query_max_bytes}
    server = instance(runtime, fresh_prefix, **changes)  # a cache of its own: no answer of another cap
    async with Client(app_for(server, "analyst").mcp) as client:
        result = await client.call_tool("query_database", {"query": query, "max_rows": 10_000})
    size = tool_result_bytes(result)
    print(f"{query[:40]!r} cap={query_max_bytes}: {size:,} bytes")  # noqa: T201
    answer, text = result.structured_content, result.content[0].text
    assert answer["row_count"] > 500
    assert answer.get("truncated_by") == "bytes" or answer["row_count"] == 10_000
    assert size < 1_000_000 < 1024 * 1024  # room left for the JSON-RPC envelope and SSE framing
    table_rows = text.count("\n") - 2  # header, separator and summary lines
    if table_rows < answer["row_count"]:
        assert f"the table shows the first {table_rows:,}" in text


async def test_a_save_as_preview_is_small_whatever_the_rows(connect):
    async with connect("analyst") as client:
        session = (await call(client, "session_create", data_source="database"))["session_id"]
        answer = await call(
            client,
            "query_database",
            query="SELECT g, repeat('z', 100000) AS body FROM generate_series(1, 30) AS g",
            session_id=session,
            save_as="wide",
        )
    assert answer["dataset"]["rows"] == 30
    assert 1 <= answer["row_count"] <= 20
    assert len(json.dumps(answer["rows"])) <= 20_000
    assert answer["rows"][0]["body"].endswith("…") and len(answer["rows"][0]["body"]) <= 200


async def test_other_users_are_answered_while_a_large_value_is_cut(connect):
    async with connect("analyst") as attacker, connect("analyst2") as other:
        attack = asyncio.create_task(
            call(attacker, "query_database", query="SELECT repeat('y', 200000000) AS huge")
        )
        await asyncio.sleep(0.05)
        started = asyncio.get_running_loop().time()
        answer = await call(other, "query_database", query="SELECT 1 AS one")
        assert asyncio.get_running_loop().time() - started < 2
        assert answer["rows"] == [{"one": 1}]
        assert (await attack)["cut_columns"] == ["huge"]
