"""analyze_data on the generated shop (metric model `shop`, warehouse/models): each modelled analysis through
the tool (in-memory MCP client, cold cache) against hand-written SQL computing the same aggregates, whose
figures are first checked against the tool's (to 1e-6); interleaved rounds, median (best) per side.

Run by bench/analytics.py (--model shop or all, --shop-engines); usable alone:
    python bench/shop_analytics.py [--customers 20000] [--seed 42] [--repeats 3] [--only churn_rate arpu]
                                   [--engine postgresql mariadb duckdb]
postgresql: the shop is generated into schema `shop` of a scratch database (warehouse/shop_store.load_shop)
and registered as source `shop` (a read-only role) with `model = "shop"`; the hand-written SQL runs with
asyncpg. mariadb: the shop is loaded into a scratch database of BENCH_MYSQL_URL (default: this machine's
MariaDB as root), registered through a SELECT-only user; the hand-written MariaDB statements
(HAND_SQL_MARIADB) run with asyncmy; database and user are dropped at the end (skipped when no MariaDB
answers). duckdb: the shop is written as Parquet files, registered as a files source; the PostgreSQL
statements, transpiled to DuckDB by sqlglot, run on views over the files in a DuckDB connection of the bench.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg  # noqa: E402
import pandas as pd  # noqa: E402
from fastmcp import Client  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from bench.common import bench_runtime, scratch_database  # noqa: E402
from mcp_server.auth import Identity  # noqa: E402
from mcp_server.server import build_app  # noqa: E402
from warehouse.db import ANALYSIS_SETTINGS  # noqa: E402
from warehouse.shop import TABLES, shop_plan  # noqa: E402
from warehouse.shop_store import load_shop  # noqa: E402
from warehouse.sources import Source  # noqa: E402

TOLERANCE = 1e-6
# Per analysis: the parameters the tool is asked (group by country, ARPU by month, revenue anomalies by day).
CASES: list[tuple[str, dict[str, Any]]] = [
    ("churn_rate", {"group_by": "country"}),
    ("arpu", {"group_by": "country"}),
    ("retention", {"group_by": "country"}),
    ("segment_compare", {"metric": "arpu", "group_by": "country"}),
    ("trend", {"metric": "arpu", "grain": "month"}),
    ("forecast", {"metric": "arpu", "grain": "month", "horizon": 6}),
    ("correlation", {}),
    ("churn_drivers", {}),
    ("anomalies", {"metric": "revenue", "grain": "day"}),
]

# The shop model in plain PostgreSQL: as_of is the latest instant in the data; a customer signed up by then
# has churned when their last order up to as_of (their sign-up without one) is 90 days or more before it.
_STATE = """
WITH as_of AS (
    SELECT greatest((SELECT max(created_at) FROM shop.customers), (SELECT max(order_date) FROM shop.orders),
                    (SELECT max(paid_at) FROM shop.payments)) AS t),
last_order AS (
    SELECT o.customer_id, max(o.order_date) AS seen FROM shop.orders o, as_of WHERE o.order_date <= as_of.t
    GROUP BY o.customer_id),
state AS (
    SELECT c.customer_id, c.country, c.created_at, as_of.t AS as_of,
           coalesce(l.seen, c.created_at) AS seen,
           as_of.t - coalesce(l.seen, c.created_at) >= interval '90 days' AS churned
    FROM shop.customers c CROSS JOIN as_of LEFT JOIN last_order l USING (customer_id)
    WHERE c.created_at <= as_of.t)
"""
_PAID = """
WITH paid AS (
    SELECT o.customer_id, p.amount, p.paid_at, p.method FROM shop.payments p JOIN shop.orders o USING (order_id))
"""
_FEATURES = (
    _STATE
    + """,
orders_of AS (SELECT customer_id, count(*) AS n, avg(total)::float8 AS m FROM shop.orders GROUP BY customer_id),
paid_of AS (
    SELECT o.customer_id, sum(p.amount)::float8 AS r FROM shop.payments p JOIN shop.orders o USING (order_id)
    GROUP BY o.customer_id),
