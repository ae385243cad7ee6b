"""The schema, the deterministic generator and the bulk load, on a real PostgreSQL."""

from __future__ import annotations

import asyncpg
import numpy as np
import pytest

from warehouse.generator import generate, make_plan

FINGERPRINT = """
SELECT
    (SELECT count(*) FROM customers) AS customers,
    (SELECT count(*) FROM network_events) AS events,
    (SELECT count(*) FROM revenue) AS revenue,
    (SELECT sum(amount) FROM revenue) AS revenue_sum,
    (SELECT round(sum(network_quality_score)::numeric, 4) FROM network_events) AS quality_sum,
    (SELECT sum(age) FROM customers) AS age_sum,
    (SELECT count(*) FROM customers WHERE is_churned) AS churned,
    (SELECT md5(string_agg(customer_id::text, ',' ORDER BY customer_id)) FROM customers) AS ids,
    (SELECT md5(string_agg(event_id::text || event_timestamp::text, ',' ORDER BY event_id))
       FROM network_events) AS event_ids
"""


async def fingerprint(runtime) -> dict:
    async with runtime.db.connection() as conn:
        return dict(await conn.fetchrow(FINGERPRINT))


async def test_schema_rejects_rows_that_break_its_constraints(runtime):
    bad_rows = [
        "INSERT INTO customers (age, gender, account_type) VALUES (12, 'Male', 'Basic')",
        "INSERT INTO customers (age, gender, account_type) VALUES (30, 'Robot', 'Basic')",
        "INSERT INTO customers (age, gender, account_type) VALUES (30, 'Male', 'Gold')",
        "INSERT INTO customers (age, is_churned) VALUES (30, TRUE)",  # churned without a date
        "INSERT INTO customers (age, is_churned, churn_date) VALUES (30, FALSE, now())",
        "INSERT INTO network_events (customer_id, event_type) VALUES (gen_random_uuid(), 'call')",
        "INSERT INTO network_events (customer_id, event_type, network_quality_score) "
        "SELECT customer_id, 'call', 6.0 FROM customers LIMIT 1",
        "INSERT INTO network_events (customer_id, event_type) "
        "SELECT customer_id, 'fax' FROM customers LIMIT 1",
        "INSERT INTO network_events (customer_id, duration_seconds) "
        "SELECT customer_id, -1 FROM customers LIMIT 1",
        "INSERT INTO revenue (customer_id, amount) SELECT customer_id, -5 FROM customers LIMIT 1",
        "INSERT INTO revenue (customer_id, amount, payment_method) "
        "SELECT customer_id, 5, 'cash' FROM customers LIMIT 1",
    ]
    before = await fingerprint(runtime)
    async with runtime.db.connection() as conn:
        for statement in bad_rows:
            with pytest.raises((asyncpg.CheckViolationError, asyncpg.ForeignKeyViolationError)):
                await conn.execute(statement)
    assert await fingerprint(runtime) == before


async def test_deleting_a_customer_cascades_to_events_and_revenue(make_runtime):
    async with make_runtime(customers=50, seed=3) as rt, rt.db.connection() as conn:
        victim = await conn.fetchval(
            "SELECT customer_id FROM customers c WHERE EXISTS "
            "(SELECT 1 FROM revenue r WHERE r.customer_id = c.customer_id) LIMIT 1"
        )
        await conn.execute("DELETE FROM customers WHERE customer_id = $1", victim)
        for table in ("network_events", "revenue"):
            left = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE customer_id = $1", victim)
            assert left == 0


