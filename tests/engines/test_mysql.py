"""The MySQL/MariaDB engine against this machine's MariaDB: its own database and a SELECT-only account,
an attack corpus refused with every table, grant and file unchanged, and legitimate SQL answered."""

from __future__ import annotations

import asyncio
import decimal
import os
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncmy
import asyncmy.errors
import pytest

from core.errors import AnalyticsError, InvalidInput, QueryRefused, Timeout
from tests.engines.mariadb import root, scratch
from warehouse.engines import GuardedStatement, RelationRules
from warehouse.engines.mysql import MySQLEngine

HOST, PORT = "127.0.0.1", 3306
BIG_VALUE_BYTES = 2 * 1024 * 1024
SUFFIX = secrets.token_hex(4)
DATABASE = f"amcp_test_{SUFFIX}"
OTHER_DATABASE = f"amcp_other_{SUFFIX}"
READER = f"amcp_reader_{SUFFIX}"
PASSWORD = secrets.token_urlsafe(12)
OUTFILE = f"/tmp/amcp_outfile_{SUFFIX}"

SETUP = [
    f"CREATE DATABASE {DATABASE}",
    f"CREATE DATABASE {OTHER_DATABASE}",
    f"CREATE TABLE {OTHER_DATABASE}.secrets (id INT PRIMARY KEY, secret TEXT)",
    f"INSERT INTO {OTHER_DATABASE}.secrets VALUES (1, 'do not read')",
    f"CREATE TABLE {DATABASE}.customers (id INT PRIMARY KEY, name VARCHAR(50), country CHAR(2))",
    f"CREATE TABLE {DATABASE}.orders (id INT PRIMARY KEY, customer_id INT, status VARCHAR(20),"
    " amount DECIMAL(10,2), created_at DATETIME, note TEXT)",
    f"CREATE TABLE {DATABASE}.documents (id INT PRIMARY KEY, title VARCHAR(20), body LONGTEXT)",
    f"CREATE TABLE {DATABASE}.internal_notes (id INT PRIMARY KEY, note TEXT)",
    f"INSERT INTO {DATABASE}.internal_notes VALUES (1, 'excluded by the allow rules')",
    f"INSERT INTO {DATABASE}.customers VALUES (1,'Ada','GB'),(2,'Bo','SE'),(3,'Cy','GB'),(4,'Di','FR')",
    f"INSERT INTO {DATABASE}.orders VALUES"
    " (1,1,'paid',10.50,'2024-01-05 10:00:00','first -- order; thanks'),"
    " (2,1,'paid',20.00,'2024-02-01 09:30:00',NULL),"
    " (3,2,'refunded',5.25,'2024-02-03 12:00:00','x'),"
    " (4,3,'paid',99.99,'2024-03-10 08:00:00','y'),"
    " (5,3,'open',1.00,'2024-03-11 08:00:00',NULL),"
    " (6,4,'paid',42.00,'2024-03-12 18:00:00','z')",
    f"INSERT INTO {DATABASE}.documents VALUES (1,'small','hello'),"
    f" (2,'big',REPEAT('x',{BIG_VALUE_BYTES})), (3,'after','bye')",
    f"CREATE SEQUENCE {DATABASE}.counter",
    f"CREATE USER '{READER}'@'%' IDENTIFIED BY '{PASSWORD}'",
    f"GRANT SELECT ON {DATABASE}.* TO '{READER}'@'%'",
]
TEARDOWN = [
    f"DROP USER IF EXISTS '{READER}'@'%'",
    f"DROP DATABASE IF EXISTS {DATABASE}",
    f"DROP DATABASE IF EXISTS {OTHER_DATABASE}",
]


_root = root


async def _fetch(sql: str, arguments: Any = None) -> list[tuple[Any, ...]]:
    """Plain SQL as root: the independent computation the engine's answers are checked against."""
    conn = await _root(DATABASE)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, arguments)
            return list(await cursor.fetchall())
    finally:
        conn.close()


@pytest.fixture(scope="module")
async def mariadb() -> AsyncIterator[None]:
    try:
        async with scratch(SETUP, TEARDOWN):
            yield
    finally:
        if os.path.exists(OUTFILE):
            os.remove(OUTFILE)


