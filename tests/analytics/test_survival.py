"""The retention estimators work on counts (one row per lifetime, churned flag and segment); each must give
what statsmodels gives on one row per customer, and the cohort table what a per-cohort count gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.duration.survfunc import SurvfuncRight, survdiff

from analytics.parameters import RetentionParameters
from analytics.survival import cohort_table, kaplan_meier, log_rank, retention_from_counts


def _counted(days: np.ndarray, churned: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    """One row per (group, days, churned) with its number of customers, as the SQL counts them."""
    frame = pd.DataFrame({"segment": groups, "lifetime_days": days, "churned": churned})
    return (
        frame.groupby(["segment", "lifetime_days", "churned"], dropna=False)
        .size()
        .rename("customers")
        .reset_index()
    )


def _customers(seed: int, size: int, everyone_churns: bool = False) -> tuple[np.ndarray, ...]:
    random = np.random.default_rng(seed)
    groups = random.choice(np.array(["Basic", "Premium", "Enterprise"]), size, p=[0.5, 0.3, 0.2])
    scale = np.where(groups == "Basic", 200.0, np.where(groups == "Premium", 400.0, 700.0))
    days = np.floor(random.exponential(scale)).astype(float)  # many ties, as whole days have
    churned = np.ones(size, dtype=bool) if everyone_churns else random.random(size) < 0.6
    return days, churned, groups


@pytest.mark.parametrize(
    ("seed", "size", "everyone_churns"), [(1, 3_000, False), (2, 400, True), (3, 50, False)]
)
def test_kaplan_meier_from_counts_equals_statsmodels_on_one_row_per_customer(
    seed: int, size: int, everyone_churns: bool
) -> None:
    days, churned, groups = _customers(seed, size, everyone_churns)
    counts = _counted(days, churned, np.zeros(size))
    z = float(stats.norm.ppf(0.975))
    mine = kaplan_meier(
        counts["lifetime_days"].to_numpy(float),
        counts["churned"].to_numpy(bool),
        counts["customers"].to_numpy(np.int64),
        z,
        step_days=7,
    )
    fit = SurvfuncRight(days, churned.astype(float))
    assert mine["customers"] == size and mine["churned"] == churned.sum()
    for share in (0.1, 0.25, 0.5):
        expected = fit.quantile(share)
        assert mine["lifetime_quantiles"][f"{share:.0%}"] == (None if np.isnan(expected) else expected)
    if mine["median_lifetime_days"] is not None:
        with np.errstate(all="ignore"):
            low, high = fit.quantile_ci(0.5, alpha=0.05, method="cloglog")
        assert mine["median_ci"] == [None if np.isnan(low) else low, None if np.isinf(high) else high]
    for point in mine["curve"]:
        passed = np.flatnonzero(fit.surv_times <= point["day"])
        assert point["survival"] == (fit.surv_prob[passed[-1]] if len(passed) else 1.0)
        assert point["at_risk"] == (days >= point["day"]).sum()
        if len(passed) and 0 < point["survival"] < 1:
            assert point["ci_low"] < point["survival"] < point["ci_high"]
    assert mine["curve"][-1]["day"] <= days.max() < mine["curve"][-1]["day"] + 7


def test_log_rank_from_counts_equals_statsmodels_survdiff_on_one_row_per_customer() -> None:
    days, churned, groups = _customers(4, 5_000)
    codes = pd.Series(groups).map({"Basic": 0, "Enterprise": 1, "Premium": 2}).to_numpy()
    counts = _counted(days, churned, codes)
    chi_square, p_value = log_rank(
        counts["lifetime_days"].to_numpy(float),
        counts["churned"].to_numpy(float),
        counts["customers"].to_numpy(np.int64),
        counts["segment"].to_numpy(np.int64),
        3,
    )
    expected_chi_square, expected_p = survdiff(days, churned.astype(float), codes)
    assert chi_square == pytest.approx(expected_chi_square, rel=1e-12)
    assert p_value == pytest.approx(expected_p, rel=1e-9, abs=1e-15)


def test_missing_segments_form_one_segment_listed_last() -> None:
    days, churned, groups = _customers(5, 2_000)
    labelled = np.where(np.arange(2_000) % 7 == 0, None, groups).astype(object)
    labelled[np.arange(2_000) % 11 == 0] = np.nan  # both kinds of missing make one segment
    counts = _counted(days, churned, labelled)
    cohorts = pd.DataFrame({"cohort": ["2024-01"], "months_lived": [np.nan], "customers": [2_000]})
    results = retention_from_counts(
        counts, cohorts, pd.Timestamp("2025-01-01"), RetentionParameters(group_by="account_type")
    ).results
    assert list(results["by_segment"]) == ["Basic", "Enterprise", "Premium", "(missing)"]
    missing = pd.isna(labelled)
    assert results["by_segment"]["(missing)"]["customers"] == missing.sum()
    fit = SurvfuncRight(days[missing], churned[missing].astype(float))
    assert results["by_segment"]["(missing)"]["lifetime_quantiles"]["10%"] == fit.quantile(0.1)


def test_cohort_table_counts_each_cohort_month_by_month() -> None:
    random = np.random.default_rng(6)
    cohort = random.choice(np.array(["2023-11", "2023-12", "2024-01", "2024-06"]), 3_000)
    lived = np.where(random.random(3_000) < 0.4, random.integers(0, 15, 3_000), -1).astype(float)
    lived[lived < 0] = np.nan  # still active
    counts = (
        pd.DataFrame({"cohort": cohort, "months_lived": lived})
        .groupby(["cohort", "months_lived"], dropna=False)
        .size()
        .rename("customers")
        .reset_index()
    )
    as_of = pd.Timestamp("2024-09-15")
    table = cohort_table(counts, as_of, months=12)
    assert [row["cohort"] for row in table["rows"]] == ["2023-11", "2023-12", "2024-01", "2024-06"]
    for row in table["rows"]:
        members = cohort == row["cohort"]
        assert row["customers"] == members.sum()
        start = pd.Timestamp(row["cohort"] + "-01")
        shown = [k for k in range(1, 13) if start + pd.DateOffset(months=k + 1) <= as_of]
        assert len(row["retained"]) == len(shown)
        for k in shown:
            kept = (members & ~(lived < k)).sum()
            assert row["retained"][k - 1] == kept
            assert row["retention"][k - 1] == kept / members.sum()