features AS (
    SELECT s.customer_id,
           extract(epoch FROM (CASE WHEN s.churned THEN s.seen ELSE s.as_of END) - s.created_at) / 86400 AS t,
           coalesce(o.n, 0)::float8 AS n, coalesce(p.r, 0) AS r, s.churned::int::float8 AS ch, o.m
    FROM state s LEFT JOIN orders_of o USING (customer_id) LEFT JOIN paid_of p USING (customer_id))
"""
)
_MONTHLY_ARPU = (
    _PAID
    + """
SELECT date_trunc('month', paid_at) AS bucket, sum(amount)::float8 / count(DISTINCT customer_id) AS arpu
FROM paid GROUP BY 1 ORDER BY 1"""
)
FEATURE_NAMES = {
    "t": "tenure_days",
    "n": "event_count",
    "r": "total_revenue",
    "ch": "is_churned",
    "m": "order_total",
}
HAND_SQL: dict[str, list[str]] = {
    "churn_rate": [
        _STATE + "SELECT country, count(*) AS customers, count(*) FILTER (WHERE churned) AS churned "
        "FROM state GROUP BY country"
    ],
    "arpu": [
        _PAID
        + """,
per_customer AS (SELECT customer_id, sum(amount) AS total FROM paid GROUP BY customer_id),
per_month AS (
    SELECT to_char(paid_at, 'YYYY-MM') AS key, customer_id, sum(amount) AS total FROM paid GROUP BY 1, 2),
per_method AS (SELECT method AS key, customer_id, sum(amount) AS total FROM paid GROUP BY 1, 2)
SELECT 'by_segment' AS level, c.country AS key, count(*) AS customers, sum(total)::float8 AS revenue,
       var_samp(total::float8) AS variance
FROM per_customer JOIN shop.customers c USING (customer_id) GROUP BY c.country
UNION ALL SELECT 'by_month', key, count(*), sum(total)::float8, var_samp(total::float8) FROM per_month GROUP BY key
UNION ALL SELECT 'by_service_type', key, count(*), sum(total)::float8, var_samp(total::float8)
FROM per_method GROUP BY key"""
    ],
    "retention": [
        _STATE
        + """
SELECT country, floor(extract(epoch FROM (CASE WHEN churned THEN seen ELSE as_of END) - created_at) / 86400)
       AS lifetime_days, churned::int AS churned, count(*) AS customers
FROM state GROUP BY 1, 2, 3""",
        _STATE
        + """,
months AS (
    SELECT *, (extract(year FROM seen) - extract(year FROM created_at)) * 12
              + extract(month FROM seen) - extract(month FROM created_at) AS k FROM state)
SELECT to_char(created_at, 'YYYY-MM') AS cohort,
       CASE WHEN churned THEN k - (created_at + k::int * interval '1 month' > seen)::int END AS months_lived,
       count(*) AS customers
FROM months GROUP BY 1, 2""",
    ],
    "segment_compare": [
        _PAID
        + """
SELECT c.country, x.total FROM (SELECT customer_id, sum(amount)::float8 AS total FROM paid GROUP BY 1) x
JOIN shop.customers c USING (customer_id)"""
    ],
    "trend": [_MONTHLY_ARPU],
    "forecast": [_MONTHLY_ARPU],
    "correlation": [
        _FEATURES
        + "SELECT "
        + ", ".join(
            f"corr({a}, {b}) AS {a}_{b}"
            for i, a in enumerate(FEATURE_NAMES)
            for b in list(FEATURE_NAMES)[i + 1 :]
        )
        + " FROM features"
    ],
    "churn_drivers": [_FEATURES + "SELECT ch, t, n, r, m FROM features ORDER BY customer_id"],
    "anomalies": [
        "SELECT date_trunc('day', paid_at) AS bucket, sum(amount)::float8 AS revenue, count(*) AS payments "
        "FROM shop.payments GROUP BY 1 ORDER BY 1"
    ],
}

# The same figures in MariaDB's SQL, on the loaded database's tables (the connection's default database).
# MariaDB has no FILTER, corr() or date_trunc: sums of booleans, Pearson from centred sums (two passes, so no
# cancellation), DATE_FORMAT buckets; every float computed as DOUBLE.
_MARIADB_STATE = """
WITH as_of AS (
    SELECT greatest((SELECT max(created_at) FROM customers), (SELECT max(order_date) FROM orders),
                    (SELECT max(paid_at) FROM payments)) AS t),