@pytest.fixture(scope="module")
async def engine(mariadb: None) -> AsyncIterator[MySQLEngine]:
    url = f"mysql://{READER}:{PASSWORD}@{HOST}:{PORT}/{DATABASE}"
    source = MySQLEngine(url, name="shop", rules=RelationRules(("*",), ("internal_*",)))
    await source.start()
    try:
        yield source
    finally:
        await source.close()


async def query(
    engine: MySQLEngine, sql: str, parameters: dict[str, Any] | None = None, **bounds: Any
) -> Any:
    parameters = parameters or {}
    statement = await engine.guarded(sql, parameters)
    return await engine.run(statement, parameters, **{"timeout": 10, **bounds})


async def fingerprint() -> dict[str, Any]:
    """Every table's checksum and row count, the reader's grants and users, and whether a file exists."""
    tables = await _fetch(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA IN (%s, %s)",
        (DATABASE, OTHER_DATABASE),
    )
    state: dict[str, Any] = {}
    for schema, table in sorted(tables):
        ((_, checksum),) = await _fetch(f"CHECKSUM TABLE `{schema}`.`{table}`")
        ((count,),) = await _fetch(f"SELECT COUNT(*) FROM `{schema}`.`{table}`")
        state[f"{schema}.{table}"] = (checksum, count)
    state["grants"] = await _fetch(f"SHOW GRANTS FOR '{READER}'@'%'")
    state["users"] = await _fetch(
        "SELECT User, Host, authentication_string FROM mysql.user ORDER BY User, Host"
    )
    state["outfile"] = os.path.exists(OUTFILE)
    state["databases"] = await _fetch("SHOW DATABASES")
    return state


# At least 25 strings of MySQL's own dialect: file reads and writes, executable comments, stacked
# statements, locks, settings, other databases and catalogs, server code.
ATTACKS = [
    f"SELECT * FROM orders INTO OUTFILE '{OUTFILE}'",
    f"SELECT body FROM documents INTO DUMPFILE '{OUTFILE}'",
    f"SELECT 1 INTO OUTFILE '{OUTFILE}' FIELDS TERMINATED BY ','",
    "SELECT LOAD_FILE('/etc/passwd')",
    "SELECT id FROM orders WHERE note = LOAD_FILE('/etc/hostname')",
    "LOAD DATA INFILE '/etc/passwd' INTO TABLE orders",
    "SELECT 1 /*! , (SELECT secret FROM amcp_other.secrets) */",
    "SELECT 1 /*!50000 UNION SELECT User FROM mysql.user */",
    "SELECT 1 /*M! ; DROP TABLE orders */",
    "SELECT 1 /*M!100000 , SLEEP(5) */",
    "SELECT 1; DROP TABLE orders",
    "SELECT 1; SET PASSWORD = PASSWORD('locked-out')",
    "SELECT 1 -- \n; DELETE FROM orders",
    "SELECT 1 # comment\n; DELETE FROM orders",
    "SELECT SLEEP(10)",
    "SELECT BENCHMARK(100000000, MD5('x'))",
    "SELECT GET_LOCK('amcp', 10)",
    "SELECT RELEASE_ALL_LOCKS()",
    "SELECT * FROM orders FOR UPDATE",
    "SELECT * FROM orders LOCK IN SHARE MODE",
    "LOCK TABLES orders WRITE",
    "SELECT @total := SUM(amount) FROM orders",
    "SELECT @@secure_file_priv",
    "SET @x = 1",
    "SET PASSWORD = PASSWORD('locked-out')",
    f"SET PASSWORD FOR '{READER}'@'%' = PASSWORD('locked-out')",
    "SET GLOBAL general_log = 'ON'",
    "SET SESSION sql_mode = 'ANSI_QUOTES'",
    "HANDLER orders OPEN",
    "HANDLER orders READ FIRST",
    "PREPARE stmt FROM 'DELETE FROM orders'",
    "EXECUTE stmt",
    "SHOW TABLES",
    "SHOW GRANTS",
    "SELECT * FROM mysql.user",
    "SELECT * FROM information_schema.processlist",
    "SELECT * FROM performance_schema.threads",
    "SELECT * FROM sys.session",
    f"SELECT * FROM {OTHER_DATABASE}.secrets",
    f"SELECT o.id FROM orders o JOIN {OTHER_DATABASE}.secrets s ON s.id = o.id",
    "SELECT * FROM internal_notes",
    "INSTALL PLUGIN connect SONAME 'ha_connect.so'",
    "INSTALL SONAME 'ha_connect'",
    "CREATE FUNCTION sys_exec RETURNS INT SONAME 'lib_mysqludf_sys.so'",
    "SELECT sys_exec('touch /tmp/pwned')",
    f"SELECT `{DATABASE}`.some_function(1)",
    "CALL mysql.some_procedure()",
    "DO SLEEP(5)",
    "SELECT * FROM orders PROCEDURE ANALYSE()",
    "CREATE TABLE orders_copy AS SELECT * FROM orders",
    "DELETE FROM orders",
    "UPDATE orders SET amount = 0",
    "INSERT INTO orders (id) VALUES (99)",
    "DROP TABLE orders",
    "TRUNCATE TABLE orders",
    "GRANT ALL ON *.* TO CURRENT_USER",
    "TABLE orders",
    "WITH x AS (SELECT 1) DELETE FROM orders",
    "SELECT EXTRACTVALUE(1, CONCAT(0x7e, (SELECT 1)))",
    "KILL CONNECTION 1",
    "FLUSH PRIVILEGES",
    "XA START 'x'",
    "SELECT NEXT VALUE FOR some_sequence",
    "WITH internal_notes AS (SELECT * FROM internal_notes) SELECT * FROM internal_notes",
    "SELECT 1 FROM orders WHERE EXISTS (WITH internal_notes AS (SELECT 1) SELECT 1)"
    " UNION SELECT note FROM internal_notes",
    "SELECT 1 --1",
    "SELECT `load_file`('/etc/passwd')",
]


