"""Seeding throughput: the vectorised binary-COPY load against a naive executemany, in one run.

Usage: python bench/seed.py [--customers 20000] [--baseline-customers 4000]
Uses TEST_DATABASE_URL / the local PostgreSQL when reachable, else an embedded one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import platform
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import scratch_database  # noqa: E402
from warehouse.db import Database  # noqa: E402
from warehouse.generator import (  # noqa: E402
    ACCOUNT_TYPES,
    EVENT_TYPES,
    PAYMENT_METHODS,
    SERVICE_TYPES,
    generate,
    make_plan,
)

EPOCH = dt.datetime(2000, 1, 1)


def _when(micros: int) -> dt.datetime:
    return EPOCH + dt.timedelta(microseconds=int(micros))


async def naive_load(db: Database, customers: int, seed: int) -> tuple[int, float]:
    """What one would write first: build Python rows, INSERT ... executemany, indexes in place."""
    started = time.perf_counter()
    data = generate(make_plan(customers, seed))
    c, e, t = data.customers, data.events, data.transactions
    ids = [uuid.UUID(bytes=bytes(row)) for row in c.customer_id]
    customer_rows = [
        (
            ids[i],
            _when(c.created_at[i]),
            int(c.age[i]),
            str(c.gender[i]),
            str(c.location[i]),
            str(ACCOUNT_TYPES[c.account_type[i]]),
            bool(c.is_churned[i]),
            _when(c.churn_date[i]) if c.is_churned[i] else None,
        )
        for i in range(len(ids))
    ]
    event_rows = [
        (
            uuid.UUID(bytes=bytes(e.event_id[j])),
            ids[e.customer_index[j]],
            _when(e.event_timestamp[j]),
            str(EVENT_TYPES[e.event_type[j]]),
            float(e.network_quality_score[j]),
            int(e.duration_seconds[j]),
            float(e.data_usage_mb[j]),
        )
        for j in range(len(e.event_timestamp))
    ]
    revenue_rows = [
        (
            uuid.UUID(bytes=bytes(t.transaction_id[k])),
            ids[t.customer_index[k]],
            _when(t.transaction_date[k]),
            t.amount_cents[k] / 100,
            str(SERVICE_TYPES[t.service_type[k]]),
            str(PAYMENT_METHODS[t.payment_method[k]]),
        )
        for k in range(len(t.transaction_date))
    ]
    async with db.connection() as conn, conn.transaction():
        await conn.execute("TRUNCATE customers, network_events, revenue")
        await conn.executemany(
            "INSERT INTO customers (customer_id, created_at, age, gender, location, account_type, "
            "is_churned, churn_date) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            customer_rows,
        )
        await conn.executemany(
            "INSERT INTO network_events (event_id, customer_id, event_timestamp, event_type, "
            "network_quality_score, duration_seconds, data_usage_mb) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            event_rows,
        )
        await conn.executemany(
            "INSERT INTO revenue (transaction_id, customer_id, transaction_date, amount, service_type, "
            "payment_method) VALUES ($1, $2, $3, $4, $5, $6)",
            revenue_rows,
        )
    rows = len(customer_rows) + len(event_rows) + len(revenue_rows)
    return rows, time.perf_counter() - started


async def fast_load(db: Database, customers: int, seed: int) -> tuple[int, float]:
    started = time.perf_counter()
    data = await asyncio.to_thread(generate, make_plan(customers, seed))
    report = await db.replace_data(data)
    return report.rows, time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--baseline-customers", type=int, default=4_000)
    args = parser.parse_args()
    async with scratch_database() as url:
        db = Database(url, min_size=1, max_size=2)
        await db.start()
        await db.apply_schema()
        try:
            await fast_load(db, 500, 1)  # warm-up: connections, catalog caches
            best_rows, best_seconds = 0, float("inf")
            for _ in range(3):
                rows, seconds = await fast_load(db, args.customers, 42)
                if seconds < best_seconds:
                    best_rows, best_seconds = rows, seconds
            naive_rows, naive_seconds = await naive_load(db, args.baseline_customers, 42)
        finally:
            await db.close()
    fast_rate, naive_rate = best_rows / best_seconds, naive_rows / naive_seconds
    print(
        f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"seed (binary COPY): {best_rows:,} rows in {best_seconds:.2f} s = {fast_rate:,.0f} rows/s "
        f"(best of 3, generation + load + indexes + ANALYZE)"
    )
    print(
        f"naive executemany:  {naive_rows:,} rows in {naive_seconds:.2f} s = {naive_rate:,.0f} rows/s "
        f"({args.baseline_customers:,} customers)"
    )
    print(
        f"ratio: {fast_rate / naive_rate:.1f}x faster (target >= 5x); target >= 250,000 rows/s: "
        f"{'met' if fast_rate >= 250_000 else 'NOT met'}"
    )


if __name__ == "__main__":
    asyncio.run(main())
