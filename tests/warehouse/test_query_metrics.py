"""query_metrics on the generated shop in PostgreSQL, MariaDB and DuckDB files: each question equals a
hand-written SQL run on the same engine; unknown or injected names are refused with the allowed names;
injected filter values are bound (the answer equals SQL for that literal, tables unchanged); relative
ranges and compare_to with a fixed as_of equal SQL on the resolved windows; a few through MCP."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastmcp import Client
from pydantic import SecretStr

from core.errors import InvalidInput
from mcp_server.runtime import Runtime
from tests.conftest import app_for
from tests.support import call, refusal
from tests.warehouse import test_models_shop as shop
from warehouse.models import shipped_model
from warehouse.models.metrics import MetricQuery, query_metrics
from warehouse.shop_store import load_shop
from warehouse.sources import Source

# The shop loaded into the three engines, once per module (fixtures of test_models_shop).
postgres_engine, mariadb_engine, duckdb_engine = shop.postgres_engine, shop.mariadb_engine, shop.duckdb_engine
engines = shop.engines
ENGINES, PLAN = shop.ENGINES, shop.PLAN
TOLERANCE = 1e-6
MODEL = shipped_model("shop")
# Hand-written joins: payments and order lines with their order, customer and product.
PAID = "payments p JOIN orders o ON o.order_id = p.order_id JOIN customers c ON c.customer_id = o.customer_id"
LINES = (
    "order_items i JOIN orders o ON o.order_id = i.order_id JOIN products pr ON pr.product_id = i.product_id"
)


async def _sql(engine: Any, sql: str) -> list[tuple[Any, ...]]:
    if engine.kind == "postgresql":  # the one spelling of a double every engine's CAST takes, but PostgreSQL
        sql = sql.replace(" AS DOUBLE)", " AS DOUBLE PRECISION)")
    guarded = await engine.guarded(sql, {})
    result = await engine.run(guarded, {}, timeout=60.0, max_rows=100_000, max_bytes=1 << 28)
    return [tuple(row.values()) for row in result.records()]


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, (decimal.Decimal, int, float)) else value


def _key(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value)
    return value


async def _ask(engine: Any, **question: Any) -> dict[str, Any]:
    return await query_metrics(engine, MODEL, MetricQuery.model_validate(question), source="shop")


def _by_key(answer: dict[str, Any], keys: list[str], metric: str) -> dict[Any, float]:
    found = {}
    for row in answer["rows"]:
        key = tuple(row[name] for name in keys)
        found[key[0] if len(key) == 1 else key] = row[metric]
    return found


def _assert_equal(found: dict[Any, Any], expected: dict[Any, Any]) -> None:
    assert set(found) == set(expected), (sorted(map(str, found)), sorted(map(str, expected)))
    for key, value in expected.items():
        if value is None:
            assert found[key] is None, key
        else:
            assert found[key] == pytest.approx(_number(value), abs=TOLERANCE, rel=1e-12), key


def _expected(rows: list[tuple[Any, ...]]) -> dict[Any, Any]:
    return {(_key(row[0]) if len(row) == 2 else tuple(map(_key, row[:-1]))): row[-1] for row in rows}


def _assert_rows(
    answer: dict[str, Any], keys: list[str], metrics: list[str], rows: list[tuple[Any, ...]]
) -> None:
    """The answer's rows equal SQL rows holding the group keys, then one column per metric, in order."""
    for number, metric in enumerate(metrics):
        found = {tuple(row[name] for name in keys): row[metric] for row in answer["rows"]}
        expected = {tuple(map(_key, row[: len(keys)])): row[len(keys) + number] for row in rows}
        _assert_equal(found, expected)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.mark.parametrize("name", ENGINES)
async def test_revenue_and_aov_by_country_in_a_quarter_equal_sql(name: str, engines: dict[str, Any]) -> None:
    answer = await _ask(
        engines[name],
        metrics=["revenue", "aov"],
        group_by=["country"],
        time_range={"start": "2025-07-01", "end": "2025-09-30"},
    )
    window = "p.paid_at >= '2025-07-01' AND p.paid_at < '2025-10-01'"
    revenue = await _sql(
        engines[name], f"SELECT c.country, SUM(p.amount) FROM {PAID} WHERE {window} GROUP BY c.country"
    )
    aov = await _sql(
        engines[name],
        f"SELECT c.country, SUM(p.amount) / COUNT(DISTINCT p.order_id) FROM {PAID} WHERE {window} GROUP BY c.country",
    )
    _assert_equal(_by_key(answer, ["country"], "revenue"), _expected(revenue))
    _assert_equal(_by_key(answer, ["country"], "aov"), _expected(aov))
    assert answer["time_range"] == {"start": "2025-07-01", "end": "2025-09-30"}
    assert answer["definitions"]["metrics"]["aov"]["numerator"] == "revenue"
    assert "paid_orders" in answer["definitions"]["metrics"]
    assert any("orders.order_date" in note for note in answer["notes"])  # revenue could be dated by order


@pytest.mark.parametrize("name", ENGINES)
async def test_orders_by_status_count_every_status_and_note_the_shipment_status(
    name: str, engines: dict[str, Any]
) -> None:
    answer = await _ask(engines[name], metrics=["orders"], group_by=["status"])
    expected = await _sql(engines[name], "SELECT status, COUNT(*) FROM orders GROUP BY status")
    _assert_equal(_by_key(answer, ["status"], "orders"), _expected(expected))
    assert "CANCELLED" in _by_key(answer, ["status"], "orders")
    assert any("shipments.status" in note for note in answer["notes"])


