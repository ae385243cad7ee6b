"""analyze_data through MCP on the seeded database: every figure checked against plain SQL or scipy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

from tests.analytics.helpers import ANALYST, analyze, close, session_with, sql_frame, sql_rows
from tests.support import call, refusal

# -- churn ---------------------------------------------------------------------------------------


async def test_churn_rate_by_account_type_matches_sql_wilson_and_scipy_chi_square(runtime, connect):
    expected = await sql_rows(
        runtime,
        "SELECT account_type, count(*) AS n, sum(CASE WHEN is_churned THEN 1 ELSE 0 END) AS k "
        "FROM customers GROUP BY account_type",
    )
    async with connect("analyst") as client:
        answer = await analyze(client, "churn_rate")
    results = answer["results"]
    total = sum(row["n"] for row in expected)
    churned = sum(row["k"] for row in expected)
    assert results["customers"] == total == 2_000
    assert results["overall_churn_rate"] == close(churned / total)
    low, high = proportion_confint(churned, total, alpha=0.05, method="wilson")
    assert results["confidence_interval"] == [close(low), close(high)]
    for row in expected:
        segment = results["by_segment"][row["account_type"]]
        assert (segment["customers"], segment["churned"]) == (row["n"], row["k"])
        assert segment["churn_rate"] == close(row["k"] / row["n"])
        low, high = proportion_confint(row["k"], row["n"], alpha=0.05, method="wilson")
        assert (segment["ci_low"], segment["ci_high"]) == (close(low), close(high))
    table = np.array([[row["k"], row["n"] - row["k"]] for row in expected])
    chi2, p_value, dof, _ = stats.chi2_contingency(table, correction=False)
    test = results["test"]
    assert (test["chi_square"], test["p_value"], test["degrees_of_freedom"]) == (
        close(chi2),
        close(p_value),
        dof,
    )
    assert test["cramers_v"] == close(stats.contingency.association(table, method="cramer"))
    metadata = answer["metadata"]
    assert metadata["data_source"] == "database" and metadata["row_count"] == total
    assert "GROUP BY" in metadata["sql"][0] and metadata["timestamp"] and metadata["duration_ms"] >= 0
    assert "Churn is" in answer["summary"] and "Basic" in answer["summary"]


async def test_churn_finds_the_planted_order_basic_premium_enterprise(connect):
    async with connect("analyst") as client:
        segments = (await analyze(client, "churn_rate"))["results"]["by_segment"]
    assert (
        segments["Basic"]["churn_rate"]
        > segments["Premium"]["churn_rate"]
        > segments["Enterprise"]["churn_rate"]
    )


async def test_churn_by_age_band_matches_a_hand_written_case_expression(runtime, connect):
    expected = await sql_rows(
        runtime,
        "SELECT CASE WHEN age < 25 THEN 'under 25' WHEN age < 35 THEN '25-34' WHEN age < 45 THEN '35-44' "
        "WHEN age < 55 THEN '45-54' WHEN age < 65 THEN '55-64' ELSE '65+' END AS band, count(*) AS n, "
        "count(*) FILTER (WHERE is_churned) AS k FROM customers GROUP BY 1",
    )
    async with connect("analyst") as client:
        results = (await analyze(client, "churn_rate", group_by="age_band"))["results"]
    assert list(results["by_segment"]) == [
        b
        for b in ["under 25", "25-34", "35-44", "45-54", "55-64", "65+"]
        if b in {row["band"] for row in expected}
    ]
    for row in expected:
        assert results["by_segment"][row["band"]]["customers"] == row["n"]
        assert results["by_segment"][row["band"]]["churned"] == row["k"]


async def test_churn_by_tenure_band_matches_hand_written_sql_at_the_given_instant(runtime, connect):
    as_of = "2025-06-30T12:00:00"
    expected = await sql_rows(
        runtime,
        "SELECT CASE WHEN d < 90 THEN 'under 90 days' WHEN d < 180 THEN '90-179 days' WHEN d < 365 "
        "THEN '180-364 days' WHEN d < 730 THEN '365-729 days' ELSE '730+ days' END AS band, count(*) AS n, "
        "count(*) FILTER (WHERE is_churned) AS k FROM (SELECT is_churned, extract(epoch FROM coalesce(churn_date, "
        "$1::timestamp) - created_at) / 86400 AS d FROM customers) t GROUP BY 1",
        pd.Timestamp(as_of).to_pydatetime(),
    )
    async with connect("analyst") as client:
        results = (await analyze(client, "churn_rate", group_by="tenure_band", as_of=as_of))["results"]
    assert len(expected) > 2 and len(results["by_segment"]) == len(expected)
    for row in expected:
        segment = results["by_segment"][row["band"]]
        assert (segment["customers"], segment["churned"]) == (row["n"], row["k"])
    table = np.array([[row["k"], row["n"] - row["k"]] for row in expected])
    assert results["test"]["chi_square"] == close(stats.chi2_contingency(table, correction=False)[0])


async def test_monthly_churn_rate_uses_the_customers_active_at_the_start_of_each_month(runtime, connect):
    async with connect("analyst") as client:
        monthly = (await analyze(client, "churn_rate", monthly=True))["results"]["monthly"]
    assert len(monthly) > 12
    for entry in monthly[1 :: max(1, len(monthly) // 6)]:
        start = pd.Timestamp(entry["month"] + "-01").to_pydatetime()
        row = (
            await sql_rows(
                runtime,
                "SELECT count(*) FILTER (WHERE created_at < $1 AND (churn_date IS NULL OR churn_date >= $1)) AS active, "
                "count(*) FILTER (WHERE is_churned AND churn_date >= $1 AND churn_date < $1 + interval '1 month') "
                "AS churned FROM customers",
                start,
            )
        )[0]
        assert entry["active_at_start"] == row["active"]
        assert entry["churned"] == row["churned"]
        assert entry["churn_rate"] == close(row["churned"] / row["active"])


# -- ARPU ----------------------------------------------------------------------------------------


async def test_arpu_overall_segment_month_and_service_match_sql(runtime, connect):
    async with connect("analyst") as client:
        answer = await analyze(client, "arpu")
    results = answer["results"]
    overall = (
        await sql_rows(
            runtime, "SELECT sum(amount) AS s, count(DISTINCT customer_id) AS n, count(*) AS t FROM revenue"
        )
    )[0]
    assert results["overall_arpu"] == close(float(overall["s"]) / overall["n"])
    assert results["paying_customers"] == overall["n"] and answer["metadata"]["row_count"] == overall["t"]
    per_customer = await sql_frame(
        runtime, "SELECT customer_id, sum(amount)::float8 AS total FROM revenue GROUP BY 1"
    )
    low, high = stats.t.interval(
        0.95, len(per_customer) - 1, loc=per_customer["total"].mean(), scale=stats.sem(per_customer["total"])
    )
    assert results["confidence_interval"] == [close(low), close(high)]
    per_plan = await sql_frame(
        runtime,
        "SELECT c.account_type, sum(r.amount)::float8 AS total FROM revenue r JOIN customers c USING (customer_id) "
        "GROUP BY r.customer_id, c.account_type",
    )
    for plan, totals in per_plan.groupby("account_type")["total"]:
        low, high = stats.t.interval(0.95, len(totals) - 1, loc=totals.mean(), scale=stats.sem(totals))
        segment = results["by_segment"][plan]
        assert (segment["ci_low"], segment["ci_high"]) == (close(low), close(high))
        assert segment["paying_customers"] == len(totals) and segment["revenue"] == close(totals.sum())
    for query, key in (
        (
            "SELECT c.account_type AS k, sum(r.amount) / count(DISTINCT r.customer_id) AS arpu FROM revenue r "
            "JOIN customers c USING (customer_id) GROUP BY 1",
            "by_segment",
        ),
        (
            "SELECT to_char(transaction_date, 'YYYY-MM') AS k, sum(amount) / count(DISTINCT customer_id) AS arpu "
            "FROM revenue GROUP BY 1",
            "by_month",
        ),
        (
            "SELECT service_type AS k, sum(amount) / count(DISTINCT customer_id) AS arpu FROM revenue GROUP BY 1",
            "by_service_type",
        ),
    ):
        expected = await sql_rows(runtime, query)
        assert len(results[key]) == len(expected)
        for row in expected:
            assert results[key][row["k"]]["arpu"] == close(float(row["arpu"])), (key, row["k"])


async def test_arpu_finds_the_planted_order_enterprise_premium_basic(connect):
    async with connect("analyst") as client:
        segments = (await analyze(client, "arpu"))["results"]["by_segment"]
    assert segments["Enterprise"]["arpu"] > segments["Premium"]["arpu"] > segments["Basic"]["arpu"]


async def test_arpu_in_a_date_range_counts_only_that_range(runtime, connect):
    row = (
        await sql_rows(
            runtime,
            "SELECT sum(amount) / count(DISTINCT customer_id) AS arpu, count(*) AS t FROM revenue "
            "WHERE transaction_date >= '2024-03-01' AND transaction_date < '2024-07-01'",
        )
    )[0]
    async with connect("analyst") as client:
        answer = await analyze(client, "arpu", start_date="2024-03-01", end_date="2024-06-30")
    assert answer["results"]["overall_arpu"] == close(float(row["arpu"]))
    assert answer["metadata"]["row_count"] == row["t"]
    assert set(answer["results"]["by_month"]) == {"2024-03", "2024-04", "2024-05", "2024-06"}


# -- network quality -----------------------------------------------------------------------------


async def test_network_quality_figures_match_sql_and_scipy_tests(runtime, connect):
    async with connect("analyst") as client:
        answer = await analyze(client, "network_quality", percentiles=[5, 50, 95])
    results = answer["results"]
    row = (
        await sql_rows(
            runtime,
            "SELECT avg(network_quality_score) AS mean, count(*) AS n, "
            "percentile_cont(0.5) WITHIN GROUP (ORDER BY network_quality_score) AS median, "
            "percentile_cont(0.05) WITHIN GROUP (ORDER BY network_quality_score) AS p5, "
            "percentile_cont(0.95) WITHIN GROUP (ORDER BY network_quality_score) AS p95, "
            "avg((network_quality_score < 2.5)::int) AS poor, stddev_samp(network_quality_score) AS sd "
            "FROM network_events",
        )
    )[0]
    assert results["overall_mean_quality"] == close(row["mean"]) and results["events"] == row["n"]
    assert results["median"] == close(row["median"]) and results["std"] == close(row["sd"])
    assert results["percentiles"] == {
        "p5": close(row["p5"]),
        "p50": close(row["median"]),
        "p95": close(row["p95"]),
    }
    assert results["poor_share"] == close(float(row["poor"]))
    events = await sql_frame(runtime, "SELECT event_type, network_quality_score AS q FROM network_events")
    groups = [group["q"].to_numpy() for _, group in sorted(events.groupby("event_type"))]
    f_statistic, f_p = stats.f_oneway(*groups)
    h, h_p = stats.kruskal(*groups)
    anova, kruskal = results["tests"]["anova"], results["tests"]["kruskal_wallis"]
    assert (anova["f_statistic"], anova["p_value"]) == (close(f_statistic), close(f_p))
    assert (kruskal["h_statistic"], kruskal["p_value"]) == (close(h), close(h_p))
    for event_type, group in events.groupby("event_type"):
        segment = results["by_segment"][event_type]
        assert segment["events"] == len(group)
        assert segment["mean"] == close(group["q"].mean()) and segment["median"] == close(group["q"].median())
        p5, p95 = np.percentile(group["q"].to_numpy(), [5, 95])
        assert segment["percentiles"] == {
            "p5": close(p5),
            "p50": close(group["q"].median()),
            "p95": close(p95),
        }
        assert segment["poor_share"] == close((group["q"] < 2.5).mean())


async def test_network_quality_by_hour_of_day_matches_sql(runtime, connect):
    expected = await sql_rows(
        runtime,
        "SELECT extract(hour FROM event_timestamp)::int AS h, avg(network_quality_score) AS mean, count(*) AS n "
        "FROM network_events GROUP BY 1",
    )
    async with connect("analyst") as client:
        segments = (await analyze(client, "network_quality", group_by="hour_of_day"))["results"]["by_segment"]
    assert list(segments) == [str(h) for h in sorted(row["h"] for row in expected)]
    for row in expected:
        assert segments[str(row["h"])]["mean"] == close(row["mean"])
        assert segments[str(row["h"])]["events"] == row["n"]


# -- correlation ---------------------------------------------------------------------------------

FEATURES_SQL = """
SELECT c.age, extract(epoch FROM (coalesce(c.churn_date, (SELECT greatest(max(c2.created_at), max(c2.churn_date),
         (SELECT max(event_timestamp) FROM network_events), (SELECT max(transaction_date) FROM revenue))
         FROM customers c2)) - c.created_at)) / 86400 AS tenure_days,
       (SELECT avg(e.network_quality_score) FROM network_events e WHERE e.customer_id = c.customer_id) AS avg_network_quality,
       (SELECT count(*) FROM network_events e WHERE e.customer_id = c.customer_id) AS event_count,
       (SELECT coalesce(sum(e.data_usage_mb), 0) FROM network_events e WHERE e.customer_id = c.customer_id) AS total_data_usage_mb,
       (SELECT coalesce(sum(r.amount), 0) FROM revenue r WHERE r.customer_id = c.customer_id) AS total_revenue,
       c.is_churned::int AS is_churned
