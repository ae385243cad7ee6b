"""trend, anomalies and segment_compare through MCP: every figure checked against rows pulled by plain SQL
in the test and recomputed there with statsmodels, scipy or numpy."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from fastmcp import Client
from scipy import stats
from statsmodels.tsa.exponential_smoothing.ets import ETSModel
from statsmodels.tsa.seasonal import STL, seasonal_decompose

from mcp_server.runtime import Runtime
from tests.analytics import helpers
from tests.analytics.helpers import analyze, session_with, sql_frame
from tests.conftest import app_for
from tests.support import bump_version, refusal


def close(expected: Any) -> Any:
    return helpers.close(expected, abs_tol=1e-9)


def regular(frame: pd.DataFrame, column: str, freq: str) -> pd.Series:
    """The SQL buckets on a regular calendar (missing buckets NaN), as an analyst would line them up."""
    series = frame.set_index(pd.to_datetime(frame["bucket"]))[column].astype(float)
    return series.reindex(pd.date_range(series.index.min(), series.index.max(), freq=freq))


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


# -- trend ---------------------------------------------------------------------------------------


async def test_weekly_quality_trend_matches_sql_buckets_statsmodels_ols_and_stl(runtime, connect):
    frame = await sql_frame(
        runtime,
        "SELECT date_trunc('week', event_timestamp) AS bucket, avg(network_quality_score) AS q, count(*) AS n "
        "FROM network_events GROUP BY 1 ORDER BY 1",
    )
    y = regular(frame, "q", "W-MON")
    assert not y.isna().any()
    async with connect("analyst") as client:
        answer = await analyze(client, "trend", metric="quality", grain="week")
    results = answer["results"]
    assert results["buckets"] == len(y) and answer["metadata"]["row_count"] == int(frame["n"].sum())
    assert [p["bucket"] for p in results["series"]] == [t.isoformat() for t in y.index]
    assert [p["value"] for p in results["series"]] == [close(v) for v in y]

    fit = sm.OLS(y.to_numpy(), sm.add_constant(np.arange(len(y), dtype=float))).fit()
    low, high = fit.conf_int(alpha=0.05)[1]
    trend = results["trend"]
    assert trend["slope"] == close(fit.params[1]) and trend["intercept"] == close(fit.params[0])
    assert trend["slope_ci"] == [close(low), close(high)]
    assert trend["p_value"] == close(fit.pvalues[1]) and trend["r_squared"] == close(fit.rsquared)
    assert trend["slope_unit"] == "per week"

    stl = STL(y.to_numpy(), period=52).fit()
    decomposition = results["decomposition"]
    assert decomposition["method"] == "stl" and decomposition["period"] == 52
    assert [p["trend"] for p in results["series"]] == [close(v) for v in stl.trend]
    assert [p["seasonal"] for p in results["series"]] == [close(v) for v in stl.seasonal]
    assert [p["residual"] for p in results["series"]] == [close(v) for v in stl.resid]
    # Seasonality tested against noise: week-of-cycle dummies on top of the linear trend.
    t = np.arange(len(y))
    dummies = pd.get_dummies(pd.Categorical(t % 52), drop_first=True).to_numpy(dtype=float)
    full = sm.OLS(y.to_numpy(), np.column_stack([sm.add_constant(t.astype(float)), dummies])).fit()
    f_statistic, p_value, _ = full.compare_f_test(fit)
    assert decomposition["seasonal_test"]["f_statistic"] == close(f_statistic)
    assert decomposition["seasonal_test"]["p_value"] == close(p_value)
    assert "Mean network quality" in answer["summary"] and "per week" in answer["summary"]


async def test_monthly_arpu_trend_matches_sql_and_a_classical_decomposition(runtime, connect):
    frame = await sql_frame(
        runtime,
        "SELECT to_char(transaction_date, 'YYYY-MM') || '-01' AS bucket, "
        "(sum(amount) / count(DISTINCT customer_id))::float8 AS arpu FROM revenue GROUP BY 1 ORDER BY 1",
    )
    y = regular(frame, "arpu", "MS")
    async with connect("analyst") as client:
        results = (await analyze(client, "trend", metric="arpu", grain="month", decomposition="classical"))[
            "results"
        ]
    assert [p["value"] for p in results["series"]] == [close(v) for v in y]
    fit = sm.OLS(y.to_numpy(), sm.add_constant(np.arange(len(y), dtype=float))).fit()
    assert results["trend"]["slope"] == close(fit.params[1])
    assert results["trend"]["p_value"] == close(fit.pvalues[1])
    assert [p["fitted"] for p in results["series"]] == [close(v) for v in fit.fittedvalues]
    classical = seasonal_decompose(y.to_numpy(), model="additive", period=12)
    for point, expected in zip(results["series"], classical.seasonal, strict=True):
        assert point["seasonal"] == close(expected)
    for point, expected in zip(results["series"], classical.trend, strict=True):
        assert (point["trend"] is None) if math.isnan(expected) else point["trend"] == close(expected)


async def test_monthly_churn_trend_divides_by_the_customers_active_at_each_month_start(runtime, connect):
    async with connect("analyst") as client:
        results = (await analyze(client, "trend", metric="churn", grain="month"))["results"]
    series = results["series"]
    expected = []
    for point in series:
        start = dt.datetime.fromisoformat(point["bucket"])
        row = (
            await sql_frame(
                runtime,
                "SELECT count(*) FILTER (WHERE created_at < $1 AND (churn_date IS NULL OR churn_date >= $1)) "
                "AS active, count(*) FILTER (WHERE is_churned AND churn_date >= $1 "
                "AND churn_date < $1 + interval '1 month') AS churned FROM customers",
                start,
            )
        ).iloc[0]
        assert point["count"] == row["active"]
        expected.append(row["churned"] / row["active"] if row["active"] else math.nan)
        assert point["value"] == (None if not row["active"] else close(expected[-1]))
    y = pd.Series(expected)
    present = y.notna()
    fit = sm.OLS(y[present].to_numpy(), sm.add_constant(np.arange(len(y))[present].astype(float))).fit()
    assert results["trend"]["slope"] == close(fit.params[1])
    assert results["trend"]["slope_ci"] == [close(v) for v in fit.conf_int()[1]]
    # The first month has no active base: 23 valued months cannot hold two 12-month cycles, and it says so.
    assert (
        "skipped" in results["decomposition"]
        and "two full cycles (24)" in results["decomposition"]["skipped"]
    )


async def test_a_short_daily_usage_series_in_a_date_range_fits_a_trend_and_says_why_it_is_not_decomposed(
    runtime, connect
):
    frame = await sql_frame(
        runtime,
        "SELECT event_timestamp::date AS bucket, sum(data_usage_mb) AS mb FROM network_events "
        "WHERE event_timestamp >= '2025-03-01' AND event_timestamp < '2025-03-11' GROUP BY 1 ORDER BY 1",
    )
    async with connect("analyst") as client:
        answer = await analyze(
            client, "trend", metric="usage", grain="day", start_date="2025-03-01", end_date="2025-03-10"
        )
    results = answer["results"]
    assert results["first_bucket"] == "2025-03-01T00:00:00" and results["buckets"] == 10
    assert [p["value"] for p in results["series"]] == [close(v) for v in frame["mb"].astype(float)]
    fit = sm.OLS(frame["mb"].astype(float).to_numpy(), sm.add_constant(np.arange(10.0))).fit()
    assert results["trend"]["slope"] == close(fit.params[1])
    assert "10 day buckets are fewer than the two full cycles (14)" in results["decomposition"]["skipped"]
    assert "no seasonal decomposition" in answer["summary"]


# -- anomalies -----------------------------------------------------------------------------------


def independent_robust_z(values: np.ndarray, window: int, min_periods: int) -> list[float | None]:
    """For each bucket: (value - median of the previous `window`) / normal-scaled MAD of those, by scipy."""
    scores: list[float | None] = []
    for t in range(len(values)):
        past = values[max(0, t - window) : t]
        past = past[~np.isnan(past)]
        if len(past) < min_periods or np.isnan(values[t]):
            scores.append(None)
            continue
        median = np.median(past)
        spread = stats.median_abs_deviation(past, scale="normal")
        if spread == 0:
            spread = np.mean(np.abs(past - median)) * math.sqrt(math.pi / 2)
        scores.append(float((values[t] - median) / spread))
    return scores


async def test_daily_quality_z_scores_equal_a_rolling_median_and_mad_written_in_the_test(runtime, connect):
    frame = await sql_frame(
        runtime,
        "SELECT event_timestamp::date AS bucket, avg(network_quality_score) AS q FROM network_events "
        "GROUP BY 1 ORDER BY 1",
    )
    y = regular(frame, "q", "D")
    async with connect("analyst") as client:
        results = (await analyze(client, "anomalies", metric="quality", grain="day", threshold=3.0))[
            "results"
        ]
    assert (results["window"], results["min_periods"]) == (28, 14)
    expected = independent_robust_z(y.to_numpy(), 28, 14)
    assert [p["robust_z"] for p in results["series"]] == [None if z is None else close(z) for z in expected]
    flagged = {y.index[i].isoformat() for i, z in enumerate(expected) if z is not None and abs(z) > 3.0}
    assert {a["bucket"] for a in results["anomalies"]} == flagged
    assert results["anomaly_count"] == len(flagged)


async def test_hourly_usage_z_scores_match_too(runtime, connect):
    frame = await sql_frame(
        runtime,
        "SELECT date_trunc('hour', event_timestamp) AS bucket, coalesce(sum(data_usage_mb), 0) AS mb, "
        "count(*) AS n FROM network_events WHERE event_timestamp >= '2025-05-01' "
        "AND event_timestamp < '2025-05-15' GROUP BY 1 ORDER BY 1",
    )
    y = regular(frame, "mb", "h").fillna(0.0)  # an hour without events used no data
    async with connect("analyst") as client:
        results = (
            await analyze(
                client,
                "anomalies",
                metric="usage",
                grain="hour",
                window=48,
                start_date="2025-05-01",
                end_date="2025-05-14",
            )
        )["results"]
    expected = independent_robust_z(y.to_numpy(), 48, 24)
    assert [p["robust_z"] for p in results["series"]] == [None if z is None else close(z) for z in expected]
    assert "sparse" in results["warning"]  # ~3 events an hour at 2,000 customers: said, not hidden


@pytest.fixture
async def own_database(make_runtime, redis_prefix):
    """An empty database of this test's own (its own cache prefix), for rows the test writes itself."""
    async with make_runtime(
        customers=None, redis_key_prefix=f"{redis_prefix}h12b-{uuid.uuid4().hex[:6]}:"
    ) as rt:
        yield rt


