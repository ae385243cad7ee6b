"""Resources and prompts through the in-memory MCP client: the live schema, the data dictionary, analysis
templates, session resources, and the workflow prompts rendered with and without arguments."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from fastmcp import Client

from analytics.parameters import ANALYSES
from mcp_server.auth import Identity
from prompts.workflows import tool_calls
from tests.conftest import app_for
from tests.support import call
from warehouse.sqlguard import bind_placeholders, validate_select

TABLES = ("customers", "network_events", "revenue")
PROMPTS = ("churn_analysis", "network_analysis", "revenue_optimization", "explore_dataset")


async def read_text(client: Client, uri: str) -> str:
    contents = await client.read_resource(uri)
    assert len(contents) == 1
    return contents[0].text


async def read_error(client: Client, uri: str) -> str:
    """The one-line error of a resource read that must fail."""
    with pytest.raises(Exception) as raised:
        await client.read_resource(uri)
    message = str(raised.value)
    assert "\n" not in message and "Traceback" not in message
    return message


async def catalog_columns(conn: Any) -> list[Any]:
    return await conn.fetch(
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = ANY($1::text[]) ORDER BY table_name, ordinal_position",
        list(TABLES),
    )


def section(markdown: str, heading: str) -> str:
    """The text under `heading` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = markdown.index(heading + "\n")
    following = re.compile(rf"^#{{1,{len(level)}}} ", re.MULTILINE)
    after = following.search(markdown, start + len(heading) + 1)
    return markdown[start : after.start() if after else len(markdown)]


def column_row(markdown: str, column: str) -> list[str]:
    """The cells of the column's row in a markdown table (`column` plain or in backticks)."""
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("|") and cells[0] in (column, f"`{column}`"):
            return cells
    raise AssertionError(f"no row for column {column}")


# ---------------------------------------------------------------- schema://


async def test_the_schema_names_every_column_of_the_three_tables_with_type_and_nullability(connect, runtime):
    async with connect("analyst") as client:
        schema = await read_text(client, "schema://database/main")
    async with runtime.db.connection() as conn:
        columns = await catalog_columns(conn)
    assert {row["table_name"] for row in columns} == set(TABLES)
    for row in columns:
        cells = column_row(section(schema, f"## {row['table_name']}"), row["column_name"])
        # information_schema spells types without modifiers: "character varying" for varchar(50).
        assert cells[1].startswith(row["data_type"].replace("timestamp without time zone", "timestamp"))
        assert cells[2] == ("yes" if row["is_nullable"] == "YES" else "no")


async def test_the_schema_lists_constraints_keys_indexes_and_row_estimates(connect, runtime):
    async with connect("analyst") as client:
        schema = await read_text(client, "schema://database/main")
    async with runtime.db.connection() as conn:
        constraints = await conn.fetch(
            "SELECT table_name, constraint_name, constraint_type FROM information_schema.table_constraints "
            "WHERE table_schema = 'public' AND table_name = ANY($1::text[]) "
            "AND constraint_type IN ('CHECK', 'PRIMARY KEY', 'FOREIGN KEY') "
            "AND constraint_name NOT LIKE '%_not_null'",
            list(TABLES),
        )
        indexes = await conn.fetch(
            "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = 'public' "
            "AND tablename = ANY($1::text[])",
            list(TABLES),
        )
        counts = {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}
    assert len(constraints) >= 15 and len(indexes) >= 14
    for row in constraints:
        assert f"`{row['constraint_name']}`" in section(schema, f"## {row['table_name']}")
    for row in indexes:
        assert f"`{row['indexname']}`" in section(schema, f"## {row['tablename']}")
    assert "FK → customers.customer_id" in column_row(section(schema, "## revenue"), "customer_id")[4]
    assert "ON DELETE CASCADE" in section(schema, "## network_events")
    assert "'Basic'" in column_row(section(schema, "## customers"), "account_type")[5]
    assert column_row(section(schema, "## customers"), "is_churned")[3] == "false"  # the default
    for table, count in counts.items():
        estimate = re.search(r"Estimated rows: ~([\d,]+)", section(schema, f"## {table}"))
        assert estimate is not None
        assert int(estimate.group(1).replace(",", "")) == pytest.approx(count, rel=0.1)


