"""Shared by the analytics tests: independent SQL reads, tolerant comparison, the tool call, session datasets."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from mcp_server.auth import Identity
from mcp_server.runtime import Runtime
from tests.support import call

REL = 1e-6  # every figure must match its independent computation to this relative tolerance
ANALYST = Identity("analyst", "analyst", "test")


def close(expected: Any, abs_tol: float = 1e-12) -> Any:
    return pytest.approx(expected, rel=REL, abs=abs_tol)


async def sql_rows(runtime: Runtime, text: str, *args: Any) -> list[dict[str, Any]]:
    async with runtime.db.connection() as conn:
        return [dict(row) for row in await conn.fetch(text, *args)]


async def sql_frame(runtime: Runtime, text: str, *args: Any) -> pd.DataFrame:
    return pd.DataFrame(await sql_rows(runtime, text, *args))


async def analyze(
    client: Any, analysis_type: str, data_source: str = "database", detail: str = "full", **parameters: Any
) -> dict:
    """An analysis with its whole detail (figures are checked against SQL); the default summary is tested
    on its own (tests/analytics/test_lean.py)."""
    return await call(
        client,
        "analyze_data",
        data_source=data_source,
        analysis_type=analysis_type,
        parameters=parameters,
        detail=detail,
        include_sql=True,
    )


async def session_with(runtime: Runtime, datasets: dict[str, str | pd.DataFrame]) -> str:
    """A new session of the analyst holding each dataset: the rows of a SQL query, or a frame built in the test."""
    store = runtime.services.session_store
    session = (await store.create(ANALYST, "database", "read"))["session_id"]
    for name, source in datasets.items():
        if isinstance(source, str):
            frame, meta = await sql_frame(runtime, source), {"query": source}
        else:
            frame, meta = source, {"query": "built in the test"}
        await store.save_dataset(ANALYST, session, name, frame, meta)
    return session
