"""What every analysis hands back (results, a quotable sentence, the rows it covered) and plain-word helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Outcome:
    results: dict[str, Any]
    summary: str
    row_count: int
    sql: list[str] = field(default_factory=list)
    # Added to the answer's metadata (e.g. the metric model and its version, warehouse/models/run.py).
    metadata: dict[str, Any] = field(default_factory=dict)


def percent(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def p_value_words(p_value: float | None) -> str:
    if p_value is None:
        return "no test possible"
    if p_value < 0.001:
        return "p < 0.001"
    return f"p = {p_value:.3f}"


def significance(p_value: float | None, alpha: float = 0.05) -> str:
    if p_value is None:
        return "could not be tested"
    return "statistically significant" if p_value < alpha else "not statistically significant"


def strength(r: float) -> str:
    size = abs(r)
    if size < 0.1:
        return "negligible"
    if size < 0.3:
        return "weak"
    if size < 0.5:
        return "moderate"
    return "strong"


def money(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"