@pytest.mark.parametrize("name", ENGINES)
async def test_aov_by_month_equals_sql(name: str, engines: dict[str, Any]) -> None:
    answer = await _ask(engines[name], metrics=["aov"], grain="month", limit=1000)
    rows = await _sql(
        engines[name],
        "SELECT EXTRACT(YEAR FROM paid_at), EXTRACT(MONTH FROM paid_at), SUM(amount) / COUNT(DISTINCT order_id) "
        "FROM payments GROUP BY EXTRACT(YEAR FROM paid_at), EXTRACT(MONTH FROM paid_at)",
    )
    expected = {dt.date(int(year), int(month), 1).isoformat(): value for year, month, value in rows}
    _assert_equal(_by_key(answer, ["month"], "aov"), expected)
    assert [row["month"] for row in answer["rows"]] == sorted(expected)


@pytest.mark.parametrize("name", ENGINES)
async def test_units_sold_by_category_and_by_year_for_shipped_orders_equal_sql(
    name: str, engines: dict[str, Any]
) -> None:
    answer = await _ask(engines[name], metrics=["units_sold"], group_by=["category"], order_by="-units_sold")
    expected = await _sql(
        engines[name], f"SELECT pr.category, SUM(i.quantity) FROM {LINES} GROUP BY pr.category"
    )
    _assert_equal(_by_key(answer, ["category"], "units_sold"), _expected(expected))
    values = [row["units_sold"] for row in answer["rows"]]
    assert values == sorted(values, reverse=True)
    yearly = await _ask(
        engines[name],
        metrics=["units_sold"],
        group_by=["category"],
        grain="year",
        filters=[{"dimension": "status", "op": "in", "value": ["SHIPPED", "DELIVERED"]}],
    )
    rows = await _sql(
        engines[name],
        f"SELECT pr.category, EXTRACT(YEAR FROM o.order_date), SUM(i.quantity) FROM {LINES} "
        "WHERE o.status IN ('SHIPPED', 'DELIVERED') GROUP BY pr.category, EXTRACT(YEAR FROM o.order_date)",
    )
    expected_yearly = {
        (category, dt.date(int(year), 1, 1).isoformat()): value for category, year, value in rows
    }
    _assert_equal(_by_key(yearly, ["category", "year"], "units_sold"), expected_yearly)


ORDERS = "orders o JOIN customers c ON c.customer_id = o.customer_id"
# More catalogue questions (docs/metrics.md #18-#23): the call, and SQL whose last column is the metric.
CATALOGUE: list[tuple[dict[str, Any], str]] = [
    (
        {"metrics": ["revenue"], "group_by": ["method"]},
        "SELECT method, SUM(amount) FROM payments GROUP BY method",
    ),
    (
        {
            "metrics": ["paid_orders"],
            "group_by": ["country"],
            "time_range": {"start": "2024-01-01", "end": "2024-12-31"},
        },
        f"SELECT c.country, COUNT(DISTINCT p.order_id) FROM {PAID} "
        "WHERE p.paid_at >= '2024-01-01' AND p.paid_at < '2025-01-01' GROUP BY c.country",
    ),
    (
        {"metrics": ["units_sold"], "group_by": ["status"]},
        "SELECT o.status, SUM(i.quantity) FROM order_items i JOIN orders o ON o.order_id = i.order_id "
        "GROUP BY o.status",
    ),
    (
        {
            "metrics": ["aov"],
            "group_by": ["method"],
            "time_range": {"start": "2025-01-01", "end": "2025-06-30"},
        },
        "SELECT method, SUM(amount) / COUNT(DISTINCT order_id) FROM payments "
        "WHERE paid_at >= '2025-01-01' AND paid_at < '2025-07-01' GROUP BY method",
    ),
    (
        {"metrics": ["cancelled_orders"], "group_by": ["country"]},
        f"SELECT c.country, COUNT(*) FROM {ORDERS} WHERE o.status = 'CANCELLED' GROUP BY c.country",
    ),
    (
        {
            "metrics": ["active_customers"],
            "group_by": ["country"],
            "filters": [{"dimension": "country", "op": "not in", "value": ["Italy", "France"]}],
        },
        f"SELECT c.country, COUNT(DISTINCT o.customer_id) FROM {ORDERS} "
        "WHERE c.country NOT IN ('Italy', 'France') GROUP BY c.country",
    ),
]


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("number", range(len(CATALOGUE)))
async def test_catalogue_question_equals_its_sql(name: str, number: int, engines: dict[str, Any]) -> None:
    question, sql = CATALOGUE[number]
    answer = await _ask(engines[name], **question)
    _assert_equal(
        _by_key(answer, question["group_by"], question["metrics"][0]),
        _expected(await _sql(engines[name], sql)),
    )