async def test_every_index_the_contract_names_exists(runtime):
    async with runtime.db.connection() as conn:
        rows = await conn.fetch("SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    definitions = {(r["tablename"], r["indexdef"].split(" USING btree ")[1]) for r in rows}
    for expected in [
        ("customers", "(created_at)"),
        ("customers", "(account_type)"),
        ("customers", "(is_churned)"),
        ("customers", "(is_churned, created_at)"),
        ("network_events", "(customer_id)"),
        ("network_events", "(event_timestamp)"),
        ("network_events", "(event_type)"),
        ("network_events", "(customer_id, event_timestamp)"),
        ("revenue", "(customer_id)"),
        ("revenue", "(transaction_date)"),
        ("revenue", "(service_type)"),
    ]:
        assert expected in definitions


async def test_same_seed_gives_identical_data_and_a_rerun_does_not_duplicate(make_runtime):
    async with make_runtime(customers=300, seed=11) as first, make_runtime(customers=300, seed=11) as second:
        one, two = await fingerprint(first), await fingerprint(second)
        assert one == two
        # Re-running the same load replaces the data: same fingerprint, no duplicates.
        await second.db.replace_data(generate(make_plan(300, 11)))
        assert await fingerprint(second) == one


async def test_a_different_seed_gives_different_data(make_runtime):
    async with make_runtime(customers=300, seed=11) as first, make_runtime(customers=300, seed=12) as other:
        one, two = await fingerprint(first), await fingerprint(other)
        assert one["ids"] != two["ids"]
        assert one["revenue_sum"] != two["revenue_sum"]


async def test_a_failed_load_leaves_the_old_data_intact(make_runtime):
    async with make_runtime(customers=200, seed=5) as rt:
        before = await fingerprint(rt)
        broken = generate(make_plan(200, 6))
        broken.events.network_quality_score[-1] = 9.0  # violates the CHECK constraint
        with pytest.raises(asyncpg.CheckViolationError):
            await rt.db.replace_data(broken)
        assert await fingerprint(rt) == before


def test_the_generator_respects_its_date_range_and_volumes():
    plan = make_plan(2_000, 1, "2024-03-01", "2024-09-30")
    data = generate(plan)
    n = len(data.customers.created_at)
    assert n == 2_000
    assert 28 * n < len(data.events.event_timestamp) < 32 * n
    assert 7 * n < len(data.transactions.transaction_date) < 9 * n
    # All instants inside the range (microseconds since 2000-01-01).
    lower = (np.datetime64("2024-03-01") - np.datetime64("2000-01-01")).astype("timedelta64[us]").astype(int)
    upper = (np.datetime64("2024-10-01") - np.datetime64("2000-01-01")).astype("timedelta64[us]").astype(int)
    for stamps in (
        data.customers.created_at,
        data.events.event_timestamp,
        data.transactions.transaction_date,
    ):
        assert stamps.min() >= lower and stamps.max() < upper
    churned = data.customers.is_churned
    assert (data.customers.churn_date[churned] >= data.customers.created_at[churned]).all()


async def test_the_planted_effects_are_in_the_loaded_data(runtime):
    async with runtime.db.connection() as conn:
        churn = {
            r["account_type"]: r["rate"]
            for r in await conn.fetch(
                "SELECT account_type, avg(is_churned::int) AS rate FROM customers GROUP BY 1"
            )
        }
        arpu = {
            r["account_type"]: r["arpu"]
            for r in await conn.fetch(
                "SELECT c.account_type, sum(r.amount) / count(DISTINCT r.customer_id) AS arpu "
                "FROM revenue r JOIN customers c USING (customer_id) GROUP BY 1"
            )
        }
        quality_churn = await conn.fetchval(
            "SELECT corr(q, churned) FROM (SELECT c.customer_id, avg(e.network_quality_score) AS q, "
            "max(c.is_churned::int) AS churned FROM customers c JOIN network_events e "
            "USING (customer_id) GROUP BY 1) s"
        )
        mismatched = await conn.fetchval(
            "SELECT count(*) FROM customers WHERE is_churned <> (churn_date IS NOT NULL)"
        )
    assert churn["Basic"] > churn["Premium"] > churn["Enterprise"]
    assert arpu["Enterprise"] > arpu["Premium"] > arpu["Basic"]
    assert quality_churn < -0.1
    assert mismatched == 0


async def test_a_session_setting_never_leaks_to_the_next_holder_of_a_pooled_connection(make_runtime):
    async with make_runtime(customers=None, pool_min_size=1, pool_max_size=1) as rt:
        async with rt.db.connection(read=True) as conn:
            pid = conn.get_server_pid()
            await conn.execute("SET work_mem = '7MB'")
        assert await rt.db.data_version() >= 0
        async with rt.db.connection(read=True) as conn:
            assert conn.get_server_pid() == pid  # the same session, reset on release
            assert await conn.fetchval("SHOW work_mem") != "7MB"


async def test_analyses_run_with_jit_off_and_more_work_mem_as_settings_of_their_connections(make_runtime):
    from warehouse import aggregates

    settings = (
        "SELECT current_setting('jit') AS jit, current_setting('work_mem') AS work_mem, "
        "current_setting('plan_cache_mode') AS plan_cache_mode"
    )
    expected = {"jit": "off", "work_mem": "64MB", "plan_cache_mode": "force_custom_plan"}
    async with make_runtime(customers=50, pool_min_size=1, pool_max_size=1) as rt:
        assert dict((await aggregates.fetch(rt.db, settings))[0]) == expected
        async with rt.db.connection(read=True) as conn:  # a holder changes one: reset on release ...
            await conn.execute("SET work_mem = '7MB'")
        # ... to the connection's own settings, not PostgreSQL's defaults: no SET round trip per call
        assert dict((await aggregates.fetch(rt.db, settings))[0]) == expected
        async with rt.db.connection(read=True) as conn:
            assert dict(await conn.fetchrow(settings)) == expected
        async with rt.db.connection(query=True) as conn:  # agent SQL runs with the server's own settings
            assert await conn.fetchval("SHOW work_mem") != "64MB"