FROM customers c
"""


async def test_pearson_matrix_equals_sql_corr_and_finds_quality_lowers_churn(runtime, connect):
    row = (
        await sql_rows(
            runtime,
            f"SELECT corr(avg_network_quality, is_churned) AS q_churn, corr(total_revenue, event_count) AS rev_events, "
            f"corr(age, tenure_days) AS age_tenure, count(avg_network_quality) AS n FROM ({FEATURES_SQL}) f",
        )
    )[0]
    async with connect("analyst") as client:
        answer = await analyze(client, "correlation")
    matrix = answer["results"]["matrix"]
    assert matrix["avg_network_quality"]["is_churned"] == close(row["q_churn"])
    assert matrix["total_revenue"]["event_count"] == close(row["rev_events"])
    assert matrix["age"]["tenure_days"] == close(row["age_tenure"])
    assert matrix["avg_network_quality"]["is_churned"] < -0.1
    pairs = answer["results"]["strongest_pairs"]
    assert abs(pairs[0]["r"]) >= abs(pairs[-1]["r"]) and "correlation" in pairs[0]["description"]
    r, p = stats.pearsonr(
        *_complete(await sql_frame(runtime, FEATURES_SQL), "avg_network_quality", "is_churned")
    )
    assert answer["results"]["p_values"]["avg_network_quality"]["is_churned"] == close(p)


async def test_every_cell_of_the_pearson_matrix_equals_pandas_on_the_same_features(runtime, connect):
    expected = (await sql_frame(runtime, FEATURES_SQL)).astype(float).corr(method="pearson")
    async with connect("analyst") as client:
        results = (await analyze(client, "correlation"))["results"]
    assert results["columns"] == list(expected.columns) and results["rows"] == 2_000
    for left in expected.columns:
        for right in expected.columns:
            assert results["matrix"][left][right] == close(expected.loc[left, right]), (left, right)


async def test_analysis_settings_do_not_leak_to_other_users_of_the_pool(runtime, connect):
    async with runtime.db.connection(read=True) as conn:
        defaults = [await conn.fetchval(f"SHOW {name}") for name in ("jit", "work_mem", "plan_cache_mode")]
    async with connect("analyst") as client:
        await analyze(client, "arpu", start_date="2024-01-01")  # three statements on three connections
    held = []
    try:
        for _ in range(10):  # the test pool's size: every connection an analysis may have used
            held.append(await runtime.db.read_pool.acquire())
        for conn in held:
            settings = [
                await conn.fetchval(f"SHOW {name}") for name in ("jit", "work_mem", "plan_cache_mode")
            ]
            assert settings == defaults
    finally:
        for conn in held:
            await runtime.db.read_pool.release(conn)


def _complete(frame: pd.DataFrame, left: str, right: str) -> tuple[np.ndarray, np.ndarray]:
    data = frame[[left, right]].astype(float).dropna()
    return data[left].to_numpy(), data[right].to_numpy()


@pytest.mark.parametrize("method", ["spearman", "kendall"])
async def test_rank_correlations_equal_scipy_on_the_same_features(runtime, connect, method):
    features = await sql_frame(runtime, FEATURES_SQL)
    async with connect("analyst") as client:
        results = (
            await analyze(
                client,
                "correlation",
                method=method,
                columns=["avg_network_quality", "is_churned", "total_revenue"],
            )
        )["results"]
    function = stats.spearmanr if method == "spearman" else stats.kendalltau
    for left, right in (("avg_network_quality", "is_churned"), ("total_revenue", "is_churned")):
        r, p = function(*_complete(features, left, right))
        assert results["matrix"][left][right] == close(r)
        assert results["p_values"][left][right] == close(p)
    assert results["matrix"]["avg_network_quality"]["is_churned"] < 0


# -- session datasets ----------------------------------------------------------------------------


def _same(left: Any, right: Any) -> None:
    if isinstance(left, dict):
        assert set(left) == set(right)
        for key in left:
            _same(left[key], right[key])
    elif isinstance(left, list):
        assert len(left) == len(right)
        for a, b in zip(left, right):
            _same(a, b)
    elif isinstance(left, float) and not isinstance(right, bool):
        assert right == close(left)
    else:
        assert left == right


async def test_a_session_dataset_gives_the_database_answer_on_the_same_rows(runtime, connect):
    session = await session_with(
        runtime,
        {
            "customers": "SELECT * FROM customers",
            "payments": "SELECT r.*, c.account_type FROM revenue r JOIN customers c USING (customer_id)",
            "events": "SELECT * FROM network_events",
            "features": FEATURES_SQL,
        },
    )
    cases = [
        ("churn_rate", "customers", {"monthly": True}),
        ("churn_rate", "customers", {"group_by": "tenure_band", "as_of": "2025-12-31T23:59:59"}),
        ("arpu", "payments", {"start_date": "2024-02-01"}),
        ("network_quality", "events", {"group_by": "hour_of_day"}),
        ("correlation", "features", {"method": "spearman", "as_of": None}),
    ]
    async with connect("analyst") as client:
        for analysis, dataset, parameters in cases:
            from_database = await analyze(client, analysis, **parameters)
            from_session = await analyze(client, analysis, session, dataset=dataset, **parameters)
            assert from_session["metadata"]["data_source"] == session
            assert from_session["metadata"]["row_count"] == from_database["metadata"]["row_count"]
            database_results = dict(from_database["results"])
            database_results.pop("as_of", None)
            session_results = dict(from_session["results"])
            session_results.pop("as_of", None)
            _same(database_results, session_results)
            assert from_session["summary"] == from_database["summary"]


async def test_a_result_saved_into_a_session_reads_back(runtime, connect):
    session = await session_with(runtime, {})
    async with connect("analyst") as client:
        answer = await call(
            client,
            "analyze_data",
            data_source="database",
            analysis_type="churn_rate",
            session_id=session,
            save_as="churn_by_plan",
        )
    assert answer["saved"] == {"session_id": session, "key": "churn_by_plan"}
    stored = await runtime.services.session_store.read(ANALYST, session, "churn_by_plan")
    assert stored["value"]["results"]["by_segment"] == answer["results"]["by_segment"]


# -- cache and errors ----------------------------------------------------------------------------


async def test_a_repeated_analysis_is_served_from_the_cache_with_the_same_results(connect):
    async with connect("analyst") as client:
        first = await analyze(client, "network_quality", group_by="account_type", poor_threshold=3.0)
        second = await analyze(client, "network_quality", group_by="account_type", poor_threshold=3.0)
    assert first["metadata"]["cached"] is False and second["metadata"]["cached"] is True
    assert second["results"] == first["results"]


async def test_regenerated_data_is_never_answered_from_the_old_cache(make_runtime, redis_prefix):
    from fastmcp import Client

    from tests.conftest import app_for
    from warehouse.generator import generate, make_plan

    # Its own key prefix: the cache keys on the data version, which a second test database shares.
    async with make_runtime(customers=300, seed=3, redis_key_prefix=redis_prefix + "regenerated:") as fresh:
        async with Client(app_for(fresh, "analyst").mcp) as client:
            before = await analyze(client, "churn_rate")
            await fresh.db.replace_data(generate(make_plan(500, 4)))
            after = await analyze(client, "churn_rate")
    assert after["metadata"]["cached"] is False
    assert (before["results"]["customers"], after["results"]["customers"]) == (300, 500)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            {"analysis_type": "churn_rates"},
            "analysis_type: Input should be 'anomalies', 'arpu',",  # the schema's enum: every type
        ),
        ({"data_source": "warehouse"}, "data_source 'warehouse' is neither 'database' nor a session id"),
        (
            {"parameters": {"group_by": "account_type; DROP TABLE customers"}},
            "parameter 'group_by' of churn_rate must be one of account_type",
        ),
        (
            {"parameters": {"group_by": 'account_type" FROM pg_user --'}},
            "must be one of account_type, gender, location, age_band, tenure_band",
        ),
        (
            {"parameters": {"groupby": "gender"}},
            "unknown parameter 'groupby' for churn_rate; allowed: dataset, group_by",
        ),
        ({"parameters": {"confidence": 2}}, "parameter 'confidence' of churn_rate"),
        (
            {"analysis_type": "correlation", "parameters": {"columns": ["age", "password"]}},
            "takes columns from: age",
        ),
        (
            {"analysis_type": "arpu", "parameters": {"start_date": "2025-01-01", "end_date": "2024-01-01"}},
            "is before start_date",
        ),
        (
            {"data_source": "00000000-0000-4000-8000-000000000000", "parameters": {"dataset": "x"}},
            "not found",
        ),
        ({"data_source": "00000000-0000-4000-8000-000000000000"}, "parameters.dataset is required"),
        ({"session_id": "00000000-0000-4000-8000-000000000000"}, "pass session_id and save_as together"),
    ],
)
async def test_bad_requests_get_one_line_errors_that_say_what_is_allowed(connect, arguments, expected):
    request = {"data_source": "database", "analysis_type": "churn_rate", "parameters": {}} | arguments
    async with connect("analyst") as client:
        message = await refusal(client, "analyze_data", **request)
    assert expected in message


async def test_an_unknown_dataset_in_a_session_lists_the_datasets_there_are(runtime, connect):
    session = await session_with(runtime, {"customers": "SELECT * FROM customers LIMIT 5"})
    async with connect("analyst") as client:
        message = await refusal(
            client,
            "analyze_data",
            data_source=session,
            analysis_type="churn_rate",
            parameters={"dataset": "custmers"},
        )
        missing_column = await refusal(
            client,
            "analyze_data",
            data_source=session,
            analysis_type="network_quality",
            parameters={"dataset": "customers"},
        )
    assert "dataset 'custmers' not in session" in message and "customers" in message
    assert "lacks column 'network_quality_score'" in missing_column


async def test_viewers_cannot_analyse_and_others_cannot_read_an_analysts_session(runtime, connect):
    session = await session_with(runtime, {"customers": "SELECT * FROM customers LIMIT 5"})
    async with connect("viewer") as client:
        assert "analyze_data" in await refusal(
            client, "analyze_data", data_source="database", analysis_type="arpu"
        )
    async with connect("analyst2") as client:
        message = await refusal(
            client,
            "analyze_data",
            data_source=session,
            analysis_type="churn_rate",
            parameters={"dataset": "customers"},
        )
    assert "not found" in message
