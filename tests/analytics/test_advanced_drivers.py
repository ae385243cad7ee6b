"""describe, churn_drivers and retention through MCP on the seeded database, each figure checked against an
independent computation in this file (plain SQL, statsmodels, scikit-learn, numpy) on rows pulled by plain SQL.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from statsmodels.stats.outliers_influence import variance_inflation_factor

from mcp_server.runtime import Runtime
from tests.analytics.helpers import analyze, close, session_with, sql_frame, sql_rows
from tests.support import refusal

AS_OF = """SELECT greatest((SELECT max(created_at) FROM customers), (SELECT max(churn_date) FROM customers),
    (SELECT max(event_timestamp) FROM network_events), (SELECT max(transaction_date) FROM revenue)) AS as_of"""
# The per-customer features, written independently of sql/analysis_driver_features.sql.
FEATURE_ROWS = """
SELECT c.customer_id, c.is_churned::int AS is_churned, c.age, c.account_type, c.created_at, c.churn_date,
       (SELECT avg(e.network_quality_score) FROM network_events e WHERE e.customer_id = c.customer_id)
           AS avg_network_quality,
       (SELECT count(*) FROM network_events e WHERE e.customer_id = c.customer_id) AS event_count,
       (SELECT coalesce(sum(e.data_usage_mb), 0) FROM network_events e WHERE e.customer_id = c.customer_id)
           AS total_data_usage_mb,
       (SELECT coalesce(sum(r.amount), 0) FROM revenue r WHERE r.customer_id = c.customer_id)::float8
           AS total_revenue