last_order AS (
    SELECT o.customer_id, max(o.order_date) AS seen FROM orders o, as_of WHERE o.order_date <= as_of.t
    GROUP BY o.customer_id),
state AS (
    SELECT c.customer_id, c.country, c.created_at, as_of.t AS as_of, coalesce(l.seen, c.created_at) AS seen,
           coalesce(l.seen, c.created_at) <= as_of.t - INTERVAL 90 DAY AS churned
    FROM customers c CROSS JOIN as_of LEFT JOIN last_order l ON l.customer_id = c.customer_id
    WHERE c.created_at <= as_of.t)
"""
_MARIADB_PAID = """
WITH paid AS (
    SELECT o.customer_id, p.amount, p.paid_at, p.method FROM payments p JOIN orders o ON o.order_id = p.order_id)
"""
_MARIADB_FEATURES = (
    _MARIADB_STATE
    + """,
orders_of AS (
    SELECT customer_id, count(*) AS n, avg(CAST(total AS DOUBLE)) AS m FROM orders GROUP BY customer_id),
paid_of AS (
    SELECT o.customer_id, CAST(sum(p.amount) AS DOUBLE) AS r FROM payments p JOIN orders o ON o.order_id = p.order_id
    GROUP BY o.customer_id),
features AS (
    SELECT s.customer_id,
           CAST(timestampdiff(SECOND, s.created_at, CASE WHEN s.churned THEN s.seen ELSE s.as_of END) AS DOUBLE)
               / 86400 AS t,
           CAST(coalesce(o.n, 0) AS DOUBLE) AS n, coalesce(p.r, 0) AS r, CAST(s.churned AS DOUBLE) AS ch, o.m
    FROM state s LEFT JOIN orders_of o ON o.customer_id = s.customer_id
    LEFT JOIN paid_of p ON p.customer_id = s.customer_id)
"""
)
_MARIADB_MONTHLY_ARPU = (
    _MARIADB_PAID
    + """