# Catalogue questions #25-#35 (docs/metrics.md): products, inventory, customers, orders, shipments. The SQL's
# columns are the group keys, then one column per metric in the call's order.
SHIPPED_2025 = "shipped_at >= '2025-01-01' AND shipped_at < '2026-01-01'"
MORE: list[tuple[dict[str, Any], str]] = [
    (  # #27 inventory: products on sale per category
        {"metrics": ["active_products", "products"], "group_by": ["category"]},
        "SELECT category, SUM(CASE WHEN active THEN 1 ELSE 0 END), COUNT(*) FROM products GROUP BY category",
    ),
    (  # #33 shipments by carrier and the shipment's own status, 2025
        {
            "metrics": ["shipments"],
            "group_by": ["carrier", "shipment_status"],
            "time_range": {"start": "2025-01-01", "end": "2025-12-31"},
        },
        f"SELECT carrier, status, COUNT(*) FROM shipments WHERE {SHIPPED_2025} GROUP BY carrier, status",
    ),
    (  # #32 basket size by country: units per order placed
        {"metrics": ["units_per_order", "gross_order_value"], "group_by": ["country"]},
        "SELECT n.country, CAST(u.units AS DOUBLE) / n.orders, n.total FROM "
        "(SELECT c.country, COUNT(*) AS orders, SUM(o.total) AS total FROM orders o "
        "JOIN customers c ON c.customer_id = o.customer_id GROUP BY c.country) n LEFT JOIN "
        "(SELECT c.country, SUM(i.quantity) AS units FROM order_items i JOIN orders o ON o.order_id = i.order_id "
        "JOIN customers c ON c.customer_id = o.customer_id GROUP BY c.country) u ON u.country = n.country",
    ),
]


@pytest.mark.parametrize("name", ENGINES)
@pytest.mark.parametrize("number", range(len(MORE)))
async def test_more_catalogue_questions_equal_their_sql(
    name: str, number: int, engines: dict[str, Any]
) -> None:
    question, sql = MORE[number]
    answer = await _ask(engines[name], limit=1000, **question)
    rows = await _sql(engines[name], sql)
    assert rows
    _assert_rows(answer, question["group_by"], question["metrics"], rows)


@pytest.mark.parametrize("name", ENGINES)
async def test_sales_of_one_product_last_month_equal_sql(name: str, engines: dict[str, Any]) -> None:
    engine = engines[name]
    november = "o.order_date >= '2025-11-01' AND o.order_date < '2025-12-01'"
    ((sku,),) = await _sql(
        engine,
        f"SELECT pr.sku FROM {LINES} WHERE {november} GROUP BY pr.sku ORDER BY SUM(i.quantity) DESC, pr.sku LIMIT 1",
    )
    answer = await _ask(
        engine,
        metrics=["product_sales", "units_sold"],
        filters=[{"dimension": "sku", "value": sku}],
        time_range="last_month",
        as_of="2025-12-15",
    )
    assert answer["time_range"]["start"] == "2025-11-01" and answer["time_range"]["end"] == "2025-11-30"
    ((sales, units),) = await _sql(
        engine,
        f"SELECT SUM(i.line_total), SUM(i.quantity) FROM {LINES} WHERE pr.sku = {_literal(sku)} AND {november}",
    )
    (row,) = answer["rows"]
    assert row["product_sales"] == pytest.approx(float(sales), abs=TOLERANCE)
    assert row["units_sold"] == int(units) and int(units) > 0


@pytest.mark.parametrize("name", ENGINES)
async def test_best_selling_products_of_a_year_equal_sql(name: str, engines: dict[str, Any]) -> None:
    answer = await _ask(
        engines[name],
        metrics=["units_sold"],
        group_by=["sku", "product"],
        time_range={"start": "2025-01-01", "end": "2025-12-31"},
        order_by="-units_sold",
        limit=10,
    )
    rows = await _sql(
        engines[name],
        f"SELECT pr.sku, pr.name, SUM(i.quantity) FROM {LINES} "
        "WHERE o.order_date >= '2025-01-01' AND o.order_date < '2026-01-01' GROUP BY pr.sku, pr.name",
    )
    units = {(sku, product): int(total) for sku, product, total in rows}
    assert len(answer["rows"]) == 10 and answer["truncated"] is True
    for row in answer["rows"]:  # each product's units as SQL has them, and the ten largest (ties aside)
        assert row["units_sold"] == units[(row["sku"], row["product"])]
    assert [row["units_sold"] for row in answer["rows"]] == sorted(units.values(), reverse=True)[:10]


@pytest.mark.parametrize("name", ENGINES)
async def test_products_on_sale_that_sold_nothing_last_month_equal_sql(
    name: str, engines: dict[str, Any]
) -> None:
    engine = engines[name]
    answer = await _ask(
        engine,
        metrics=["active_products", "units_sold"],
        group_by=["sku"],
        time_range="last_month",
        as_of="2024-02-10",
        limit=1000,
    )
    window = "o.order_date >= '2024-01-01' AND o.order_date < '2024-02-01'"
    unsold = await _sql(
        engine,
        "SELECT pr.sku FROM products pr WHERE pr.active AND pr.product_id NOT IN (SELECT i.product_id "
        f"FROM order_items i JOIN orders o ON o.order_id = i.order_id WHERE {window})",
    )
    found = {row["sku"] for row in answer["rows"] if row["active_products"] == 1 and row["units_sold"] == 0}
    assert found == {sku for (sku,) in unsold} and found  # the first month of the shop leaves some unsold
    sold = await _sql(engine, f"SELECT pr.sku, SUM(i.quantity) FROM {LINES} WHERE {window} GROUP BY pr.sku")
    by_sku = {row["sku"]: row["units_sold"] for row in answer["rows"]}
    assert {sku: by_sku[sku] for sku, _ in sold} == {sku: int(total) for sku, total in sold}
    active = await _sql(engine, "SELECT sku FROM products WHERE active")
    # A group for every product on sale, sold or not, and for every product sold (on sale or not).
    assert set(by_sku) == {sku for (sku,) in active} | {sku for sku, _ in sold}
    assert any("'active_products' has no time column" in note for note in answer["notes"])