FROM customers c ORDER BY c.customer_id"""
NUMERIC = ["age", "tenure_days", "avg_network_quality", "event_count", "total_data_usage_mb", "total_revenue"]


async def customer_features(runtime: Runtime) -> pd.DataFrame:
    as_of = (await sql_rows(runtime, AS_OF))[0]["as_of"]
    frame = await sql_frame(runtime, FEATURE_ROWS)
    end = frame["churn_date"].where(frame["churn_date"].notna(), as_of)
    frame["tenure_days"] = (
        pd.to_datetime(end) - pd.to_datetime(frame["created_at"])
    ).dt.total_seconds() / 86400
    for name in NUMERIC:
        frame[name] = frame[name].astype(float)
    return frame


def standardised_design(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """z-scores (sample SD) and Basic-referenced account dummies, built by hand."""
    design = pd.DataFrame({"const": 1.0}, index=frame.index)
    for name in ["age", "tenure_days"]:
        design[name] = (frame[name] - frame[name].mean()) / frame[name].std()
    design["account_type=Enterprise"] = (frame["account_type"] == "Enterprise").astype(float)
    design["account_type=Premium"] = (frame["account_type"] == "Premium").astype(float)
    for name in ["avg_network_quality", "event_count", "total_data_usage_mb", "total_revenue"]:
        design[name] = (frame[name] - frame[name].mean()) / frame[name].std()
    return design, frame["is_churned"].astype(float)


# -- churn_drivers -------------------------------------------------------------------------------


async def test_churn_driver_coefficients_p_values_intervals_auc_and_vif_match_an_independent_fit(
    runtime, connect
):
    frame = await customer_features(runtime)
    assert frame["avg_network_quality"].notna().all()  # every seeded customer has events
    design, target = standardised_design(frame)
    expected = sm.Logit(target, design).fit(disp=0)
    bounds = expected.conf_int(alpha=0.05)
    async with connect("analyst") as client:
        answer = await analyze(client, "churn_drivers")
    results = answer["results"]
    assert results["customers"] == len(frame) == 2_000 and results["customers_left_out"] == 0
    assert results["reference_levels"] == {"account_type": "Basic"}
    terms = {entry["term"]: entry for entry in results["coefficients"]}
    assert set(terms) == set(design.columns)
    for term in design.columns:
        entry = terms[term]
        assert entry["coefficient"] == close(expected.params[term]), term
        assert entry["std_error"] == close(expected.bse[term]), term
        assert entry["p_value"] == close(expected.pvalues[term]), term
        assert entry["odds_ratio"] == close(math.exp(expected.params[term]))
        assert entry["ci_low"] == close(math.exp(bounds.loc[term, 0]))
        assert entry["ci_high"] == close(math.exp(bounds.loc[term, 1]))
    assert terms["age"]["sd"] == close(frame["age"].std())
    assert results["fit"]["log_likelihood"] == close(expected.llf)
    assert results["fit"]["pseudo_r_squared"] == close(expected.prsquared)

    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    scores = cross_val_score(
        LogisticRegression(C=np.inf, solver="lbfgs", max_iter=5000, tol=1e-10),
        design.drop(columns="const").to_numpy(),
        target.to_numpy(),
        cv=folds,
        scoring="roc_auc",
    )
    assert results["cross_validation"]["auc_by_fold"] == pytest.approx(list(scores), abs=1e-4)
    assert results["cross_validation"]["auc_mean"] == pytest.approx(scores.mean(), abs=1e-4)

    matrix = design.to_numpy()
    for position, term in enumerate(design.columns[1:], start=1):
        assert results["collinearity"]["vif"][term] == close(variance_inflation_factor(matrix, position))
    assert answer["metadata"]["row_count"] == 2_000 and "GROUP BY customer_id" in answer["metadata"]["sql"][0]


async def test_churn_drivers_find_poor_network_quality_raises_churn_and_enterprise_churns_least(connect):
    async with connect("analyst") as client:
        answer = await analyze(client, "churn_drivers")
    terms = {entry["term"]: entry for entry in answer["results"]["coefficients"]}
    quality = terms["avg_network_quality"]
    # Higher quality lowers the odds, so poorer quality raises them, and the whole interval agrees.
    assert quality["odds_ratio"] < 1 and quality["ci_high"] < 1 and quality["p_value"] < 0.001
    accounts = {"Basic": 1.0} | {
        entry["level"]: entry["odds_ratio"] for entry in terms.values() if entry["feature"] == "account_type"
    }
    assert min(accounts, key=accounts.__getitem__) == "Enterprise"
    assert accounts["Enterprise"] < accounts["Premium"] < accounts["Basic"]
    assert terms["account_type=Enterprise"]["ci_high"] < 1
    ranked = {driver["term"]: driver for driver in answer["results"]["drivers"]}
    assert ranked["avg_network_quality"]["significant"] and ranked["avg_network_quality"]["direction"] == (
        "lowers churn"
    )
    assert "each standard deviation lower" in ranked["avg_network_quality"]["description"]
    assert "the odds of churn of Basic customers" in ranked["account_type=Enterprise"]["description"]
    assert [driver["rank"] for driver in answer["results"]["drivers"]] == list(range(1, len(ranked) + 1))
    assert "Strongest drivers" in answer["summary"]


async def test_churn_drivers_warn_about_collinear_features_and_rank_boosting_importances(runtime, connect):
    async with connect("analyst") as client:
        results = (
            await analyze(
                client,
                "churn_drivers",
                features=["account_type", "avg_network_quality", "total_revenue", "age"],
                vif_threshold=1.5,
                gradient_boosting=True,
                cv_folds=3,
            )
        )["results"]
    vif = results["collinearity"]["vif"]
    flagged = [term for term, value in vif.items() if value > 1.5]
    assert flagged and all(any(term in note for note in results["warnings"]) for term in flagged)
    # Revenue follows the account type (ARPU is planted by plan), so these two are the collinear ones.
    assert "total_revenue" in flagged and vif["age"] < 1.5
    boosting = results["gradient_boosting"]
    importances = {item["feature"]: item["auc_drop_mean"] for item in boosting["importances"]}
    assert set(importances) == {"account_type", "avg_network_quality", "total_revenue", "age"}
    assert importances["avg_network_quality"] > importances["age"]
    assert 0.5 < boosting["holdout_auc"] <= 1 and results["cross_validation"]["folds"] == 3


async def test_churn_drivers_on_a_session_dataset_equal_the_database_on_the_same_rows(runtime, connect):
    as_of = (await sql_rows(runtime, AS_OF))[0]["as_of"]
    session = await session_with(runtime, {"features": FEATURE_ROWS})
    features = ["age", "tenure_days", "account_type", "avg_network_quality", "total_revenue"]
    async with connect("analyst") as client:
        from_database = await analyze(client, "churn_drivers", features=features)
        from_session = await analyze(
            client, "churn_drivers", session, dataset="features", features=features, as_of=as_of.isoformat()
        )
    left = {entry["term"]: entry for entry in from_database["results"]["coefficients"]}
    right = {entry["term"]: entry for entry in from_session["results"]["coefficients"]}
    assert set(left) == set(right)
    for term, entry in left.items():
        assert right[term]["coefficient"] == close(entry["coefficient"])
        assert right[term]["p_value"] == close(entry["p_value"])


# -- retention -----------------------------------------------------------------------------------


def product_limit(days: np.ndarray, churned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier by hand: (event times, survival just after each)."""
    times = np.unique(days[churned])
    survival, current = [], 1.0
    for time in times:
        at_risk = (days >= time).sum()
        events = ((days == time) & churned).sum()
        current *= 1 - events / at_risk
        survival.append(current)
    return times, np.array(survival)


