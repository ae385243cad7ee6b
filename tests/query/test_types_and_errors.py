"""Values in the types an agent expects (numbers, ISO times) and errors that name the fix (issue 19)."""

from __future__ import annotations

import pytest

from mcp_server.tools import visualize
from tests.analytics.helpers import sql_rows
from tests.support import call, refusal

AS_TEXT = "numeric (as text: exceeds float precision)"

# -- types ---------------------------------------------------------------------------------------


async def test_numerics_are_json_numbers_unless_a_double_would_change_them(runtime, connect):
    (expected,) = await sql_rows(
        runtime, "SELECT avg(age)::float8 AS mean_age, sum(age)::int8 AS total_age FROM customers"
    )
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT 1.50::numeric AS price, avg(age) AS mean_age, sum(age::int8) AS total_age, "
            "stddev(age) AS spread, 12345678901234567890.123::numeric AS huge FROM customers",
        )
    (row,) = answer["rows"]
    assert row["price"] == 1.5 and isinstance(row["price"], float)
    # avg() and stddev() carry ~20 digits of arithmetic: still numbers, equal to float8 arithmetic.
    assert isinstance(row["mean_age"], float) and row["mean_age"] == pytest.approx(
        expected["mean_age"], 1e-12
    )
    assert isinstance(row["spread"], float)
    assert row["total_age"] == expected["total_age"] and isinstance(row["total_age"], int)
    assert row["huge"] == "12345678901234567890.123"
    types = answer["column_types"]
    assert types["huge"] == AS_TEXT
    assert types["price"] == types["mean_age"] == types["spread"] == types["total_age"] == "numeric"


async def test_a_column_with_one_value_past_float_precision_says_so_in_its_type(connect):
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT v FROM (VALUES (0.25::numeric), (98765432109876543210.5)) AS t(v) ORDER BY v",
        )
    assert [row["v"] for row in answer["rows"]] == [0.25, "98765432109876543210.5"]
    assert answer["column_types"]["v"] == AS_TEXT


async def test_a_saved_dataset_keeps_numerics_past_float_precision_exact_as_text(connect):
    async with connect("analyst") as client:
        session = (await call(client, "session_create", data_source="database"))["session_id"]
        await call(
            client,
            "query_database",
            query="SELECT v FROM (VALUES (0.25::numeric), (98765432109876543210.5)) AS t(v) ORDER BY v",
            session_id=session,
            save_as="exact",
        )
        dataset = (await call(client, "session_read", session_id=session, key="exact"))["value"]
    assert [column["type"] for column in dataset["columns"]] == ["large_string"]  # Arrow's text type
    assert [row["v"] for row in dataset["preview"]] == ["0.25", "98765432109876543210.5"]


TIMES = (
    "SELECT '2024-01-31 12:00:00'::timestamp AS whole, '2024-01-31 12:00:00.5'::timestamp AS half, "
    "'2024-01-31 12:00:00.123456'::timestamp AS micro, '2024-01-31 12:00:00+02'::timestamptz AS instant, "
    "'2024-01-31 23:59:59.25-05'::timestamptz AS late, '12:30:00'::time AS clock, "
    "'2024-01-31'::date AS day, 2.50::numeric AS price"
)
EXPECTED_TIMES = {
    "whole": "2024-01-31T12:00:00",
    "half": "2024-01-31T12:00:00.500",
    "micro": "2024-01-31T12:00:00.123456",
    "instant": "2024-01-31T10:00:00+00:00",
    "late": "2024-02-01T04:59:59.250+00:00",
    "clock": "12:30:00",
}


async def test_timestamps_have_fractional_seconds_only_when_not_zero_and_instants_are_utc(connect):
    async with connect("analyst") as client:
        (row,) = (await call(client, "query_database", query=TIMES))["rows"]
    assert {name: row[name] for name in EXPECTED_TIMES} == EXPECTED_TIMES
    assert row["day"] == "2024-01-31" and row["price"] == 2.5


async def test_a_saved_dataset_reads_back_in_the_same_forms(connect):
    async with connect("analyst") as client:
        session = (await call(client, "session_create", data_source="database"))["session_id"]
        saved = await call(client, "query_database", query=TIMES, session_id=session, save_as="times")
        read = await call(client, "session_read", session_id=session, key="times")
    for row in (saved["rows"][0], read["value"]["preview"][0]):
        assert {name: row[name] for name in EXPECTED_TIMES} == EXPECTED_TIMES
        assert row["price"] == 2.5


# -- errors that teach -----------------------------------------------------------------------------


async def test_an_ambiguous_column_says_to_qualify_it_with_the_querys_own_aliases(connect):
    async with connect("analyst") as client:
        message = await refusal(
            client,
            "query_database",
            query="SELECT customer_id FROM customers c JOIN revenue r ON r.customer_id = c.customer_id",
        )
    assert 'column reference "customer_id" is ambiguous (character 8)' in message
    assert "qualify it with its table alias, e.g. c.customer_id or r.customer_id" in message


