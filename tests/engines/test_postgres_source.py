"""A PostgreSQL source other than main: a second database made here, with two allowed schemas, one that
is not, and a read-only login role made here (dropped after), driven through MCP with the in-memory client."""

from __future__ import annotations

import datetime as dt
import decimal
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from fastmcp import Client

from core.errors import Forbidden, QueryRefused
from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.support import refusal
from warehouse.engines.postgres import PostgresEngine, PostgresStatement
from warehouse.sqlguard import bind_placeholders

READER = f"amcp_pgsrc_reader_{secrets.token_hex(4)}"
PASSWORD = secrets.token_urlsafe(12)

SETUP = [
    "CREATE SCHEMA sales",
    "CREATE SCHEMA reporting",
    "CREATE SCHEMA hr",
    "CREATE TABLE sales.customers (id int PRIMARY KEY, name text NOT NULL, region text)",
    "CREATE TABLE sales.orders (id int PRIMARY KEY, customer_id int REFERENCES sales.customers, "
    "amount numeric(10,2), placed date, note text)",
    "CREATE TABLE sales.internal_notes (id int, body text)",
    "CREATE TABLE hr.salaries (person text, salary int)",
    "INSERT INTO sales.customers VALUES (1, 'Ada', 'north'), (2, 'Bo', 'south'), (3, 'Cy', NULL)",
    "INSERT INTO sales.orders VALUES (1, 1, 10.50, '2024-01-03', 'a -- b; c'), (2, 1, 20.00, '2024-01-09', NULL),"
    " (3, 2, 5.25, '2024-02-01', NULL), (4, 3, 99.99, '2024-02-11', NULL), (5, 2, 1.00, '2024-03-01', NULL)",
    "INSERT INTO sales.internal_notes VALUES (1, 'secret')",
    "INSERT INTO hr.salaries VALUES ('Ada', 100000)",
    "CREATE VIEW reporting.monthly AS SELECT date_trunc('month', placed)::date AS month, sum(amount) AS total "
    "FROM sales.orders GROUP BY 1",
    f"CREATE ROLE {READER} LOGIN PASSWORD '{PASSWORD}'",
    f"GRANT USAGE ON SCHEMA sales, reporting, hr TO {READER}",
    # More than the source allows (hr, internal_notes): the guard must refuse those, not the grants alone.
    f"GRANT SELECT ON ALL TABLES IN SCHEMA sales, reporting, hr TO {READER}",
    f"GRANT DELETE ON sales.internal_notes TO {READER}",
]


def _as(url: str, user: str, password: str | None = None) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    login = f"{user}:{password}" if password else user
    return urlunsplit(parts._replace(netloc=f"{login}@{host}:{parts.port or 5432}"))


@pytest.fixture(scope="module")
async def warehouse_url(create_database: Callable[[], Any], pg_admin_url: str) -> AsyncIterator[str]:
    """The admin URL of a second database with the schemas above; the reader role is dropped after."""
    url = await create_database()
    conn = await asyncpg.connect(url)
    try:
        for statement in SETUP:
            await conn.execute(statement)
    finally:
        await conn.close()
    yield url
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"DROP OWNED BY {READER}")
        await conn.execute(f"DROP ROLE IF EXISTS {READER}")
    finally:
        await conn.close()


async def _admin_fetch(url: str, query: str, search_path: str = "public") -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url, server_settings={"search_path": search_path})
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def sourced(
    warehouse_url: str, tmp_path_factory: pytest.TempPathFactory, make_runtime: Callable[..., Any]
) -> AsyncIterator[Runtime]:
    toml = tmp_path_factory.mktemp("pgsource") / "sources.toml"
    reader_url = _as(warehouse_url, READER, "${WAREHOUSE_PASSWORD}")
    toml.write_text(
        "[sources.warehouse]\n"
        f'url = "{reader_url}"\n'
        'description = "Sales warehouse"\n'
        'schemas = ["sales", "reporting"]\n'
        'exclude = ["sales.internal_*"]\n'
    )
    async with make_runtime(
        customers=None, sources_path=toml, sources_env={"WAREHOUSE_PASSWORD": PASSWORD}
    ) as rt:
        yield rt


def _plain(value: Any) -> Any:
    """A value as comparable between the tool's JSON answer and asyncpg's row."""
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _client(runtime: Runtime, user: str = "analyst") -> Client:
    return Client(app_for(runtime, user).mcp)