async def test_every_attack_is_refused_in_one_line_and_changes_nothing(engine: MySQLEngine) -> None:
    assert len(ATTACKS) >= 25
    before = await fingerprint()
    for attack in ATTACKS:
        with pytest.raises((QueryRefused, InvalidInput)) as refused:
            await query(engine, attack)
        message = str(refused.value)
        assert "\n" not in message and message, attack
        assert PASSWORD not in message
    assert await fingerprint() == before
    assert not os.path.exists(OUTFILE)
    # The reader's password still works: nothing locked the account out.
    reader = await asyncmy.connect(host=HOST, port=PORT, user=READER, password=PASSWORD, db=DATABASE)
    reader.close()


async def test_the_account_alone_refuses_writes_the_guard_would_stop(engine: MySQLEngine) -> None:
    """Run past the guard (a statement it never produced): the read-only statement and the grants hold."""
    before = await fingerprint()
    for sql in ("DELETE FROM orders", f"SELECT 1 INTO OUTFILE '{OUTFILE}'"):
        forged = GuardedStatement(sql=sql, names=(), relations=(), volatile=False, canonical=None)
        with pytest.raises(AnalyticsError):
            await engine.run(forged, {}, timeout=5)
    assert await fingerprint() == before


async def test_the_read_only_transaction_holds_for_an_account_that_could_write(mariadb: None) -> None:
    """An operator who hands the source a root account (docs/sources.md says not to) still gets no
    writes: a SELECT that advances a sequence, forged past the guard, fails as a read-only statement
    (MariaDB: `SET STATEMENT tx_read_only = 1 FOR`, no transaction opened), and the connection then
    answers the next query."""
    source = MySQLEngine(f"mysql://root@{HOST}:{PORT}/{DATABASE}", name="shop", pool_size=1)
    await source.start()
    try:
        forged = GuardedStatement(
            sql="SELECT NEXT VALUE FOR counter", names=(), relations=(), volatile=True, canonical=None
        )
        with pytest.raises(QueryRefused, match="read-only"):
            await source.run(forged, {}, timeout=5)
        with pytest.raises(QueryRefused, match="read-only"):  # the same connection: still read-only
            await source.run(forged, {}, timeout=5)
        count = GuardedStatement(
            sql="SELECT COUNT(*) FROM orders", names=(), relations=("orders",), volatile=False, canonical=None
        )
        assert (await source.run(count, {}, timeout=5)).rows == await _fetch("SELECT COUNT(*) FROM orders")
    finally:
        await source.close()
    assert await _fetch("SELECT next_not_cached_value FROM counter") == [(1,)]