async def _quiet_events(runtime: Runtime, days: int) -> list[uuid.UUID]:
    """Ten customers and, per day, 24 events whose mean quality follows a gentle weekly wave (3.5 +- 0.05)."""
    customers = [uuid.uuid4() for _ in range(10)]
    start = dt.datetime(2025, 1, 1)
    events = []
    for day in range(days):
        level = 3.5 + 0.05 * math.sin(2 * math.pi * day / 7)
        for k in range(24):
            spread = 0.3 if k % 2 else -0.3  # symmetric, so the day's mean is the level
            events.append(
                (customers[k % 10], start + dt.timedelta(days=day, hours=k), "data", level + spread, 60, 10.0)
            )
    async with runtime.db.connection() as conn:
        await conn.executemany(
            "INSERT INTO customers (customer_id, created_at, age, gender, location, account_type) "
            "VALUES ($1, '2024-12-01', 40, 'Other', 'Leeds', 'Basic')",
            [(c,) for c in customers],
        )
        await conn.executemany(
            "INSERT INTO network_events (customer_id, event_timestamp, event_type, network_quality_score, "
            "duration_seconds, data_usage_mb) VALUES ($1, $2, $3, $4, $5, $6)",
            events,
        )
    return customers


async def _new_data_version(runtime: Runtime) -> None:
    # Rows written behind the loader's back: bump the version a load would, so the cache is not reused.
    await bump_version(runtime)