async def test_the_schema_never_shows_the_servers_own_tables(connect):
    async with connect("analyst") as client:
        schema = await read_text(client, "schema://database/main")
        refused = await read_error(client, "schema://database/main/mcp_internal.query_log")
        also_refused = await read_error(client, "schema://database/main/pg_authid")
    for secret in ("mcp_internal", "query_log", "audit_log", "session_archive", "data_version"):
        assert secret not in schema
    for message in (refused, also_refused):
        assert "customers, network_events, revenue" in message
        assert "pg_authid" not in message or "not an analytics table" in message


async def test_a_table_resource_shows_its_columns_and_real_sample_rows(connect, runtime):
    async with connect("analyst") as client:
        page = await read_text(client, "schema://database/main/customers")
    assert page.startswith("# customers\n")
    samples = section(page, "## Sample rows (first 5, in storage order)")
    ids = re.findall(r"^\| ([0-9a-f-]{36}) \|", samples, re.MULTILINE)
    assert len(ids) == 5
    async with runtime.db.connection() as conn:
        found = await conn.fetchval("SELECT count(*) FROM customers WHERE customer_id::text = ANY($1)", ids)
    assert found == 5
    assert "network_events" not in page.split("## Sample rows")[0].replace("`", "")


async def test_a_viewer_may_not_read_the_schema_the_dictionary_or_the_templates(connect):
    async with connect("viewer") as client:
        for uri in (
            "schema://database/main",
            "schema://database/main/customers",
            "docs://data_dictionary",
            "templates://analysis/churn_rate",
        ):
            message = await read_error(client, uri)
            assert "analyst" in message and "viewer" in message


async def test_an_added_column_appears_in_the_schema_once_the_brief_cache_allows(make_runtime):
    async with make_runtime(customers=20, seed=3, schema_cache_seconds=0) as rt:
        async with Client(app_for(rt, "analyst").mcp) as client:
            before = await read_text(client, "schema://database/main")
            table_before = await read_text(client, "schema://database/main/customers")
            async with rt.db.connection() as conn:
                await conn.execute(
                    "ALTER TABLE customers ADD COLUMN loyalty_tier varchar(10) NOT NULL DEFAULT 'bronze' "
                    "CONSTRAINT customers_loyalty_tier_check CHECK (loyalty_tier IN ('bronze', 'silver', 'gold'))"
                )
            after = await read_text(client, "schema://database/main")
            table_after = await read_text(client, "schema://database/main/customers")
    assert "loyalty_tier" not in before and "loyalty_tier" not in table_before
    cells = column_row(section(after, "## customers"), "loyalty_tier")
    assert cells[1] == "character varying(10)" and cells[2] == "no"
    assert "'bronze'" in cells[3] and "'gold'" in cells[5]
    assert "`customers_loyalty_tier_check`" in after
    assert "| customers | 9 |" in after  # the overview counts the new column
    assert "loyalty_tier" in table_after and "bronze" in section(
        table_after, "## Sample rows (first 5, in storage order)"
    )


async def test_within_the_cache_window_the_schema_is_reused_until_data_is_reloaded(make_runtime):
    async with make_runtime(customers=20, seed=4, schema_cache_seconds=3600) as rt:
        async with Client(app_for(rt, "analyst").mcp) as client:
            first = await read_text(client, "schema://database/main")
            async with rt.db.connection() as conn:
                await conn.execute("ALTER TABLE revenue ADD COLUMN discount_code text")
            cached = await read_text(client, "schema://database/main")
        async with Client(app_for(rt, "admin").mcp) as admin:
            await call(admin, "generate_data", customers=30, seed=5)
        async with Client(app_for(rt, "analyst").mcp) as client:
            reloaded = await read_text(client, "schema://database/main")
    assert cached == first
    assert "discount_code" in reloaded


# ---------------------------------------------------------------- docs://data_dictionary