@pytest.mark.parametrize("name", ENGINES)
async def test_top_customers_by_revenue_equal_sql(name: str, engines: dict[str, Any]) -> None:
    answer = await _ask(
        engines[name], metrics=["revenue"], group_by=["customer"], order_by="-revenue", limit=10
    )
    rows = await _sql(engines[name], f"SELECT c.email, SUM(p.amount) FROM {PAID} GROUP BY c.email")
    revenue = {email: float(total) for email, total in rows}
    for row in answer["rows"]:
        assert row["revenue"] == pytest.approx(revenue[row["customer"]], abs=TOLERANCE)
    assert [row["revenue"] for row in answer["rows"]] == pytest.approx(
        sorted(revenue.values(), reverse=True)[:10], abs=TOLERANCE
    )


@pytest.mark.parametrize("name", ENGINES)
async def test_orders_of_one_customer_and_their_record_equal_sql(name: str, engines: dict[str, Any]) -> None:
    from warehouse.models.records import get_record

    engine = engines[name]
    ((customer_id, email),) = await _sql(
        engine,
        f"SELECT c.customer_id, c.email FROM {ORDERS} GROUP BY c.customer_id, c.email "
        "ORDER BY COUNT(*) DESC, c.customer_id LIMIT 1",
    )
    answer = await _ask(
        engine,
        metrics=["orders", "gross_order_value"],
        group_by=["status"],
        filters=[{"dimension": "customer", "value": email}],
    )
    rows = await _sql(
        engine,
        f"SELECT o.status, COUNT(*), SUM(o.total) FROM {ORDERS} WHERE c.email = {_literal(email)} GROUP BY o.status",
    )
    _assert_rows(answer, ["status"], ["orders", "gross_order_value"], rows)
    record = await get_record(engine, MODEL, "customers", int(customer_id), source="shop")
    assert record["record"]["email"] == email
    orders = await _sql(
        engine, f"SELECT order_id FROM orders WHERE customer_id = {int(customer_id)} ORDER BY 1"
    )
    assert [row["order_id"] for row in record["children"]["orders"]["rows"]] == [int(o) for (o,) in orders][
        :100
    ]


@pytest.mark.parametrize("name", ENGINES)
async def test_order_value_by_month_without_cancellations_equals_sql(
    name: str, engines: dict[str, Any]
) -> None:
    answer = await _ask(
        engines[name],
        metrics=["gross_order_value", "orders"],
        grain="month",
        filters=[{"dimension": "status", "op": "!=", "value": "CANCELLED"}],
        time_range={"start": "2025-01-01", "end": "2025-12-31"},
    )
    rows = await _sql(
        engines[name],
        "SELECT EXTRACT(YEAR FROM order_date), EXTRACT(MONTH FROM order_date), SUM(total), COUNT(*) FROM orders "
        "WHERE status <> 'CANCELLED' AND order_date >= '2025-01-01' AND order_date < '2026-01-01' "
        "GROUP BY EXTRACT(YEAR FROM order_date), EXTRACT(MONTH FROM order_date)",
    )
    monthly = [(dt.date(int(year), int(month), 1), *values) for year, month, *values in rows]
    assert len(monthly) == 12
    _assert_rows(answer, ["month"], ["gross_order_value", "orders"], monthly)


@pytest.mark.parametrize("name", ENGINES)
async def test_product_sales_by_category_against_the_same_quarter_a_year_before_equal_sql(
    name: str, engines: dict[str, Any]
) -> None:
    answer = await _ask(
        engines[name],
        metrics=["product_sales"],
        group_by=["category"],
        time_range={"start": "2025-10-01", "end": "2025-12-31"},
        compare_to="previous_year",
    )
    assert answer["compare_to"] == {"kind": "previous_year", "start": "2024-10-01", "end": "2024-12-31"}

    async def quarter(start: str, end: str) -> dict[Any, Any]:
        return _expected(
            await _sql(
                engines[name],
                f"SELECT pr.category, SUM(i.line_total) FROM {LINES} "
                f"WHERE o.order_date >= '{start}' AND o.order_date < '{end}' GROUP BY pr.category",
            )
        )

    now, before = await quarter("2025-10-01", "2026-01-01"), await quarter("2024-10-01", "2025-01-01")
    _assert_equal(_by_key(answer, ["category"], "product_sales"), now)
    _assert_equal(_by_key(answer, ["category"], "product_sales_previous"), before)
    for row in answer["rows"]:
        change = float(now[row["category"]]) - float(before[row["category"]])
        assert row["product_sales_change_pct"] == pytest.approx(
            change / float(before[row["category"]]) * 100, abs=1e-9
        )