async def test_nothing_is_flagged_on_a_quiet_series_and_an_injected_bad_day_is_the_only_anomaly(own_database):
    rt = own_database
    customers = await _quiet_events(rt, days=90)
    async with Client(app_for(rt, "analyst").mcp) as client:
        quiet = (await analyze(client, "anomalies"))["results"]
        quiet_usage = (await analyze(client, "anomalies", metric="usage"))["results"]
        assert quiet["judged_buckets"] == 90 - 14 and quiet["anomaly_count"] == 0 and quiet["anomalies"] == []
        assert quiet_usage["anomaly_count"] == 0
        assert max(abs(p["robust_z"]) for p in quiet["series"] if p["robust_z"] is not None) < 3.5

        bad_day = dt.datetime(2025, 1, 1) + dt.timedelta(days=60)
        async with rt.db.connection() as conn:
            await conn.executemany(
                "INSERT INTO network_events (customer_id, event_timestamp, event_type, network_quality_score) "
                "VALUES ($1, $2, 'call', 1.0)",
                [(customers[k % 10], bad_day + dt.timedelta(minutes=10 * k)) for k in range(48)],
            )
        await _new_data_version(rt)
        answer = await analyze(client, "anomalies")
    results = answer["results"]
    assert results["anomaly_count"] == 1
    found = results["anomalies"][0]
    day_mean = (24 * (3.5 + 0.05 * math.sin(2 * math.pi * 60 / 7)) + 48 * 1.0) / 72
    assert found["bucket"] == bad_day.isoformat() and found["direction"] == "low"
    assert found["value"] == close(day_mean) and found["events"] == 72
    series = pd.Series([p["value"] for p in results["series"]], dtype=float).to_numpy()
    assert found["robust_z"] == close(independent_robust_z(series, 28, 14)[60])
    assert found["robust_z"] < -3.5 and bad_day.date().isoformat() in answer["summary"]


