"""The files engine: a directory of CSV, TSV, Parquet and JSON-lines files read through a locked DuckDB.

Real DuckDB and real files throughout; numbers are checked against pandas reading the same files."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from core.errors import AnalyticsError, InvalidInput, QueryRefused, Timeout, Unavailable
from warehouse.engines import RelationRules
from warehouse.engines.duckdb_files import FilesEngine
from warehouse.engines.duckdb_guard import ALLOWED_FUNCTIONS, validate_select

SECRET = "TOP-SECRET-7731"


def write_files(root: Path) -> Path:
    directory = root / "exports"
    directory.mkdir()
    rng = np.random.default_rng(3)
    orders = pd.DataFrame(
        {
            "order_id": range(1, 401),
            "customer_id": rng.integers(1, 41, 400),
            "amount": rng.gamma(2.0, 30.0, 400).round(2),
            "status": rng.choice(["paid", "refunded", "open"], 400),
            "note": ["comment -- not; a comment"] * 10 + [None] * 390,
        }
    )
    orders.to_csv(directory / "orders.csv", index=False)
    pd.DataFrame(
        {
            "customer_id": range(1, 41),
            "region": [["north", "south", "east", "west"][i % 4] for i in range(40)],
        }
    ).to_parquet(directory / "customers.parquet")
    events = pd.DataFrame(
        {"customer_id": rng.integers(1, 41, 200), "kind": rng.choice(["click", "view"], 200)}
    )
    events.to_json(directory / "events.jsonl", orient="records", lines=True)
    pd.DataFrame({"region": ["north", "south", "east", "west"], "target": [100, 200, 300, 400]}).to_csv(
        directory / "targets.tsv", sep="\t", index=False
    )
    (root / "secret.txt").write_text(f"password\n{SECRET}\n")
    (root / "secret.csv").write_text(f"password\n{SECRET}\n")
    return directory


@pytest.fixture
async def files(tmp_path: Path):
    directory = write_files(tmp_path)
    engine = FilesEngine("exports", directory, memory_limit="256MB", threads=2)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


async def answer(engine: FilesEngine, sql: str, parameters=None, **limits):
    parameters = parameters or {}
    statement = await engine.guarded(sql, parameters)
    bounds = {"timeout": 10, "max_rows": 10_000, "max_bytes": 5_000_000} | limits
    return await engine.run(statement, parameters, **bounds)


def fingerprint(engine: FilesEngine, root: Path) -> dict:
    """Every file under the test's root (bytes and mtime), the database's views and its locked settings."""
    state: dict = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            state[str(path)] = (path.read_bytes(), path.stat().st_mtime_ns)
    cursor = engine._database.cursor()
    state["views"] = cursor.execute(
        "SELECT database_name, schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal ORDER BY ALL"
    ).fetchall()
    state["tables"] = cursor.execute("SELECT table_name FROM duckdb_tables() ORDER BY ALL").fetchall()
    state["databases"] = cursor.execute(
        "SELECT database_name FROM duckdb_databases() ORDER BY ALL"
    ).fetchall()
    state["macros"] = cursor.execute(
        "SELECT function_name FROM duckdb_functions() WHERE NOT internal ORDER BY ALL"
    ).fetchall()
    state["settings"] = cursor.execute(
        "SELECT current_setting('enable_external_access'), current_setting('lock_configuration'), "
        "current_setting('allowed_paths'), current_setting('memory_limit'), current_setting('threads')"
    ).fetchall()
    cursor.close()
    return state


async def test_each_data_file_is_a_table_named_after_its_stem(files):
    tables = {table.name: table.row_estimate for table in await files.tables()}
    assert tables == {"orders": 400, "customers": 40, "events": 200, "targets": 4}
    assert [c.name for c in await files.columns("targets")] == ["region", "target"]
    assert {c.name: c.type for c in await files.columns("orders")}["amount"] == "float8"


async def test_allow_rules_and_duplicate_stems(tmp_path):
    directory = write_files(tmp_path)
    engine = FilesEngine("exports", directory, rules=RelationRules(("*",), ("events",)))
    await engine.start()
    try:
        assert sorted(t.name for t in await engine.tables()) == ["customers", "orders", "targets"]
        with pytest.raises(QueryRefused, match="not a table of this source"):
            await answer(engine, "SELECT * FROM events")
    finally:
        await engine.close()
    (directory / "orders.parquet").write_bytes((directory / "customers.parquet").read_bytes())
    with pytest.raises(InvalidInput, match="two files are named 'orders'"):
        await FilesEngine("exports", directory).start()


async def test_a_link_out_of_the_directory_is_no_table_and_a_broken_file_is_named(tmp_path):
    directory = write_files(tmp_path)
    (directory / "leak.csv").symlink_to(tmp_path / "secret.csv")
    engine = FilesEngine("exports", directory)
    await engine.start()
    try:
        assert "leak" not in {table.name for table in await engine.tables()}
        with pytest.raises(QueryRefused):
            await answer(engine, "SELECT * FROM leak")
    finally:
        await engine.close()
    (directory / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(Unavailable, match="broken.parquet cannot be read") as failed:
        await FilesEngine("exports", directory).start()
    assert str(tmp_path) not in failed.value.message
    empty = tmp_path / "empty"
    empty.mkdir()
    engine = FilesEngine("nothing", empty)
    await engine.start()
    assert await engine.tables() == []
    await engine.close()


ATTACKS = [
    "SELECT * FROM read_csv('{secret_csv}')",
    "SELECT * FROM read_csv_auto('{secret_csv}')",
    "SELECT * FROM read_text('{secret}')",
    "SELECT * FROM read_blob('{secret}')",
    "SELECT * FROM read_text('{orders}')",
    "SELECT content FROM read_text('{secret}') UNION ALL SELECT status FROM orders",
    "SELECT * FROM '{secret_csv}'",
    'SELECT * FROM "{secret_csv}"',
    "SELECT * FROM glob('{root}/*')",
    "SELECT * FROM sniff_csv('{secret_csv}')",
    "SELECT * FROM parquet_metadata('{customers}')",
    "SELECT * FROM query('SELECT * FROM read_text(''{secret}'')')",
    "SELECT * FROM query_table('orders')",
    "SELECT 'x'.read_text()",
    "ATTACH '{root}/stolen.db' AS stolen",
    "ATTACH ':memory:' AS scratch",
    "DETACH memory",
    "COPY orders TO '{root}/out.csv'",
    "COPY (SELECT 1) TO '{orders}'",
    "COPY orders FROM '{secret_csv}'",
    "EXPORT DATABASE '{root}/dump'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SELECT * FROM read_csv('https://example.com/x.csv')",
    "SET enable_external_access = true",
    "SET allowed_paths = ['{secret}']",
    "RESET lock_configuration",
    "PRAGMA enable_profiling",
    "PRAGMA version",
    "CALL pragma_version()",
    "CALL checkpoint()",
    "CHECKPOINT",
    "CREATE MACRO leak(p) AS TABLE SELECT * FROM read_text(p)",
    "CREATE TEMP TABLE copy_of_orders AS SELECT * FROM orders",
    "CREATE VIEW peek AS SELECT 1",
    "CREATE OR REPLACE VIEW orders AS SELECT * FROM read_text('{secret}')",
    "DROP VIEW orders",
    "SELECT 1; DROP VIEW orders",
    "SELECT 1; SELECT * FROM read_text('{secret}')",
    "SELECT getenv('HOME')",
    "SELECT current_setting('allowed_paths')",
    "SELECT current_setting('temp_directory')",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM duckdb_views()",
    "SELECT * FROM duckdb_functions()",
    "SELECT * FROM information_schema.tables",
    "SELECT * FROM main.orders",
    "SELECT * FROM memory.main.orders",
    "SELECT * FROM sqlite_master",
    "SET VARIABLE x = 1",
    "SELECT getvariable('x')",
    "SELECT list_aggregate([1, 2], 'sum')",
    "SELECT * FROM orders FOR UPDATE",
    "INSERT INTO orders VALUES (1)",
    "VACUUM",
    "USE memory",
    "BEGIN TRANSACTION",
    "SUMMARIZE orders",
    "DESCRIBE orders",
    "SHOW TABLES",
    "SELECT * FROM range(100000000000)",
    "SELECT * FROM orders, generate_series(1, 100000000)",
    "SELECT $1",
    "SELECT ?",
    "WITH x AS (SELECT * FROM read_text('{secret}')) SELECT * FROM x",
    "SELECT (SELECT content FROM read_text('{secret}'))",
    "SELECT * FROM orders WHERE status IN (SELECT content FROM read_text('{secret}'))",
    "SELECT * FROM orders /* comment */ ; ATTACH ':memory:'",
    "SELECT 'a\\' ; ATTACH ':memory:' AS m; --'",
    "SELECT $$a$$; ATTACH ':memory:'",
    'SELECT * FROM (WITH "{secret_csv}" AS (SELECT 1) SELECT 1), "{secret_csv}"',
]


async def test_attack_corpus_is_refused_and_changes_nothing(files, tmp_path):
    paths = {
        "secret": tmp_path / "secret.txt",
        "secret_csv": tmp_path / "secret.csv",
        "root": tmp_path,
        "orders": files.directory / "orders.csv",
        "customers": files.directory / "customers.parquet",
    }
    before = fingerprint(files, tmp_path)
    assert len(ATTACKS) >= 25
    for attack in ATTACKS:
        sql = attack.format(**{name: str(path) for name, path in paths.items()})
        with pytest.raises((QueryRefused, InvalidInput)) as refused:
            await answer(files, sql)
        message = refused.value.message
        assert "\n" not in message and SECRET not in message and str(tmp_path) not in message, (sql, message)
    assert fingerprint(files, tmp_path) == before
    result = await answer(files, "SELECT count(*) FROM orders")  # the views still answer
    assert result.rows == [(400,)]


async def test_locked_database_blocks_the_outside_even_without_the_guard(files, tmp_path):
    """SQL that skipped the guard (run straight on the engine's database) still cannot reach beyond the
    registered files nor unlock the configuration."""
    secret, secret_csv = tmp_path / "secret.txt", tmp_path / "secret.csv"
    before = fingerprint(files, tmp_path)
    direct = [
        f"SELECT * FROM read_csv('{secret_csv}')",
        f"SELECT * FROM read_text('{secret}')",
        f"SELECT * FROM read_blob('{secret}')",
        f"SELECT * FROM '{secret_csv}'",
        f"SELECT * FROM glob('{tmp_path}/*')",
        f"ATTACH '{tmp_path}/stolen.db' AS stolen",
        f"COPY (SELECT 1) TO '{tmp_path}/out.csv'",
        f"COPY (SELECT 1 AS a) TO '{files.directory}/new.csv'",
        f"COPY (SELECT 1 AS a) TO '{files.directory / 'orders.csv'}'",
        f"EXPORT DATABASE '{tmp_path}/dump'",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET enable_external_access = true",
        f"SET allowed_paths = ['{secret}']",
        f"SET allowed_directories = ['{tmp_path}']",
        "RESET lock_configuration",
        "SET lock_configuration = false",
        "SET memory_limit = '64GB'",
        "DROP VIEW orders",
        "CREATE OR REPLACE VIEW orders AS SELECT 1 AS x",
        "CREATE MACRO leak(p) AS p",
        "ATTACH ':memory:' AS scratch",
    ]
    for sql in direct:
        cursor = files._database.cursor()
        with pytest.raises(duckdb.Error) as failed:
            cursor.execute(sql).fetchall()
        assert SECRET not in str(failed.value), sql
        cursor.close()
    assert fingerprint(files, tmp_path) == before


async def test_legitimate_duckdb_sql_matches_pandas(files):
    orders = pd.read_csv(files.directory / "orders.csv")
    customers = pd.read_parquet(files.directory / "customers.parquet")
    events = pd.read_json(files.directory / "events.jsonl", lines=True)
    targets = pd.read_csv(files.directory / "targets.tsv", sep="\t")

    joined = await answer(
        files,
        "SELECT c.region, count(*) AS n, round(sum(o.amount), 2) AS total FROM orders o "
        "JOIN customers c ON c.customer_id = o.customer_id GROUP BY c.region ORDER BY c.region",
    )
    expected = orders.merge(customers, on="customer_id").groupby("region")["amount"].agg(["count", "sum"])
    assert [(r, n) for r, n, _ in joined.rows] == list(zip(expected.index, expected["count"], strict=True))
    assert [t for *_, t in joined.rows] == pytest.approx(list(expected["sum"]), abs=0.01)
    assert joined.relations == ("customers", "orders") and not joined.volatile
    assert (await answer(files, "SELECT now() > DATE '2000-01-01' AS later FROM customers LIMIT 1")).volatile

    ranked = await answer(
        files,
        "WITH spend AS (SELECT customer_id, sum(amount) AS total FROM orders GROUP BY customer_id) "
        "SELECT customer_id, total, rank() OVER (ORDER BY total DESC) AS place, "
        "sum(total) OVER (ORDER BY total DESC ROWS UNBOUNDED PRECEDING) AS running "
        "FROM spend ORDER BY place LIMIT 5",
    )
    spend = orders.groupby("customer_id")["amount"].sum().sort_values(ascending=False)
    assert [row[0] for row in ranked.rows] == list(spend.index[:5])
    assert [row[3] for row in ranked.rows] == pytest.approx(list(spend.cumsum()[:5]))

    rollup = await answer(
        files,
        "SELECT status, count(*) AS n FROM orders GROUP BY ROLLUP (status) ORDER BY status NULLS LAST",
    )
    by_status = orders["status"].value_counts().sort_index()
    assert rollup.rows == [*zip(by_status.index, by_status, strict=True), (None, 400)]

    literal = await answer(
        files,
        "SELECT '-- not a comment; really' AS text, count(*) AS n FROM orders WHERE note = 'comment -- not; a comment'",
    )
    assert literal.rows == [("-- not a comment; really", 10)]

    per_kind = await answer(
        files,
        "SELECT e.kind, t.target, count(*) AS n FROM events e JOIN customers c USING (customer_id) "
        "JOIN targets t ON t.region = c.region WHERE c.region = 'north' GROUP BY ALL ORDER BY 1",
    )
    north = events.merge(customers, on="customer_id").query("region == 'north'")
    counts = north["kind"].value_counts().sort_index()
    target = int(targets.set_index("region").loc["north", "target"])
    assert per_kind.rows == [(kind, target, n) for kind, n in counts.items()]

    ordered = await answer(files, "SELECT order_id, order_id FROM orders ORDER BY order_id DESC LIMIT 3;")
    assert [c.name for c in ordered.columns] == ["order_id", "order_id_2"]
    assert ordered.rows == [(400, 400), (399, 399), (398, 398)]


async def test_parameters_are_bound_not_spliced(files):
    orders = pd.read_csv(files.directory / "orders.csv")
    result = await answer(
        files,
        "SELECT count(*) FROM orders WHERE amount > %(least)s AND status = %(status)s AND '%(x)s' <> status",
        {"least": 50, "status": "paid' OR '1'='1"},
    )
    assert result.rows == [(0,)]
    result = await answer(
        files,
        "SELECT count(*) FROM orders WHERE amount > %(least)s AND status = %(status)s",
        {"least": 50, "status": "paid"},
    )
    assert result.rows == [(int(((orders.amount > 50) & (orders.status == "paid")).sum()),)]
    with pytest.raises(InvalidInput, match="has no value in parameters"):
        await answer(files, "SELECT * FROM orders WHERE amount > %(least)s")
    with pytest.raises(InvalidInput, match="not used by any"):
        await answer(files, "SELECT * FROM orders", {"least": 1})
    with pytest.raises(InvalidInput, match="not supported"):
        await answer(files, "SELECT * FROM orders WHERE amount > $1")


async def test_a_long_query_is_interrupted_at_its_timeout(files):
    statement = await files.guarded(
        "SELECT sum(a.amount * b.amount + c.amount * d.amount) FROM orders a, orders b, orders c, orders d",
        {},
    )
    started = time.monotonic()
    with pytest.raises(Timeout, match="timeout"):
        await files.run(statement, {}, timeout=0.5, max_rows=10, max_bytes=10_000)
    assert time.monotonic() - started < 4  # the timer's interrupt, not the 5 s backstop
    assert (await answer(files, "SELECT count(*) FROM customers")).rows == [(40,)]  # the engine goes on


async def test_rows_bytes_and_oversized_values_are_bounded(files):
    by_rows = await answer(files, "SELECT order_id FROM orders ORDER BY order_id", max_rows=7)
    assert by_rows.truncated_by == "rows" and [r[0] for r in by_rows.rows] == list(range(1, 8))
    by_bytes = await answer(files, "SELECT order_id, status FROM orders ORDER BY order_id", max_bytes=2_000)
    assert by_bytes.truncated_by == "bytes" and 10 < len(by_bytes.rows) < 100
    cut = await answer(
        files,
        "SELECT order_id, repeat('x', 100000) AS big, status FROM orders ORDER BY order_id LIMIT 3",
        max_bytes=50_000,
    )
    assert cut.cut_columns == ("big",) and cut.truncated_by == "value" and cut.value_limit == 50_000
    assert [row[1] for row in cut.rows] == [None, None, None] and cut.rows[0][0] == 1


async def test_data_version_follows_the_files(files):
    first = await files.data_version()
    assert first == await files.data_version()
    path = files.directory / "targets.tsv"
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
    second = await files.data_version()
    assert second != first
    (files.directory / "more.csv").write_text("a\n1\n")
    assert await files.data_version() != second


def test_every_duckdb_function_outside_the_allowlist_is_refused():
    """Each function DuckDB has, called by name as a value or as a table, unless it is on the list."""
    database = duckdb.connect()
    names = [
        row[0] for row in database.execute("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()
    ]
    database.close()
    let_through = []
    for name in names:
        if name.lower() in ALLOWED_FUNCTIONS or not name.replace("_", "").isalnum():
            continue  # an operator (+, ~~, ->>) or an allowed built-in
        for sql in (
            f"SELECT {name}(1) FROM orders",
            f"SELECT * FROM {name}(1)",
            f'SELECT "{name}"(1) FROM orders',
        ):
            try:
                validate_select(sql, [], ["orders"])
            except AnalyticsError:
                continue
            let_through.append(sql)
    assert let_through == []


def test_guard_bounds_what_reaches_the_parser():
    with pytest.raises(InvalidInput, match="tokens"):
        validate_select("SELECT " + "+".join(["1"] * 3_000) + " FROM orders", [], ["orders"])
    with pytest.raises(InvalidInput, match="nests brackets"):
        validate_select("SELECT " + "(SELECT " * 31 + "1" + ")" * 31, [], ["orders"])
    with pytest.raises(InvalidInput, match="characters"):
        validate_select("SELECT '" + "x" * 60_000 + "'", [], ["orders"])
    for deep in (
        "SELECT " + "NOT " * 700 + "true",
        "SELECT " + "CASE WHEN " * 200 + "true" + " THEN 1 END" * 200,
    ):
        with pytest.raises(InvalidInput, match="deep"):
            validate_select(deep, [], ["orders"])
    assert validate_select("SELECT " + "(SELECT " * 30 + "1" + ")" * 30, [], ["orders"]).relations == ()


async def test_a_slow_query_does_not_hold_up_other_queries(files, tmp_path):
    other = FilesEngine("other", files.directory, concurrency=2)
    await other.start()
    try:
        slow = await files.guarded(
            "SELECT sum(a.amount * b.amount + c.amount * d.amount) FROM orders a, orders b, orders c, orders d",
            {},
        )
        running = asyncio.create_task(files.run(slow, {}, timeout=3, max_rows=10, max_bytes=10_000))
        await asyncio.sleep(0.2)
        for engine in (other, files):  # another source, and the same source on its next slot
            started = time.monotonic()
            assert (await answer(engine, "SELECT count(*) FROM customers")).rows == [(40,)]
            assert time.monotonic() - started < 2
        with pytest.raises(Timeout):
            await running
    finally:
        await other.close()
