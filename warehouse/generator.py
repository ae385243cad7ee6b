"""Deterministic synthetic telecom data, vectorised with numpy: same arguments, same rows (ids included).

The effects an analysis must find are planted here: churn Basic > Premium > Enterprise, ARPU
Enterprise > Premium > Basic, and poorer network quality raises the odds of churn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np

from core.errors import InvalidInput

DEFAULT_START = date(2024, 1, 1)
DEFAULT_END = date(2025, 12, 31)
MAX_CUSTOMERS = 5_000_000

ACCOUNT_TYPES = np.array(["Basic", "Premium", "Enterprise"])
ACCOUNT_SHARES = np.array([0.60, 0.30, 0.10])
# Log-odds of churn at average network quality; Basic churns most, Enterprise least.
CHURN_BASE_LOGIT = np.array([-0.55, -1.35, -2.30])
# Each point of customer quality below the mean multiplies the odds of churn by e^1.1 = 3.
CHURN_QUALITY_SLOPE = -1.1
QUALITY_MEAN = 3.6
# Mean transaction amount per account type (currency units); ARPU follows the same order.
AMOUNT_MEAN = np.array([22.0, 55.0, 160.0])

GENDERS = np.array(["Male", "Female", "Other", "Unspecified"])
GENDER_SHARES = np.array([0.48, 0.48, 0.02, 0.02])
LOCATIONS = np.array(
    [
        "London",
        "Manchester",
        "Birmingham",
        "Leeds",
        "Glasgow",
        "Liverpool",
        "Bristol",
        "Sheffield",
        "Edinburgh",
        "Cardiff",
        "Belfast",
        "Newcastle",
        "Nottingham",
        "Leicester",
        "Southampton",
    ]
)
LOCATION_SHARES = np.array([20, 8, 8, 6, 6, 5, 5, 5, 5, 5, 4, 6, 6, 5, 6], dtype=float) / 100

EVENT_TYPES = np.array(["call", "sms", "data"])
EVENT_SHARES = np.array([0.45, 0.20, 0.35])
EVENT_QUALITY_OFFSET = np.array([0.0, 0.15, -0.2])
EVENTS_PER_CUSTOMER = 30

SERVICE_TYPES = np.array(["voice", "data", "sms", "subscription"])
SERVICE_SHARES = np.array([0.25, 0.30, 0.10, 0.35])
PAYMENT_METHODS = np.array(["credit_card", "debit_card", "bank_transfer", "mobile_wallet"])
PAYMENT_SHARES = np.array([0.40, 0.30, 0.15, 0.15])
TRANSACTIONS_PER_CUSTOMER = 8

_EPOCH_2000 = datetime(2000, 1, 1)
_MICROS_PER_DAY = 86_400 * 1_000_000


@dataclass(frozen=True)
class GenerationPlan:
    customers: int
    seed: int
    start_date: date
    end_date: date


@dataclass
class Customers:
    customer_id: np.ndarray  # (n, 16) uint8
    created_at: np.ndarray  # int64 microseconds since 2000-01-01
    age: np.ndarray  # int32
    gender: np.ndarray  # str
    location: np.ndarray  # str
    account_type: np.ndarray  # int8 index into ACCOUNT_TYPES
    is_churned: np.ndarray  # bool
    churn_date: np.ndarray  # int64 micros, valid where is_churned
    quality: np.ndarray  # float64, the customer's typical network quality (not stored)


@dataclass
class Events:
    event_id: np.ndarray  # (m, 16) uint8
    customer_index: np.ndarray  # int64 index into customers
    event_timestamp: np.ndarray  # int64 micros
    event_type: np.ndarray  # int8 index into EVENT_TYPES
    network_quality_score: np.ndarray  # float64
    duration_seconds: np.ndarray  # int32
    data_usage_mb: np.ndarray  # float64


@dataclass
class Transactions:
    transaction_id: np.ndarray  # (k, 16) uint8
    customer_index: np.ndarray  # int64
    transaction_date: np.ndarray  # int64 micros
    amount_cents: np.ndarray  # int64
    service_type: np.ndarray  # int8 index into SERVICE_TYPES
    payment_method: np.ndarray  # int8 index into PAYMENT_METHODS


@dataclass
class Dataset:
    plan: GenerationPlan
    customers: Customers
    events: Events
    transactions: Transactions

    @property
    def row_count(self) -> int:
        return (
            len(self.customers.created_at)
            + len(self.events.event_timestamp)
            + len(self.transactions.transaction_date)
        )


def parse_date(value: str | date | None, name: str, default: date) -> date:
    if value is None or value == "":
        return default
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InvalidInput(f"{name} '{str(value)[:40]}' is not a date; use YYYY-MM-DD") from None


def make_plan(
    customers: int,
    seed: int,
    start_date: str | date | None = None,
    end_date: str | date | None = None,
) -> GenerationPlan:
    start, end = checked_arguments(customers, seed, start_date, end_date, MAX_CUSTOMERS)
    return GenerationPlan(customers, seed, start, end)


def checked_arguments(
    customers: object,
    seed: object,
    start_date: str | date | None,
    end_date: str | date | None,
    most_customers: int,
) -> tuple[date, date]:
    """The checks every generator's plan shares (InvalidInput, one line, on the first bad argument): the
    customer count, the seed and a window of at least 30 days; returns the window's first and last day."""
    if isinstance(customers, bool) or not isinstance(customers, int):
        raise InvalidInput("customers must be a whole number")
    if customers <= 0:
        raise InvalidInput(f"customers must be at least 1, got {customers}")
    if customers > most_customers:
        raise InvalidInput(f"customers must be at most {most_customers:,}, got {customers:,}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InvalidInput("seed must be a whole number from 0 to 2^63-1")
    start = parse_date(start_date, "start-date", DEFAULT_START)
    end = parse_date(end_date, "end-date", DEFAULT_END)
    if end <= start:
        raise InvalidInput(f"end-date {end} must be after start-date {start}")
    if (end - start).days < 30:
        raise InvalidInput("the date range must span at least 30 days")
    return start, end


def _micros(day: date) -> int:
    return (datetime.combine(day, datetime.min.time()) - _EPOCH_2000) // timedelta(microseconds=1)


def _uuid4_bytes(rng: np.random.Generator, count: int) -> np.ndarray:
    raw = rng.integers(0, 256, size=(count, 16), dtype=np.uint8)
    raw[:, 6] = (raw[:, 6] & 0x0F) | 0x40  # version 4
    raw[:, 8] = (raw[:, 8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw


def _spread(rng: np.random.Generator, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """A uniform instant in [low, high) for each pair, whole microseconds."""
    spread: np.ndarray = low + (rng.random(len(low)) * (high - low)).astype(np.int64)
    return spread


def generate(plan: GenerationPlan) -> Dataset:
    rng = np.random.default_rng(plan.seed)
    n = plan.customers
    start, end = _micros(plan.start_date), _micros(plan.end_date) + _MICROS_PER_DAY - 1
    span = end - start

    # Customers sign up in the first 85% of the range, so everyone has some history.
    created_at = start + (rng.random(n) * span * 0.85).astype(np.int64)
    age = np.clip(np.rint(rng.normal(42, 14, n)), 18, 85).astype(np.int32)
    gender = GENDERS[rng.choice(len(GENDERS), n, p=GENDER_SHARES)]
    location = LOCATIONS[rng.choice(len(LOCATIONS), n, p=LOCATION_SHARES)]
    account = rng.choice(3, n, p=ACCOUNT_SHARES).astype(np.int8)
    quality = np.clip(rng.normal(QUALITY_MEAN, 0.45, n), 1.6, 4.9)

    # Exposure: customers who joined earlier had more time to churn.
    exposure = (end - created_at) / span
    logit = CHURN_BASE_LOGIT[account] + CHURN_QUALITY_SLOPE * (quality - QUALITY_MEAN)
    logit = logit + np.log(np.clip(exposure, 0.05, None)) * 0.5
    churned = rng.random(n) < 1.0 / (1.0 + np.exp(-logit))
    earliest_churn = np.minimum(created_at + 30 * _MICROS_PER_DAY, end)
    churn_date = np.where(churned, _spread(rng, earliest_churn, np.full(n, end)), 0)
    active_until = np.where(churned, churn_date, end)

    customer_ids = _uuid4_bytes(rng, n)
    customers = Customers(
        customer_ids, created_at, age, gender, location, account, churned, churn_date, quality
    )

    # Network events: about 30 per customer inside the customer's active life.
    per_customer = rng.poisson(EVENTS_PER_CUSTOMER, n)
    owner = np.repeat(np.arange(n), per_customer)
    m = len(owner)
    event_type = rng.choice(3, m, p=EVENT_SHARES).astype(np.int8)
    score = quality[owner] + EVENT_QUALITY_OFFSET[event_type] + rng.normal(0, 0.55, m)
    score = np.round(np.clip(score, 1.0, 5.0), 2)
    duration = np.zeros(m, dtype=np.int32)
    is_call, is_data = event_type == 0, event_type == 2
    duration[is_call] = np.ceil(rng.exponential(180, is_call.sum())).astype(np.int32)
    duration[is_data] = np.ceil(rng.exponential(600, is_data.sum())).astype(np.int32)
    usage = np.zeros(m)
    usage[is_data] = np.round(rng.lognormal(3.2, 1.0, is_data.sum()), 3)
    events = Events(
        _uuid4_bytes(rng, m),
        owner,
        _spread(rng, created_at[owner], active_until[owner]),
        event_type,
        score,
        duration,
        usage,
    )

    # Revenue: about 8 transactions per customer; the amount scales with the account type.
    per_customer = rng.poisson(TRANSACTIONS_PER_CUSTOMER, n)
    payer = np.repeat(np.arange(n), per_customer)
    k = len(payer)
    amount = rng.gamma(4.0, AMOUNT_MEAN[account[payer]] / 4.0)
    amount_cents = np.clip(np.rint(amount * 100), 1, 999_999).astype(np.int64)
    transactions = Transactions(
        _uuid4_bytes(rng, k),
        payer,
        _spread(rng, created_at[payer], active_until[payer]),
        amount_cents,
        rng.choice(4, k, p=SERVICE_SHARES).astype(np.int8),
        rng.choice(4, k, p=PAYMENT_SHARES).astype(np.int8),
    )
    return Dataset(plan, customers, events, transactions)


def expected_rows(customers: int) -> int:
    """Rows the generator makes for this many customers, on average."""
    return int(math.ceil(customers * (1 + EVENTS_PER_CUSTOMER + TRANSACTIONS_PER_CUSTOMER)))