async def test_an_injected_day_of_very_low_quality_is_found_in_seeded_data(make_runtime, redis_prefix):
    async with make_runtime(customers=2_000, seed=11, redis_key_prefix=f"{redis_prefix}h12b-seeded:") as rt:
        bad_day = dt.datetime(2025, 6, 15)
        async with rt.db.connection() as conn:
            customers = [
                r["customer_id"] for r in await conn.fetch("SELECT customer_id FROM customers LIMIT 200")
            ]
            await conn.executemany(
                "INSERT INTO network_events (customer_id, event_timestamp, event_type, network_quality_score) "
                "VALUES ($1, $2, 'data', 1.2)",
                [(c, bad_day + dt.timedelta(minutes=7 * k)) for k, c in enumerate(customers)],
            )
        async with Client(app_for(rt, "analyst").mcp) as client:
            results = (await analyze(client, "anomalies", direction="low"))["results"]
        frame = await sql_frame(
            rt,
            "SELECT event_timestamp::date AS bucket, avg(network_quality_score) AS q FROM network_events "
            "GROUP BY 1 ORDER BY 1",
        )
    y = regular(frame, "q", "D")
    expected = independent_robust_z(y.to_numpy(), 28, 14)
    largest = results["anomalies"][0]
    assert largest["bucket"] == bad_day.isoformat()  # the biggest departure, by far
    assert largest["robust_z"] == close(expected[list(y.index).index(bad_day)])
    assert all(a["direction"] == "low" for a in results["anomalies"])
    flagged = {y.index[i].isoformat() for i, z in enumerate(expected) if z is not None and z < -3.5}
    assert {a["bucket"] for a in results["anomalies"]} == flagged


# -- segment_compare -----------------------------------------------------------------------------

CUSTOMER_SQL = """
    SELECT c.account_type, c.gender, c.age, coalesce(c.is_churned, false) AS churned,
           (SELECT sum(amount) FROM revenue r WHERE r.customer_id = c.customer_id)::float8 AS revenue,
           (SELECT avg(network_quality_score) FROM network_events e WHERE e.customer_id = c.customer_id) AS quality,
           (SELECT sum(coalesce(data_usage_mb, 0)) FROM network_events e WHERE e.customer_id = c.customer_id)
               AS usage
    FROM customers c"""


@pytest.fixture
async def customers_table(runtime) -> pd.DataFrame:
    frame = await sql_frame(runtime, CUSTOMER_SQL)
    frame["age_band"] = pd.cut(
        frame["age"],
        [0, 25, 35, 45, 55, 65, 200],
        right=False,
        labels=["under 25", "25-34", "35-44", "45-54", "55-64", "65+"],
    ).astype(str)
    return frame


def groups_of(frame: pd.DataFrame, by: str, column: str) -> dict[str, np.ndarray]:
    present = frame[frame[column].notna()]
    return {str(k): g[column].to_numpy(dtype=float) for k, g in present.groupby(by)}


def check_pairwise(results: dict, groups: dict[str, np.ndarray], compare: Any) -> None:
    pairs = {(p["a"], p["b"]): p for p in results["pairwise"]}
    expected = {
        (a, b): compare(groups[a], groups[b]) for a, b in itertools.combinations(list(results["segments"]), 2)
    }
    assert set(pairs) == set(expected)
    keys = list(expected)
    adjusted = holm([expected[k][0] for k in keys])
    for key, p_adjusted in zip(keys, adjusted, strict=True):
        assert pairs[key]["p_value"] == close(expected[key][0])
        assert pairs[key]["p_adjusted"] == close(p_adjusted)
        assert pairs[key]["significant"] == (p_adjusted < 0.05)
        assert pairs[key]["effect_size"]["value"] == close(expected[key][1])


