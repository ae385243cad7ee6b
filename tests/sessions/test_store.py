"""The session store's domain API (what query, analysis and chart tools call), on real Redis."""

from __future__ import annotations

import decimal
import uuid

import numpy as np
import pandas as pd
import pytest

from core.errors import Forbidden, InvalidInput, NotFound
from mcp_server.auth import Identity
from mcp_server.runtime import Runtime

ANALYST = Identity("analyst", "analyst", "k1")
ANALYST2 = Identity("analyst2", "analyst", "k2")
VIEWER = Identity("viewer", "viewer", "k3")
ADMIN = Identity("admin", "admin", "k4")


async def test_a_saved_dataset_loads_back_equal_with_its_types(sessions_runtime: Runtime) -> None:
    store = sessions_runtime.services.session_store
    session = (await store.create(ANALYST, "database"))["session_id"]
    frame = pd.DataFrame(
        {
            "customer_id": [uuid.UUID(int=i) for i in range(5)],
            "account_type": ["Basic", "Premium", "Enterprise", "Basic", None],
            "age": np.array([21, 35, 47, 62, 30], dtype="int64"),
            "quality": [1.5, 2.25, np.nan, 4.0, 5.0],
            "amount": [
                decimal.Decimal("10.25"),
                decimal.Decimal("3.10"),
                None,
                decimal.Decimal("0.01"),
                None,
            ],
            "created_at": pd.to_datetime(["2024-01-01", "2024-02-03", "2024-03-04", None, "2025-12-31"]),
            "is_churned": [True, False, False, True, False],
        }
    )
    metadata = await store.save_dataset(ANALYST, session, "customers_sample", frame, {"sql": "SELECT 1"})
    assert metadata["name"] == "customers_sample"
    assert metadata["rows"] == 5
    assert [c["name"] for c in metadata["columns"]] == list(frame.columns)
    assert metadata["source"] == {"sql": "SELECT 1"}
    assert metadata["size_bytes"] > 0

    loaded = await store.load_dataset(ANALYST, session, "customers_sample")
    assert list(loaded.columns) == list(frame.columns)
    assert loaded["customer_id"].tolist() == [str(uuid.UUID(int=i)) for i in range(5)]
    assert loaded["age"].tolist() == [21, 35, 47, 62, 30]
    assert loaded["age"].dtype == np.int64
    assert loaded["quality"].iloc[3] == 4.0 and np.isnan(loaded["quality"].iloc[2])
    assert loaded["amount"].iloc[0] == decimal.Decimal("10.25")
    assert pd.isna(loaded["created_at"].iloc[3])
    assert loaded["created_at"].iloc[4] == pd.Timestamp("2025-12-31")
    assert loaded["is_churned"].tolist() == [True, False, False, True, False]
    assert pd.isna(loaded["account_type"].iloc[4])


async def test_reading_a_dataset_key_gives_metadata_and_pages_of_rows(sessions_runtime: Runtime) -> None:
    store = sessions_runtime.services.session_store
    session = (await store.create(ANALYST, "database"))["session_id"]
    frame = pd.DataFrame({"n": range(45), "when": pd.date_range("2024-01-01", periods=45, freq="D")})
    await store.save_dataset(ANALYST, session, "days", frame, {"sql": "SELECT n"})

    first = await store.read(ANALYST, session, "days")
    assert first["kind"] == "dataset"
    value = first["value"]
    assert value["rows"] == 45 and value["offset"] == 0 and value["next_offset"] == 20
    assert [row["n"] for row in value["preview"]] == list(range(20))
    assert value["preview"][0]["when"].startswith("2024-01-01")
    last = (await store.read(ANALYST, session, "days", offset=40, limit=20))["value"]
    assert [row["n"] for row in last["preview"]] == [40, 41, 42, 43, 44]
    assert last["next_offset"] is None


async def test_saved_values_come_back_with_their_kind(sessions_runtime: Runtime) -> None:
    store = sessions_runtime.services.session_store
    session = (await store.create(ANALYST, "database"))["session_id"]
    analysis = {
        "analysis_type": "churn_rate",
        "results": {"overall": np.float64(0.25), "missing": float("nan")},
    }
    saved = await store.save_value(ANALYST, session, "churn", analysis, kind="analysis")
    assert saved["kind"] == "analysis"
    read = await store.read(ANALYST, session, "churn")
    assert read["kind"] == "analysis"
    assert read["value"] == {"analysis_type": "churn_rate", "results": {"overall": 0.25, "missing": None}}


async def test_loading_an_unknown_dataset_lists_the_datasets_there_are(sessions_runtime: Runtime) -> None:
    store = sessions_runtime.services.session_store
    session = (await store.create(ANALYST, "database"))["session_id"]
    await store.save_dataset(ANALYST, session, "alpha", pd.DataFrame({"x": [1]}), {})
    await store.save_dataset(ANALYST, session, "beta", pd.DataFrame({"x": [2]}), {})
    await store.save_value(ANALYST, session, "note", {"text": "not a dataset"}, kind="value")
    with pytest.raises(NotFound, match=r"dataset 'gamma' not in session .*datasets: alpha, beta$"):
        await store.load_dataset(ANALYST, session, "gamma")
    with pytest.raises(NotFound, match="dataset 'note' not in session"):
        await store.load_dataset(ANALYST, session, "note")


async def test_datasets_follow_the_access_rules(sessions_runtime: Runtime) -> None:
    store = sessions_runtime.services.session_store
    session = (await store.create(ANALYST, "database", access_level="read", user_id="viewer"))["session_id"]
    await store.save_dataset(ANALYST, session, "mine", pd.DataFrame({"x": [1, 2]}), {})
    absent = str(uuid.uuid4())
    with pytest.raises(NotFound) as hidden:
        await store.load_dataset(ANALYST2, session, "mine")
    with pytest.raises(NotFound) as missing:
        await store.load_dataset(ANALYST2, absent, "mine")
    assert str(hidden.value).replace(session, "ID") == str(missing.value).replace(absent, "ID")
    assert (await store.load_dataset(VIEWER, session, "mine"))["x"].tolist() == [1, 2]
    assert (await store.load_dataset(ADMIN, session, "mine"))["x"].tolist() == [1, 2]
    with pytest.raises(Forbidden):
        await store.save_dataset(VIEWER, session, "theirs", pd.DataFrame({"x": [1]}), {})
    with pytest.raises(NotFound):
        await store.save_dataset(ANALYST2, session, "theirs", pd.DataFrame({"x": [1]}), {})


async def test_store_rejects_malformed_session_ids_and_key_names(sessions_runtime: Runtime) -> None:
    store = sessions_runtime.services.session_store
    session = (await store.create(ANALYST, "database"))["session_id"]
    for bad in ("", "42", "not-a-uuid", "*", session + "x", "../" + session):
        with pytest.raises(InvalidInput, match="is not a session id"):
            await store.read(ANALYST, bad, "k")
    for bad in ("", "a" * 65, "*", "a*", "a b", "k:1", "[abc]", "-x", "naïve", "a\nb"):
        with pytest.raises(InvalidInput, match="is not a valid key name"):
            await store.save_value(ANALYST, session, bad, {"v": 1}, kind="value")
    assert [k["key"] for k in (await store.describe(ANALYST, session))["keys"]] == []
