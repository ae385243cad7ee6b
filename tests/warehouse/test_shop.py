"""The shop dataset: deterministic generation, loads into PostgreSQL, MariaDB and Parquet files (read back
by DuckDB), its invariants checked by plain SQL in each engine, fingerprints, reset and planted effects."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import re
import secrets
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import duckdb
import numpy as np
import pytest
from pydantic import SecretStr
from scipy.stats import chi2_contingency

from core.errors import InvalidInput
from mcp_server.cli import main as cli_main
from tests.engines.mariadb import HOST, PORT, root_fetch, scratch
from warehouse import sql
from warehouse.shop import (
    CHURNING_COUNTRY,
    DEFAULT_CUSTOMERS,
    LOW_REPEAT_METHOD,
    MAX_CUSTOMERS,
    NULL_TIME,
    TABLES,
    generate_shop,
    shop_plan,
)
from warehouse.shop_store import (
    _binary_chunks,
    _mysql_connection,
    _mysql_insert,
    _mysql_loading_session,
    load_shop,
    reset_shop,
    shop_fingerprints,
    shop_summary,
)
from warehouse.sources import Source, redact_url

PLAN = shop_plan(1_500, 11, "2024-01-01", "2024-12-31")
MARIADB = f"amcp_shop_{secrets.token_hex(4)}"
START, END = "TIMESTAMP '2024-01-01 00:00:00'", "TIMESTAMP '2024-12-31 23:59:59'"


def _source(name: str, kind: Any, url: str, **extra: Any) -> Source:
    writable = {"write_url": SecretStr(url)} if kind != "files" else {}
    return Source(name=name, kind=kind, url=SecretStr(url), redacted_url=redact_url(url), **writable, **extra)


@pytest.fixture(scope="module")
async def engines(
    create_database: Callable[[], Any], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[str, Source]]:
    """The same plan loaded into a scratch PostgreSQL database, a scratch MariaDB database and a folder."""
    pg_url = await create_database()
    folder = tmp_path_factory.mktemp("shop_files")
    async with scratch([f"CREATE DATABASE {MARIADB}"], [f"DROP DATABASE IF EXISTS {MARIADB}"]):
        sources = {
            "postgresql": _source("shop_pg", "postgresql", pg_url, schemas=("shop",)),
            "mysql": _source("shop_my", "mysql", f"mysql://root@{HOST}:{PORT}/{MARIADB}", schemas=(MARIADB,)),
            "files": _source("shop_files", "files", f"files://{folder}"),
        }
        for source in sources.values():
            await load_shop(source, PLAN)
        yield sources


class SQL:
    """Plain SQL on one engine's loaded shop: the independent check of what the loader wrote."""

    def __init__(self, source: Source) -> None:
        self.source = source

    async def scalar(self, query: str) -> Any:
        return (await self.rows(query))[0][0]

    async def rows(self, query: str) -> list[tuple[Any, ...]]:
        if self.source.kind == "postgresql":
            conn = await asyncpg.connect(
                self.source.url.get_secret_value(), server_settings={"search_path": "shop"}
            )
            try:
                return [tuple(row) for row in await conn.fetch(query)]
            finally:
                await conn.close()
        if self.source.kind == "mysql":
            return await root_fetch(self.source.default_schema, query)
        with duckdb.connect() as conn:
            for table in TABLES:
                path = Path(self.source.directory) / f"{table}.parquet"
                conn.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet('{path}')")
            return conn.execute(query).fetchall()