async def test_the_engines_connections_refuse_stacked_statements_themselves(engine: MySQLEngine) -> None:
    """A third layer under the guard's two checks: the server runs one statement per text."""
    conn = await engine._acquire()
    try:
        async with conn.cursor() as cursor:
            with pytest.raises(asyncmy.errors.ProgrammingError):
                await cursor.execute("SELECT 1; SELECT 2")
    finally:
        engine._pool.release(conn)
    assert (await query(engine, "SELECT COUNT(*) FROM orders")).rows == [(6,)]


LEGITIMATE = [
    (
        "SELECT c.name, SUM(o.amount) AS total FROM orders o JOIN customers c ON c.id = o.customer_id"
        " GROUP BY c.name ORDER BY total DESC",
        "SELECT c.name, SUM(o.amount) AS total FROM orders o JOIN customers c ON c.id = o.customer_id"
        " GROUP BY c.name ORDER BY total DESC",
    ),
    (
        "WITH paid AS (SELECT customer_id, amount FROM orders WHERE status = 'paid')"
        " SELECT customer_id, COUNT(*) AS n, SUM(amount) AS total FROM paid GROUP BY customer_id"
        " ORDER BY customer_id",
        "SELECT customer_id, COUNT(*), SUM(amount) FROM orders WHERE status = 'paid'"
        " GROUP BY customer_id ORDER BY customer_id",
    ),
    (
        "SELECT id, customer_id, amount, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY amount DESC)"
        " AS rank_in_customer, SUM(amount) OVER (ORDER BY id) AS running FROM orders ORDER BY id",
        "SELECT id, customer_id, amount, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY amount DESC),"
        " SUM(amount) OVER (ORDER BY id) FROM orders ORDER BY id",
    ),
    (
        "SELECT status, COUNT(*) AS n, SUM(amount) AS total FROM orders GROUP BY status WITH ROLLUP",
        "SELECT status, COUNT(*), SUM(amount) FROM orders GROUP BY status WITH ROLLUP",
    ),
    (
        "SELECT id, note FROM orders WHERE note = 'first -- order; thanks' OR note LIKE '%;%'",
        "SELECT id, note FROM orders WHERE id = 1",
    ),
    (
        "SELECT DATE_FORMAT(created_at, '%Y-%m') AS month, COUNT(*) AS n FROM orders"
        " GROUP BY month ORDER BY month DESC;",
        "SELECT DATE_FORMAT(created_at, '%Y-%m'), COUNT(*) FROM orders GROUP BY 1 ORDER BY 1 DESC",
    ),
    (
        "SELECT a.id, b.id FROM orders a JOIN orders b ON b.customer_id = a.customer_id AND b.id > a.id"
        " ORDER BY a.id, b.id",
        "SELECT a.id, b.id FROM orders a JOIN orders b ON b.customer_id = a.customer_id AND b.id > a.id"
        " ORDER BY a.id, b.id",
    ),
    (
        "SELECT country, name FROM customers WHERE id IN (SELECT customer_id FROM orders)"
        " UNION ALL SELECT 'XX', 'none' ORDER BY name",
        "SELECT country, name FROM customers WHERE id IN (SELECT customer_id FROM orders)"
        " UNION ALL SELECT 'XX', 'none' ORDER BY name",
    ),
    (
        f"SELECT id, amount % 7 AS remainder, IFNULL(note, '-') AS note, CAST(amount AS CHAR) AS text"
        f" FROM {DATABASE}.orders ORDER BY amount DESC LIMIT 3",
        "SELECT id, amount % 7, IFNULL(note, '-'), CAST(amount AS CHAR) FROM orders"
        " ORDER BY amount DESC LIMIT 3",
    ),
]


@pytest.mark.parametrize(("sql", "expected"), LEGITIMATE)
async def test_legitimate_mysql_is_answered_as_plain_sql_answers_it(
    engine: MySQLEngine, sql: str, expected: str
) -> None:
    result = await query(engine, sql)
    assert not result.truncated
    assert result.rows == await _fetch(expected)