async def test_churn_between_plans_is_a_chi_square_with_cramers_v_and_holm_corrected_pairs(
    customers_table, connect
):
    async with connect("analyst") as client:
        answer = await analyze(client, "segment_compare", metric="churn", group_by="account_type")
    results = answer["results"]
    counts = customers_table.groupby("account_type")["churned"].agg(["sum", "size"])
    table = np.column_stack([counts["sum"], counts["size"] - counts["sum"]])
    chi2, p_value, dof, _ = stats.chi2_contingency(table, correction=False)
    test = results["test"]
    assert test["test"] == "chi_square" and test["degrees_of_freedom"] == dof
    assert (test["statistic"], test["p_value"]) == (close(chi2), close(p_value))
    assert test["effect_size"] == {"name": "cramers_v", "value": close(stats.contingency.association(table))}

    def two_by_two(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        small = np.array([[a.sum(), len(a) - a.sum()], [b.sum(), len(b) - b.sum()]])
        chi, p, _, _ = stats.chi2_contingency(small, correction=False)
        return p, math.sqrt(chi / small.sum())

    check_pairwise(
        results,
        groups_of(
            customers_table.assign(churned=customers_table["churned"].astype(float)),
            "account_type",
            "churned",
        ),
        two_by_two,
    )
    rates = {k: v["churn_rate"] for k, v in results["segments"].items()}
    assert rates["Basic"] > rates["Premium"] > rates["Enterprise"]


def welch_anova(groups: list[np.ndarray]) -> tuple[float, float, float]:
    """Welch's (1951) heteroscedastic one-way ANOVA from the textbook formula."""
    k = len(groups)
    n = np.array([len(g) for g in groups], dtype=float)
    means = np.array([g.mean() for g in groups])
    weights = n / np.array([g.var(ddof=1) for g in groups])
    grand = (weights * means).sum() / weights.sum()
    a = (weights * (means - grand) ** 2).sum() / (k - 1)
    lam = ((1 - weights / weights.sum()) ** 2 / (n - 1)).sum()
    f = a / (1 + 2 * (k - 2) / (k**2 - 1) * lam)
    df2 = (k**2 - 1) / (3 * lam)
    return f, df2, stats.f.sf(f, k - 1, df2)


def cohen(a: np.ndarray, b: np.ndarray) -> float:
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    return (a.mean() - b.mean()) / math.sqrt(pooled)


async def test_revenue_between_plans_picks_welch_anova_for_unequal_variances_and_matches(
    customers_table, connect
):
    groups = groups_of(customers_table, "account_type", "revenue")
    # The rule, checked independently: every plan near-symmetric (|skew| <= 1), variances unequal.
    assert all(abs(stats.skew(g)) <= 1 for g in groups.values())
    assert stats.levene(*groups.values(), center="median").pvalue < 0.05
    async with connect("analyst") as client:
        results = (await analyze(client, "segment_compare", metric="arpu"))["results"]
    test = results["test"]
    f, df2, p_value = welch_anova(list(groups.values()))
    assert test["test"] == "welch_anova"
    assert (test["statistic"], test["p_value"], test["degrees_of_freedom"][1]) == (
        close(f),
        close(p_value),
        close(df2),
    )
    values = np.concatenate(list(groups.values()))
    between = sum(len(g) * (g.mean() - values.mean()) ** 2 for g in groups.values())
    assert test["effect_size"]["value"] == close(between / ((values - values.mean()) ** 2).sum())
    for name, group in groups.items():
        assert results["segments"][name]["customers"] == len(group)
        assert results["segments"][name]["mean"] == close(group.mean())
    check_pairwise(results, groups, lambda a, b: (stats.ttest_ind(a, b, equal_var=False).pvalue, cohen(a, b)))


async def test_quality_between_plans_picks_one_way_anova_and_matches_scipy(customers_table, connect):
    groups = groups_of(customers_table, "account_type", "quality")
    assert stats.levene(*groups.values(), center="median").pvalue >= 0.05
    async with connect("analyst") as client:
        results = (await analyze(client, "segment_compare", metric="quality"))["results"]
    f, p_value = stats.f_oneway(*groups.values())
    assert results["test"]["test"] == "anova"
    assert (results["test"]["statistic"], results["test"]["p_value"]) == (close(f), close(p_value))


async def test_skewed_usage_between_age_bands_picks_kruskal_wallis_and_mann_whitney_pairs(
    customers_table, connect
):
    groups = groups_of(customers_table, "age_band", "usage")
    assert any(abs(stats.skew(g)) > 1 for g in groups.values())
    async with connect("analyst") as client:
        results = (await analyze(client, "segment_compare", metric="usage", group_by="age_band"))["results"]
    h, p_value = stats.kruskal(*groups.values())
    n, k = sum(len(g) for g in groups.values()), len(groups)
    test = results["test"]
    assert test["test"] == "kruskal_wallis" and (test["statistic"], test["p_value"]) == (
        close(h),
        close(p_value),
    )
    assert test["effect_size"] == {"name": "eta_squared_h", "value": close((h - k + 1) / (n - k))}

    def mann_whitney(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
        result = stats.mannwhitneyu(a, b)
        return result.pvalue, 2 * result.statistic / (len(a) * len(b)) - 1

    check_pairwise(results, groups, mann_whitney)


async def test_two_chosen_segments_get_welch_t_with_cohens_d(customers_table, connect):
    groups = groups_of(customers_table, "gender", "age")
    async with connect("analyst") as client:
        results = (
            await analyze(
                client, "segment_compare", metric="age", group_by="gender", segments=["Male", "Female"]
            )
        )["results"]
    a, b = groups["Female"], groups["Male"]
    welch = stats.ttest_ind(a, b, equal_var=False)
    test = results["test"]
    assert list(results["segments"]) == ["Female", "Male"]
    assert test["test"] == "welch_t" and "Welch" in test["reason"]
    assert (test["statistic"], test["p_value"]) == (close(welch.statistic), close(welch.pvalue))
    assert test["effect_size"] == {"name": "cohens_d", "value": close(cohen(a, b))}
    assert results["pairwise"][0]["p_adjusted"] == close(welch.pvalue)


def _two(values: dict[str, np.ndarray], column: str = "value") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "account_type": np.repeat(list(values), [len(v) for v in values.values()]),
            column: np.concatenate(list(values.values())),
        }
    )