# Each query counts the rows breaking one rule; every count must be 0. Portable across the three engines.
INVARIANTS = {
    "sku unique": "SELECT count(*) - count(DISTINCT sku) FROM products",
    "email unique": "SELECT count(*) - count(DISTINCT email) FROM customers",
    "line total = quantity x unit price": "SELECT count(*) FROM order_items WHERE line_total <> quantity * unit_price",
    "unit price = product price": "SELECT count(*) FROM order_items i JOIN products p "
    "ON p.product_id = i.product_id WHERE i.unit_price <> p.price",
    "subtotal = sum of lines": "SELECT count(*) FROM orders o LEFT JOIN (SELECT order_id, sum(line_total) AS s "
    "FROM order_items GROUP BY order_id) i ON i.order_id = o.order_id WHERE i.s IS NULL OR i.s <> o.subtotal",
    "total = subtotal + tax + shipping": "SELECT count(*) FROM orders WHERE total <> subtotal + tax + shipping_fee",
    "known statuses": "SELECT count(*) FROM orders "
    "WHERE status NOT IN ('PLACED', 'PAID', 'SHIPPED', 'DELIVERED', 'CANCELLED')",
    "a paid order has one payment": "SELECT count(*) FROM orders o WHERE o.status IN ('PAID', 'SHIPPED', 'DELIVERED') "
    "AND (SELECT count(*) FROM payments p WHERE p.order_id = o.order_id) <> 1",
    "no payment for cancelled or placed": "SELECT count(*) FROM payments p JOIN orders o ON o.order_id = p.order_id "
    "WHERE o.status IN ('CANCELLED', 'PLACED')",
    "payment = order total": "SELECT count(*) FROM payments p JOIN orders o ON o.order_id = p.order_id "
    "WHERE p.amount <> o.total",
    "one currency": "SELECT count(DISTINCT currency) - 1 FROM payments",
    "paid after placed": "SELECT count(*) FROM payments p JOIN orders o ON o.order_id = p.order_id "
    "WHERE p.paid_at < o.order_date",
    "shipped after paid": "SELECT count(*) FROM shipments s JOIN payments p ON p.order_id = s.order_id "
    "WHERE s.shipped_at < p.paid_at",
    "a shipment for each shipped order only": "SELECT count(*) FROM orders o "
    "WHERE (o.status IN ('SHIPPED', 'DELIVERED')) <> "
    "(EXISTS (SELECT 1 FROM shipments s WHERE s.order_id = o.order_id))",
    "delivered when it says so": "SELECT count(*) FROM shipments s JOIN orders o ON o.order_id = s.order_id "
    "WHERE (s.delivered_at IS NOT NULL) <> (s.status = 'DELIVERED') "
    "OR (s.status = 'DELIVERED') <> (o.status = 'DELIVERED') OR s.delivered_at < s.shipped_at",
    "ordered after signing up": "SELECT count(*) FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
    "WHERE o.order_date < c.created_at",
    "dates in range": f"SELECT (SELECT count(*) FROM orders WHERE order_date < {START} OR order_date > {END}) "
    f"+ (SELECT count(*) FROM customers WHERE created_at < {START} OR created_at > {END}) "
    f"+ (SELECT count(*) FROM payments WHERE paid_at > {END}) "
    f"+ (SELECT count(*) FROM shipments WHERE shipped_at > {END} OR delivered_at > {END}) "
    f"+ (SELECT count(*) FROM products WHERE created_at >= {START})",
}


@pytest.mark.parametrize("kind", ["postgresql", "mysql", "files"])
async def test_loaded_shop_keeps_every_rule_in_each_engine(engines: dict[str, Source], kind: str) -> None:
    sql = SQL(engines[kind])
    broken = {rule: int(await sql.scalar(query)) for rule, query in INVARIANTS.items()}
    assert broken == dict.fromkeys(INVARIANTS, 0)
    statuses = dict(await sql.rows("SELECT status, count(*) FROM orders GROUP BY status"))
    assert (
        set(statuses) == {"PLACED", "PAID", "SHIPPED", "DELIVERED", "CANCELLED"} or statuses["CANCELLED"] > 0
    )
    assert await sql.scalar("SELECT count(*) FROM customers") == PLAN.customers


async def test_every_engine_holds_the_generated_rows(engines: dict[str, Source]) -> None:
    tables = generate_shop(PLAN)
    expected_revenue = int(tables["payments"]["amount"].sum())
    for source in engines.values():
        sql = SQL(source)
        for table, columns in tables.items():
            assert await sql.scalar(f"SELECT count(*) FROM {table}") == len(columns[TABLES[table][0][0]])
        assert round(float(await sql.scalar("SELECT sum(amount) FROM payments")) * 100) == expected_revenue