async def test_the_dictionary_defines_every_column_and_the_business_rules(connect, runtime):
    async with connect("analyst") as client:
        dictionary = await read_text(client, "docs://data_dictionary")
    async with runtime.db.connection() as conn:
        columns = await catalog_columns(conn)
        checks = await conn.fetch(
            "SELECT rel.relname AS table_name, a.attname AS column_name, pg_get_constraintdef(con.oid) AS definition "
            "FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid "
            "JOIN pg_namespace n ON n.oid = rel.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1] "
            "WHERE n.nspname = 'public' AND con.contype = 'c' AND cardinality(con.conkey) = 1 "
            "AND rel.relname = ANY($1::text[])",
            list(TABLES),
        )
    for row in columns:
        cells = column_row(section(dictionary, f"## {row['table_name']}"), row["column_name"])
        meaning, units, allowed = cells[1], cells[2], cells[3]
        assert len(meaning) > 10, f"{row['table_name']}.{row['column_name']} has no meaning"
        assert units and allowed
    # Every value a CHECK constraint allows is named among the column's allowed values.
    for row in checks:
        allowed = column_row(section(dictionary, f"## {row['table_name']}"), row["column_name"])[3]
        for value in re.findall(r"'([^']+)'", row["definition"]):
            assert f"'{value}'" in allowed, f"{row['column_name']}: {value} missing"
    rules = section(dictionary, "## Business definitions")
    assert "**Churn**" in rules and "**Churn rate**" in rules
    assert "sum(revenue.amount) / count(DISTINCT revenue.customer_id)" in rules
    assert "Total revenue ÷ distinct paying customers" in rules
    assert "below 2.5" in rules and "1.0 (worst) to 5.0 (best)" in rules
    assert "**Tenure**" in rules


# ---------------------------------------------------------------- templates://analysis/{type}


async def test_every_analysis_template_parses_and_its_example_runs_through_analyze_data(connect):
    async with connect("analyst") as client:
        listed = {t.uriTemplate for t in await client.list_resource_templates()}
        assert "templates://analysis/{type}" in listed
        for analysis_type in ANALYSES:
            template = json.loads(await read_text(client, f"templates://analysis/{analysis_type}"))
            assert template["analysis_type"] == analysis_type
            for name, described in template["parameters"].items():
                assert {"type", "default", "description"} <= set(described), name
            example = template["example"]
            assert example["tool"] == "analyze_data"
            answer = await call(client, "analyze_data", **example["arguments"])
            assert answer["analysis_type"] == analysis_type
            assert answer["results"]
            # The defaults alone run too (the example only overrides some of them).
            defaults = await call(client, "analyze_data", data_source="database", analysis_type=analysis_type)
            assert defaults["results"]


async def test_an_unknown_template_type_is_refused_with_the_known_ones(connect):
    async with connect("analyst") as client:
        message = await read_error(client, "templates://analysis/churn_rat")
    assert "churn_rat" in message
    for known in ANALYSES:
        assert known in message


# ---------------------------------------------------------------- session://{session_id}


async def test_a_session_resource_shows_metadata_and_keys_only_to_those_who_may_read_it(apps, runtime):
    store = runtime.services.session_store
    owner = Identity("analyst", "analyst", "k1")
    created = await store.create(owner, "database", access_level="read", user_id="viewer")
    session_id = created["session_id"]
    await store.save_value(owner, session_id, "headline", {"churn": 0.3}, kind="value")

    async with Client(apps["analyst"].mcp) as client:
        mine = json.loads(await read_text(client, f"session://{session_id}"))
    async with Client(apps["viewer"].mcp) as client:
        granted = json.loads(await read_text(client, f"session://{session_id}"))
    async with Client(apps["analyst2"].mcp) as client:
        hidden = await read_error(client, f"session://{session_id}")
        missing = await read_error(client, "session://00000000-0000-4000-8000-000000000000")
        garbage = await read_error(client, "session://not-a-session")
    assert mine["session_id"] == session_id and mine["owner_id"] == "analyst"
    assert [item["key"] for item in mine["keys"]] == ["headline"]
    assert granted["keys"] == mine["keys"]
    assert "not found" in hidden and session_id in hidden
    assert hidden.replace(session_id, "X") == missing.replace("00000000-0000-4000-8000-000000000000", "X")
    assert "session" in garbage


