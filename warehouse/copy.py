"""PostgreSQL binary COPY payloads built from numpy arrays, without a Python object per row.

Rows of one table are grouped so that every group has fixed-width rows (text columns take a
handful of values); each group is one numpy structured array turned into bytes in one go.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterator

import numpy as np

from warehouse.generator import (
    ACCOUNT_TYPES,
    EVENT_TYPES,
    PAYMENT_METHODS,
    SERVICE_TYPES,
    Dataset,
)

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
TRAILER = struct.pack("!h", -1)

EVENT_COLUMNS = [
    "event_id",
    "customer_id",
    "event_timestamp",
    "event_type",
    "network_quality_score",
    "duration_seconds",
    "data_usage_mb",
]
REVENUE_COLUMNS = [
    "transaction_id",
    "customer_id",
    "transaction_date",
    "amount",
    "service_type",
    "payment_method",
]
CUSTOMER_COLUMNS = [
    "customer_id",
    "created_at",
    "age",
    "gender",
    "location",
    "account_type",
    "is_churned",
    "churn_date",
]


def _field(name: str, width: int, kind: str) -> list[tuple[str, str] | tuple[str, str, int]]:
    """A length prefix plus the value; kind is a numpy type code ('>i8', 'S', 'u1', ...)."""
    if kind == "S":
        return [(f"{name}_len", ">i4"), (name, f"S{width}")]
    if kind == "u16":
        return [(f"{name}_len", ">i4"), (name, "u1", 16)]
    return [(f"{name}_len", ">i4"), (name, kind)]


def _numeric_2dp(cents: np.ndarray) -> np.ndarray:
    """NUMERIC binary for amounts below 10,000.00: two base-10000 digits, weight 0, scale 2."""
    out = np.zeros((len(cents), 6), dtype=">i2")
    out[:, 0] = 2  # ndigits
    out[:, 1] = 0  # weight
    out[:, 2] = 0  # sign: positive
    out[:, 3] = 2  # display scale
    out[:, 4] = cents // 100
    out[:, 5] = (cents % 100) * 100
    return out


def event_chunks(data: Dataset) -> Iterator[bytes]:
    events, ids = data.events, data.customers.customer_id
    yield HEADER
    for code, label in enumerate(EVENT_TYPES):
        picked = np.flatnonzero(events.event_type == code)
        text = label.encode()
        dtype = np.dtype(
            [("nfields", ">i2")]
            + _field("event_id", 16, "u16")
            + _field("customer_id", 16, "u16")
            + _field("ts", 8, ">i8")
            + _field("type", len(text), "S")
            + _field("quality", 8, ">f8")
            + _field("duration", 4, ">i4")
            + _field("usage", 8, ">f8")
        )
        for block in _blocks(picked):
            rows = np.empty(len(block), dtype=dtype)
            rows["nfields"] = 7
            rows["event_id_len"], rows["event_id"] = 16, events.event_id[block]
            rows["customer_id_len"] = 16
            rows["customer_id"] = ids[events.customer_index[block]]
            rows["ts_len"], rows["ts"] = 8, events.event_timestamp[block]
            rows["type_len"], rows["type"] = len(text), text
            rows["quality_len"], rows["quality"] = 8, events.network_quality_score[block]
            rows["duration_len"], rows["duration"] = 4, events.duration_seconds[block]
            rows["usage_len"], rows["usage"] = 8, events.data_usage_mb[block]
            yield rows.tobytes()
    yield TRAILER


def revenue_chunks(data: Dataset) -> Iterator[bytes]:
    tx, ids = data.transactions, data.customers.customer_id
    yield HEADER
    for service, payment in itertools.product(range(len(SERVICE_TYPES)), range(len(PAYMENT_METHODS))):
        picked = np.flatnonzero((tx.service_type == service) & (tx.payment_method == payment))
        service_text = SERVICE_TYPES[service].encode()
        payment_text = PAYMENT_METHODS[payment].encode()
        dtype = np.dtype(
            [("nfields", ">i2")]
            + _field("transaction_id", 16, "u16")
            + _field("customer_id", 16, "u16")
            + _field("ts", 8, ">i8")
            + [("amount_len", ">i4"), ("amount", ">i2", 6)]
            + _field("service", len(service_text), "S")
            + _field("payment", len(payment_text), "S")
        )
        for block in _blocks(picked):
            rows = np.empty(len(block), dtype=dtype)
            rows["nfields"] = 6
            rows["transaction_id_len"], rows["transaction_id"] = 16, tx.transaction_id[block]
            rows["customer_id_len"] = 16
            rows["customer_id"] = ids[tx.customer_index[block]]
            rows["ts_len"], rows["ts"] = 8, tx.transaction_date[block]
            rows["amount_len"], rows["amount"] = 12, _numeric_2dp(tx.amount_cents[block])
            rows["service_len"], rows["service"] = len(service_text), service_text
            rows["payment_len"], rows["payment"] = len(payment_text), payment_text
            yield rows.tobytes()
    yield TRAILER


def customer_chunks(data: Dataset) -> Iterator[bytes]:
    c = data.customers
    yield HEADER
    groups = itertools.product(
        np.unique(c.gender), np.unique(c.location), range(len(ACCOUNT_TYPES)), (False, True)
    )
    for gender, location, account, churned in groups:
        picked = np.flatnonzero(
            (c.gender == gender)
            & (c.location == location)
            & (c.account_type == account)
            & (c.is_churned == churned)
        )
        if len(picked) == 0:
            continue
        g, loc, acc = gender.encode(), location.encode(), ACCOUNT_TYPES[account].encode()
        churn_field = _field("churn", 8, ">i8") if churned else [("churn_len", ">i4")]
        dtype = np.dtype(
            [("nfields", ">i2")]
            + _field("customer_id", 16, "u16")
            + _field("created", 8, ">i8")
            + _field("age", 4, ">i4")
            + _field("gender", len(g), "S")
            + _field("location", len(loc), "S")
            + _field("account", len(acc), "S")
            + _field("churned", 1, "u1")
            + churn_field
        )
        rows = np.empty(len(picked), dtype=dtype)
        rows["nfields"] = 8
        rows["customer_id_len"], rows["customer_id"] = 16, c.customer_id[picked]
        rows["created_len"], rows["created"] = 8, c.created_at[picked]
        rows["age_len"], rows["age"] = 4, c.age[picked]
        rows["gender_len"], rows["gender"] = len(g), g
        rows["location_len"], rows["location"] = len(loc), loc
        rows["account_len"], rows["account"] = len(acc), acc
        rows["churned_len"], rows["churned"] = 1, int(churned)
        if churned:
            rows["churn_len"], rows["churn"] = 8, c.churn_date[picked]
        else:
            rows["churn_len"] = -1  # NULL
        yield rows.tobytes()
    yield TRAILER


def _blocks(indices: np.ndarray, size: int = 200_000) -> Iterator[np.ndarray]:
    for offset in range(0, len(indices), size):
        yield indices[offset : offset + size]