def first_below(times: np.ndarray, survival: np.ndarray, level: float) -> float | None:
    below = np.flatnonzero(survival < level)
    return float(times[below[0]]) if len(below) else None


def log_rank(days: np.ndarray, churned: np.ndarray, groups: np.ndarray) -> tuple[float, int]:
    """The k-group log-rank chi-square by hand: observed minus expected events and their covariance."""
    labels = sorted(set(groups))
    k = len(labels)
    observed_minus_expected, covariance = np.zeros(k), np.zeros((k, k))
    for time in np.unique(days[churned]):
        at_risk = np.array([((days >= time) & (groups == g)).sum() for g in labels], dtype=float)
        events = np.array([((days == time) & churned & (groups == g)).sum() for g in labels], dtype=float)
        n, d = at_risk.sum(), events.sum()
        observed_minus_expected += events - d * at_risk / n
        if n > 1:
            share = at_risk / n
            covariance += d * (n - d) / (n - 1) * (np.diag(share) - np.outer(share, share))
    head = observed_minus_expected[:-1]
    return float(head @ np.linalg.solve(covariance[:-1, :-1], head)), k - 1


async def lifetimes(runtime: Runtime, where: str = "TRUE") -> pd.DataFrame:
    as_of = (await sql_rows(runtime, AS_OF))[0]["as_of"]
    frame = await sql_frame(
        runtime, f"SELECT account_type, created_at, churn_date, is_churned FROM customers WHERE {where}"
    )
    end = pd.to_datetime(frame["churn_date"].where(frame["is_churned"], as_of))
    frame["days"] = np.floor((end - pd.to_datetime(frame["created_at"])).dt.total_seconds() / 86400)
    return frame


async def test_kaplan_meier_curves_quantiles_and_log_rank_match_a_direct_computation(runtime, connect):
    frame = await lifetimes(runtime)
    async with connect("analyst") as client:
        results = (await analyze(client, "retention", curve_step_days=60))["results"]
    days, churned = frame["days"].to_numpy(), frame["is_churned"].to_numpy(dtype=bool)
    assert results["overall"]["customers"] == len(frame) and results["overall"]["churned"] == churned.sum()
    for segment, rows in frame.groupby("account_type"):
        times, survival = product_limit(rows["days"].to_numpy(), rows["is_churned"].to_numpy(dtype=bool))
        mine = results["by_segment"][segment]
        assert mine["customers"] == len(rows)
        for share, key in ((0.1, "10%"), (0.25, "25%"), (0.5, "50%")):
            assert mine["lifetime_quantiles"][key] == first_below(times, survival, 1 - share)
        assert mine["median_lifetime_days"] == first_below(times, survival, 0.5)
        for point in mine["curve"]:
            passed = survival[times <= point["day"]]
            assert point["survival"] == close(passed[-1] if len(passed) else 1.0)
            assert point["at_risk"] == (rows["days"] >= point["day"]).sum()
            assert point["ci_low"] <= point["survival"] <= point["ci_high"]
    # Basic churns most: a quarter of Basic customers are gone before a quarter of Enterprise ones.
    basic, enterprise = results["by_segment"]["Basic"], results["by_segment"]["Enterprise"]
    assert basic["lifetime_quantiles"]["25%"] is not None
    assert enterprise["lifetime_quantiles"]["25%"] is None or (
        enterprise["lifetime_quantiles"]["25%"] > basic["lifetime_quantiles"]["25%"]
    )
    chi_square, dof = log_rank(days, churned, frame["account_type"].to_numpy())
    assert results["test"]["chi_square"] == close(chi_square)
    assert results["test"]["degrees_of_freedom"] == dof
    assert results["test"]["p_value"] < 0.001
    assert "log-rank" in results["test"]["method"]


