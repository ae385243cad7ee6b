"""The one JSON sanitiser (sessions.datasets.json_ready) behind every answer and every stored value."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid

import numpy as np
import pandas as pd

from sessions.datasets import json_ready


def test_missing_values_of_every_kind_become_null():
    missing = [None, float("nan"), np.float64("nan"), float("inf"), pd.NaT, pd.NA, np.datetime64("NaT")]
    assert json_ready(missing) == [None] * len(missing)


def test_times_become_iso_text_whatever_their_type_and_precision():
    nanosecond = np.datetime64("2024-01-01T00:00:00.000000001")
    assert json_ready(nanosecond) == "2024-01-01T00:00:00.000000001"
    assert json_ready(np.datetime64("2024-03-05T10:20:30")) == "2024-03-05T10:20:30"
    assert json_ready(pd.Timestamp("2024-01-01 00:30", tz="Europe/Paris")) == "2023-12-31T23:30:00+00:00"
    assert json_ready(dt.datetime(2024, 1, 2, 3, 4, 5, 500_000)) == "2024-01-02T03:04:05.500"
    assert json_ready(dt.date(2024, 1, 2)) == "2024-01-02"
    assert json_ready(pd.Timedelta(seconds=90)) == 90.0


def test_other_values_become_plain_json():
    identifier = uuid.uuid4()
    value = {
        1: np.int64(3),
        "exact": decimal.Decimal("12345678901234567.25"),
        "price": decimal.Decimal("19.99"),
        "id": identifier,
        "blob": b"\x00\xff",
        "array": np.array([1.5, np.nan]),
        "set": frozenset({"a"}),
    }
    answer = json_ready(value)
    assert answer == {
        "1": 3,
        "exact": "12345678901234567.25",
        "price": 19.99,
        "id": str(identifier),
        "blob": "AP8=",
        "array": [1.5, None],
        "set": ["a"],
    }
    json.dumps(answer, allow_nan=False)