async def test_same_arguments_give_identical_fingerprints_in_every_engine(engines: dict[str, Source]) -> None:
    prints = {kind: await shop_fingerprints(source) for kind, source in engines.items()}
    assert set(prints["postgresql"]) == set(TABLES)
    assert prints["postgresql"] == prints["mysql"] == prints["files"]


async def test_a_second_load_replaces_the_rows_and_gives_the_same_fingerprints(
    engines: dict[str, Source],
) -> None:
    for source in engines.values():
        before = await shop_summary(source)
        first = await shop_fingerprints(source)
        report = await load_shop(source, PLAN)
        after = await shop_summary(source)
        assert after["tables"] == before["tables"] == report.counts
        assert await shop_fingerprints(source) == first


async def test_a_different_seed_gives_different_fingerprints(
    engines: dict[str, Source], tmp_path: Path
) -> None:
    other = _source("other", "files", f"files://{tmp_path}")
    await load_shop(other, shop_plan(PLAN.customers, PLAN.seed + 1, PLAN.start_date, PLAN.end_date))
    mine, theirs = await shop_fingerprints(engines["files"]), await shop_fingerprints(other)
    assert all(mine[table] != theirs[table] for table in TABLES)


async def test_summary_names_the_counts_and_the_generated_window(engines: dict[str, Source]) -> None:
    expected = {table: len(columns[TABLES[table][0][0]]) for table, columns in generate_shop(PLAN).items()}
    for source in engines.values():
        summary = await shop_summary(source)
        assert summary["tables"] == expected
        assert summary["rows"] == sum(expected.values())
        window = summary["window"]
        assert (window["seed"], window["customers"]) == (PLAN.seed, PLAN.customers)
        assert (window["start_date"], window["end_date"]) == ("2024-01-01", "2024-12-31")


async def test_reset_empties_every_table_and_reports_counts_before_and_after(
    engines: dict[str, Source],
) -> None:
    for source in engines.values():
        loaded = (await shop_summary(source))["tables"]
        counts = await reset_shop(source)
        assert counts == {table: (loaded[table], 0) for table in TABLES}
        summary = await shop_summary(source)
        assert summary["rows"] == 0 and summary["window"] is None
        assert await SQL(source).scalar("SELECT count(*) FROM orders") == 0
        await load_shop(source, PLAN)  # leave the module's data as it was
        assert (await shop_summary(source))["tables"] == loaded


async def test_orders_lean_to_the_weekend(engines: dict[str, Source]) -> None:
    share = await SQL(engines["postgresql"]).scalar(
        "SELECT avg((extract(isodow FROM order_date) >= 6)::int) FROM orders"
    )
    assert float(share) > 0.32  # 2/7 = 0.286 without the skew; DAY_WEIGHTS give about 0.36


async def test_planted_effects_show_in_plain_sql_at_the_default_size(
    create_database: Callable[[], Any],
) -> None:
    url = await create_database()
    source = _source("planted", "postgresql", url, schemas=("shop",))
    plan = shop_plan(DEFAULT_CUSTOMERS, 42)
    await load_shop(source, plan)
    sql = SQL(source)
    # Repeat buyers (two or more orders) in the planted country against the rest.
    by_country = await sql.rows(
        "SELECT c.country = $$" + CHURNING_COUNTRY + "$$ AS planted, count(*) FILTER (WHERE n >= 2), "
        "count(*) FILTER (WHERE n < 2) FROM customers c JOIN (SELECT customer_id, count(*) AS n FROM orders "
        "GROUP BY customer_id) o ON o.customer_id = c.customer_id GROUP BY 1 ORDER BY 1"
    )
    table = np.array([[row[1], row[2]] for row in by_country])  # rows: other, planted
    share = table[:, 0] / table.sum(axis=1)
    assert share[1] < share[0] - 0.1
    assert chi2_contingency(table)[1] < 0.01
    # Churn (no order in the last 90 days of the window) is higher there as well.
    churn = dict(
        await sql.rows(
            "SELECT c.country = $$" + CHURNING_COUNTRY + "$$, avg((max_date < timestamp '2025-12-31' - "
            "interval '89 days')::int) FROM customers c JOIN (SELECT customer_id, max(order_date) AS max_date "
            "FROM orders GROUP BY customer_id) o ON o.customer_id = c.customer_id GROUP BY 1"
        )
    )
    assert float(churn[True]) > float(churn[False]) + 0.05
    # Repeat purchase by the method customers pay with: the planted method lower.
    by_method = await sql.rows(
        "SELECT m.method = $$" + LOW_REPEAT_METHOD + "$$, count(*) FILTER (WHERE n >= 2), "
        "count(*) FILTER (WHERE n < 2) FROM (SELECT o.customer_id, min(p.method) AS method, count(*) AS n "
        "FROM orders o JOIN payments p ON p.order_id = o.order_id GROUP BY o.customer_id) m GROUP BY 1 ORDER BY 1"
    )
    table = np.array([[row[1], row[2]] for row in by_method])
    share = table[:, 0] / table.sum(axis=1)
    assert share[1] < share[0] - 0.1
    assert chi2_contingency(table)[1] < 0.01