async def test_auto_picks_the_right_test_for_each_kind_of_data(runtime, connect):
    rng = np.random.default_rng(2024)
    cases = {
        # name: (groups, expected test); sizes and shapes chosen so the rule's inputs are unambiguous
        "normal_pair": ({"Basic": rng.normal(10, 2, 20), "Premium": rng.normal(12, 2, 20)}, "welch_t"),
        "skewed_pair": ({"Basic": rng.exponential(1, 25), "Premium": rng.exponential(3, 25)}, "mann_whitney"),
        "normal_three": (
            {
                "Basic": rng.normal(5, 1, 60),
                "Premium": rng.normal(5.5, 1, 60),
                "Enterprise": rng.normal(6, 1, 60),
            },
            "anova",
        ),
        "unequal_three": (
            {
                "Basic": rng.normal(5, 0.5, 60),
                "Premium": rng.normal(5.5, 3, 60),
                "Enterprise": rng.normal(6, 6, 60),
            },
            "welch_anova",
        ),
        "skewed_three": (
            {k: rng.lognormal(0, 1.2, 80) * s for k, s in (("Basic", 1), ("Premium", 2), ("Enterprise", 3))},
            "kruskal_wallis",
        ),
    }
    frames = {name: _two(groups, "usage") for name, (groups, _) in cases.items()}
    churn = {"Basic": np.r_[np.ones(3), np.zeros(9)], "Premium": np.r_[np.ones(1), np.zeros(11)]}
    frames["churn"] = _two(churn, "is_churned").assign(is_churned=lambda f: f["is_churned"].astype(bool))
    session = await session_with(runtime, frames)
    async with connect("analyst") as client:
        for name, (groups, expected) in cases.items():
            results = (await analyze(client, "segment_compare", session, dataset=name, metric="usage"))[
                "results"
            ]
            assert results["test"]["test"] == expected, (name, results["test"]["reason"])
            if expected == "welch_t":
                assert all(stats.shapiro(g).pvalue >= 0.05 for g in groups.values())
                assert results["test"]["p_value"] == close(
                    stats.ttest_ind(*groups.values(), equal_var=False).pvalue
                )
            elif expected == "mann_whitney":
                assert any(stats.shapiro(g).pvalue < 0.05 for g in groups.values())
                assert results["test"]["p_value"] == close(stats.mannwhitneyu(*groups.values()).pvalue)
            elif expected == "anova":
                assert results["test"]["p_value"] == close(stats.f_oneway(*groups.values()).pvalue)
            elif expected == "welch_anova":
                assert results["test"]["p_value"] == close(welch_anova(list(groups.values()))[2])
            else:
                assert results["test"]["p_value"] == close(stats.kruskal(*groups.values()).pvalue)
        churned = (await analyze(client, "segment_compare", session, dataset="churn", metric="churn"))[
            "results"
        ]
    assert churned["test"]["test"] == "chi_square"
    pair = churned["pairwise"][0]  # expected counts below 5: Fisher's exact test for the pair
    assert pair["test"] == "fisher_exact"
    assert pair["p_value"] == close(stats.fisher_exact([[3, 9], [1, 11]])[1])