@pytest.mark.parametrize("name", ENGINES)
async def test_each_default_that_has_an_alternative_is_named_with_it_in_a_note(
    name: str, engines: dict[str, Any]
) -> None:
    """A metric datable by two instants, and a dimension whose name two relations hold: the answer says which
    one it used (the model's default) and names the other; nothing is noted where nothing was chosen."""
    engine = engines[name]
    dated = await _ask(engine, metrics=["revenue", "aov"], grain="quarter")
    assert dated["notes"] == [
        "'revenue' is dated by payments.paid_at (the model's default); it could also be dated by orders.order_date",
        "'aov' is dated by payments.paid_at (the model's default); it could also be dated by orders.order_date",
    ]
    split = await _ask(engine, metrics=["shipments"], group_by=["status"])
    assert split["notes"] == [
        "'status' is orders.status (the model's default); shipments.status has the same name"
    ]
    rows = await _sql(
        engine,
        "SELECT o.status, COUNT(*) FROM shipments s JOIN orders o ON o.order_id = s.order_id GROUP BY o.status",
    )
    _assert_equal(_by_key(split, ["status"], "shipments"), _expected(rows))  # the order's status, as noted
    assert (await _ask(engine, metrics=["revenue"], group_by=["country"]))["notes"] == []


@pytest.mark.parametrize("name", ENGINES)
async def test_top_five_cities_by_revenue_equal_sql(name: str, engines: dict[str, Any]) -> None:
    answer = await _ask(engines[name], metrics=["revenue"], group_by=["city"], order_by="-revenue", limit=5)
    rows = await _sql(engines[name], f"SELECT c.city, SUM(p.amount) FROM {PAID} GROUP BY c.city")
    top = sorted(rows, key=lambda row: float(row[1]), reverse=True)[:5]
    assert [row["city"] for row in answer["rows"]] == [city for city, _ in top]
    assert [row["revenue"] for row in answer["rows"]] == pytest.approx(
        [float(total) for _, total in top], abs=TOLERANCE
    )
    assert answer["truncated"] is True and answer["row_count"] == 5


@pytest.mark.parametrize("name", ENGINES)
async def test_active_customers_by_city_in_france_equal_sql(name: str, engines: dict[str, Any]) -> None:
    answer = await _ask(
        engines[name],
        metrics=["active_customers"],
        group_by=["city"],
        filters=[{"dimension": "country", "op": "=", "value": "France"}],
        time_range={"start": "2025-01-01", "end": "2025-12-31"},
        limit=1000,
    )
    expected = await _sql(
        engines[name],
        "SELECT c.city, COUNT(DISTINCT o.customer_id) FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
        "WHERE c.country = 'France' AND o.order_date >= '2025-01-01' AND o.order_date < '2026-01-01' GROUP BY c.city",
    )
    assert expected
    _assert_equal(_by_key(answer, ["city"], "active_customers"), _expected(expected))


@pytest.mark.parametrize("name", ENGINES)
async def test_orders_and_cancelled_orders_by_quarter_equal_sql(name: str, engines: dict[str, Any]) -> None:
    answer = await _ask(engines[name], metrics=["orders", "cancelled_orders"], grain="quarter")
    rows = await _sql(
        engines[name],
        "SELECT EXTRACT(YEAR FROM order_date), EXTRACT(QUARTER FROM order_date), COUNT(*), "
        "SUM(CASE WHEN status = 'CANCELLED' THEN 1 ELSE 0 END) FROM orders "
        "GROUP BY EXTRACT(YEAR FROM order_date), EXTRACT(QUARTER FROM order_date)",
    )
    starts = {dt.date(int(year), 3 * int(quarter) - 2, 1).isoformat(): (n, c) for year, quarter, n, c in rows}
    _assert_equal(_by_key(answer, ["quarter"], "orders"), {key: n for key, (n, _) in starts.items()})
    _assert_equal(
        _by_key(answer, ["quarter"], "cancelled_orders"), {key: c for key, (_, c) in starts.items()}
    )


@pytest.mark.parametrize("name", ENGINES)
async def test_revenue_by_method_against_the_previous_period_equals_sql(
    name: str, engines: dict[str, Any]
) -> None:
    answer = await _ask(
        engines[name],
        metrics=["revenue"],
        group_by=["method"],
        time_range={"start": "2025-04-01", "end": "2025-06-30"},
        compare_to="previous_period",
    )
    # 91 days before 2025-04-01: 2024-12-31 to 2025-03-31.
    assert answer["compare_to"] == {"kind": "previous_period", "start": "2024-12-31", "end": "2025-03-31"}
    now = _expected(
        await _sql(
            engines[name],
            "SELECT method, SUM(amount) FROM payments WHERE paid_at >= '2025-04-01' AND paid_at < '2025-07-01' "
            "GROUP BY method",
        )
    )
    before = _expected(
        await _sql(
            engines[name],
            "SELECT method, SUM(amount) FROM payments WHERE paid_at >= '2024-12-31' AND paid_at < '2025-04-01' "
            "GROUP BY method",
        )
    )
    _assert_equal(_by_key(answer, ["method"], "revenue"), now)
    _assert_equal(_by_key(answer, ["method"], "revenue_previous"), before)
    for row in answer["rows"]:
        change = float(now[row["method"]]) - float(before[row["method"]])
        assert row["revenue_change"] == pytest.approx(change, abs=TOLERANCE)
        assert row["revenue_change_pct"] == pytest.approx(
            change / float(before[row["method"]]) * 100, abs=1e-9
        )


