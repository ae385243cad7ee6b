"""What the query log keeps of a query (its literals hidden) and the console's calls-per-minute."""

from __future__ import annotations

import pytest

from console.records import CallRate, Page
from core.errors import InvalidInput
from warehouse.query import LOGGED_TEXT_CHARS, QueryLogEntry, masked_text


@pytest.mark.parametrize(
    ("query", "shown"),
    [
        (
            "SELECT c.age AS years, 'Basic' FROM customers c WHERE c.age > 30",
            "select c.age as years, ? from customers c where c.age > ?",
        ),
        ("select * from t where x = -1.5e3 and y = E'sec\\nret'", "select * from t where x = -? and y = ?"),
        ("SELECT $tag$hidden$tag$, B'1010', X'ff' FROM t;", "select ?, ?, ? from t"),
        ("SELECT amount FROM revenue WHERE id = %(id)s", "select amount from revenue where id = %(id)s"),
        ('SELECT "Mixed Case" FROM "T" -- password=hunter2', 'select "Mixed Case" from "T"'),
        ("SELECT 1 /* token amcp_abc */ + 2", "select ? + ?"),
        ("SELECT 'Ωmega' AS ω", "select ? as ω"),
    ],
)
def test_a_logged_query_keeps_its_names_and_hides_every_literal(query, shown):
    assert masked_text(query) == shown


def test_a_query_that_does_not_scan_is_logged_without_text_and_long_text_is_cut():
    assert masked_text("SELECT 'unterminated") is None
    long = masked_text("SELECT " + ", ".join(f"column_{i}" for i in range(2_000)) + " FROM t")
    assert long is not None and len(long) == LOGGED_TEXT_CHARS and long.endswith("...")


def test_a_log_entry_carries_the_masked_text_and_never_a_value():
    entry = QueryLogEntry.of(
        user_id="u", query="SELECT * FROM t WHERE name = 'Alice'", duration_ms=1, row_count=0, outcome="ok"
    )
    assert entry.query_text == "select * from t where name = ?"
    assert "Alice" not in repr(entry)


def test_calls_per_minute_are_counted_over_the_last_minute():
    rate = CallRate(window_seconds=60)
    assert rate.observe(0, now=1000) is None
    assert rate.observe(30, now=1030) == 60.0  # 30 calls in 30 s since the first sample
    # From the newest sample at least a minute old: t=1030 (30 calls), so 60 calls in 60 s.
    assert rate.observe(90, now=1090) == 60.0
    assert rate.observe(100, now=1150) == 10.0  # from t=1090: 10 calls in 60 s
    assert rate.observe(100, now=1160) == 8.57  # still from t=1090: 10 calls in 70 s


@pytest.mark.parametrize(("limit", "offset"), [(0, 0), (501, 0), (10, -1), ("ten", 0), (10, 2_000_000)])
def test_pages_are_capped(limit, offset):
    with pytest.raises(InvalidInput):
        Page.of(limit, offset)