async def test_a_session_dataset_compares_like_the_database_on_the_same_customers(runtime, connect):
    session = await session_with(
        runtime,
        {"customers": await sql_frame(runtime, "SELECT account_type, is_churned, age FROM customers")},
    )
    async with connect("analyst") as client:
        for metric in ("churn", "age"):
            from_database = await analyze(client, "segment_compare", metric=metric)
            from_session = await analyze(
                client, "segment_compare", session, dataset="customers", metric=metric
            )
            assert from_session["results"]["test"] == from_database["results"]["test"]
            assert from_session["results"]["pairwise"] == from_database["results"]["pairwise"]
            assert from_session["summary"] == from_database["summary"]


async def test_trend_and_anomalies_on_a_session_dataset_equal_the_database_answer(runtime, connect):
    events = await sql_frame(
        runtime, "SELECT event_timestamp, network_quality_score, data_usage_mb FROM network_events"
    )
    session = await session_with(runtime, {"events": events})
    async with connect("analyst") as client:
        for analysis, parameters in (
            ("trend", {"metric": "quality", "grain": "week"}),
            ("anomalies", {"metric": "usage", "grain": "day"}),
        ):
            from_database = await analyze(client, analysis, **parameters)
            from_session = await analyze(client, analysis, session, dataset="events", **parameters)
            assert from_session["metadata"]["row_count"] == from_database["metadata"]["row_count"]
            assert from_session["summary"] == from_database["summary"]
            for mine, theirs in zip(
                from_session["results"]["series"], from_database["results"]["series"], strict=True
            ):
                assert mine.keys() == theirs.keys()
                for key, value in theirs.items():
                    assert mine[key] == (close(value) if isinstance(value, float) else value)


# -- forecast ------------------------------------------------------------------------------------


def ets(values: np.ndarray, period: int | None = None) -> Any:
    model = ETSModel(
        pd.Series(values),
        error="add",
        trend="add",
        damped_trend=True,
        seasonal="add" if period else None,
        seasonal_periods=period,
    )
    return model.fit(disp=False)


async def test_weekly_quality_forecast_equals_statsmodels_ets_on_the_sql_series(runtime, connect):
    frame = await sql_frame(
        runtime,
        "SELECT date_trunc('week', event_timestamp) AS bucket, avg(network_quality_score) AS q "
        "FROM network_events GROUP BY 1 ORDER BY 1",
    )
    y = regular(frame, "q", "W-MON").to_numpy()
    async with connect("analyst") as client:
        answer = await analyze(client, "forecast", metric="quality", grain="week", horizon=8, confidence=0.9)
    results = answer["results"]
    # 105 weeks hold fewer than three 52-week cycles: no seasonal term, and it says so.
    assert (
        results["model"]["name"] == "ETS(A,Ad,N)"
        and "fewer than 3 cycles" in results["model"]["seasonality_note"]
    )
    # The observed series is the SQL one; the fit runs on the returned values, because PostgreSQL's
    # parallel avg() may differ in the last bit between runs, and the likelihood optimiser amplifies that.
    assert [p["value"] for p in results["observed"]] == [close(v) for v in y]
    y = np.array([p["value"] for p in results["observed"]])
    expected = ets(y).get_prediction(start=len(y), end=len(y) + 7).summary_frame(alpha=0.1)
    assert [p["mean"] for p in results["forecast"]] == [close(v) for v in expected["mean"]]
    assert [p["low"] for p in results["forecast"]] == [close(v) for v in expected["pi_lower"]]
    assert [p["high"] for p in results["forecast"]] == [close(v) for v in expected["pi_upper"]]
    last = pd.Timestamp(frame["bucket"].max())
    assert [p["bucket"] for p in results["forecast"]] == [
        (last + pd.Timedelta(weeks=k)).isoformat() for k in range(1, 9)
    ]
    held_out = np.asarray(ets(y[:-8]).forecast(8))
    assert results["backtest"]["mae"] == close(np.mean(np.abs(held_out - y[-8:])))
    assert results["backtest"]["naive_mae"] == close(np.mean(np.abs(y[-9] - y[-8:])))


async def test_a_daily_forecast_uses_weekly_seasonality_and_a_short_series_is_refused_in_words(
    runtime, connect
):
    frame = await sql_frame(
        runtime,
        "SELECT event_timestamp::date AS bucket, avg(network_quality_score) AS q FROM network_events "
        "WHERE event_timestamp >= '2025-09-01' GROUP BY 1 ORDER BY 1",
    )
    y = regular(frame, "q", "D").to_numpy()
    async with connect("analyst") as client:
        results = (
            await analyze(
                client, "forecast", metric="quality", grain="day", horizon=7, start_date="2025-09-01"
            )
        )["results"]
        short = await analyze(client, "forecast", metric="quality", grain="day", start_date="2025-12-26")
    assert results["model"]["name"] == "ETS(A,Ad,A)" and results["model"]["seasonal_period"] == 7
    assert [p["value"] for p in results["observed"]] == [close(v) for v in y]
    expected = ets(np.array([p["value"] for p in results["observed"]]), 7).forecast(7)
    assert [p["mean"] for p in results["forecast"]] == [close(v) for v in expected]
    assert "a forecast needs at least 10" in short["results"]["skipped"]
    assert short["summary"].startswith("No forecast: 6 day buckets")