@pytest.mark.parametrize("name", ENGINES)
async def test_fixed_as_of_relative_ranges_and_previous_year_equal_sql(
    name: str, engines: dict[str, Any]
) -> None:
    engine = engines[name]
    quarter = await _ask(
        engine, metrics=["orders"], group_by=["country"], time_range="last_quarter", as_of="2025-08-15"
    )
    assert quarter["time_range"] == {
        "start": "2025-04-01",
        "end": "2025-06-30",
        "relative": "last_quarter",
        "as_of": "2025-08-15",
    }
    expected = await _sql(
        engine,
        "SELECT c.country, COUNT(*) FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
        "WHERE o.order_date >= '2025-04-01' AND o.order_date < '2025-07-01' GROUP BY c.country",
    )
    _assert_equal(_by_key(quarter, ["country"], "orders"), _expected(expected))
    ytd = await _ask(engine, metrics=["revenue"], time_range="ytd", as_of="2025-03-10")
    (total,) = await _sql(
        engine, "SELECT SUM(amount) FROM payments WHERE paid_at >= '2025-01-01' AND paid_at < '2025-03-11'"
    )
    assert ytd["rows"][0]["revenue"] == pytest.approx(float(total[0]), abs=TOLERANCE)
    recent = await _ask(engine, metrics=["new_customers"], time_range="last_30_days", as_of="2025-06-30")
    assert recent["time_range"]["start"] == "2025-06-01"
    (signed,) = await _sql(
        engine,
        "SELECT COUNT(*) FROM customers WHERE created_at >= '2025-06-01' AND created_at < '2025-07-01'",
    )
    assert recent["rows"][0]["new_customers"] == int(signed[0])
    yearly = await _ask(
        engine,
        metrics=["revenue", "orders"],
        group_by=["country"],
        time_range="last_quarter",
        as_of="2025-04-02",
        compare_to="previous_year",
    )
    assert yearly["compare_to"] == {"kind": "previous_year", "start": "2024-01-01", "end": "2024-03-31"}
    before = _expected(
        await _sql(
            engine,
            "SELECT c.country, COUNT(*) FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
            "WHERE o.order_date >= '2024-01-01' AND o.order_date < '2024-04-01' GROUP BY c.country",
        )
    )
    _assert_equal(_by_key(yearly, ["country"], "orders_previous"), before)


@pytest.mark.parametrize("name", ENGINES)
async def test_relative_range_without_as_of_counts_back_from_the_latest_date_in_the_data(
    name: str, engines: dict[str, Any]
) -> None:
    answer = await _ask(engines[name], metrics=["revenue"], time_range="last_30_days")
    ((latest,),) = await _sql(engines[name], "SELECT MAX(paid_at) FROM payments")
    day = latest.date() if isinstance(latest, dt.datetime) else dt.date.fromisoformat(str(latest)[:10])
    assert answer["time_range"]["as_of"] == day.isoformat()
    start = day - dt.timedelta(days=29)
    assert answer["time_range"]["start"] == start.isoformat()
    ((total,),) = await _sql(
        engines[name],
        f"SELECT SUM(amount) FROM payments WHERE paid_at >= '{start.isoformat()}' "
        f"AND paid_at < '{(day + dt.timedelta(days=1)).isoformat()}'",
    )
    assert answer["rows"][0]["revenue"] == pytest.approx(float(total), abs=TOLERANCE)
    assert any("latest date in the data" in note for note in answer["notes"])


@pytest.mark.parametrize("name", ENGINES)
async def test_injection_in_filter_values_is_bound_and_changes_nothing(
    name: str, engines: dict[str, Any]
) -> None:
    engine = engines[name]
    before = await _sql(engine, "SELECT COUNT(*) FROM orders")
    for value in [
        "France' OR '1'='1",
        "x'); DROP TABLE orders; --",
        'France" OR "1"="1',
        "France\\' OR 1=1 -- ",
    ]:
        answer = await _ask(
            engine,
            metrics=["orders"],
            group_by=["country"],
            filters=[{"dimension": "country", "op": "=", "value": value}],
        )
        assert answer["rows"] == []  # no country has that literal name, as SQL with the literal says
        assert value not in answer["sql"] and list(answer["parameters"].values()) == [value]
    answer = await _ask(
        engine,
        metrics=["orders"],
        filters=[{"dimension": "country", "op": "in", "value": ["Italy", "Italy' OR '1'='1"]}],
    )
    (italy,) = await _sql(
        engine,
        "SELECT COUNT(*) FROM orders o JOIN customers c ON c.customer_id = o.customer_id WHERE c.country = 'Italy'",
    )
    assert answer["rows"][0]["orders"] == int(italy[0])
    assert await _sql(engine, "SELECT COUNT(*) FROM orders") == before


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ({"metrics": ["revnue"]}, "unknown metric 'revnue' in source 'shop'; metrics: revenue, orders,"),
        ({"metrics": ['revenue"; DROP TABLE payments; --']}, "unknown metric"),
        ({"metrics": ["revenue"], "group_by": ["country; DELETE FROM orders"]}, "dimensions: country, city,"),
        (
            {"metrics": ["orders"], "filters": [{"dimension": "email", "value": "a"}]},
            "unknown dimension 'email'",
        ),
        (
            {"metrics": ["revenue"], "group_by": ["category"]},
            "dimensions for revenue: country, city, status, method",
        ),
        ({"metrics": ["revenue"], "order_by": "revenue; DROP TABLE payments"}, "cannot order by"),
        ({"metrics": ["revenue"], "compare_to": "previous_year"}, "compare_to needs a time_range"),
        (
            {"metrics": ["orders"], "filters": [{"dimension": "status", "op": "in", "value": "PAID"}]},
            "takes a list",
        ),
        (
            {"metrics": ["active_products", "units_sold"], "grain": "month"},
            "metric 'active_products' has no time column, so it takes no grain or compare_to",
        ),
        (
            {"metrics": ["products"], "time_range": "last_month"},
            "a time_range only beside a dated metric",
        ),
    ],
)
async def test_unknown_or_injected_names_are_refused_with_the_allowed_names(
    question: dict[str, Any],
    expected: str,
    duckdb_engine: Any,
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await _ask(duckdb_engine, **question)
    assert expected in refused.value.message and "\n" not in refused.value.message


# --- through MCP ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def served(
    tmp_path_factory: pytest.TempPathFactory, make_runtime: Callable[..., Any]
) -> AsyncIterator[Runtime]:
    base = tmp_path_factory.mktemp("metrics")
    shop = base / "shop"
    shop.mkdir()
    await load_shop(
        Source(name="shop", kind="files", url=SecretStr(f"files://{shop}"), redacted_url="shop"), PLAN
    )
    toml = base / "sources.toml"
    toml.write_text(
        f'[sources.shop]\nurl = "files://{shop}"\nmodel = "shop"\n[sources.plain]\nurl = "files://{shop}"\n'
    )
    async with make_runtime(customers=None, sources_path=toml) as runtime:
        yield runtime