async def test_clients_browsing_resources_see_the_sessions_they_may_read(apps, runtime):
    store = runtime.services.session_store
    owner = Identity("analyst", "analyst", "k1")
    shared = (await store.create(owner, "database", access_level="read", user_id="viewer"))["session_id"]
    private = (await store.create(owner, "database"))["session_id"]
    await store.save_value(owner, shared, "headline", {"churn": 0.3}, kind="value")

    async def browse(user: str) -> dict[str, Any]:
        async with Client(apps[user].mcp) as client:
            return {str(r.uri): r for r in await client.list_resources()}

    mine, viewer, other = await browse("analyst"), await browse("viewer"), await browse("analyst2")
    assert {f"session://{shared}", f"session://{private}"} <= set(mine)
    assert f"session://{shared}" in viewer and f"session://{private}" not in viewer
    assert not any(uri.startswith("session://") and uri.split("//")[1] in (shared, private) for uri in other)
    assert "headline" in mine[f"session://{shared}"].description
    assert "schema://database/main" not in viewer  # a viewer is not shown what it may not read
    async with Client(apps["viewer"].mcp) as client:  # what is listed can be read
        described = json.loads(await read_text(client, f"session://{shared}"))
    assert [item["key"] for item in described["keys"]] == ["headline"]


# ---------------------------------------------------------------- prompts


async def test_each_prompt_renders_without_arguments(connect):
    async with connect("analyst") as client:
        listed = {prompt.name: prompt for prompt in await client.list_prompts()}
        for name in PROMPTS:
            assert name in listed
            assert all(not argument.required for argument in listed[name].arguments or [])
            rendered = await client.get_prompt(name)
            text = rendered.messages[0].content.text
            tools = [step["tool"] for step in tool_calls(text)]
            assert tools[0] == "session_create" and "summary_snapshot" in tools
            assert "query_database" in tools and "create_visualization" in tools
            assert tools[-2:] == ["session_update", "session_read"]
            assert "## Report" in text and "confidence interval" in text


@pytest.mark.parametrize(
    "name, arguments, expected",
    [
        (
            "churn_analysis",
            {"segment": "gender", "start_date": "2024-02-01", "end_date": "2024-11-30"},
            "gender",
        ),
        ("churn_analysis", {"focus": "segments"}, "account_type"),
        ("network_analysis", {"segment": "hour_of_day", "end_date": "2025-01-31"}, "hour_of_day"),
        ("revenue_optimization", {"segment": "location", "start_date": "2025-01-01"}, "location"),
        ("explore_dataset", {"table": "revenue"}, "revenue"),
    ],
)
async def test_each_prompt_renders_with_arguments_and_uses_them(connect, name, arguments, expected):
    async with connect("analyst") as client:
        text = (await client.get_prompt(name, arguments)).messages[0].content.text
    calls = tool_calls(text)
    assert expected in text
    for step in calls:
        arguments_of_call = step["arguments"]
        if step["tool"] == "analyze_data" and "group_by" in arguments_of_call["parameters"]:
            if name != "explore_dataset" and "segment" in arguments:
                assert arguments_of_call["parameters"]["group_by"] == arguments["segment"]
        if step["tool"] == "query_database":
            # Every query a prompt proposes passes the SQL guard, with its dates as bound parameters.
            bound = bind_placeholders(arguments_of_call["query"], arguments_of_call["parameters"])
            validate_select(bound.sql)
            for key in ("start_date", "end_date"):
                if key in arguments and "%(" + key + ")s" in arguments_of_call["query"]:
                    assert arguments_of_call["parameters"][key] == arguments[key]
    if "focus" in arguments:
        assert "churn_drivers" not in text  # focus=segments leaves the driver step out


@pytest.mark.parametrize(
    "name, arguments, expected",
    [
        ("churn_analysis", {"start_date": "last tuesday"}, "YYYY-MM-DD"),
        ("churn_analysis", {"start_date": "2025-01-01", "end_date": "2024-01-01"}, "before start_date"),
        ("churn_analysis", {"segment": "account_type; DROP TABLE customers"}, "account_type, gender"),
        ("network_analysis", {"focus": "everything"}, "quality, churn"),
        ("explore_dataset", {"table": "mcp_internal.query_log"}, "customers, network_events, revenue"),
    ],
)
async def test_bad_prompt_arguments_get_one_line_errors(connect, name, arguments, expected):
    async with connect("analyst") as client:
        with pytest.raises(Exception) as raised:
            await client.get_prompt(name, arguments)
    message = str(raised.value)
    assert expected in message and "\n" not in message


async def test_a_viewer_may_not_use_the_prompts(connect):
    async with connect("viewer") as client:
        with pytest.raises(Exception) as raised:
            await client.get_prompt("churn_analysis")
    assert "analyst" in str(raised.value)