SELECT date_format(paid_at, '%Y-%m-01') AS bucket, CAST(sum(amount) AS DOUBLE) / count(DISTINCT customer_id) AS arpu
FROM paid GROUP BY 1 ORDER BY 1"""
)


def _mariadb_correlation() -> str:
    """corr() as PostgreSQL defines it (a pair's rows with a NULL left out: only m, the mean order total, has
    NULLs), from sums in one pass. The one-pass formula loses digits only where a mean dwarfs its spread,
    which none of these features does; the check against the tool's figures (1e-6) holds it to that."""

    def pearson(a: str, b: str) -> str:
        x = f"if(m IS NULL, NULL, {a})" if b == "m" else a  # for m: only the rows that have it
        n = f"count({b})"
        return (
            f"({n} * sum({x} * {b}) - sum({x}) * sum({b})) / sqrt(({n} * sum({x} * {x}) - sum({x}) * sum({x}))"
            f" * ({n} * sum({b} * {b}) - sum({b}) * sum({b}))) AS {a}_{b}"
        )

    names = list(FEATURE_NAMES)
    pairs = [pearson(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    return _MARIADB_FEATURES + f"SELECT {', '.join(pairs)} FROM features"


HAND_SQL_MARIADB: dict[str, list[str]] = {
    "churn_rate": [
        _MARIADB_STATE
        + "SELECT country, count(*) AS customers, sum(churned) AS churned FROM state GROUP BY country"
    ],
    "arpu": [
        _MARIADB_PAID
        + """,
per_customer AS (SELECT customer_id, sum(amount) AS total FROM paid GROUP BY customer_id),
per_month AS (
    SELECT date_format(paid_at, '%Y-%m') AS `key`, customer_id, sum(amount) AS total FROM paid GROUP BY 1, 2),
per_method AS (SELECT method AS `key`, customer_id, sum(amount) AS total FROM paid GROUP BY 1, 2)
SELECT 'by_segment' AS level, c.country AS `key`, count(*) AS customers, CAST(sum(x.total) AS DOUBLE) AS revenue,
       var_samp(x.total) AS variance
FROM per_customer x JOIN customers c ON c.customer_id = x.customer_id GROUP BY c.country
UNION ALL SELECT 'by_month', `key`, count(*), CAST(sum(total) AS DOUBLE), var_samp(total) FROM per_month GROUP BY 2
UNION ALL SELECT 'by_service_type', `key`, count(*), CAST(sum(total) AS DOUBLE), var_samp(total)
FROM per_method GROUP BY 2"""
    ],
    "retention": [
        _MARIADB_STATE
        + """
SELECT country,
       floor(timestampdiff(SECOND, created_at, CASE WHEN churned THEN seen ELSE as_of END) / 86400) AS lifetime_days,
       CAST(churned AS SIGNED) AS churned, count(*) AS customers
FROM state GROUP BY 1, 2, 3""",
        _MARIADB_STATE
        + """,
months AS (
    SELECT state.*, (year(seen) - year(created_at)) * 12 + month(seen) - month(created_at) AS k FROM state)
SELECT date_format(created_at, '%Y-%m') AS cohort,
       CASE WHEN churned THEN k - (timestampadd(MONTH, k, created_at) > seen) END AS months_lived,
       count(*) AS customers
FROM months GROUP BY 1, 2""",
    ],
    "segment_compare": [
        _MARIADB_PAID
        + """
SELECT c.country, x.total
FROM (SELECT customer_id, CAST(sum(amount) AS DOUBLE) AS total FROM paid GROUP BY customer_id) x
JOIN customers c ON c.customer_id = x.customer_id"""
    ],
    "trend": [_MARIADB_MONTHLY_ARPU],
    "forecast": [_MARIADB_MONTHLY_ARPU],
    "correlation": [_mariadb_correlation()],
    "churn_drivers": [_MARIADB_FEATURES + "SELECT ch, t, n, r, m FROM features ORDER BY customer_id"],
    "anomalies": [
        "SELECT date(paid_at) AS bucket, CAST(sum(amount) AS DOUBLE) AS revenue, count(*) AS payments "
        "FROM payments GROUP BY 1 ORDER BY 1"
    ],
}

ROUND_SECONDS = 3.0
MAX_ROUNDS = 40


def _close(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is None and right is None
    return math.isclose(float(left), float(right), rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def check(analysis: str, results: dict[str, Any], found: list[list[dict[str, Any]]]) -> str:
    """The figures of the hand-written SQL against the tool's; raises AssertionError on a difference and
    returns what was compared."""
    rows = found[0]
    if analysis == "churn_rate":
        segments = results["by_segment"]
        for row in rows:
            entry = segments[row["country"]]
            assert (entry["customers"], entry["churned"]) == (row["customers"], row["churned"]), row
        return f"customers and churned of {len(rows)} countries"
    if analysis == "arpu":
        for row in rows:
            entry = results[row["level"]][row["key"]]
            assert entry["paying_customers"] == row["customers"], row
            assert _close(entry["revenue"], row["revenue"]), (entry, dict(row))
            assert _close(entry["arpu"], row["revenue"] / row["customers"]), (entry, dict(row))
        return f"customers, revenue, ARPU of {len(rows)} countries, months and methods"
    if analysis == "retention":
        customers = sum(row["customers"] for row in rows)
        churned = sum(row["customers"] for row in rows if row["churned"])
        overall = results["overall"]
        assert (overall["customers"], overall["churned"]) == (customers, churned), overall
        cohorts = {row["cohort"]: row["customers"] for row in results["cohorts"]["rows"]}
        sizes: dict[str, int] = {}
        for row in found[1]:
            sizes[row["cohort"]] = sizes.get(row["cohort"], 0) + row["customers"]
        assert all(sizes[cohort] == size for cohort, size in cohorts.items()), (cohorts, sizes)
        return f"customers and churns of the lifetimes, sizes of {len(cohorts)} cohorts"
    if analysis == "segment_compare":
        frame = pd.DataFrame(rows, columns=["country", "total"])
        grouped = frame.groupby("country")["total"].agg(["size", "mean"])
        for country, row in grouped.iterrows():
            entry = results["segments"][country]
            assert entry["customers"] == row["size"] and _close(entry["mean"], row["mean"]), (entry, row)
        return f"size and mean of {len(grouped)} segments"
    if analysis in ("trend", "forecast", "anomalies"):
        series = {pd.Timestamp(point["bucket"]): point["value"] for point in _series(analysis, results)}
        for row in rows:
            value = list(row.values())[1]
            assert _close(series[pd.Timestamp(row["bucket"])], value), (dict(row), series)
        return f"{len(rows)} buckets"
    if analysis == "correlation":
        matrix = results["matrix"]
        pairs = 0
        for name, value in rows[0].items():
            a, b = name.split("_")
            assert _close(matrix[FEATURE_NAMES[a]][FEATURE_NAMES[b]], value), (name, value)
            pairs += 1
        return f"{pairs} Pearson coefficients"
    if analysis == "churn_drivers":
        assert results["customers"] == len(rows), (results["customers"], len(rows))
        return f"{len(rows)} customer rows"
    raise AssertionError(analysis)


def _series(analysis: str, results: dict[str, Any]) -> list[dict[str, Any]]:
    if analysis == "forecast":
        return list(results["observed"])
    return list(results["series"])


ENGINES = ("postgresql", "mariadb", "duckdb")
Row = dict[str, Any]
HandRun = Callable[[], Awaitable[list[list[Row]]]]


async def measure_shop(
    customers: int, seed: int, repeats: int, only: list[str] | None = None, engine: str = "postgresql"
) -> list[tuple[str, list[float], list[float], str]]:
    """Load the shop into `engine` (PostgreSQL schema `shop`, a scratch MariaDB database, or Parquet files
    read by DuckDB), register it as source `shop` with model `shop`, time each analysis against its
    hand-written SQL; the table's rows (empty when MariaDB is not reachable)."""
    cases = [case for case in CASES if not only or case[0] in only]
    with tempfile.TemporaryDirectory(prefix="amcp-bench-shop-") as home:
        async with scratch_database() as url:
            if engine == "mariadb":
                return await _measure_mariadb(url, customers, seed, cases, repeats)
            if engine == "duckdb":
                folder = Path(home) / "files"
                folder.mkdir()
                target = Source(
                    name="shop", kind="files", url=SecretStr(f"files://{folder}"), redacted_url="shop"
                )
                await _load(target, customers, seed, "Parquet files")
                return await _measure(url, f'url = "files://{folder}"', _duckdb_hand(folder), cases, repeats)
            target = Source(
                name="shop",
                kind="postgresql",
                url=SecretStr(url),
                redacted_url="shop",
                schemas=("shop",),
                write_url=SecretStr(url),
            )
            await _load(target, customers, seed, "PostgreSQL schema shop")
            # The source logs in as a role that may only read the shop (the engine refuses a superuser).
            reader, password = f"amcp_bench_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
            conn = await asyncpg.connect(url)
            try:
                await conn.execute(f"CREATE ROLE {reader} LOGIN PASSWORD '{password}'")
                await conn.execute(f"GRANT USAGE ON SCHEMA shop TO {reader}")
                await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA shop TO {reader}")
            finally:
                await conn.close()
            parts = urlsplit(url)
            reader_url = urlunsplit(
                parts._replace(netloc=f"{reader}:{password}@{parts.hostname}:{parts.port or 5432}")
            )
            try:
                async with asyncpg.create_pool(
                    url, min_size=2, max_size=4, server_settings=ANALYSIS_SETTINGS
                ) as pool:

                    def hand(analysis: str) -> HandRun:
                        async def run() -> list[list[Row]]:
                            found = await asyncio.gather(*(pool.fetch(text) for text in HAND_SQL[analysis]))
                            return [[dict(record) for record in records] for records in found]

                        return run

                    source = f'url = "{reader_url}"\nschemas = ["shop"]'
                    return await _measure(url, source, hand, cases, repeats)
            finally:
                conn = await asyncpg.connect(url)
                try:
                    await conn.execute(f"DROP OWNED BY {reader}")
                    await conn.execute(f"DROP ROLE IF EXISTS {reader}")
                finally:
                    await conn.close()


def mysql_admin_url() -> str | None:
    """BENCH_MYSQL_URL (default: this machine's MariaDB as root) when something answers there."""
    url = os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 3306), timeout=0.5):
            return url
    except OSError:
        return None


async def _measure_mariadb(
    url: str, customers: int, seed: int, cases: list[tuple[str, dict[str, Any]]], repeats: int
) -> list[tuple[str, list[float], list[float], str]]:
    """The shop in a scratch MariaDB database read by a SELECT-only user (the source), the hand-written
    MariaDB SQL run as the loading account on an asyncmy pool; database and user dropped afterwards."""
    import asyncmy

    admin = mysql_admin_url()
    if admin is None:
        print("shop on mariadb: skipped (no MariaDB reachable; set BENCH_MYSQL_URL)", flush=True)
        return []
    parts = urlsplit(admin)
    host, port = parts.hostname or "127.0.0.1", parts.port or 3306
    account: dict[str, Any] = {
        "host": host,
        "port": port,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
    }
    suffix = secrets.token_hex(4)
    database, reader, password = (
        f"amcp_bench_shop_{suffix}",
        f"amcp_bench_shop_{suffix}",
        secrets.token_hex(12),
    )

    async def as_admin(*statements: str) -> None:
        conn = await asyncmy.connect(**account, autocommit=True)
        try:
            async with conn.cursor() as cursor:
                for statement in statements:
                    await cursor.execute(statement)
        finally:
            conn.close()

    await as_admin(f"CREATE DATABASE {database}")
    try:
        write_url = urlunsplit(parts._replace(path=f"/{database}"))
        target = Source(
            name="shop",
            kind="mysql",
            url=SecretStr(write_url),
            redacted_url="shop",
            schemas=(database,),
            write_url=SecretStr(write_url),
        )
        await _load(target, customers, seed, f"MariaDB database {database}")
        await as_admin(
            f"CREATE USER '{reader}'@'%' IDENTIFIED BY '{password}'",
            f"GRANT SELECT ON {database}.* TO '{reader}'@'%'",
        )
        pool = await asyncmy.create_pool(**account, db=database, minsize=2, maxsize=4, autocommit=True)
        try:

            async def fetch(text: str) -> list[Row]:
                async with pool.acquire() as conn, conn.cursor() as cursor:
                    await cursor.execute(text)
                    names = [column[0] for column in cursor.description or []]
                    return [dict(zip(names, row, strict=True)) for row in await cursor.fetchall()]

            def hand(analysis: str) -> HandRun:
                async def run() -> list[list[Row]]:
                    return list(await asyncio.gather(*(fetch(text) for text in HAND_SQL_MARIADB[analysis])))

                return run

            source = f'url = "mysql://{reader}:{password}@{host}:{port}/{database}"'
            return await _measure(url, source, hand, cases, repeats)
        finally:
            pool.close()
            await pool.wait_closed()
    finally:
        await as_admin(f"DROP USER IF EXISTS '{reader}'@'%'", f"DROP DATABASE IF EXISTS {database}")


async def _load(target: Source, customers: int, seed: int, where: str) -> None:
    loaded = await load_shop(target, shop_plan(customers, seed))
    print(
        f"shop: loaded {loaded.rows:,} rows ({customers:,} customers) into {where} in {loaded.seconds:.1f} s",
        flush=True,
    )


def _duckdb_hand(folder: Path) -> Callable[[str], HandRun]:
    """The hand-written statements transpiled to DuckDB (sqlglot), on views `shop.<table>` over the files."""
    import duckdb
    import sqlglot

    connection = duckdb.connect(config={"threads": "2", "memory_limit": "512MB"})
    connection.execute("CREATE SCHEMA shop")
    for table in TABLES:
        connection.execute(
            f"CREATE VIEW shop.{table} AS SELECT * FROM read_parquet('{folder / table}.parquet')"
        )
    texts = {
        name: [sqlglot.transpile(text, read="postgres", write="duckdb")[0] for text in statements]
        for name, statements in HAND_SQL.items()
    }

    def fetch(text: str) -> list[Row]:
        cursor = connection.cursor()
        try:
            cursor.execute(text)
            names = [column[0] for column in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def hand(analysis: str) -> HandRun:
        async def run() -> list[list[Row]]:
            return list(await asyncio.gather(*(asyncio.to_thread(fetch, text) for text in texts[analysis])))

        return run

    return hand


async def _measure(
    url: str,
    source: str,
    hand: Callable[[str], HandRun],
    cases: list[tuple[str, dict[str, Any]]],
    repeats: int,
) -> list[tuple[str, list[float], list[float], str]]:
    with tempfile.TemporaryDirectory(prefix="amcp-bench-shop-toml-") as home:
        toml = Path(home) / "sources.toml"
        toml.write_text(f'[sources.shop]\n{source}\nmodel = "shop"\n')
        async with bench_runtime(url, extra_env={"ANALYTICS_MCP_SOURCES": str(toml)}) as runtime:
            return await _run(runtime, hand, cases, repeats)


async def _run(
    runtime: Any, hand_of: Callable[[str], HandRun], cases: list[tuple[str, dict[str, Any]]], repeats: int
) -> list[tuple[str, list[float], list[float], str]]:
    app = build_app(runtime, local_identity=Identity("bench", "analyst", "bench"))
    redis = runtime.cache_redis or runtime.redis

    async def clear_cache() -> None:
        async for key in redis.scan_iter(match=runtime.key("cache", "analysis") + "*", count=1000):
            await redis.delete(key)

    table = []
    async with Client(app.mcp) as client:
        for analysis, parameters in cases:

            async def tool(analysis: str = analysis, parameters: dict[str, Any] = parameters) -> Any:
                result = await client.call_tool(
                    "analyze_data",
                    {"data_source": "shop", "analysis_type": analysis, "parameters": parameters},
                    raise_on_error=True,
                )
                return result.structured_content

            hand = hand_of(analysis)
            await clear_cache()
            started = time.perf_counter()
            answer = await client.call_tool(  # warm-up, and the full answer to check the SQL against
                "analyze_data",
                {
                    "data_source": "shop",
                    "analysis_type": analysis,
                    "parameters": parameters,
                    "detail": "full",
                },
                raise_on_error=True,
            )
            first = time.perf_counter() - started
            assert answer.structured_content is not None
            checked = check(analysis, answer.structured_content["results"], await hand())
            rounds = max(repeats, min(MAX_ROUNDS, int(ROUND_SECONDS / max(first, 1e-3))))
            cold: list[float] = []
            sql_times: list[float] = []
            for _ in range(rounds):  # interleaved, so load from elsewhere hits both sides alike
                await clear_cache()
                cold.append(await _timed(tool))
                sql_times.append(await _timed(hand))
            print(
                f"  shop {analysis}: {rounds} rounds, tool {_ms(cold)}, hand SQL {_ms(sql_times)}; "
                f"equal: {checked}",
                flush=True,
            )
            table.append((analysis, cold, sql_times, checked))
    return table


def print_table(
    table: list[tuple[str, list[float], list[float], str]], customers: int, engine: str = "postgresql"
) -> None:
    print(f"shop model on {engine}, {customers:,} customers; ms: median of the interleaved rounds (best)")
    print(f"{'analysis':<16} {'rounds':>6} {'tool (cold)':>17} {'hand SQL':>17} {'tool/SQL':>9}")
    for analysis, cold, sql_times, _ in table:
        ratio = statistics.median(cold) / statistics.median(sql_times)
        print(f"{analysis:<16} {len(cold):>6} {_ms(cold):>17} {_ms(sql_times):>17} {ratio:>8.2f}x")


async def _timed(run: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await run()
    return time.perf_counter() - started


def _ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1000:.1f} ({min(seconds) * 1000:.1f})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=[case[0] for case in CASES])
    parser.add_argument("--engine", nargs="+", choices=ENGINES, default=list(ENGINES))
    args = parser.parse_args()
    for engine in args.engine:
        table = await measure_shop(args.customers, args.seed, args.repeats, args.only, engine)
        if table:
            print_table(table, args.customers, engine)


if __name__ == "__main__":
    asyncio.run(main())
