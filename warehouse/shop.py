"""The shop demo dataset: deterministic synthetic e-commerce data (products, customers, orders, order_items,
payments, shipments), vectorised with numpy: same arguments, same rows, keys included.

Rules every generated dataset keeps: SKUs and e-mails are unique; an order's status follows
PLACED -> PAID -> SHIPPED -> DELIVERED (or is CANCELLED before payment); each line's unit price is its
product's price and line_total = quantity * unit_price; subtotal = sum(line_total), total = subtotal +
tax + shipping_fee; every paid order has exactly one captured payment of the order's total, in one
currency; a cancelled (or still PLACED) order has no payment; a shipment leaves after its payment;
every instant lies in the plan's window (products are listed in the year before it). Orders lean to
weekends (DAY_WEIGHTS). Money is exact: whole cents here, DECIMAL(12,2) in every engine.

Planted effects an analysis must find (a customer's repeat-order chance is geometric, so these show as
fewer orders per customer, fewer repeat buyers and more churn -- no order in the last 90 days):
- customers in CHURNING_COUNTRY (Italy) come back far less often (repeat chance 0.45 against 0.72);
- customers who pay by LOW_REPEAT_METHOD (bank_transfer) come back less often (repeat chance x 0.7).

Names, surnames, cities and mail domains come from Faker with each country's locale, drawn once per
process into small pools, Faker seeded per locale and column; the plan's seed picks from them (Faker
stays off the per-row path). The same seed gives the same rows with the same Faker version (pools may
differ across Faker releases).
"""

from __future__ import annotations

import contextlib
import unicodedata
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

import numpy as np

from core.errors import InvalidInput
from warehouse.generator import checked_arguments

DEFAULT_CUSTOMERS = 20_000
DEFAULT_SEED = 42
DEFAULT_START = date(2024, 1, 1)
DEFAULT_END = date(2025, 12, 31)
MAX_CUSTOMERS = 1_000_000
MAX_PRODUCTS = 100_000
DEFAULT_PRICE_MEDIAN = 30.0  # currency units: the median list price before each category's factor
DEFAULT_PRICE_SIGMA = 0.8  # spread of the log-normal list prices
MAX_PRICE_CENTS = 999_999  # 9,999.99: a list price fits every engine's DECIMAL(12,2) with room for totals

# Tables in load (dependency) order, each with its columns and their kinds; the key is the first column.
# kinds: key (bigint), int (integer), text, money (whole cents -> DECIMAL(12,2)), time (seconds since
# 1970, no time zone; NULL_TIME is NULL), bool.
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "products": (
        ("product_id", "key"),
        ("sku", "text"),
        ("name", "text"),
        ("category", "text"),
        ("price", "money"),
        ("active", "bool"),
        ("created_at", "time"),
    ),
    "customers": (
        ("customer_id", "key"),
        ("email", "text"),
        ("first_name", "text"),
        ("last_name", "text"),
        ("city", "text"),
        ("country", "text"),
        ("created_at", "time"),
    ),
    "orders": (
        ("order_id", "key"),
        ("customer_id", "key"),
        ("order_date", "time"),
        ("status", "text"),
        ("subtotal", "money"),
        ("tax", "money"),
        ("shipping_fee", "money"),
        ("total", "money"),
    ),
    "order_items": (
        ("order_item_id", "key"),
        ("order_id", "key"),
        ("product_id", "key"),
        ("quantity", "int"),
        ("unit_price", "money"),
        ("line_total", "money"),
    ),
    "payments": (
        ("payment_id", "key"),
        ("order_id", "key"),
        ("method", "text"),
        ("amount", "money"),
        ("currency", "text"),
        ("paid_at", "time"),
        ("txn_ref", "text"),
    ),
    "shipments": (
        ("shipment_id", "key"),
        ("order_id", "key"),
        ("carrier", "text"),
        ("tracking_no", "text"),
        ("shipped_at", "time"),
        ("delivered_at", "time"),
        ("status", "text"),
    ),
}
NULL_TIME = np.iinfo(np.int64).min

