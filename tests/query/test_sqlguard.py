"""The SQL guard on its own (no database): what it refuses, what it accepts, how placeholders bind."""

from __future__ import annotations

from collections import Counter

import pytest

from core.errors import AnalyticsError, InvalidInput, QueryRefused
from tests.query.corpus import ATTACKS, LEGITIMATE
from warehouse.sqlguard import bind_placeholders, normalised, validate_select


def test_the_attack_corpus_has_at_least_40_strings_over_every_class():
    assert len(ATTACKS) >= 40
    classes = Counter(kind for kind, _, _ in ATTACKS)
    for required in (
        "stacked",
        "write",
        "ddl",
        "modifying cte",
        "select into",
        "copy",
        "file",
        "large object",
        "settings",
        "role",
        "advisory lock",
        "signal",
        "do",
        "prepare",
        "listen/notify",
        "vacuum",
        "comment",
        "case/whitespace",
        "catalog secret",
    ):
        assert classes[required] >= 1, required


@pytest.mark.parametrize(("kind", "sql", "fragment"), ATTACKS, ids=[f"{k}:{s[:40]}" for k, s, _ in ATTACKS])
def test_the_guard_refuses_every_attack_with_a_one_line_reason(kind, sql, fragment):
    with pytest.raises(QueryRefused) as raised:
        validate_select(sql)
    message = raised.value.message
    assert fragment.lower() in message.lower()
    assert "\n" not in message


@pytest.mark.parametrize("sql", LEGITIMATE)
def test_the_guard_accepts_legitimate_select_queries(sql):
    checked = validate_select(sql)
    assert not checked.sql.endswith(";")


def test_string_literals_keep_their_dashes_semicolons_and_slashes():
    checked = validate_select("SELECT 'a -- b; c /* d */' AS x;")
    assert checked.sql == "SELECT 'a -- b; c /* d */' AS x"


def test_a_syntax_error_names_the_character():
    with pytest.raises(InvalidInput, match=r"syntax error.*character 15"):
        validate_select("SELECT * FROM WHERE x = 1")


def test_an_empty_or_oversized_query_is_invalid_input():
    for sql in ("", "   \n", "SELECT '" + "x" * 100_001 + "'", "SELECT 1\x00"):
        with pytest.raises(InvalidInput):
            validate_select(sql)


def test_the_refused_function_is_named_even_when_schema_qualified():
    with pytest.raises(QueryRefused, match=r"function pg_terminate_backend\(\) is not allowed"):
        validate_select("SELECT pg_catalog.pg_terminate_backend(1)")


def test_now_and_random_mark_a_query_volatile_and_plain_aggregates_do_not():
    assert validate_select("SELECT now()").volatile
    assert validate_select("SELECT random()").volatile
    assert validate_select("SELECT current_timestamp").volatile
    assert not validate_select("SELECT count(*) FROM customers").volatile


def test_placeholders_become_positions_and_a_repeated_name_binds_once():
    bound = bind_placeholders("SELECT %(a)s, %(limit)s FROM t WHERE x = %(a)s", {"a": 1, "limit": 2})
    assert bound.sql == "SELECT $1, $2 FROM t WHERE x = $1"
    assert bound.names == ("a", "limit")
    assert bound.arguments({"a": 1, "limit": 2}) == [1, 2]


def test_placeholders_inside_string_literals_and_quoted_names_are_left_alone():
    sql = "SELECT '%(a)s' AS \"%(a)s\", $$%(a)s$$, %(a)s"
    bound = bind_placeholders(sql, {"a": 1})
    assert bound.sql == "SELECT '%(a)s' AS \"%(a)s\", $$%(a)s$$, $1"


def test_a_placeholder_without_a_value_and_a_value_without_a_placeholder_are_clear_errors():
    with pytest.raises(InvalidInput, match=r"placeholder %\(b\)s .*has no value.*given: a"):
        bind_placeholders("SELECT %(a)s, %(b)s", {"a": 1})
    with pytest.raises(InvalidInput, match="parameters extra are not used"):
        bind_placeholders("SELECT %(a)s", {"a": 1, "extra": 2})


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [("SELECT $1", "positional parameter '$1'"), ("SELECT %s", "malformed placeholder")],
)
def test_other_placeholder_styles_are_refused_with_the_fix(sql, fragment):
    with pytest.raises(InvalidInput, match=fragment.replace("$", r"\$")):
        bind_placeholders(sql, {})


def test_parameter_names_must_be_identifiers():
    with pytest.raises(InvalidInput, match="not valid"):
        bind_placeholders("SELECT 1", {"a b; drop": 1})


def test_positions_after_placeholders_map_back_to_the_agents_text():
    sql = "SELECT %(first)s, %(second)s, nope"
    bound = bind_placeholders(sql, {"first": 1, "second": 2})
    assert bound.original_position(bound.sql.index("nope")) == sql.index("nope")


def test_normalisation_folds_spacing_and_keyword_case_but_not_literals():
    assert normalised("SELECT  Age ,'A  B'\n FROM customers ;") == normalised(
        "select age , 'A  B' from CUSTOMERS"
    )
    assert normalised("SELECT 'A'") != normalised("SELECT 'a'")
    assert normalised('SELECT "Age"') != normalised("SELECT age")


def test_every_refusal_is_an_analytics_error_never_a_parser_exception():
    for sql in ("SELECT 'unterminated", "SELECT (((", "SELECT 1 +", "\\x", "SELECT e'\\"):
        with pytest.raises(AnalyticsError):
            validate_select(sql)


def test_only_queries_on_data_that_changes_with_a_load_are_cacheable():
    assert validate_select("SELECT count(*) FROM customers").cacheable
    assert validate_select("WITH c AS (SELECT * FROM public.revenue) SELECT sum(amount) FROM c").cacheable
    for sql in (
        "SELECT * FROM sandbox.imported",
        "SELECT c.age FROM customers c JOIN sandbox.scores s USING (customer_id)",
        "SELECT table_name FROM information_schema.tables",
        "SELECT name FROM pg_settings",
        "SELECT relname FROM pg_catalog.pg_class",
        "SELECT random()",
    ):
        assert not validate_select(sql).cacheable, sql
