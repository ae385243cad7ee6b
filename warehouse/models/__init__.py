"""Metric models: a source's customers, activity, revenue and churn declared in YAML (spec), the analyses
compiled from them once for every engine's dialect (compile), and run on a source's engine (run)."""

from __future__ import annotations

from warehouse.models.spec import (
    DIALECTS,
    SHIPPED,
    MetricModel,
    ModelError,
    load_model,
    parse_model,
    shipped_model,
)

__all__ = [
    "DIALECTS",
    "SHIPPED",
    "MetricModel",
    "ModelError",
    "load_model",
    "parse_model",
    "shipped_model",
]
