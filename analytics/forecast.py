"""Forecast of a metric's series (the trend analysis's buckets) with exponential smoothing: ETS with
additive errors and a damped additive trend, plus additive seasonality when two cycles are observed.
Prediction intervals come from the fitted model; a holdout backtest compares it with a naive forecast.
"""

from __future__ import annotations

import warnings
from typing import Any, Final

import numpy as np
import pandas as pd
from statsmodels.tsa.exponential_smoothing.ets import ETSModel

from analytics.parameters import ForecastParameters
from analytics.stats import finite_or_none
from analytics.summary import Outcome
from analytics.trend import (
    DEFAULT_PERIODS,
    DEFINITIONS,
    FREQUENCIES,
    Measure,
    complete,
    metric_series,
    totals_of_frame,
)

MIN_POINTS: Final = 10
SEASONAL_CYCLES: Final = 3
DEFAULT_HORIZONS: Final = {"day": 14, "week": 8, "month": 6}


def fit_ets(values: np.ndarray, period: int | None) -> Any:
    """ETS(A, Ad, A) when `period` is given, else ETS(A, Ad, N), fitted by maximum likelihood."""
    series = pd.Series(values, index=pd.RangeIndex(len(values)))
    model = ETSModel(
        series,
        error="add",
        trend="add",
        damped_trend=True,
        seasonal="add" if period else None,
        seasonal_periods=period,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the fit is reported with its AIC
        return model.fit(disp=False)


def seasonal_period_for(points: int, grain: str, requested: int | None) -> int | None:
    """The seasonal period when the series holds SEASONAL_CYCLES of it: with fewer, the seasonal states
    (one per position) would be fitted from one or two values each and the forecast would echo noise."""
    period = requested or DEFAULT_PERIODS[grain]
    return period if points >= SEASONAL_CYCLES * period else None


def forecast_from_buckets(
    totals: pd.DataFrame, parameters: ForecastParameters, measure: Measure | None = None
) -> Outcome:
    """Finish from per-bucket totals (the trend analysis's columns)."""
    grain = parameters.grain
    series = metric_series(complete(totals, grain), parameters.metric, parameters, grain, measure)
    row_count = int(series["rows"].sum()) if len(series) else 0
    values = series["value"].astype(float).interpolate(limit_area="inside").dropna()
    horizon = parameters.horizon or DEFAULT_HORIZONS[grain]
    results: dict[str, Any] = {
        "metric": measure.name if measure else parameters.metric,
        "definition": measure.definition if measure else DEFINITIONS[parameters.metric],
        "grain": grain,
        "horizon": horizon,
        "confidence": parameters.confidence,
        "observed_buckets": len(values),
        "last_observed": values.index[-1].isoformat() if len(values) else None,
    }
    if len(values) < MIN_POINTS:
        results["skipped"] = (
            f"{len(values)} {grain} buckets with a value; a forecast needs at least {MIN_POINTS}: widen the "
            "date range or use a finer grain"
        )
        return Outcome(results, f"No forecast: {results['skipped']}.", row_count)
    y = values.to_numpy(dtype=float)
    period = seasonal_period_for(len(y), grain, parameters.seasonal_period)
    fit = fit_ets(y, period)
    frame = fit.get_prediction(start=len(y), end=len(y) + horizon - 1).summary_frame(
        alpha=1 - parameters.confidence
    )
    future = pd.date_range(values.index[-1], periods=horizon + 1, freq=FREQUENCIES[grain])[1:]
    results["model"] = {
        "name": f"ETS(A,Ad,{'A' if period else 'N'})",
        "seasonal_period": period,
        "seasonality_note": None
        if period
        else f"no seasonal term: the series holds fewer than {SEASONAL_CYCLES} cycles of "
        f"{parameters.seasonal_period or DEFAULT_PERIODS[grain]} {grain}s",
        "aic": finite_or_none(float(fit.aic)),
        "parameters": {
            name: finite_or_none(float(value))
            for name, value in zip(fit.param_names, fit.params, strict=True)
        },
    }
    results["forecast"] = [
        {
            "bucket": when.isoformat(),
            "mean": float(row["mean"]),
            "low": float(row["pi_lower"]),
            "high": float(row["pi_upper"]),
        }
        for when, (_, row) in zip(future, frame.iterrows(), strict=True)
    ]
    results["observed"] = [
        {"bucket": when.isoformat(), "value": float(value)}
        for when, value in zip(values.index, y, strict=True)
    ]
    results["backtest"] = backtest(y, horizon, period, parameters.seasonal_period, grain)
    return Outcome(results, _summary(results), row_count)


def backtest(
    y: np.ndarray, horizon: int, period: int | None, requested: int | None, grain: str
) -> dict[str, Any]:
    """Refit without the last `horizon` points and score both ETS and the last-value forecast on them."""
    train, test = y[:-horizon], y[-horizon:]
    if len(train) < MIN_POINTS:
        return {"skipped": f"holding out {horizon} buckets would leave fewer than {MIN_POINTS} to fit"}
    train_period = seasonal_period_for(len(train), grain, requested) if period else None
    predicted = np.asarray(fit_ets(train, train_period).forecast(horizon), dtype=float)
    model_mae = float(np.mean(np.abs(predicted - test)))
    naive_mae = float(np.mean(np.abs(train[-1] - test)))
    return {
        "holdout_buckets": horizon,
        "mae": model_mae,
        "naive_mae": naive_mae,
        "skill": 1 - model_mae / naive_mae if naive_mae > 0 else None,
    }


def _summary(results: dict[str, Any]) -> str:
    first, last = results["forecast"][0], results["forecast"][-1]
    text = (
        f"{results['model']['name']} forecasts {results['metric']} at {last['mean']:,.4g} by {last['bucket'][:10]} "
        f"({results['confidence'] * 100:g}% interval {last['low']:,.4g} to {last['high']:,.4g}; next {results['grain']} "
        f"{first['mean']:,.4g})"
    )
    backtest = results["backtest"]
    if backtest.get("skill") is not None:
        better = "better" if backtest["skill"] > 0 else "no better"
        text += (
            f"; on the last {backtest['holdout_buckets']} {results['grain']}s it was {better} than repeating the last "
            f"value (MAE {backtest['mae']:,.4g} vs {backtest['naive_mae']:,.4g})"
        )
    return text + "."


def forecast_of_frame(frame: pd.DataFrame, parameters: ForecastParameters) -> Outcome:
    """A forecast on a session dataset (the same inputs as trend)."""
    return forecast_from_buckets(
        totals_of_frame(frame, parameters.metric, parameters.grain, parameters), parameters
    )