async def test_median_lifetime_of_a_session_dataset_matches_a_direct_computation(runtime, connect):
    # Mostly churned customers, so the survival curve does cross one half.
    query = "SELECT * FROM customers WHERE is_churned OR age < 30"
    frame = await lifetimes(runtime, "is_churned OR age < 30")
    as_of = (await sql_rows(runtime, AS_OF))[0]["as_of"]
    session = await session_with(runtime, {"cohort": query})
    async with connect("analyst") as client:
        answer = await analyze(client, "retention", session, dataset="cohort", as_of=as_of.isoformat())
    results = answer["results"]
    times, survival = product_limit(frame["days"].to_numpy(), frame["is_churned"].to_numpy(dtype=bool))
    median = first_below(times, survival, 0.5)
    assert median is not None
    assert results["overall"]["median_lifetime_days"] == median
    low, high = results["overall"]["median_ci"]
    assert low is not None and low <= median and (high is None or median <= high)
    for segment, rows in frame.groupby("account_type"):
        times, survival = product_limit(rows["days"].to_numpy(), rows["is_churned"].to_numpy(dtype=bool))
        assert results["by_segment"][segment]["median_lifetime_days"] == first_below(times, survival, 0.5)
    assert f"Median customer lifetime is {median:.0f} days" in answer["summary"]


async def test_retention_of_a_session_dataset_equals_the_database_on_the_same_rows(runtime, connect):
    as_of = (await sql_rows(runtime, AS_OF))[0]["as_of"]
    session = await session_with(runtime, {"customers": "SELECT * FROM customers"})
    async with connect("analyst") as client:
        from_database = (await analyze(client, "retention", group_by="age_band"))["results"]
        from_session = (
            await analyze(
                client,
                "retention",
                session,
                dataset="customers",
                group_by="age_band",
                as_of=as_of.isoformat(),
            )
        )["results"]
    assert from_session["cohorts"] == from_database["cohorts"]
    assert from_session["test"]["chi_square"] == close(from_database["test"]["chi_square"])
    assert list(from_session["by_segment"]) == list(from_database["by_segment"])
    for segment, expected in from_database["by_segment"].items():
        assert from_session["by_segment"][segment]["lifetime_quantiles"] == expected["lifetime_quantiles"]
        assert [point["survival"] for point in from_session["by_segment"][segment]["curve"]] == [
            close(point["survival"]) for point in expected["curve"]
        ]


async def test_cohort_retention_cells_match_plain_sql(runtime, connect):
    async with connect("analyst") as client:
        results = (await analyze(client, "retention", cohort_months=6))["results"]
    table = {row["cohort"]: row for row in results["cohorts"]["rows"]}
    as_of = (await sql_rows(runtime, AS_OF))[0]["as_of"]
    sizes = await sql_rows(
        runtime, "SELECT to_char(created_at, 'YYYY-MM') AS cohort, count(*) AS n FROM customers GROUP BY 1"
    )
    assert {row["cohort"]: row["n"] for row in sizes} == {c: row["customers"] for c, row in table.items()}
    checked = 0
    for cohort in sorted(table)[::4]:
        row = table[cohort]
        for month, share in enumerate(row["retention"], start=1):
            expected = (
                await sql_rows(
                    runtime,
                    "SELECT count(*) FILTER (WHERE NOT is_churned OR churn_date >= created_at + make_interval("
                    "months => $2)) AS kept, count(*) AS n FROM customers WHERE to_char(created_at, 'YYYY-MM') = $1",
                    cohort,
                    month,
                )
            )[0]
            assert row["retained"][month - 1] == expected["kept"], (cohort, month)
            assert share == close(expected["kept"] / expected["n"])
            checked += 1
        # A month is shown only once every member of the cohort has lived through it.
        start = pd.Timestamp(cohort + "-01")
        observable = [m for m in range(1, 7) if start + pd.DateOffset(months=m + 1) <= pd.Timestamp(as_of)]
        assert len(row["retention"]) == len(observable)
    assert checked > 10


# -- describe ------------------------------------------------------------------------------------


