"""The console's and read API's fixtures: a runtime of its own (its data is replaced by the admin
actions) with a files source beside `main`, served over real HTTP on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from mcp_server.runtime import Runtime
from tests.support import serving

CUSTOMERS = 300
SEED = 11
DEMO_CUSTOMERS = 120  # what reset loads
DEMO_SEED = 5
PLANS = pd.DataFrame(
    {
        "plan": ["basic", "plus", "basic", "pro", "plus", "basic"],
        "fee": [5.0, 9.5, 5.0, 20.0, 9.5, 5.0],
        "started": pd.to_datetime(
            ["2024-01-03", "2024-01-15", "2024-02-01", "2024-02-20", "2024-03-05", "2024-03-30"]
        ),
    }
)


@pytest.fixture(scope="module")
async def console_runtime(
    make_runtime: Callable[..., Any], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Runtime]:
    folder: Path = tmp_path_factory.mktemp("console_sources")
    (folder / "data").mkdir()
    PLANS.to_csv(folder / "data" / "plans.csv", index=False)
    toml = folder / "sources.toml"
    toml.write_text(f'[sources.exports]\nurl = "files://{folder / "data"}"\ndescription = "plan exports"\n')
    async with make_runtime(
        customers=CUSTOMERS, seed=SEED, sources_path=toml, demo_customers=DEMO_CUSTOMERS, demo_seed=DEMO_SEED
    ) as runtime:
        yield runtime


@pytest.fixture(scope="module")
async def base_url(console_runtime: Runtime) -> AsyncIterator[str]:
    async with serving(console_runtime) as url:
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        yield client


async def plain_sql(runtime: Runtime, query: str, *args: Any) -> list[Any]:
    """The rows of `query` on the runtime's database, over a connection of the test's own."""
    import asyncpg

    conn = await asyncpg.connect(runtime.settings.database_url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()