async def test_column_names_and_types_come_back(engine: MySQLEngine) -> None:
    result = await query(engine, "SELECT id, amount, created_at, note, id AS id FROM orders WHERE id = 1")
    assert [column.name for column in result.columns] == ["id", "amount", "created_at", "note", "id_2"]
    assert [column.type for column in result.columns][:3] == ["int4", "numeric", "timestamp"]
    assert result.rows[0][1] == decimal.Decimal("10.50")
    assert result.relations == ("orders",)


async def test_parameters_are_bound_never_spliced(engine: MySQLEngine) -> None:
    result = await query(
        engine,
        "SELECT id FROM orders WHERE status = %(status)s AND amount > %(least)s AND customer_id IN %(ids)s"
        " AND COALESCE(note, '') <> %(quote)s ORDER BY id",
        {"status": "paid", "least": 15, "ids": [1, 3, 4], "quote": "' OR '1'='1"},
    )
    assert result.rows == [(2,), (4,), (6,)]
    hostile = await query(
        engine, "SELECT COUNT(*) FROM orders WHERE status = %(s)s", {"s": "paid' OR '1'='1"}
    )
    assert hostile.rows == [(0,)]
    percent = await query(
        engine,
        "SELECT DATE_FORMAT(created_at, '%Y-%m') AS month, amount % 2 AS odd FROM orders WHERE id = %(id)s",
        {"id": 4},
    )
    assert percent.rows == [("2024-03", decimal.Decimal("1.99"))]
    with pytest.raises(InvalidInput, match="no value in parameters"):
        await query(engine, "SELECT id FROM orders WHERE id = %(id)s")
    with pytest.raises(InvalidInput, match="not used"):
        await query(engine, "SELECT id FROM orders", {"id": 1})


async def test_the_timeout_cancels_a_sleep_the_guard_never_saw(engine: MySQLEngine) -> None:
    """SLEEP is refused by the guard; past it, max_statement_time still ends the query."""
    forged = GuardedStatement(sql="SELECT SLEEP(10)", names=(), relations=(), volatile=True, canonical=None)
    started = time.perf_counter()
    with pytest.raises(Timeout, match="1 s timeout"):
        await engine.run(forged, {}, timeout=1)
    assert time.perf_counter() - started < 4  # the server's timeout, not the client's backstop (+5 s)
    # And a heavy legitimate query through the whole path is cancelled too; the engine still answers.
    with pytest.raises(Timeout):
        await query(
            engine,
            "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)"
            " SELECT COUNT(*) FROM n a, n b, n c WHERE MD5(a.i + b.i * c.i) > 'z'",
            timeout=1,
        )
    assert (await query(engine, "SELECT COUNT(*) FROM customers")).rows == [(4,)]


async def test_a_2_mb_value_is_cut_inside_mariadb_and_never_arrives(engine: MySQLEngine) -> None:
    result = await query(engine, "SELECT id, title, body FROM documents ORDER BY id", max_bytes=100_000)
    assert result.rows == [(1, "small", "hello"), (2, "big", None), (3, "after", "bye")]
    assert result.truncated and result.truncated_by == "value"
    assert result.cut_columns == ("body",)
    assert result.value_limit == 100_000


async def test_the_byte_budget_and_row_cap_stop_a_wide_answer(engine: MySQLEngine) -> None:
    wide = await query(
        engine,
        "SELECT a.id, REPEAT(a.note, 100) AS wide FROM orders a, orders b, orders c ORDER BY a.id",
        max_bytes=2_000,
    )
    assert wide.truncated_by == "bytes" and 0 < len(wide.rows) < 216
    capped = await query(engine, "SELECT a.id FROM orders a, orders b ORDER BY a.id, b.id", max_rows=5)
    assert capped.truncated_by == "rows" and capped.rows == [(1,)] * 5
    # The engine's connections stay healthy after answers cut short.
    assert (await query(engine, "SELECT COUNT(*) FROM orders")).rows == [(6,)]