async def test_describe_of_a_table_matches_plain_sql_column_by_column(runtime, connect):
    async with connect("analyst") as client:
        results = (await analyze(client, "describe", table="revenue"))["results"]
    columns = {column["name"]: column for column in results["columns"]}
    rows = (await sql_rows(runtime, "SELECT count(*) AS n FROM revenue"))[0]["n"]
    assert results["rows"] == rows and list(columns) == [
        "transaction_id",
        "customer_id",
        "transaction_date",
        "amount",
        "service_type",
        "payment_method",
    ]
    amount = (
        await sql_rows(
            runtime,
            "SELECT count(amount) AS n, count(DISTINCT amount) AS d, avg(amount)::float8 AS mean, "
            "stddev_samp(amount)::float8 AS std, min(amount)::float8 AS lo, max(amount)::float8 AS hi, "
            "sum(amount)::float8 AS total, percentile_cont(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP "
            "(ORDER BY amount) AS q FROM revenue",
        )
    )[0]
    summary = columns["amount"]["summary"]
    assert columns["amount"]["type"] == "float" and columns["amount"]["distinct"] == amount["d"]
    assert columns["amount"]["nulls"] == rows - amount["n"]
    assert [summary[key] for key in ("mean", "std", "min", "max", "sum")] == [
        close(amount[key]) for key in ("mean", "std", "lo", "hi", "total")
    ]
    assert [summary["p25"], summary["median"], summary["p75"]] == [close(value) for value in amount["q"]]
    for name in ("service_type", "payment_method", "customer_id"):
        top = await sql_rows(
            runtime,
            f"SELECT {name}::text AS value, count(*) AS n FROM revenue WHERE {name} IS NOT NULL "
            f"GROUP BY {name} ORDER BY n DESC, {name} LIMIT 5",
        )
        stats = (
            await sql_rows(
                runtime,
                f"SELECT count(DISTINCT {name}) AS d, min(length({name}::text)) AS lo, "
                f"max(length({name}::text)) AS hi FROM revenue",
            )
        )[0]
        assert columns[name]["summary"]["top_values"] == [{"value": r["value"], "count": r["n"]} for r in top]
        assert columns[name]["distinct"] == stats["d"]
        assert (columns[name]["summary"]["min_length"], columns[name]["summary"]["max_length"]) == (
            stats["lo"],
            stats["hi"],
        )
    key = columns["transaction_id"]
    assert key["distinct"] == rows and key["nulls"] == 0
    assert [item["count"] for item in key["summary"]["top_values"]] == [1] * 5
    first = await sql_rows(
        runtime, "SELECT transaction_id::text AS v FROM revenue ORDER BY transaction_id LIMIT 5"
    )
    assert [item["value"] for item in key["summary"]["top_values"]] == [row["v"] for row in first]
    dates = (
        await sql_rows(
            runtime,
            "SELECT count(DISTINCT transaction_date) AS d, min(transaction_date) AS lo, "
            "max(transaction_date) AS hi FROM revenue",
        )
    )[0]
    assert columns["transaction_date"]["distinct"] == dates["d"]
    assert columns["transaction_date"]["summary"] == {
        "min": dates["lo"].isoformat(),
        "max": dates["hi"].isoformat(),
    }


async def test_describe_counts_nulls_and_booleans_like_plain_sql(runtime, connect):
    async with connect("analyst") as client:
        answer = await analyze(
            client, "describe", table="customers", columns=["churn_date", "is_churned", "age"]
        )
    columns = {column["name"]: column for column in answer["results"]["columns"]}
    expected = (
        await sql_rows(
            runtime,
            "SELECT count(*) AS n, count(churn_date) AS dated, count(*) FILTER (WHERE is_churned) AS churned, "
            "count(DISTINCT age) AS ages, percentile_cont(0.5) WITHIN GROUP (ORDER BY age) AS median "
            "FROM customers",
        )
    )[0]
    assert list(columns) == ["churn_date", "is_churned", "age"]
    assert columns["churn_date"]["nulls"] == expected["n"] - expected["dated"]
    assert columns["churn_date"]["null_fraction"] == close(
        (expected["n"] - expected["dated"]) / expected["n"]
    )
    assert columns["is_churned"]["summary"] == {
        "true": expected["churned"],
        "false": expected["n"] - expected["churned"],
        "true_fraction": close(expected["churned"] / expected["n"]),
    }
    assert columns["age"]["distinct"] == expected["ages"]
    assert columns["age"]["summary"]["median"] == close(expected["median"])
    assert "most missing: churn_date" in answer["summary"]


async def test_describe_of_a_session_dataset_matches_pandas(runtime, connect):
    query = "SELECT age, account_type, is_churned, created_at FROM customers WHERE age < 40"
    frame = await sql_frame(runtime, query)
    session = await session_with(runtime, {"young": query})
    async with connect("analyst") as client:
        answer = await analyze(client, "describe", session, dataset="young")
    columns = {column["name"]: column for column in answer["results"]["columns"]}
    age = frame["age"].astype(float)
    assert answer["results"]["rows"] == len(frame)
    assert columns["age"]["summary"]["mean"] == close(age.mean())
    assert columns["age"]["summary"]["std"] == close(age.std())
    assert columns["age"]["summary"]["p75"] == close(np.percentile(age, 75))
    counts = frame["account_type"].value_counts()
    assert {item["value"]: item["count"] for item in columns["account_type"]["summary"]["top_values"]} == (
        counts.to_dict()
    )
    assert columns["is_churned"]["summary"]["true"] == int(frame["is_churned"].sum())
    assert answer["metadata"]["dataset"] == "young"