async def test_query_metrics_through_mcp_equals_sql_and_reads_its_definitions(
    served: Runtime,
    duckdb_engine: Any,
) -> None:
    async with Client(app_for(served, "analyst").mcp) as client:
        answer = await call(
            client,
            "query_metrics",
            source="shop",
            metrics=["revenue"],
            group_by=["country"],
            time_range="last_quarter",
            as_of="2025-10-05",
            order_by="-revenue",
        )
        resource = await client.read_resource("metrics://shop")
    expected = _expected(
        await _sql(
            duckdb_engine,
            f"SELECT c.country, SUM(p.amount) FROM {PAID} WHERE p.paid_at >= '2025-07-01' "
            "AND p.paid_at < '2025-10-01' GROUP BY c.country",
        )
    )
    _assert_equal(_by_key(answer, ["country"], "revenue"), expected)
    assert answer["time_range"]["start"] == "2025-07-01" and answer["time_range"]["end"] == "2025-09-30"
    assert answer["sql"].startswith("SELECT") and answer["model"] == "shop"
    import json

    catalogue = json.loads(resource[0].text)  # type: ignore[union-attr]
    assert catalogue["version"] == MODEL.version and "revenue" in catalogue["metrics"]
    assert catalogue["metrics"]["revenue"]["column"] == "amount"


async def test_query_metrics_through_mcp_refuses_in_one_line_and_needs_an_analyst(served: Runtime) -> None:
    async with Client(app_for(served, "analyst").mcp) as client:
        text = await refusal(client, "query_metrics", source="shop", metrics=["profit"])
        assert "unknown metric 'profit'" in text and "revenue" in text
        text = await refusal(client, "query_metrics", source="plain", metrics=["revenue"])
        assert "no metric definitions" in text
    async with Client(app_for(served, "viewer").mcp) as client:
        result = await client.call_tool(
            "query_metrics", {"source": "shop", "metrics": ["revenue"]}, raise_on_error=False
        )
        assert result.is_error


async def test_telecom_metrics_on_the_built_in_database_through_mcp_equal_sql(
    runtime: Runtime, connect: Callable[[str], Client]
) -> None:
    async with connect("analyst") as client:
        answer = await call(
            client,
            "query_metrics",
            source="main",
            metrics=["revenue", "arpu", "churn_rate"],
            group_by=["account_type"],
        )
        usage = await call(
            client,
            "query_metrics",
            source="main",
            metrics=["avg_quality", "data_usage"],
            group_by=["event_type"],
        )
    async with runtime.db.pool.acquire() as conn:
        revenue = await conn.fetch(
            "SELECT c.account_type, SUM(r.amount) AS total, SUM(r.amount) / COUNT(DISTINCT r.customer_id) AS arpu "
            "FROM revenue r JOIN customers c ON c.customer_id = r.customer_id GROUP BY c.account_type"
        )
        churn = await conn.fetch(
            "SELECT account_type, AVG(CASE WHEN is_churned THEN 1.0 ELSE 0.0 END) AS rate FROM customers "
            "GROUP BY account_type"
        )
        events = await conn.fetch(
            "SELECT event_type, AVG(network_quality_score) AS quality, SUM(data_usage_mb) AS usage "
            "FROM network_events GROUP BY event_type"
        )
    _assert_equal(_by_key(answer, ["account_type"], "revenue"), {row[0]: row["total"] for row in revenue})
    _assert_equal(_by_key(answer, ["account_type"], "arpu"), {row[0]: row["arpu"] for row in revenue})
    _assert_equal(_by_key(answer, ["account_type"], "churn_rate"), {row[0]: row["rate"] for row in churn})
    _assert_equal(_by_key(usage, ["event_type"], "avg_quality"), {row[0]: row["quality"] for row in events})
    _assert_equal(_by_key(usage, ["event_type"], "data_usage"), {row[0]: row["usage"] for row in events})