@pytest.mark.parametrize(
    ("query", "fix"),
    [
        ("SELECT count(*) FROM customers WHERE age > :min_age", "write %(min_age)s"),
        ("SELECT count(*) FROM customers WHERE age > $1", "write %(name)s"),
        (
            "SELECT count(*) FROM customers WHERE (ARRAY[1, 2])[1:2] = '{1,2}' AND account_type IN (:kind)",
            "write %(kind)s",
        ),
    ],
)
async def test_colon_and_dollar_placeholders_say_to_use_percent_name_s(connect, query, fix):
    async with connect("analyst") as client:
        message = await refusal(client, "query_database", query=query)
    assert "is not supported" in message and fix in message


async def test_casts_named_arguments_and_array_slices_keep_working(connect):
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_database",
            query="SELECT '5'::int AS n, make_interval(days := 1)::text AS day, (ARRAY[10, 20, 30])[2:3] AS tail, "
            "(ARRAY[10, 20, 30])[lo:lo + 1] AS head, (ARRAY[10, 20, 30])[:lo] AS first "
            "FROM (SELECT %(lo)s::int AS lo) AS t",
            parameters={"lo": 1},
        )
    assert answer["rows"] == [{"n": 5, "day": "1 day", "tail": [20, 30], "head": [10, 20], "first": [10]}]


@pytest.mark.parametrize(
    ("analysis_type", "parameters", "table", "column"),
    [
        ("arpu", {}, "revenue", "transaction_date"),
        ("network_quality", {}, "network_events", "event_timestamp"),
        ("trend", {"metric": "arpu"}, "revenue", "transaction_date"),
        ("anomalies", {}, "network_events", "event_timestamp"),
        ("forecast", {"metric": "usage"}, "network_events", "event_timestamp"),
        ("segment_compare", {"metric": "quality"}, "network_events", "event_timestamp"),
        ("segment_compare", {"metric": "age"}, "customers", "created_at"),
    ],
)
async def test_a_date_range_outside_the_data_says_which_days_the_data_covers(
    runtime, connect, analysis_type, parameters, table, column
):
    (span,) = await sql_rows(
        runtime, f"SELECT min({column})::date AS first, max({column})::date AS last FROM {table}"
    )
    async with connect("analyst") as client:
        message = await refusal(
            client,
            "analyze_data",
            data_source="database",
            analysis_type=analysis_type,
            parameters={**parameters, "start_date": "2031-01-01", "end_date": "2031-03-31"},
        )
    assert "between 2031-01-01 and 2031-03-31" in message
    assert f"the data covers {span['first']} to {span['last']}" in message


@pytest.mark.parametrize(
    ("analysis_type", "parameters"),
    [("arpu", {}), ("trend", {"metric": "arpu"}), ("forecast", {"metric": "arpu"})],
)
async def test_a_date_range_outside_a_session_dataset_says_which_days_it_covers(
    runtime, connect, analysis_type, parameters
):
    (span,) = await sql_rows(
        runtime,
        "SELECT min(transaction_date)::date AS first, max(transaction_date)::date AS last FROM revenue "
        "WHERE transaction_date < '2025-01-01'",
    )
    async with connect("analyst") as client:
        session = (await call(client, "session_create", data_source="database"))["session_id"]
        await call(
            client,
            "query_database",
            query="SELECT r.*, c.account_type FROM revenue r JOIN customers c USING (customer_id) "
            "WHERE transaction_date < '2025-01-01'",
            session_id=session,
            save_as="revenue",
        )
        message = await refusal(
            client,
            "analyze_data",
            data_source=session,
            analysis_type=analysis_type,
            parameters={
                **parameters,
                "dataset": "revenue",
                "start_date": "2031-01-01",
                "end_date": "2031-03-31",
            },
        )
    assert (
        f"no rows between 2031-01-01 and 2031-03-31; the dataset's transaction_date covers {span['first']} to {span['last']}"
        in message
    )


async def test_a_date_range_inside_the_data_still_answers(connect):
    async with connect("analyst") as client:
        answer = await call(
            client,
            "analyze_data",
            data_source="database",
            analysis_type="arpu",
            parameters={"start_date": "2024-03-01", "end_date": "2024-05-31"},
        )
    assert answer["results"]["overall_arpu"] > 0


def test_a_chart_timeout_under_cpu_load_says_the_server_is_busy_not_the_data():
    busy = visualize.render_timeout(load=5.2, cores=2).message
    assert "server is busy (CPU load 5.2 on 2 cores)" in busy and "retry" in busy
    assert "fewer points" not in busy
    idle = visualize.render_timeout(load=0.3, cores=2).message
    assert "busy" not in idle and "fewer points" in idle


async def test_a_chart_that_times_out_on_a_loaded_server_is_answered_as_busy(connect, monkeypatch):
    monkeypatch.setattr(visualize, "RENDER_TIMEOUT_SECONDS", 0.0001)  # no chart draws this fast
    cores = visualize.os.cpu_count() or 1
    monkeypatch.setattr(visualize.os, "getloadavg", lambda: (cores * 2.0, cores * 2.0, cores * 2.0))
    async with connect("analyst") as client:
        message = await refusal(
            client,
            "create_visualization",
            data={"rows": [{"plan": "Basic", "customers": 3}, {"plan": "Premium", "customers": 2}]},
            chart_type="bar",
            x_axis="plan",
            y_axis="customers",
        )
    assert "the server is busy" in message and "retry" in message