# -- templates and errors ------------------------------------------------------------------------


async def test_the_new_analyses_publish_templates_with_their_defaults(connect):
    async with connect("analyst") as client:
        for name, parameter, default in (
            ("describe", "table", "customers"),
            ("churn_drivers", "cv_folds", 5),
            ("retention", "group_by", "account_type"),
        ):
            contents = await client.read_resource(f"templates://analysis/{name}")
            template = json.loads(contents[0].text)
            assert template["analysis_type"] == name
            assert template["parameters"][parameter]["default"] == default
            assert template["example"]["arguments"]["analysis_type"] == name


@pytest.mark.parametrize(
    ("analysis_type", "parameters", "expected"),
    [
        ("describe", {"table": "pg_authid"}, "must be one of customers, network_events, revenue"),
        (
            "describe",
            {"columns": ['age" FROM pg_user --']},
            "is not in table customers; columns: customer_id",
        ),
        ("describe", {"table": "customers", "column": "age"}, "unknown parameter 'column' for describe"),
        ("churn_drivers", {"features": ["age", "password"]}, "parameter 'features.1' of churn_drivers"),
        ("churn_drivers", {"features": ["age", "age"]}, "features lists a feature twice"),
        ("churn_drivers", {"cv_folds": 1}, "parameter 'cv_folds' of churn_drivers"),
        ("retention", {"group_by": "tenure_band"}, "must be one of account_type, gender, location, age_band"),
        ("retention", {"cohort_months": 0}, "parameter 'cohort_months' of retention"),
    ],
)
async def test_bad_parameters_get_one_line_errors_that_say_what_is_allowed(
    connect, analysis_type, parameters, expected
):
    async with connect("analyst") as client:
        message = await refusal(
            client, "analyze_data", data_source="database", analysis_type=analysis_type, parameters=parameters
        )
    assert expected in message


async def test_session_datasets_without_the_needed_columns_are_refused_clearly(runtime, connect):
    session = await session_with(runtime, {"ages": "SELECT age, account_type FROM customers LIMIT 50"})
    async with connect("analyst") as client:
        drivers = await refusal(
            client,
            "analyze_data",
            data_source=session,
            analysis_type="churn_drivers",
            parameters={"dataset": "ages"},
        )
        retention = await refusal(
            client,
            "analyze_data",
            data_source=session,
            analysis_type="retention",
            parameters={"dataset": "ages"},
        )
    assert "dataset lacks column 'is_churned' needed for churn_drivers" in drivers
    assert "dataset lacks column 'created_at' needed for retention" in retention


async def test_churn_drivers_leave_out_customers_missing_a_feature_and_say_so(runtime, connect):
    query = (
        "SELECT is_churned, age, account_type, CASE WHEN age >= 25 THEN avg_network_quality END "
        f"AS avg_network_quality FROM ({FEATURE_ROWS}) AS features"
    )
    frame = await sql_frame(runtime, query)
    session = await session_with(runtime, {"partial": query})
    async with connect("analyst") as client:
        results = (await analyze(client, "churn_drivers", session, dataset="partial"))["results"]
    complete = frame.dropna(subset=["avg_network_quality"]).reset_index(drop=True)
    assert results["customers_left_out"] == len(frame) - len(complete) > 0
    assert any("were left out" in note for note in results["warnings"])
    design = pd.DataFrame({"const": 1.0}, index=complete.index)
    age = complete["age"].astype(float)
    design["age"] = (age - age.mean()) / age.std()
    for level in ("Enterprise", "Premium"):
        design[f"account_type={level}"] = (complete["account_type"] == level).astype(float)
    quality = complete["avg_network_quality"].astype(float)
    design["avg_network_quality"] = (quality - quality.mean()) / quality.std()
    expected = sm.Logit(complete["is_churned"].astype(float), design).fit(disp=0)
    terms = {entry["term"]: entry for entry in results["coefficients"]}
    for term in design.columns:
        assert terms[term]["coefficient"] == close(expected.params[term])
        assert terms[term]["p_value"] == close(expected.pvalues[term])