async def test_catalog_lists_only_the_allowed_tables(engine: MySQLEngine) -> None:
    names = [table.name for table in await engine.tables()]
    assert names == ["customers", "documents", "orders"]
    columns = await engine.columns("orders")
    assert [column.name for column in columns][:3] == ["id", "customer_id", "status"]
    with pytest.raises(InvalidInput):
        await engine.columns("internal_notes")
    with pytest.raises(QueryRefused, match="the tables are customers, documents, orders"):
        await query(engine, "SELECT * FROM internal_notes")


async def test_queries_run_side_by_side_on_the_pool(engine: MySQLEngine) -> None:
    results = await asyncio.gather(*(query(engine, "SELECT COUNT(*) FROM orders") for _ in range(8)))
    assert all(result.rows == [(6,)] for result in results)


async def test_a_wrong_password_is_one_line_without_secrets(mariadb: None) -> None:
    source = MySQLEngine(f"mysql://{READER}:wrong-{PASSWORD}@{HOST}:{PORT}/{DATABASE}", name="shop")
    with pytest.raises(AnalyticsError) as failed:
        await source.start()
    assert PASSWORD not in str(failed.value) and "\n" not in str(failed.value)


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT " + "(" * 101 + "1" + ")" * 101 + " FROM orders", "nests parentheses"),
        ("SELECT " + " + ".join(["1"] * 1_200) + " FROM orders", "tokens"),
        ("SELECT 'unterminated FROM orders", "unterminated string"),
        ("SELECT * FROM orders WHERE id = ?", "placeholder '?'"),
        ("SELECT * FROM orders WHERE id = :id", "write %\\(id\\)s"),
    ],
)
async def test_the_guard_bounds_what_the_parser_sees(engine: MySQLEngine, sql: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        await engine.guarded(sql, {})


async def test_comment_markers_inside_strings_are_just_text(engine: MySQLEngine) -> None:
    result = await query(
        engine,
        "SELECT '/*! not executed */' AS a, \"# -- ;\" AS b, 'it''s \\' ok' AS c FROM customers WHERE id = 1",
    )
    assert result.rows == [("/*! not executed */", "# -- ;", "it's ' ok")]


async def test_the_data_version_changes_when_an_allowed_table_changes(engine: MySQLEngine) -> None:
    before = await engine.data_version()
    assert before is not None and before == await engine.data_version()
    await asyncio.sleep(1.1)  # UPDATE_TIME has a resolution of one second
    await _fetch("UPDATE documents SET title = 'after!' WHERE id = 3")
    try:
        assert await engine.data_version() != before
    finally:
        await _fetch("UPDATE documents SET title = 'after' WHERE id = 3")


async def test_an_accepted_query_is_remembered_for_new_values_and_a_refusal_is_not(
    engine: MySQLEngine,
) -> None:
    text = "SELECT COUNT(*) FROM orders WHERE amount >= %(low)s"
    first = await engine.guarded(text, {"low": 1})
    again = await engine.guarded(text, {"low": 50})
    assert again is first  # the same text and parameter names: the verdict is not parsed again
    low = (await engine.run(again, {"low": 50}, timeout=10, max_rows=10, max_bytes=10_000)).rows
    assert low == await _fetch("SELECT COUNT(*) FROM orders WHERE amount >= %s", (50,))
    assert await engine.guarded(text + " AND status = %(s)s", {"low": 1, "s": "paid"}) is not first
    for _ in range(2):  # refused each time, with its reason
        with pytest.raises(QueryRefused, match="internal_notes"):
            await engine.guarded("SELECT note FROM internal_notes", {})


async def test_closing_does_not_wait_forever_for_a_connection_never_given_back(
    mariadb: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection a cancelled task kept would make asyncmy's wait_closed wait forever (a shutdown that
    hangs): close waits POOL_CLOSE_SECONDS for it, then terminates the pool and that connection."""
    import asyncio

    from warehouse.engines import mysql

    monkeypatch.setattr(mysql, "POOL_CLOSE_SECONDS", 0.2)
    source = MySQLEngine(f"mysql://{READER}:{PASSWORD}@{HOST}:{PORT}/{DATABASE}", name="shop", pool_size=1)
    await source.start()
    pool = source._pool
    assert pool is not None
    kept = await pool.acquire()  # never released
    await asyncio.wait_for(source.close(), timeout=30)  # the old close never returned
    assert not kept.connected and pool.size == 0
