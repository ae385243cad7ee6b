"""First-start seeding for containers: create the schema, and load demo data only when `customers` is empty.

Run by deploy/entrypoint.sh when SEED_ON_START=true; DEMO_CUSTOMERS and DEMO_SEED choose the data.
Waits up to SEED_WAIT_SECONDS (default 60) for PostgreSQL to accept connections.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.errors import Unavailable  # noqa: E402
from mcp_server.config import ConfigError, Settings  # noqa: E402
from warehouse.db import Database  # noqa: E402
from warehouse.generator import generate, make_plan  # noqa: E402

_SEED_LOCK = 7_310_421_002  # any constant apart from the schema lock (warehouse/db.py)


async def seed_if_empty(settings: Settings, wait_seconds: float) -> str:
    if settings.database_url is None:
        return "DATABASE_URL is not set: the embedded database seeds itself; nothing to do"
    # One holds the lock, the rest work; apply_schema sets up the query role as the server would.
    db = Database(settings.database_url, query_url=settings.database_query_url, min_size=1, max_size=3)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            await db.start()
            break
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
    try:
        await db.apply_schema()
        # Replicas starting together: one checks and loads while the others wait, then find data.
        async with db.connection() as lock:
            await lock.execute("SELECT pg_advisory_lock($1)", _SEED_LOCK)
            try:
                existing = await db.row_count("customers")
                if existing:
                    return f"database already has {existing:,} customers; not seeding"
                plan = make_plan(settings.demo_customers, settings.demo_seed)
                data = await asyncio.to_thread(generate, plan)
                report = await db.replace_data(data)
            finally:
                await lock.execute("SELECT pg_advisory_unlock($1)", _SEED_LOCK)
        return (
            f"seeded {report.customers:,} customers, {report.network_events:,} network events, "
            f"{report.revenue:,} revenue rows (seed {plan.seed}) in {report.seconds:.1f}s"
        )
    finally:
        await db.close()


def main() -> int:
    try:
        settings = Settings.from_env()
        wait = float(os.environ.get("SEED_WAIT_SECONDS", "60"))
    except (ConfigError, ValueError) as error:
        print(f"seed_if_empty: configuration error: {error}", file=sys.stderr)
        return 2
    try:
        print(f"seed_if_empty: {asyncio.run(seed_if_empty(settings, wait))}", file=sys.stderr)
    except Unavailable as error:
        print(f"seed_if_empty: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