COUNTRIES = np.array(
    ["United Kingdom", "Germany", "France", "Spain", "Italy", "Netherlands", "Poland", "Sweden"], dtype=object
)
LOCALES = ("en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "sv_SE")
COUNTRY_SHARES = np.array([0.24, 0.20, 0.16, 0.10, 0.10, 0.08, 0.07, 0.05])
VAT_BASIS_POINTS = np.array([2000, 1900, 2000, 2100, 2200, 2100, 2300, 2500], dtype=np.int64)
CHURNING_COUNTRY = "Italy"
REPEAT_CHANCE = 0.72  # chance that a customer orders again after each order
CHURNING_COUNTRY_REPEAT_CHANCE = 0.45
PAYMENT_METHODS = np.array(["card", "paypal", "apple_pay", "bank_transfer", "klarna"], dtype=object)
PAYMENT_SHARES = np.array([0.45, 0.25, 0.12, 0.10, 0.08])
LOW_REPEAT_METHOD = "bank_transfer"
LOW_REPEAT_FACTOR = 0.7
CURRENCY = "EUR"
ORDER_GAP_DAYS = 45.0  # mean days between a customer's orders
CANCEL_SHARE = 0.06
FREE_SHIPPING_FROM_CENTS = 5_000
SHIPPING_FEE_CENTS = 499
# Monday .. Sunday: weekends carry about 40% more orders than a weekday.
DAY_WEIGHTS = np.array([1.0, 0.95, 0.95, 1.0, 1.1, 1.45, 1.4])
HOUR_WEIGHTS = np.array(
    [
        1,
        0.5,
        0.3,
        0.2,
        0.2,
        0.3,
        0.8,
        1.5,
        2.5,
        3,
        3.2,
        3.4,
        3.8,
        3.6,
        3.2,
        3,
        3.2,
        3.8,
        4.5,
        5.2,
        5.5,
        4.8,
        3.5,
        2,
    ]
)
CATEGORIES = np.array(
    ["Electronics", "Home", "Garden", "Toys", "Books", "Clothing", "Sports", "Beauty"], dtype=object
)
CATEGORY_PRICE_FACTOR = np.array([3.5, 1.3, 1.1, 0.8, 0.5, 1.0, 1.4, 0.7])
_NOUNS = {
    "Electronics": ["Headphones", "Speaker", "Charger", "Keyboard", "Monitor", "Camera", "Router"],
    "Home": ["Lamp", "Kettle", "Blanket", "Vase", "Mug Set", "Clock", "Cushion"],
    "Garden": ["Hose", "Planter", "Trowel", "Bird Feeder", "Lantern", "Pruner"],
    "Toys": ["Puzzle", "Robot Kit", "Board Game", "Kite", "Building Set", "Plush Bear"],
    "Books": ["Cookbook", "Novel", "Atlas", "Field Guide", "Notebook", "Sketchbook"],
    "Clothing": ["Jacket", "Sweater", "Scarf", "T-Shirt", "Sneakers", "Hoodie", "Cap"],
    "Sports": ["Yoga Mat", "Water Bottle", "Dumbbells", "Racket", "Backpack", "Helmet"],
    "Beauty": ["Face Cream", "Shampoo", "Perfume", "Lip Balm", "Hair Brush", "Soap Set"],
}
_ADJECTIVES = [
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Essential",
    "Premium",
    "Pro",
    "Smart",
    "Travel",
    "Vintage",
]
CARRIERS = np.array(["DHL", "DPD", "UPS", "GLS", "PostNL"], dtype=object)
CARRIER_SHARES = np.array([0.35, 0.25, 0.15, 0.15, 0.10])
_POOL_SIZES = {"first_name": 250, "last_name": 300, "city": 60, "free_email_domain": 8}
_POOL_SEED = 20_240_101
_DAY = 86_400
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class ShopPlan:
    customers: int
    seed: int
    start_date: date
    end_date: date
    products: int
    price_median: float
    price_sigma: float


def shop_plan(
    customers: int = DEFAULT_CUSTOMERS,
    seed: int = DEFAULT_SEED,
    start_date: str | date | None = None,
    end_date: str | date | None = None,
    *,
    products: int | None = None,
    price_median: float = DEFAULT_PRICE_MEDIAN,
    price_sigma: float = DEFAULT_PRICE_SIGMA,
) -> ShopPlan:
    """The validated arguments of one shop generation; InvalidInput (one line) on the first bad one.

    `products` defaults to one per 20 customers (50 to 5,000); list prices are log-normal with the
    given median (currency units, times each category's factor) and sigma.
    """
    start, end = checked_arguments(customers, seed, start_date, end_date, MAX_CUSTOMERS)
    if start.year < 2000 or end.year > 2099:
        raise InvalidInput("dates must lie between 2000-01-01 and 2099-12-31")
    if products is None:
        products = min(max(customers // 20, 50), 5_000)
    if isinstance(products, bool) or not isinstance(products, int) or not 1 <= products <= MAX_PRODUCTS:
        raise InvalidInput(f"products must be a whole number from 1 to {MAX_PRODUCTS:,}")
    if not isinstance(price_median, int | float) or not 0.5 <= price_median <= 1_000:
        raise InvalidInput("price_median must be a number from 0.5 to 1000 (currency units)")
    if not isinstance(price_sigma, int | float) or not 0 <= price_sigma <= 2:
        raise InvalidInput("price_sigma must be a number from 0 to 2")
    return ShopPlan(customers, seed, start, end, products, float(price_median), float(price_sigma))


ShopTables = dict[str, dict[str, np.ndarray]]


def generate_shop(plan: ShopPlan) -> ShopTables:
    """The six tables as column arrays, in TABLES order and with TABLES' columns, rows in key order.

    Text is an object array of str, money int64 cents, times int64 seconds since 1970 (NULL_TIME for
    NULL), keys int64, booleans bool.
    """
    rng = np.random.default_rng(plan.seed)
    start = _seconds(plan.start_date)
    end = _seconds(plan.end_date) + _DAY - 1
    span = end - start

    products = _products(rng, plan, start)
    price = products["price"]

    # Customers sign up in the first 90% of the window; each keeps one preferred payment method.
    n = plan.customers
    country = rng.choice(len(COUNTRIES), n, p=COUNTRY_SHARES)
    method = rng.choice(len(PAYMENT_METHODS), n, p=PAYMENT_SHARES)
    signed_up = start + (rng.random(n) * span * 0.9).astype(np.int64)
    customers = _customers(rng, country, signed_up)

    # Orders: a geometric number per customer (the planted effects lower the repeat chance), spaced
    # by exponential gaps; those falling after the window are never placed.
    repeat = np.where(COUNTRIES[country] == CHURNING_COUNTRY, CHURNING_COUNTRY_REPEAT_CHANCE, REPEAT_CHANCE)
    repeat = np.where(PAYMENT_METHODS[method] == LOW_REPEAT_METHOD, repeat * LOW_REPEAT_FACTOR, repeat)
    per_customer = np.minimum(rng.geometric(1.0 - repeat), 60)
    owner = np.repeat(np.arange(n), per_customer)
    first = np.r_[0, np.cumsum(per_customer)[:-1]]
    is_first = np.zeros(len(owner), dtype=bool)
    is_first[first] = True
    gaps = np.where(is_first, rng.exponential(2.0, len(owner)), rng.exponential(ORDER_GAP_DAYS, len(owner)))
    gaps = (gaps * _DAY).astype(np.int64)
    running = np.cumsum(gaps)
    placed = signed_up[owner] + running - np.repeat(running[first] - gaps[first], per_customer)
    placed = _weekend_skew(rng, placed, signed_up[owner], end)
    kept = placed <= end
    owner, placed = owner[kept], placed[kept]
    in_time = np.lexsort((owner, placed))  # order ids follow time; ties by customer
    owner, placed = owner[in_time], placed[in_time]
    m = len(owner)
    order_method = method[owner]

    # Status flow: cancelled before payment; paid minutes later (bank transfers take days); shipped,
    # then delivered, when those instants still fall inside the window.
    cancelled = rng.random(m) < CANCEL_SHARE
    slow = PAYMENT_METHODS[order_method] == LOW_REPEAT_METHOD
    pay_delay = np.where(slow, rng.uniform(0.5, 3.0, m) * _DAY, rng.uniform(30, 900, m)).astype(np.int64)
    paid_at = placed + pay_delay
    paid = ~cancelled & (paid_at <= end)
    shipped_at = paid_at + (rng.uniform(0.3, 3.0, m) * _DAY).astype(np.int64)
    shipped = paid & (shipped_at <= end)
    delivered_at = shipped_at + ((1.0 + rng.gamma(2.0, 1.0, m)) * _DAY).astype(np.int64)
    delivered = shipped & (delivered_at <= end)
    status = np.full(m, "PLACED", dtype=object)
    status[paid] = "PAID"
    status[shipped] = "SHIPPED"
    status[delivered] = "DELIVERED"
    status[cancelled] = "CANCELLED"

    # Lines: 1 + Poisson items per order, popular products more often, at the product's list price.
    lines = 1 + np.minimum(rng.poisson(1.3, m), 7)
    line_order = np.repeat(np.arange(m), lines)
    k = len(line_order)
    popularity = 1.0 / (rng.permutation(len(price)) + 5.0) ** 0.9
    product = rng.choice(len(price), k, p=popularity / popularity.sum())
    quantity = (1 + np.minimum(rng.poisson(0.35, k), 9)).astype(np.int32)
    unit_price = price[product]
    line_total = quantity.astype(np.int64) * unit_price
    line_starts = np.r_[0, np.cumsum(lines)[:-1]]
    subtotal = np.add.reduceat(line_total, line_starts)
    tax = (subtotal * VAT_BASIS_POINTS[country[owner]] + 5_000) // 10_000
    shipping_fee = np.where(subtotal < FREE_SHIPPING_FROM_CENTS, SHIPPING_FEE_CENTS, 0).astype(np.int64)
    total = subtotal + tax + shipping_fee
    order_ids = np.arange(1, m + 1, dtype=np.int64)
    orders = {
        "order_id": order_ids,
        "customer_id": owner.astype(np.int64) + 1,
        "order_date": placed,
        "status": status,
        "subtotal": subtotal,
        "tax": tax,
        "shipping_fee": shipping_fee,
        "total": total,
    }
    order_items = {
        "order_item_id": np.arange(1, k + 1, dtype=np.int64),
        "order_id": line_order.astype(np.int64) + 1,
        "product_id": product.astype(np.int64) + 1,
        "quantity": quantity,
        "unit_price": unit_price,
        "line_total": line_total,
    }

    paid_orders = np.flatnonzero(paid)
    payment_ids = np.arange(1, len(paid_orders) + 1, dtype=np.int64)
    payments = {
        "payment_id": payment_ids,
        "order_id": order_ids[paid_orders],
        "method": PAYMENT_METHODS[order_method[paid_orders]],
        "amount": total[paid_orders],
        "currency": np.full(len(paid_orders), CURRENCY, dtype=object),
        "paid_at": paid_at[paid_orders],
        "txn_ref": _references("txn_", _scramble(payment_ids, rng), 16, hexadecimal=True),
    }

    shipped_orders = np.flatnonzero(shipped)
    shipment_ids = np.arange(1, len(shipped_orders) + 1, dtype=np.int64)
    carrier = rng.choice(len(CARRIERS), len(shipped_orders), p=CARRIER_SHARES)
    arrived = delivered[shipped_orders]
    shipments = {
        "shipment_id": shipment_ids,
        "order_id": order_ids[shipped_orders],
        "carrier": CARRIERS[carrier],
        "tracking_no": _tracking_numbers(carrier, _scramble(shipment_ids, rng)),
        "shipped_at": shipped_at[shipped_orders],
        "delivered_at": np.where(arrived, delivered_at[shipped_orders], NULL_TIME),
        "status": np.where(arrived, "DELIVERED", "IN_TRANSIT").astype(object),
    }
    return {
        "products": products,
        "customers": customers,
        "orders": orders,
        "order_items": order_items,
        "payments": payments,
        "shipments": shipments,
    }


def row_counts(tables: ShopTables) -> dict[str, int]:
    return {name: len(next(iter(columns.values()))) for name, columns in tables.items()}


def _products(rng: np.random.Generator, plan: ShopPlan, start: int) -> dict[str, np.ndarray]:
    p = plan.products
    ids = np.arange(1, p + 1, dtype=np.int64)
    category = rng.integers(0, len(CATEGORIES), p)
    noun = rng.integers(0, 1_000, p)
    adjective = rng.integers(0, len(_ADJECTIVES), p)
    names = np.array(
        [
            f"{_ADJECTIVES[a]} {nouns[i % len(nouns)]}"
            for a, i, nouns in zip(
                adjective.tolist(), noun.tolist(), (_NOUNS[c] for c in CATEGORIES[category]), strict=True
            )
        ],
        dtype=object,
    )
    skus = np.array(
        [f"{str(c)[:3].upper()}-{i:06d}" for c, i in zip(CATEGORIES[category], ids.tolist(), strict=True)],
        dtype=object,
    )
    list_price = (
        plan.price_median * CATEGORY_PRICE_FACTOR[category] * np.exp(rng.normal(0, plan.price_sigma, p))
    )
    # Shop prices end in .99: 12.99, 4.99 (never below 0.99).
    price = np.clip(np.floor(list_price).astype(np.int64) * 100 + 99, 99, MAX_PRICE_CENTS)
    return {
        "product_id": ids,
        "sku": skus,
        "name": names,
        "category": CATEGORIES[category],
        "price": price,
        "active": rng.random(p) < 0.92,
        "created_at": start - 1 - (rng.random(p) * 365 * _DAY).astype(np.int64),
    }


def _customers(rng: np.random.Generator, country: np.ndarray, signed_up: np.ndarray) -> dict[str, np.ndarray]:
    n = len(country)
    first_name = np.empty(n, dtype=object)
    last_name = np.empty(n, dtype=object)
    city = np.empty(n, dtype=object)
    email = np.empty(n, dtype=object)
    ids = np.arange(1, n + 1, dtype=np.int64)
    for code, locale in enumerate(LOCALES):
        here = np.flatnonzero(country == code)
        pools = {column: _pool(locale, column) for column in _POOL_SIZES}
        picks = {column: rng.integers(0, len(pool), len(here)) for column, pool in pools.items()}
        first_name[here] = pools["first_name"][picks["first_name"]]
        last_name[here] = pools["last_name"][picks["last_name"]]
        city[here] = pools["city"][picks["city"]]
        # The customer id in the mailbox keeps every e-mail unique, whatever the names drawn.
        first_ascii = _ascii_pool(locale, "first_name")[picks["first_name"]]
        last_ascii = _ascii_pool(locale, "last_name")[picks["last_name"]]
        domains = pools["free_email_domain"][picks["free_email_domain"]]
        email[here] = [
            f"{f}.{last}{i}@{d}"
            for f, last, i, d in zip(first_ascii, last_ascii, ids[here].tolist(), domains, strict=True)
        ]
    return {
        "customer_id": ids,
        "email": email,
        "first_name": first_name,
        "last_name": last_name,
        "city": city,
        "country": COUNTRIES[country],
        "created_at": signed_up,
    }


@cache
def _faker(locale: str) -> Any:
    from faker import Faker

    fake = Faker(locale)
    for provider in fake.get_providers():
        # Some locales build their lists from sets (it_IT cities): put them in one order for every run.
        for attribute in ("cities", "first_names", "last_names"):
            listed = getattr(provider, attribute, None)
            if isinstance(listed, list | tuple):
                with contextlib.suppress(TypeError):  # values that do not compare keep their order
                    setattr(provider, attribute, sorted(listed))
    return fake


@cache
def _pool(locale: str, column: str) -> np.ndarray:
    """A pool of distinct Faker values for one locale and column, Faker seeded for that pair: the same
    pool in every run and process (the plan's seed picks from it), made once per process."""
    fake = _faker(locale)
    derived = np.random.SeedSequence([_POOL_SEED, LOCALES.index(locale), list(_POOL_SIZES).index(column)])
    fake.seed_instance(int(derived.generate_state(1, dtype=np.uint64)[0]))
    make = getattr(fake, column)
    values: dict[str, None] = {}
    for _ in range(_POOL_SIZES[column] * 3):
        values[str(make())] = None
        if len(values) == _POOL_SIZES[column]:
            break
    return np.array(list(values), dtype=object)


@cache
def _ascii_pool(locale: str, column: str) -> np.ndarray:
    """The pool as mailbox text: accents dropped, lower case, letters and digits only."""
    folded = []
    for value in _pool(locale, column):
        plain = unicodedata.normalize("NFKD", value.replace("ł", "l").replace("Ł", "L").replace("ß", "ss"))
        folded.append("".join(ch for ch in plain.lower() if ch.isascii() and ch.isalnum()) or "x")
    return np.array(folded, dtype=object)


def _weekend_skew(rng: np.random.Generator, placed: np.ndarray, earliest: np.ndarray, end: int) -> np.ndarray:
    """Each order moved to a day of its own week drawn by DAY_WEIGHTS, at an hour by HOUR_WEIGHTS (a
    week later if that lands before sign-up; left in place if it would leave the window)."""
    day = placed // _DAY
    monday = day - (day + 3) % 7  # 1970-01-01 was a Thursday
    weekday = rng.choice(7, len(placed), p=DAY_WEIGHTS / DAY_WEIGHTS.sum())
    hour = rng.choice(24, len(placed), p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    moved = (monday + weekday) * _DAY + hour * 3_600 + rng.integers(0, 3_600, len(placed))
    moved = np.where(moved < earliest, moved + 7 * _DAY, moved)  # before sign-up: the next week's day
    return np.where((moved >= earliest) & (moved <= end), moved, placed)


def _scramble(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A seeded bijection of 1..n onto 64-bit numbers that look random (so references stay unique)."""
    key = rng.integers(0, 2**63, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        x = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ key
        x ^= x >> np.uint64(31)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(29)
    return x


def _references(prefix: str, numbers: np.ndarray, width: int, *, hexadecimal: bool = False) -> np.ndarray:
    """prefix + each number in `width` digits (zero-padded), built as bytes in numpy, not per row."""
    heads = np.tile(np.frombuffer(prefix.encode(), dtype=np.uint8), (len(numbers), 1))
    return _text(np.column_stack([heads, _digits(numbers, width, 16 if hexadecimal else 10)]))


def _tracking_numbers(carrier: np.ndarray, numbers: np.ndarray) -> np.ndarray:
    # Unique per shipment: the scrambled number is a bijection, the carrier code only a prefix.
    codes = np.frombuffer(b"JDDP1ZGL3S", dtype=np.uint8).reshape(5, 2)[carrier]
    return _text(np.column_stack([codes, _digits(numbers, 20, 10)]))


def _digits(numbers: np.ndarray, width: int, base: int) -> np.ndarray:
    """(n, width) ASCII digits of unsigned 64-bit numbers, most significant first."""
    alphabet = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    out = np.empty((len(numbers), width), dtype=np.uint8)
    rest = numbers.astype(np.uint64)
    for position in range(width - 1, -1, -1):
        out[:, position] = alphabet[rest % np.uint64(base)]
        rest = rest // np.uint64(base)
    return out


def _text(ascii_rows: np.ndarray) -> np.ndarray:
    """An object array of str from an (n, width) array of ASCII bytes."""
    rows = np.ascontiguousarray(ascii_rows, dtype=np.uint8)
    return rows.view(f"S{rows.shape[1]}").ravel().astype(f"U{rows.shape[1]}").astype(object)


def _seconds(day: date) -> int:
    return (datetime.combine(day, datetime.min.time()) - _EPOCH) // timedelta(seconds=1)