BASE_MODEL = """
name: tiny
version: 2
customer: {relation: people, key: id, signup_time: joined}
relations:
  people: {table: people, key: id}
  visits: {table: visits, key: visit_id, joins: {people: person_id}}
"""


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            "metrics: {visits: {description: v, aggregation: median, relation: visits, column: x}}",
            "metrics.visits.aggregation: Input should be 'sum', 'count', 'count_distinct', 'avg' or 'ratio'",
        ),
        (
            "metrics: {share: {description: s, aggregation: ratio, numerator: visits, denominator: people}}",
            "metrics.share.numerator: 'visits' is not a metric that aggregates a relation",
        ),
        (
            "metrics: {total: {description: t, aggregation: sum, relation: visits}}",
            "aggregation sum needs a column",
        ),
        (
            "metrics: {visits: {description: v, aggregation: count, relation: trips}}",
            "metrics.visits.relation: 'trips' is not a relation; relations: people, visits",
        ),
        (
            "dimensions: {region: {relation: places, column: region}}",
            "dimensions.region.relation: 'places' is not a relation",
        ),
        (
            "metrics: {n: {description: n, aggregation: count, relation: visits, "
            "filter: [{column: 'x; DROP TABLE people', op: '=', value: 1}]}}",
            "is not a name (letters, digits and _)",
        ),
        (
            "metrics: {n: {description: n, aggregation: count, relation: people, time: visits.at}}",
            "metrics.n.time: 'visits' is not a relation reached from 'people'",
        ),
    ],
)
def test_a_broken_metric_or_dimension_is_one_line_naming_the_field(sections: str, expected: str) -> None:
    from warehouse.models import ModelError, parse_model

    with pytest.raises(ModelError) as refused:
        parse_model(BASE_MODEL + sections + "\n", "'tiny.yaml'")
    assert expected in refused.value.message and "\n" not in refused.value.message


async def test_weekly_buckets_start_on_monday_and_every_engine_agrees(engines: dict[str, Any]) -> None:
    window = {"start": "2025-03-01", "end": "2025-03-31"}
    answers = [
        (await _ask(engines[name], metrics=["orders", "revenue"], grain="week", time_range=window))["rows"]
        for name in ENGINES
    ]
    assert answers[0] and all(dt.date.fromisoformat(row["week"]).weekday() == 0 for row in answers[0])
    for other in answers[1:]:
        assert [row["week"] for row in other] == [row["week"] for row in answers[0]]
        assert [row["orders"] for row in other] == [row["orders"] for row in answers[0]]
        assert [row["revenue"] for row in other] == pytest.approx(
            [row["revenue"] for row in answers[0]], abs=TOLERANCE
        )
    ((count,),) = await _sql(
        engines["postgresql"],
        "SELECT COUNT(*) FROM orders WHERE order_date >= '2025-03-01' AND order_date < '2025-04-01'",
    )
    assert sum(row["orders"] for row in answers[0]) == int(count)


# --- get_record -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ENGINES)
async def test_an_order_comes_with_its_customer_items_payment_and_shipment_as_sql_has_them(
    name: str, engines: dict[str, Any]
) -> None:
    from warehouse.models.records import get_record

    engine = engines[name]
    ((order_id,),) = await _sql(engine, "SELECT MIN(order_id) FROM orders WHERE status = 'DELIVERED'")
    answer = await get_record(engine, MODEL, "orders", str(order_id), source="shop")
    ((customer_id, total),) = await _sql(
        engine, f"SELECT customer_id, total FROM orders WHERE order_id = {order_id}"
    )
    assert answer["record"]["order_id"] == int(order_id) and answer["record"]["total"] == pytest.approx(
        float(total)
    )
    assert answer["parents"]["customers"]["customer_id"] == int(customer_id)
    items = await _sql(
        engine, f"SELECT order_item_id, quantity FROM order_items WHERE order_id = {order_id} ORDER BY 1"
    )
    found = answer["children"]["order_items"]["rows"]
    assert [(row["order_item_id"], row["quantity"]) for row in found] == [(int(a), int(b)) for a, b in items]
    ((paid,),) = await _sql(engine, f"SELECT amount FROM payments WHERE order_id = {order_id}")
    (payment,) = answer["children"]["payments"]["rows"]
    assert payment["amount"] == pytest.approx(float(paid))
    assert len(answer["children"]["shipments"]["rows"]) == 1
    customer = await get_record(engine, MODEL, "customers", int(customer_id), source="shop")
    ((orders,),) = await _sql(engine, f"SELECT COUNT(*) FROM orders WHERE customer_id = {customer_id}")
    assert len(customer["children"]["orders"]["rows"]) == min(int(orders), 100)
    assert customer["children"]["orders"]["truncated"] is (int(orders) > 100)


async def test_get_record_refuses_unknown_entities_and_missing_keys_in_one_line(served: Runtime) -> None:
    async with Client(app_for(served, "analyst").mcp) as client:
        text = await refusal(client, "get_record", source="shop", entity="users; DROP TABLE orders", key=1)
        assert "unknown entity" in text and "customers, products, orders" in text
        for hostile in ["1 OR 1=1", "1; DROP TABLE orders", "1' OR '1'='1"]:
            text = await refusal(client, "get_record", source="shop", entity="orders", key=hostile)
            assert "key must be a number or a code" in text
        text = await refusal(client, "get_record", source="shop", entity="orders", key=10**12)
        assert "no orders with key" in text
        found = await call(client, "get_record", source="shop", entity="products", key=1)
    assert found["record"]["product_id"] == 1 and "order_items" in found["children"]
