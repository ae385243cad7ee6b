"""Churn drivers: a logistic regression of is_churned on standardised per-customer features, with odds ratios,
intervals, p-values, a cross-validated AUC, collinearity checks and an optional gradient-boosting cross-check.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.inspection import permutation_importance
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from threadpoolctl import threadpool_limits

from analytics.frames import customer_tenure_days, require_columns, truthy
from analytics.parameters import DRIVERS, ChurnDriversParameters
from analytics.stats import finite_or_none
from analytics.summary import Outcome, p_value_words
from core.errors import InvalidInput

CATEGORICAL = ("account_type",)
MIN_PER_CLASS = 10  # fewer churned (or retained) customers than this cannot support a model
BOOSTING_ROWS = 50_000  # plenty to rank a handful of features, and keeps the boosting fit short
PERMUTATION_ROWS = 5_000
PERMUTATION_REPEATS = 3


def design_matrix(
    table: pd.DataFrame, features: list[str]
) -> tuple[pd.DataFrame, pd.Series, dict[str, dict[str, float]], dict[str, Any], list[str]]:
    """The model's inputs from one row per customer: numeric features as z-scores (sample SD), each
    categorical feature as 0/1 columns against its most common level; rows missing any input are left out.

    Returns (X with a 'const' column, y, {feature: {mean, sd}}, {feature: reference level}, warnings).
    """
    notes: list[str] = []
    complete = table.dropna(subset=[*features, "is_churned"])
    if complete.empty:
        raise InvalidInput(
            f"none of the {len(table):,} customers has is_churned and every chosen feature "
            f"({', '.join(features)}); choose other features or load data"
        )
    columns: dict[str, pd.Series] = {}
    scales: dict[str, dict[str, float]] = {}
    references: dict[str, Any] = {}
    for name in features:
        if name in CATEGORICAL:
            levels = complete[name].astype(str)
            counts = levels.value_counts()
            if len(counts) < 2:
                notes.append(f"{name} has a single level in the data, so it was left out")
                continue
            reference = sorted(counts.index, key=lambda level: (-int(counts[level]), level))[0]
            references[name] = reference
            for level in sorted(counts.index):
                if level != reference:
                    columns[f"{name}={level}"] = (levels == level).astype(float)
            continue
        values = complete[name].astype(float)
        mean, sd = float(values.mean()), float(values.std(ddof=1))
        if not sd > 0:
            notes.append(f"{name} is constant in the data, so it was left out")
            continue
        scales[name] = {"mean": mean, "sd": sd}
        columns[name] = (values - mean) / sd
    if not columns:
        raise InvalidInput("no usable feature: every feature chosen is constant or missing; choose others")
    design = pd.DataFrame(columns, index=complete.index)
    design.insert(0, "const", 1.0)
    return design, complete["is_churned"].astype(float), scales, references, notes


def churn_drivers_of_table(table: pd.DataFrame, parameters: ChurnDriversParameters) -> Outcome:
    """The analysis on one row per customer: is_churned (0/1) and the chosen features."""
    # One BLAS/OpenMP thread: these fits are small, and on a busy machine more threads thrash.
    with threadpool_limits(limits=1):
        return _churn_drivers(table, parameters)


def _churn_drivers(table: pd.DataFrame, parameters: ChurnDriversParameters) -> Outcome:
    features = list(parameters.features or DRIVERS)
    design, target, scales, references, notes = design_matrix(table, features)
    rows, left_out = len(design), len(table) - len(design)
    churned = int(target.sum())
    if min(churned, rows - churned) < MIN_PER_CLASS:
        raise InvalidInput(
            f"{rows:,} usable customers of whom {churned:,} churned: a churn model needs at least "
            f"{MIN_PER_CLASS} churned and {MIN_PER_CLASS} retained customers with every feature present"
        )
    if left_out:
        notes.append(f"{left_out:,} customers lacking a feature value (e.g. no network events) were left out")
    fit = _fit_logit(design, target)
    alpha = 1 - parameters.confidence
    bounds = fit.conf_int(alpha=alpha)
    coefficients = []
    for term in design.columns:
        coefficient = float(fit.params[term])
        entry: dict[str, Any] = {
            "term": term,
            "feature": term.split("=")[0],
            "coefficient": coefficient,
            "std_error": float(fit.bse[term]),
            "z": float(fit.tvalues[term]),
            "p_value": float(fit.pvalues[term]),
            "odds_ratio": finite_or_none(math.exp(coefficient)),
            "ci_low": finite_or_none(math.exp(float(bounds.loc[term, 0]))),
            "ci_high": finite_or_none(math.exp(float(bounds.loc[term, 1]))),
        }
        if term in scales:
            entry["per"] = f"1 standard deviation ({scales[term]['sd']:.4g})"
            entry["mean"], entry["sd"] = scales[term]["mean"], scales[term]["sd"]
        elif "=" in term:
            feature, level = term.split("=", 1)
            entry["level"] = level
            entry["per"] = f"{level} versus {references[feature]}"
        coefficients.append(entry)
    vif = _variance_inflation(design)
    for term, value in vif.items():
        if value is None or value > parameters.vif_threshold:
            shown = "infinite" if value is None else f"{value:.1f}"
            notes.append(
                f"{term} has a variance inflation factor of {shown} (> {parameters.vif_threshold:g}): it is "
                "largely explained by the other features, so its own odds ratio is unstable; read it with them"
            )
    if not fit.mle_retvals.get("converged", True):
        notes.append("the maximum-likelihood fit did not converge; treat the coefficients with caution")
    predicted = np.asarray(fit.predict(design), dtype=float)
    results: dict[str, Any] = {
        "model": "logistic regression (statsmodels Logit, maximum likelihood), numeric features standardised",
        "target": "is_churned",
        "features": features,
        "customers": rows,
        "customers_left_out": left_out,
        "churned": churned,
        "confidence": parameters.confidence,
        "reference_levels": references,
        "coefficients": coefficients,
        "fit": {
            "log_likelihood": float(fit.llf),
            "null_log_likelihood": float(fit.llnull),
            "pseudo_r_squared": float(fit.prsquared),
            "likelihood_ratio_p_value": float(fit.llr_pvalue),
            "aic": float(fit.aic),
            "in_sample_auc": float(roc_auc_score(target, predicted)),
        },
        "cross_validation": cross_validated_auc(design, target, parameters.cv_folds, parameters.random_state),
        "collinearity": {"vif": vif, "threshold": parameters.vif_threshold},
        "warnings": notes,
    }
    results["drivers"] = rank_drivers(coefficients, alpha)
    if parameters.gradient_boosting:
        results["gradient_boosting"] = boosting_importances(
            table.loc[design.index], features, target, parameters.random_state
        )
    return Outcome(results, _summary(results), rows)


def _fit_logit(design: pd.DataFrame, target: pd.Series) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return sm.Logit(target, design).fit(disp=0, maxiter=200)
    except np.linalg.LinAlgError:
        raise InvalidInput(
            "the features are perfectly collinear (one is a combination of others); drop one of them "
            "with parameters.features"
        ) from None
    except Exception as error:  # statsmodels raises PerfectSeparationError on older versions
        if "separation" in str(error).lower():
            raise InvalidInput(
                "a feature separates churned from retained customers perfectly, so odds ratios are "
                "infinite; drop it with parameters.features"
            ) from None
        raise


def cross_validated_auc(design: pd.DataFrame, target: pd.Series, folds: int, seed: int) -> dict[str, Any]:
    """Out-of-fold ROC AUC of the same (unpenalised) logistic model over stratified folds."""
    folds = min(folds, int(target.sum()), int(len(target) - target.sum()))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = cross_val_score(
            LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=100),
            design.drop(columns="const").to_numpy(),
            target.to_numpy(),
            cv=splitter,
            scoring="roc_auc",
        )
    return {
        "folds": folds,
        "auc_mean": float(scores.mean()),
        "auc_std": float(scores.std(ddof=1)) if folds > 1 else None,
        "auc_by_fold": [float(score) for score in scores],
        "method": "stratified k-fold, shuffled with random_state",
    }


def _variance_inflation(design: pd.DataFrame) -> dict[str, float | None]:
    """VIF of every term: 1 / (1 - R^2) of the term regressed on the others with an intercept, which is the
    diagonal of the inverse correlation matrix of the terms (statsmodels' variance_inflation_factor, at
    once). A singular matrix means some term is an exact combination of others: infinite (None).
    """
    terms = [term for term in design.columns if term != "const"]
    if len(terms) == 1:
        return {terms[0]: 1.0}
    correlation = np.corrcoef(design[terms].to_numpy(dtype=float), rowvar=False)
    try:
        diagonal = np.diag(np.linalg.inv(correlation))
    except np.linalg.LinAlgError:
        return dict.fromkeys(terms)
    return {
        term: finite_or_none(float(value)) if value > 0 else None
        for term, value in zip(terms, diagonal, strict=True)
    }


def rank_drivers(coefficients: list[dict[str, Any]], alpha: float) -> list[dict[str, Any]]:
    """Terms from the strongest to the weakest effect on the odds (|log odds ratio|), in plain words."""
    terms = [entry for entry in coefficients if entry["term"] != "const"]
    terms.sort(key=lambda entry: -abs(entry["coefficient"]))
    ranked = []
    for rank, entry in enumerate(terms, start=1):
        significant = entry["p_value"] < alpha
        ranked.append(
            {
                "rank": rank,
                "term": entry["term"],
                "odds_ratio": entry["odds_ratio"],
                "p_value": entry["p_value"],
                "significant": significant,
                "direction": "raises churn" if entry["coefficient"] > 0 else "lowers churn",
                "description": _words(entry, significant),
            }
        )
    return ranked


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _words(entry: dict[str, Any], significant: bool) -> str:
    odds = entry["odds_ratio"]
    interval = f"CI {_ratio(entry['ci_low'])}-{_ratio(entry['ci_high'])}, {p_value_words(entry['p_value'])}"
    verdict = "" if significant else "; not statistically significant"
    if "level" in entry:
        return (
            f"{entry['feature']} {entry['level']}: {_ratio(odds)}x the odds of churn of "
            f"{entry['per'].split(' versus ')[1]} customers ({interval}){verdict}."
        )
    name, sd = entry["term"], entry.get("sd")
    step = f"{sd:.3g}" if sd is not None else "one unit"
    if entry["coefficient"] >= 0:
        text = (
            f"{name}: each standard deviation higher ({step}) multiplies the odds of churn by {_ratio(odds)}"
        )
    else:
        inverse = _ratio(1 / odds) if odds else "n/a"
        text = (
            f"{name}: each standard deviation lower ({step}) multiplies the odds of churn by {inverse} "
            f"(odds ratio per SD higher {_ratio(odds)})"
        )
    return f"{text} ({interval}){verdict}."


def boosting_importances(
    table: pd.DataFrame, features: list[str], target: pd.Series, seed: int
) -> dict[str, Any]:
    """Permutation importances (drop in held-out AUC) of a histogram gradient-boosting classifier."""
    inputs = pd.DataFrame(index=table.index)
    categorical = []
    for name in features:
        if name in CATEGORICAL:
            inputs[name] = table[name].astype("category").cat.codes
            categorical.append(True)
        else:
            inputs[name] = table[name].astype(float)
            categorical.append(False)
    values, labels = inputs.to_numpy(dtype=float), target.to_numpy(dtype=int)
    if len(labels) > BOOSTING_ROWS:
        values, _, labels, _ = train_test_split(
            values, labels, train_size=BOOSTING_ROWS, stratify=labels, random_state=seed
        )
    x_train, x_test, y_train, y_test = train_test_split(
        values, labels, test_size=0.25, stratify=labels, random_state=seed
    )
    model = HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed)
    model.fit(x_train, y_train)
    auc = float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))
    if len(x_test) > PERMUTATION_ROWS:  # enough for stable importances, and the predictions stay fast
        x_test, _, y_test, _ = train_test_split(
            x_test, y_test, train_size=PERMUTATION_ROWS, stratify=y_test, random_state=seed
        )
    permuted = permutation_importance(
        model, x_test, y_test, scoring="roc_auc", n_repeats=PERMUTATION_REPEATS, random_state=seed, n_jobs=1
    )
    order = np.argsort(-permuted.importances_mean)
    return {
        "model": f"HistGradientBoostingClassifier on at most {BOOSTING_ROWS:,} customers (stratified sample), "
        "75/25 stratified split; importance: drop in held-out AUC "
        f"when a feature is shuffled ({PERMUTATION_REPEATS} repeats, at most {PERMUTATION_ROWS:,} held-out rows)",
        "holdout_auc": auc,
        "importances": [
            {
                "feature": features[i],
                "auc_drop_mean": float(permuted.importances_mean[i]),
                "auc_drop_std": float(permuted.importances_std[i]),
            }
            for i in order
        ],
    }


def _summary(results: dict[str, Any]) -> str:
    auc = results["cross_validation"]["auc_mean"]
    significant = [driver for driver in results["drivers"] if driver["significant"]]
    text = (
        f"Logistic regression of churn on {len(results['features'])} features over "
        f"{results['customers']:,} customers (cross-validated AUC {auc:.2f})"
    )
    if not significant:
        return text + ": no feature is a statistically significant driver."
    top = "; ".join(driver["description"].rstrip(".") for driver in significant[:3])
    return f"{text}. Strongest drivers: {top}."


def churn_drivers_of_frame(frame: pd.DataFrame, parameters: ChurnDriversParameters) -> Outcome:
    """Churn drivers on a session dataset with one row per customer and is_churned."""
    require_columns(frame, ["is_churned"], "churn_drivers")
    if parameters.features is None:
        derivable = {"tenure_days"} if "created_at" in frame.columns else set()
        features = [name for name in DRIVERS if name in frame.columns or name in derivable]
    else:
        features = list(parameters.features)
    missing = [name for name in features if name not in frame.columns and name != "tenure_days"]
    if missing or not features:
        require_columns(frame, missing or list(DRIVERS), "churn_drivers")
    table = pd.DataFrame({"is_churned": truthy(frame["is_churned"]).astype(float)}, index=frame.index)
    for name in features:
        if name == "tenure_days":
            table[name] = customer_tenure_days(frame, parameters.as_of)
        elif name in CATEGORICAL:
            table[name] = frame[name].where(frame[name].notna(), None)
        else:
            values = pd.to_numeric(frame[name], errors="coerce")
            if values.notna().sum() < frame[name].notna().sum():
                raise InvalidInput(f"column '{name}' is not numeric; churn_drivers needs numbers there")
            table[name] = values.astype(float)
    return churn_drivers_of_table(table, parameters.model_copy(update={"features": features}))
