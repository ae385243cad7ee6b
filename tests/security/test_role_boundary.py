"""The query role is the boundary: agent SQL logs in as a role that can only read, and the guard allows
functions by what they are (built-ins, minus those that run SQL text or touch server state, plus an
operator's allowlist). Real PostgreSQL with tablefunc installed (crosstab, connectby run SQL text)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from fastmcp import Client

from core.errors import Forbidden, QueryRefused
from mcp_server.config import ConfigError, Settings
from mcp_server.runtime import start_runtime
from tests.conftest import app_for
from tests.support import call, refusal
from warehouse import sqlguard
from warehouse.sqlguard import FunctionPolicy, validate_select

# crosstab runs its second query (the categories) first: set_config there would switch the role for
# the first query, which reads mcp_internal. connectby runs SQL it builds from its text arguments.
CROSSTAB_ESCAPE = """SELECT * FROM crosstab(
    $$SELECT 'r'::text, 'postgres'::text, (SELECT count(*) FROM mcp_internal.audit_log)::text$$,
    $$SELECT set_config('role', 'postgres', true)$$) AS t(r text, v text)"""
CONNECTBY_ESCAPE = (
    "SELECT * FROM connectby('mcp_internal.audit_log', 'id', 'request_id', '1', 0) "
    "AS t(id bigint, parent bigint, level int)"
)
NOT_BUILT_IN = (
    "it is not a built-in function (an operator may allow it with QUERY_ALLOWED_FUNCTIONS); remove it"
)


@pytest.fixture(scope="module")
async def boundary(make_runtime) -> AsyncIterator:
    """A runtime of its own whose database has tablefunc installed (by the superuser DATABASE_URL)."""
    async with make_runtime(customers=150, seed=4) as rt:
        async with rt.db.connection() as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS tablefunc")
        yield rt


@pytest.fixture
def restored_policy() -> Iterator[None]:
    """Starting a runtime installs its function policy process-wide: put the previous one back."""
    saved = sqlguard.function_policy()
    try:
        yield
    finally:
        sqlguard.use_function_policy(saved)


async def query_role_connection(runtime) -> asyncpg.Connection:
    """A raw connection with the query pool's own credentials: SQL reaching PostgreSQL by any path."""
    async with runtime.db.connection() as conn:
        password = await conn.fetchval(
            "SELECT password FROM mcp_internal.query_login WHERE role_name = $1", runtime.db.query_role
        )
    return await asyncpg.connect(runtime.settings.database_url, user=runtime.db.query_role, password=password)