async def test_progress_reports_each_table_and_ends_at_the_total(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    report = await load_shop(
        _source("progress", "files", f"files://{tmp_path}"), PLAN, progress=lambda *a: seen.append(a)
    )
    stages = [stage for stage, _, _ in seen]
    assert stages == ["generated", "cleared", *TABLES, "keys"]
    done = [rows for _, rows, _ in seen]
    assert done == sorted(done) and done[-1] == report.rows
    assert {total for _, _, total in seen} == {report.rows}


def test_generation_is_deterministic_and_seed_dependent() -> None:
    first, again = generate_shop(PLAN), generate_shop(PLAN)
    other = generate_shop(shop_plan(PLAN.customers, PLAN.seed + 1, PLAN.start_date, PLAN.end_date))
    for table, columns in first.items():
        assert list(columns) == [name for name, _ in TABLES[table]]
        for name, values in columns.items():
            assert np.array_equal(values, again[table][name])
    assert not np.array_equal(first["customers"]["email"], other["customers"]["email"])


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"customers": 0}, "customers must be at least 1, got 0"),
        ({"customers": MAX_CUSTOMERS + 1}, f"customers must be at most {MAX_CUSTOMERS:,}"),
        ({"customers": True}, "customers must be a whole number"),
        ({"customers": 10, "seed": -1}, "seed must be a whole number"),
        ({"customers": 10, "start_date": "2024-03-01", "end_date": "2024-02-01"}, "must be after start-date"),
        (
            {"customers": 10, "start_date": "2024-13-01"},
            "start-date '2024-13-01' is not a date; use YYYY-MM-DD",
        ),
        ({"customers": 10, "end_date": "soon"}, "end-date 'soon' is not a date"),
        ({"customers": 10, "start_date": "2024-01-01", "end_date": "2024-01-10"}, "at least 30 days"),
        ({"customers": 10, "products": 0}, "products must be a whole number from 1"),
        ({"customers": 10, "price_sigma": 5}, "price_sigma must be a number from 0 to 2"),
    ],
)
def test_bad_arguments_are_one_clear_line(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput) as raised:
        shop_plan(**arguments)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


async def test_a_database_source_without_write_url_is_refused_before_any_work() -> None:
    url = "postgresql://reader:secret@127.0.0.1:5432/nowhere"
    source = Source(name="readonly", kind="postgresql", url=SecretStr(url), redacted_url=redact_url(url))
    with pytest.raises(InvalidInput, match="source 'readonly' has no write_url") as raised:
        await load_shop(source, PLAN)
    assert "secret" not in str(raised.value)