# -- errors and templates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("analysis", "parameters", "expected"),
    [
        (
            "trend",
            {"metric": "revenue"},
            "parameter 'metric' of trend must be one of arpu, churn, quality, usage",
        ),
        ("trend", {"grain": "year"}, "parameter 'grain' of trend must be one of day, week, month"),
        ("trend", {"seasonal_period": 1}, "parameter 'seasonal_period' of trend"),
        ("trend", {"start_date": "2025-02-01", "end_date": "2025-01-01"}, "is before start_date"),
        ("anomalies", {"grain": "week"}, "parameter 'grain' of anomalies must be one of day, hour"),
        ("anomalies", {"window": 2}, "parameter 'window' of anomalies"),
        ("anomalies", {"threshold": -1}, "parameter 'threshold' of anomalies"),
        ("anomalies", {"metric": "arpu"}, "must be one of quality, usage"),
        ("anomalies", {"windw": 10}, "unknown parameter 'windw' for anomalies; allowed: dataset, start_date"),
        ("segment_compare", {"group_by": "event_type"}, "must be one of account_type, gender, location"),
        ("segment_compare", {"group_by": 'gender" FROM pg_user --'}, "must be one of account_type"),
        ("segment_compare", {"test": "t_test"}, "must be one of auto, welch_t, mann_whitney"),
        ("segment_compare", {"test": "welch_t"}, "welch_t compares two segments and there are 3"),
        (
            "segment_compare",
            {"metric": "churn", "test": "anova"},
            "churn is binary: compare it with test 'chi_square'",
        ),
        ("segment_compare", {"metric": "arpu", "test": "chi_square"}, "chi_square compares churn"),
        (
            "segment_compare",
            {"segments": ["Basic", "Gold"]},
            "segments of account_type are: Basic, Enterprise, Premium; got 'Gold'",
        ),
        ("segment_compare", {"segments": ["Basic"]}, "parameter 'segments' of segment_compare"),
        ("segment_compare", {"correction": "sidak"}, "must be one of holm, bonferroni, fdr_bh, none"),
        ("forecast", {"horizon": 0}, "parameter 'horizon' of forecast"),
        ("forecast", {"grain": "hour"}, "parameter 'grain' of forecast must be one of day, week, month"),
    ],
)
async def test_bad_parameters_get_one_line_errors_that_say_what_is_allowed(
    connect, analysis, parameters, expected
):
    async with connect("analyst") as client:
        message = await refusal(
            client, "analyze_data", data_source="database", analysis_type=analysis, parameters=parameters
        )
    assert expected in message


async def test_a_session_dataset_without_the_needed_columns_is_refused_by_name(runtime, connect):
    session = await session_with(
        runtime, {"ages": pd.DataFrame({"age": [30, 40], "account_type": ["Basic", "Premium"]})}
    )
    async with connect("analyst") as client:
        trend = await refusal(
            client, "analyze_data", data_source=session, analysis_type="trend", parameters={"dataset": "ages"}
        )
        compare = await refusal(
            client,
            "analyze_data",
            data_source=session,
            analysis_type="segment_compare",
            parameters={"dataset": "ages", "metric": "quality"},
        )
    assert (
        "dataset lacks column 'transaction_date', 'amount', 'customer_id' needed for an ARPU trend" in trend
    )
    assert "lacks column 'avg_network_quality'" in compare


async def test_the_templates_publish_the_new_analyses_with_their_defaults(connect):
    import json

    async with connect("analyst") as client:
        for analysis, key, default, allowed in (
            ("trend", "grain", "month", ["day", "week", "month"]),
            ("anomalies", "threshold", 3.5, None),
            ("segment_compare", "correction", "holm", ["holm", "bonferroni", "fdr_bh", "none"]),
        ):
            contents = await client.read_resource(f"templates://analysis/{analysis}")
            template = json.loads(contents[0].text)
            assert template["analysis_type"] == analysis
            assert template["parameters"][key]["default"] == default
            assert template["parameters"][key].get("allowed") == allowed