async def _query(client: Client, query: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool("query_database", {"query": query, "source": "warehouse", **arguments})
    return result.structured_content


async def test_list_sources_shows_the_postgresql_source_with_only_its_allowed_tables(sourced) -> None:
    async with _client(sourced, "viewer") as client:
        result = await client.call_tool("list_sources", {})
        schema = (await client.read_resource("schema://warehouse"))[0].text
    sources = {source["name"]: source for source in result.structured_content["sources"]}
    warehouse = sources["warehouse"]
    assert warehouse["engine"] == "postgresql" and warehouse["description"] == "Sales warehouse"
    assert [t["name"] for t in warehouse["tables"]] == ["customers", "orders", "reporting.monthly"]
    assert PASSWORD not in str(result.structured_content)
    assert "customer_id" in schema and "month" in schema and "salary" not in schema and "body" not in schema


async def test_query_database_on_the_source_answers_as_plain_sql_does(sourced, warehouse_url: str) -> None:
    queries = [
        "SELECT c.region, count(*) AS n, sum(o.amount) AS total FROM orders o JOIN customers c "
        "ON c.id = o.customer_id GROUP BY ROLLUP (c.region) ORDER BY c.region NULLS LAST",
        "WITH ranked AS (SELECT id, amount, rank() OVER (PARTITION BY customer_id ORDER BY amount DESC) AS r "
        "FROM sales.orders) SELECT id, amount, r FROM ranked ORDER BY id",
        "SELECT month, total FROM reporting.monthly ORDER BY month",
        "SELECT id, note FROM orders WHERE note = 'a -- b; c' ORDER BY id",
    ]
    async with _client(sourced) as client:
        for query in queries:
            answer = await _query(client, query)
            rows = [tuple(_plain(row[name]) for name in answer["columns"]) for row in answer["rows"]]
            expected = await _admin_fetch(warehouse_url, query, search_path="sales, reporting")
            assert rows == [tuple(map(_plain, row)) for row in expected], query
        bound = await _query(
            client, "SELECT id FROM orders WHERE amount > %(low)s ORDER BY id", parameters={"low": 15}
        )
        limited = await _query(client, "SELECT * FROM orders ORDER BY id", max_rows=2)
    assert [row["id"] for row in bound["rows"]] == [2, 4]
    assert limited["row_count"] == 2 and limited["truncated"] is True


async def test_tables_outside_the_allowed_schemas_and_globs_are_refused_in_one_line(sourced) -> None:
    async with _client(sourced) as client:
        for query, named in [
            ("SELECT * FROM hr.salaries", "hr.salaries"),
            ("SELECT * FROM sales.internal_notes", "sales.internal_notes"),
            ("SELECT * FROM internal_notes", "sales.internal_notes"),
            ("SELECT * FROM salaries", "salaries"),
        ]:
            text = await refusal(client, "query_database", query=query, source="warehouse")
            assert named in text and "customers, orders, reporting.monthly" in text, text


ATTACKS = [
    "DELETE FROM orders",
    "UPDATE sales.orders SET amount = 0",
    "INSERT INTO orders VALUES (9, 1, 1, NULL, NULL)",
    "SELECT 1; DELETE FROM orders",
    "WITH gone AS (DELETE FROM orders RETURNING *) SELECT * FROM gone",
    "SELECT * INTO sales.copy FROM orders",
    "SELECT set_config('search_path', 'hr', false)",
    "SELECT set_config('default_transaction_read_only', 'off', false)",
    "SELECT pg_read_file('/etc/passwd')",
    "SELECT pg_ls_dir('.')",
    "SELECT lo_import('/etc/passwd')",
    "SELECT query_to_xml('DELETE FROM sales.orders', true, true, '')",
    "SELECT * FROM hr.salaries",
    "SELECT * FROM orders o WHERE EXISTS (SELECT 1 FROM hr.salaries)",
    "SELECT * FROM pg_authid",
    "SELECT * FROM pg_catalog.pg_class",
    "SELECT * FROM pg_class",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM pg_stat_activity",
    "SELECT * FROM mcp_internal.query_log",
    "SELECT * FROM other_db.sales.orders",
    "SELECT * FROM (WITH salaries AS (SELECT 1) SELECT * FROM salaries) s, salaries",
    "WITH a AS (SELECT * FROM salaries), salaries AS (SELECT 1) SELECT * FROM a",
    "SELECT * FROM orders FOR UPDATE",
    "SET search_path = hr",
    "COPY orders TO '/tmp/orders.csv'",
    "SELECT pg_sleep(1) /* comment */",
    "SELECT dblink('host=x', 'DELETE FROM orders')",
    "SELECT pg_terminate_backend(1)",
    "TRUNCATE sales.orders",
    "DROP TABLE sales.orders",
]


async def test_attacks_are_refused_in_one_line_and_change_no_data(sourced, warehouse_url: str) -> None:
    snapshot = (
        "SELECT (SELECT array_agg(o ORDER BY id)::text FROM sales.orders o), "
        "(SELECT array_agg(s)::text FROM hr.salaries s), current_setting('search_path')"
    )
    before = await _admin_fetch(warehouse_url, snapshot)
    async with _client(sourced) as client:
        for query in ATTACKS:
            await refusal(client, "query_database", query=query, source="warehouse")
        still = await _query(client, "SELECT count(*) AS n FROM orders")
    assert still["rows"] == [{"n": 5}]
    assert await _admin_fetch(warehouse_url, snapshot) == before


async def test_the_transaction_is_read_only_even_past_the_guard(sourced, warehouse_url: str) -> None:
    """The layer under the guard: a write the guard never saw (built by hand, on a table the account
    may change) still runs READ ONLY and is refused in one line; nothing changes."""
    engine = sourced.sources.engine_now("warehouse")
    assert isinstance(engine, PostgresEngine)
    text = "WITH gone AS (DELETE FROM sales.internal_notes RETURNING id) SELECT count(*) FROM gone"
    statement = PostgresStatement(text, (), (), False, None, bound=bind_placeholders(text, {}))
    with pytest.raises(QueryRefused, match="read-only") as refused:
        await engine.run(statement, {}, timeout=5)
    assert "\n" not in str(refused.value)
    assert await _admin_fetch(warehouse_url, "SELECT count(*) FROM sales.internal_notes") == [(1,)]


async def test_a_superuser_account_is_refused_at_start_in_one_line(warehouse_url: str) -> None:
    engine = PostgresEngine(warehouse_url, name="warehouse", schemas=("sales",))
    with pytest.raises(Forbidden) as refused:
        await engine.start()
    message = str(refused.value)
    assert "\n" not in message and "source 'warehouse'" in message and "superuser" in message


async def test_a_member_of_a_predefined_role_is_refused_at_start(warehouse_url: str) -> None:
    role = f"amcp_pgsrc_reads_all_{secrets.token_hex(4)}"
    await _admin_fetch(warehouse_url, f"CREATE ROLE {role} LOGIN IN ROLE pg_read_server_files")
    try:
        engine = PostgresEngine(_as(warehouse_url, role), name="warehouse", schemas=("sales",))
        with pytest.raises(Forbidden, match="pg_read_server_files"):
            await engine.start()
    finally:
        await _admin_fetch(warehouse_url, f"DROP ROLE {role}")


async def test_a_slow_query_is_cancelled_at_its_timeout_in_one_line(sourced) -> None:
    async with _client(sourced) as client:
        text = await refusal(
            client, "query_database", query="SELECT pg_sleep(5)", source="warehouse", timeout=0.5
        )
        still = await _query(client, "SELECT count(*) AS n FROM customers")
    assert "timeout" in text and still["rows"] == [{"n": 3}]


async def test_an_accepted_text_is_guarded_once_until_the_source_relations_change(
    sourced, warehouse_url: str
) -> None:
    engine = sourced.sources.engine_now("warehouse")
    text = "SELECT count(*) AS n FROM scratch_rows WHERE id > %(low)s"
    conn = await asyncpg.connect(warehouse_url)
    try:
        await conn.execute("CREATE TABLE sales.scratch_rows (id int)")
        await engine.tables()  # the operator's refresh reads the new table
        first = await engine.guarded(text, {"low": 1})
        assert await engine.guarded(text, {"low": 2}) is first  # other values: the verdict is remembered
        assert await engine.guarded(text + " ", {"low": 2}) is not first  # another text is checked anew
        await conn.execute("DROP TABLE sales.scratch_rows")
        await engine.tables()
        with pytest.raises(QueryRefused, match="scratch_rows"):  # checked again against the new relations
            await engine.guarded(text, {"low": 2})
    finally:
        await conn.execute("DROP TABLE IF EXISTS sales.scratch_rows")
        await conn.close()
        await engine.tables()


async def test_closing_a_pool_does_not_wait_forever_for_a_connection_never_given_back(
    create_database: Callable[[], Any],
) -> None:
    """asyncpg's graceful close waits for every acquired connection: close_pool (the server's pools and
    every PostgreSQL source's) waits its bound, then terminates the pool and that connection."""
    import asyncio

    import asyncpg

    from warehouse.db import close_pool

    pool = await asyncpg.create_pool(await create_database(), min_size=1, max_size=1)
    kept = await pool.acquire()  # never released
    await asyncio.wait_for(close_pool(pool, seconds=0.2), timeout=30)  # pool.close() alone never returns
    assert pool.is_closing()
    with pytest.raises(asyncpg.InterfaceError):  # terminated with the pool: no longer usable
        await kept.fetchval("SELECT 1")