def with_user(url: str, user: str, database: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = f"{user}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc, path="/" + database if database else parts.path))


async def test_crosstab_and_connectby_are_refused_in_one_line_naming_the_function(boundary):
    async with boundary.db.connection() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'tablefunc'") == 1
        audit_rows = await conn.fetchval("SELECT count(*) FROM mcp_internal.audit_log")
    async with Client(app_for(boundary, "analyst").mcp) as client:
        crosstab = await refusal(client, "query_database", query=CROSSTAB_ESCAPE)
        connectby = await refusal(client, "query_database", query=CONNECTBY_ESCAPE)
        qualified = await refusal(
            client, "query_database", query="SELECT * FROM public.crosstab('SELECT 1') AS t(a int)"
        )
    assert crosstab == f"function crosstab() is not allowed: {NOT_BUILT_IN}"
    assert connectby == f"function connectby() is not allowed: {NOT_BUILT_IN}"
    assert qualified.startswith("function public.crosstab() is not allowed: only built-in functions")
    async with Client(app_for(boundary, "analyst2").mcp) as other:  # everyone else is still served
        async with asyncio.timeout(2):
            answer = await call(other, "query_database", query="SELECT count(*) AS n FROM customers")
    assert answer["rows"] == [{"n": 150}]
    async with boundary.db.connection() as conn:
        assert await conn.fetchval("SELECT current_user") == "postgres"
        assert await conn.fetchval("SELECT count(*) FROM mcp_internal.audit_log") >= audit_rows


async def test_statistics_views_that_show_server_activity_are_refused_through_the_tool(boundary):
    async with Client(app_for(boundary, "analyst").mcp) as client:
        for query, catalog in (
            (
                "SELECT relname, n_tup_ins FROM pg_stat_all_tables WHERE schemaname = 'mcp_internal'",
                "pg_stat_all_tables",
            ),
            ("SELECT query FROM pg_catalog.pg_stat_activity", "pg_stat_activity"),
            ("SELECT heap_blks_read FROM pg_statio_all_tables", "pg_statio_all_tables"),
            ("SELECT * FROM pg_locks", "pg_locks"),
        ):
            message = await refusal(client, "query_database", query=query)
            assert message.startswith(f"catalog '{catalog}' reveals server activity and may not be queried")
        message = await refusal(
            client, "query_database", query="SELECT pg_stat_get_tuples_inserted(oid) FROM pg_class"
        )
        assert message.startswith("function pg_stat_get_tuples_inserted() is not allowed: it reveals server")


# What raw SQL as the query role must not be able to do, each with the error PostgreSQL gives.
RAW_ATTACKS = [
    "SELECT count(*) FROM mcp_internal.audit_log",
    "SELECT count(*) FROM mcp_internal.session_archive",
    "SELECT count(*) FROM mcp_internal.query_login",
    "SELECT rolname, rolpassword FROM pg_authid",
    "SELECT pg_read_file('/etc/hostname')",
    "SET ROLE postgres",
    "SELECT set_config('role', 'postgres', false)",
    "SELECT set_config('session_authorization', 'postgres', false)",
    "SET SESSION AUTHORIZATION postgres",
    "SET ROLE pg_read_all_data",
    "SELECT set_config('role', 'pg_read_all_data', false)",
    "SELECT pg_stat_reset()",
    "SELECT pg_create_physical_replication_slot('amcp_escape_slot')",
    "SELECT relname, n_tup_ins FROM pg_stat_all_tables WHERE schemaname = 'mcp_internal'",
    "SELECT pg_stat_get_tuples_inserted(c.oid) FROM pg_class c WHERE c.relname = 'audit_log'",
    "SELECT query FROM pg_stat_activity",
    "SELECT * FROM pg_locks",
    "DELETE FROM revenue",
    "CREATE TABLE public.stolen (x int)",
    CROSSTAB_ESCAPE,
    CROSSTAB_ESCAPE.replace("'role', 'postgres'", "'session_authorization', 'postgres'"),
    CONNECTBY_ESCAPE,
]


async def test_raw_sql_as_the_query_role_cannot_read_internals_switch_role_or_change_the_server(boundary):
    conn = await query_role_connection(boundary)
    try:
        role = boundary.db.query_role
        # Read-only by default; switched off here so that only the role's own privileges stand in the way.
        await conn.execute("SET default_transaction_read_only = off")
        let_through = []
        for statement in RAW_ATTACKS:
            try:
                await conn.execute(statement)
                let_through.append(statement)
            except asyncpg.InsufficientPrivilegeError:
                pass
            assert await conn.fetchval("SELECT current_user || '/' || session_user") == f"{role}/{role}"
        assert let_through == []
        # Switching to "no role" goes back to the login itself: the query role, still unable to read.
        await conn.execute("SELECT set_config('role', 'none', false)")
        assert await conn.fetchval("SELECT current_user") == role
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT count(*) FROM mcp_internal.audit_log")
        assert await conn.fetchval("SELECT count(*) FROM customers") == 150  # what it is for
    finally:
        await conn.close()
    async with boundary.db.connection() as admin:
        assert await admin.fetchval("SELECT count(*) FROM pg_replication_slots") == 0
        assert await admin.fetchval("SELECT to_regclass('public.stolen')") is None


async def test_the_query_role_is_a_plain_login_and_a_member_of_no_role(boundary):
    role = boundary.db.query_role
    assert role is not None and role.startswith("analytics_mcp_query_") and len(role.encode()) <= 63
    async with boundary.db.connection() as conn:
        attributes = await conn.fetchrow(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
            "FROM pg_roles WHERE rolname = $1",
            role,
        )
        member_of = await conn.fetch(
            "SELECT m.roleid::regrole::text AS name FROM pg_auth_members m "
            "JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1",
            role,
        )
        internal = await conn.fetchval(
            "SELECT bool_or(has_table_privilege($1, c.oid, 'SELECT')) FROM pg_class c "
            "WHERE c.relnamespace = 'mcp_internal'::regnamespace AND c.relkind = 'r'",
            role,
        )
    assert dict(attributes) == {
        "rolsuper": False,
        "rolcreatedb": False,
        "rolcreaterole": False,
        "rolreplication": False,
        "rolbypassrls": False,
        "rolcanlogin": True,
    }
    assert member_of == []
    assert internal is False
    async with Client(app_for(boundary, "analyst").mcp) as client:  # agent queries log in as it
        answer = await call(client, "query_database", query="SELECT current_user AS u, session_user AS s")
    assert answer["rows"] == [{"u": role, "s": role}]


async def test_a_membership_granted_to_the_query_role_is_taken_back_on_the_next_start(boundary):
    role = boundary.db.query_role
    async with boundary.db.connection() as conn:
        await conn.execute(f'GRANT pg_read_all_data TO "{role}"')
    await boundary.db.apply_schema()  # what every start runs
    async with boundary.db.connection() as conn:
        assert not await conn.fetchval("SELECT pg_has_role($1, 'pg_read_all_data', 'MEMBER')", role)


async def test_each_database_gets_its_own_query_role_and_password(boundary, runtime):
    assert runtime.db.query_role != boundary.db.query_role
    async with runtime.db.connection() as conn:
        mine = await conn.fetch("SELECT role_name FROM mcp_internal.query_login")
    assert [row["role_name"] for row in mine] == [runtime.db.query_role]


def test_a_function_is_allowed_by_what_it_is_not_by_its_name():
    policy = FunctionPolicy(builtin=frozenset({"count", "lower", "set_config", "query_to_xml", "pg_sleep"}))
    assert validate_select("SELECT count(*), lower('A'), pg_catalog.lower('B') FROM customers", policy=policy)
    refusals = {
        "SELECT crosstab('SELECT 1')": f"function crosstab() is not allowed: {NOT_BUILT_IN}",
        "SELECT \"Lower\"('a')": f"function Lower() is not allowed: {NOT_BUILT_IN}",  # not the built-in
        "SELECT public.lower('a')": "function public.lower() is not allowed: only built-in functions",
        "SELECT set_config('role', 'postgres', true)": "function set_config() is not allowed: it changes",
        "SELECT query_to_xml('SELECT 1', true, true, '')": "function query_to_xml() is not allowed: it runs",
    }
    for query, expected in refusals.items():
        with pytest.raises(QueryRefused) as raised:
            validate_select(query, policy=policy)
        assert raised.value.message.startswith(expected), raised.value.message
    with pytest.raises(QueryRefused, match="has not read PostgreSQL's built-in functions"):
        validate_select("SELECT count(*) FROM customers", policy=FunctionPolicy())


def test_an_operator_allowlist_admits_exactly_the_functions_it_names():
    settings = Settings.from_env({"QUERY_ALLOWED_FUNCTIONS": " CrossTab , tablefunc_home.connectby "})
    assert settings.query_allowed_functions == frozenset({"crosstab", "tablefunc_home.connectby"})
    policy = FunctionPolicy(frozenset({"count"}), settings.query_allowed_functions)
    for allowed in (
        "SELECT * FROM crosstab('SELECT 1') AS t(a int)",
        "SELECT * FROM public.crosstab('SELECT 1') AS t(a int)",
        "SELECT * FROM connectby('t', 'a', 'b', '1', 0) AS t(a int, b int, l int)",
        "SELECT * FROM tablefunc_home.connectby('t', 'a', 'b', '1', 0) AS t(a int, b int, l int)",
    ):
        validate_select(allowed, policy=policy)
    with pytest.raises(QueryRefused, match=r"function public\.connectby\(\) is not allowed"):
        validate_select("SELECT public.connectby('t', 'a', 'b', '1', 0)", policy=policy)
    with pytest.raises(QueryRefused, match=r"function normal_rand\(\) is not allowed"):
        validate_select("SELECT normal_rand(1, 0, 1)", policy=policy)
    with pytest.raises(ConfigError, match="QUERY_ALLOWED_FUNCTIONS entry 'cross tab'"):
        Settings.from_env({"QUERY_ALLOWED_FUNCTIONS": "cross tab"})


async def test_an_allowlisted_crosstab_runs_and_still_cannot_switch_role(make_runtime, restored_policy):
    async with make_runtime(customers=None, query_allowed_functions=frozenset({"crosstab"})) as rt:
        async with rt.db.connection() as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS tablefunc")
        async with Client(app_for(rt, "analyst").mcp) as client:
            pivot = await call(
                client,
                "query_database",
                query="SELECT * FROM crosstab($$VALUES ('r', 'a', 1), ('r', 'b', 2)$$) "
                "AS t(r text, a int, b int)",
            )
            assert pivot["rows"] == [{"r": "r", "a": 1, "b": 2}]
            # The guard lets it through now; the role does not.
            escape = await refusal(client, "query_database", query=CROSSTAB_ESCAPE + " ")
            assert "permission denied to set role" in escape
            connectby = await refusal(client, "query_database", query=CONNECTBY_ESCAPE)
            assert connectby.startswith("function connectby() is not allowed")


@asynccontextmanager
async def login_role(
    pg_admin_url: str, prefix: str, attributes: str = "LOGIN", granted_in: str | None = None
) -> AsyncIterator[str]:
    """A role of this test's own; dropped at the end, with the privileges granted to it in `granted_in`."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute(f'CREATE ROLE "{name}" {attributes}')
    try:
        yield name
    finally:
        if granted_in is not None:
            conn = await asyncpg.connect(granted_in)
            try:
                await conn.execute(f'DROP OWNED BY "{name}"')
            finally:
                await conn.close()
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


async def test_an_operator_account_in_database_query_url_is_used_and_granted_what_queries_read(
    base_settings, create_database, pg_admin_url, restored_policy
):
    url = await create_database()
    async with login_role(pg_admin_url, "amcp_test_reader", granted_in=url) as reader:
        settings = base_settings.with_changes(database_url=url, database_query_url=with_user(url, reader))
        rt = await start_runtime(settings, seed_demo=False)
        try:
            assert rt.db.query_role == reader
            async with Client(app_for(rt, "analyst").mcp) as client:
                answer = await call(client, "query_database", query="SELECT current_user AS u FROM customers")
                refused = await refusal(
                    client, "query_database", query="SELECT count(*) FROM mcp_internal.audit_log"
                )
            assert answer["rows"] == [] and "mcp_internal" in refused  # no data loaded, but readable
            async with rt.db.connection() as conn:  # the server made no role of its own
                assert await conn.fetchval("SELECT to_regclass('mcp_internal.query_login')") is None
        finally:
            await rt.close()


@pytest.mark.parametrize("membership", ["SUPERUSER", "IN ROLE pg_read_all_data"])
async def test_start_up_refuses_a_database_query_url_that_can_do_more_than_read(
    base_settings, create_database, pg_admin_url, restored_policy, membership
):
    async with login_role(pg_admin_url, "amcp_test_strong", f"LOGIN {membership}") as strong:
        url = await create_database()
        settings = base_settings.with_changes(database_url=url, database_query_url=with_user(url, strong))
        with pytest.raises(Forbidden) as raised:
            await start_runtime(settings, seed_demo=False)
    message = raised.value.message
    assert message.startswith(f"DATABASE_QUERY_URL logs in as {strong}, a ")
    assert "pg_read_all_data" in message if "IN ROLE" in membership else "superuser" in message
    assert "\n" not in message


async def test_start_up_without_the_right_to_create_roles_says_to_set_database_query_url(
    base_settings, pg_admin_url, restored_policy
):
    async with login_role(pg_admin_url, "amcp_test_owner", "LOGIN NOCREATEROLE") as owner:
        database = f"amcp_test_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(pg_admin_url)
        await admin.execute(f'CREATE DATABASE "{database}" OWNER "{owner}"')
        try:
            settings = base_settings.with_changes(database_url=with_user(pg_admin_url, owner, database))
            with pytest.raises(Forbidden) as raised:
                await start_runtime(settings, seed_demo=False)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            await admin.close()
    assert raised.value.message == (
        "DATABASE_URL's user may not create the role agent queries log in as; give it CREATEROLE, "
        "or set DATABASE_QUERY_URL to a read-only account made for them"
    )