def test_the_seed_command_loads_the_shop_into_a_named_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    sources = tmp_path / "sources.toml"
    sources.write_text(f'[sources.shopfiles]\nurl = "files://{folder}"\n')
    monkeypatch.setenv("ANALYTICS_MCP_SOURCES", str(sources))
    monkeypatch.setenv("ANALYTICS_MCP_HOME", str(tmp_path / "home"))
    argv = ["seed", "--dataset", "shop", "--source", "shopfiles", "--customers", "300", "--seed", "5"]
    assert cli_main([*argv, "--no-progress", "--start-date", "2024-01-01", "--end-date", "2024-06-30"]) == 0
    assert "loaded 300 customers" in capsys.readouterr().out
    assert sorted(path.name for path in folder.iterdir()) == sorted(f"{table}.parquet" for table in TABLES)
    assert cli_main(["seed", "--dataset", "shop", "--source", "nosuch", "--no-progress"]) == 1
    assert "source 'nosuch' not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli_main(["seed", "--dataset", "shop", "--source", "shopfiles", "--end-date", "2023-01-01"])
    assert exited.value.code == 2
    assert "end-date 2023-01-01 must be after start-date" in capsys.readouterr().err


async def test_the_seed_command_loads_the_shop_into_the_built_in_database_by_default(
    create_database: Callable[[], Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = await create_database()
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.delenv("ANALYTICS_MCP_SOURCES", raising=False)
    argv = ["seed", "--dataset", "shop", "--customers", "200", "--seed", "3", "--no-progress"]
    assert await asyncio.to_thread(cli_main, argv) == 0
    assert "into source 'main'" in capsys.readouterr().out
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM shop.customers") == 200
        assert await conn.fetchval("SELECT to_regclass('public.orders')") is None  # telecom tables untouched
    finally:
        await conn.close()


async def test_binary_copy_keeps_empty_text_nulls_accents_and_large_amounts_exact(pg_admin_url: str) -> None:
    spec = (("k", "key"), ("s", "text"), ("m", "money"), ("ts", "time"), ("b", "bool"), ("q", "int"))
    columns = {
        "k": np.array([1, 2, 3], dtype=np.int64),
        "s": np.array(["", "Łódź é", "plain"], dtype=object),
        "m": np.array([0, 99_999_999_999, 5], dtype=np.int64),
        "ts": np.array([0, NULL_TIME, 1_704_067_199], dtype=np.int64),
        "b": np.array([True, False, True]),
        "q": np.array([1, 7, 2_000_000_000], dtype=np.int32),
    }
    conn = await asyncpg.connect(pg_admin_url)
    try:
        await conn.execute(
            "CREATE TEMP TABLE edge (k bigint, s text, m numeric(12, 2), ts timestamp, b boolean, q integer)"
        )
        payload = b"".join(_binary_chunks(spec, columns))
        await conn.copy_to_table("edge", source=io.BytesIO(payload), format="binary")
        rows = [tuple(row) for row in await conn.fetch("SELECT * FROM edge ORDER BY k")]
    finally:
        await conn.close()
    assert rows == [
        (1, "", Decimal("0.00"), dt.datetime(1970, 1, 1), True, 1),
        (2, "Łódź é", Decimal("999999999.99"), None, False, 7),
        (3, "plain", Decimal("0.05"), dt.datetime(2023, 12, 31, 23, 59, 59), True, 2_000_000_000),
    ]


async def test_mariadb_bulk_insert_keeps_empty_text_nulls_accents_quotes_and_every_amount_exact() -> None:
    """Bulk executes carry money as doubles; a batch with a column NULL in every row goes as a text INSERT.
    Both read back as the values written: amounts checked from 0.00 to DECIMAL(12,2)'s largest."""
    database = f"amcp_shop_edge_{secrets.token_hex(4)}"
    rng = np.random.default_rng(5)
    cents = np.concatenate(
        [[0, 1, 5, 99, 100, 2_599, 999_999_999_999], (10 ** rng.uniform(0, 12, 2_000)).astype(np.int64)]
    )
    n = len(cents)
    spec = (("k", "key"), ("s", "text"), ("m", "money"), ("ts", "time"), ("b", "bool"), ("q", "int"))
    texts = np.array(["", "Łódź é", 'say "hi" \\ back', "plain"] * (n // 4 + 1), dtype=object)[:n]
    instants = np.where(np.arange(n) % 3 == 0, NULL_TIME, 1_704_067_199 - np.arange(n) * 3_600)
    columns = {
        "k": np.arange(1, n + 1, dtype=np.int64),
        "s": texts,
        "m": cents,
        "ts": instants,
        "b": np.arange(n) % 2 == 0,
        "q": (np.arange(n) * 1_000_003).astype(np.int32),
    }
    no_times = dict(columns, ts=np.full(n, NULL_TIME))  # a bulk execute cannot type an all-NULL column
    url = f"mysql://root@{HOST}:{PORT}/{database}"
    async with scratch([f"CREATE DATABASE {database}"], [f"DROP DATABASE IF EXISTS {database}"]):
        async with _mysql_connection(url, database) as conn:
            await _mysql_loading_session(conn)
            for table in ("bulk", "fallback"):
                async with conn.cursor() as cursor:
                    await cursor.execute(
                        f"CREATE TABLE {table} (k BIGINT PRIMARY KEY, s VARCHAR(40) NOT NULL, m DECIMAL(12, 2), "
                        "ts DATETIME NULL, b BOOLEAN, q INT) DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"
                    )
            reported: list[tuple[str, int]] = []
            took_bulk = await _mysql_insert(
                conn, "bulk", spec, columns, lambda t, rows: reported.append((t, rows))
            )
            await _mysql_insert(conn, "fallback", spec, no_times, lambda t, rows: reported.append((t, rows)))
        bulk = await root_fetch(database, "SELECT k, s, m, ts, b, q FROM bulk ORDER BY k")
        fallback = await root_fetch(database, "SELECT k, s, m, ts, b, q FROM fallback ORDER BY k")
    assert took_bulk
    assert sum(rows for table, rows in reported if table == "bulk") == n
    expected = [
        (
            i + 1,
            texts[i],
            Decimal(int(cents[i])) / 100,
            None
            if instants[i] == NULL_TIME
            else dt.datetime(1970, 1, 1) + dt.timedelta(seconds=int(instants[i])),
            int(i % 2 == 0),
            int(columns["q"][i]),
        )
        for i in range(n)
    ]
    assert bulk == expected
    assert fallback == [(*row[:3], None, *row[4:]) for row in expected]


async def _create_statements(database: str) -> dict[str, str]:
    """SHOW CREATE TABLE of each shop table, its comment (the generated window) left out."""
    statements = {}
    for table in TABLES:
        text = (await root_fetch(database, f"SHOW CREATE TABLE `{table}`"))[0][1]
        statements[table] = re.sub(r" COMMENT='.*'$", "", text)
    return statements


async def test_mariadb_keys_end_as_the_schema_file_declares_after_a_load_and_after_a_reset() -> None:
    loaded, fresh = f"amcp_shop_keys_{secrets.token_hex(4)}", f"amcp_shop_schema_{secrets.token_hex(4)}"
    schema = [statement for statement in sql.load("shop_mysql_schema").split(";") if statement.strip()]
    source = _source("keys", "mysql", f"mysql://root@{HOST}:{PORT}/{loaded}", schemas=(loaded,))
    async with scratch(
        [f"CREATE DATABASE {loaded}", f"CREATE DATABASE {fresh}"],
        [f"DROP DATABASE IF EXISTS {loaded}", f"DROP DATABASE IF EXISTS {fresh}"],
    ):
        for statement in schema:
            await root_fetch(fresh, statement)
        declared = await _create_statements(fresh)
        assert "KEY `order_items_order_id_fkey`" in declared["order_items"]
        await load_shop(source, shop_plan(60, 3, "2024-01-01", "2024-06-30"))
        assert await _create_statements(loaded) == declared
        # As a load that failed between dropping and adding the keys leaves them:
        await root_fetch(
            loaded,
            "ALTER TABLE order_items DROP FOREIGN KEY order_items_order_id_fkey, "
            "DROP KEY order_items_order_id_fkey",
        )
        await root_fetch(loaded, "ALTER TABLE customers DROP KEY customers_email_key")
        await reset_shop(source)
        assert await _create_statements(loaded) == declared
