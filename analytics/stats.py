"""Statistical building blocks computed from aggregates (counts, sums, histograms), so PostgreSQL can do the scanning.

Every function here equals its scipy counterpart on the raw data; the tests check that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special

FloatArray = NDArray[np.float64]


def finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion; honest near 0 and 1, unlike the normal approximation."""
    if trials <= 0:
        return None
    z = float(special.ndtri(0.5 + confidence / 2))  # = scipy.stats.norm.ppf, without its per-call overhead
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class ChiSquare:
    statistic: float
    dof: int
    p_value: float
    cramers_v: float
    min_expected: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "chi_square": self.statistic,
            "degrees_of_freedom": self.dof,
            "p_value": self.p_value,
            "cramers_v": self.cramers_v,
            "min_expected_count": self.min_expected,
        }


def chi_square_independence(table: FloatArray) -> ChiSquare | None:
    """Pearson chi-square test of independence on a contingency table (no Yates correction), with Cramér's V.

    None when the test is undefined: fewer than two non-empty rows or columns.
    """
    observed = np.asarray(table, dtype=float)
    observed = observed[observed.sum(axis=1) > 0][:, observed.sum(axis=0) > 0]
    if observed.ndim != 2 or min(observed.shape) < 2:
        return None
    total = observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    statistic = float(((observed - expected) ** 2 / expected).sum())
    dof = (observed.shape[0] - 1) * (observed.shape[1] - 1)
    p_value = float(special.chdtrc(dof, statistic))  # = scipy.stats.chi2.sf
    cramers_v = math.sqrt(statistic / (total * (min(observed.shape) - 1)))
    return ChiSquare(statistic, dof, p_value, cramers_v, float(expected.min()))


def t_interval(
    mean: float, variance: float | None, n: int, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Student-t interval for a mean from its sample variance (ddof=1)."""
    if n < 2 or variance is None or not math.isfinite(variance):
        return None
    quantile = float(special.stdtrit(n - 1, 0.5 + confidence / 2))  # = scipy.stats.t.ppf
    half = quantile * math.sqrt(variance / n)
    return mean - half, mean + half


def pooled_mean_variance(counts: FloatArray, means: FloatArray, variances: FloatArray) -> tuple[float, float]:
    """Mean and sample variance (ddof=1) of the union of groups, from each group's n, mean, variance."""
    n = counts.sum()
    mean = float((counts * means).sum() / n)
    within = np.where(counts > 1, (counts - 1) * np.nan_to_num(variances), 0.0).sum()
    between = (counts * (means - mean) ** 2).sum()
    return mean, float((within + between) / (n - 1)) if n > 1 else math.nan


@dataclass(frozen=True)
class Histogram:
    """Exact value counts per group: `counts[g, j]` events of group g with value `values[j]` (values sorted)."""

    values: FloatArray
    counts: FloatArray

    @property
    def group_sizes(self) -> FloatArray:
        return np.asarray(self.counts.sum(axis=1), dtype=float)

    def group_means(self) -> FloatArray:
        return np.asarray((self.counts @ self.values) / self.group_sizes, dtype=float)

    def group_sum_of_squares(self) -> FloatArray:
        """Sum of squared deviations from the group mean, computed around the mean (numerically stable)."""
        deviations = self.values[None, :] - self.group_means()[:, None]
        return np.asarray((self.counts * deviations**2).sum(axis=1), dtype=float)


def percentile(values: FloatArray, counts: FloatArray, q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, as numpy.percentile on the expanded data."""
    total = int(counts.sum())
    position = (total - 1) * q / 100
    below, above = math.floor(position), math.ceil(position)
    cumulative = np.cumsum(counts)
    low = float(values[int(np.searchsorted(cumulative, below, side="right"))])
    high = float(values[int(np.searchsorted(cumulative, above, side="right"))])
    return low + (high - low) * (position - below)


def one_way_anova(histogram: Histogram) -> dict[str, float | int | None] | None:
    """One-way ANOVA across groups (scipy.stats.f_oneway), with eta squared as effect size."""
    sizes = histogram.group_sizes
    k, n = len(sizes), float(sizes.sum())
    if k < 2 or n <= k:
        return None
    grand_mean = float((histogram.counts.sum(axis=0) @ histogram.values) / n)
    between = float((sizes * (histogram.group_means() - grand_mean) ** 2).sum())
    within = float(histogram.group_sum_of_squares().sum())
    f_statistic = (between / (k - 1)) / (within / (n - k)) if within > 0 else math.inf
    p_value = float(special.fdtrc(k - 1, n - k, f_statistic))  # = scipy.stats.f.sf
    return {
        "f_statistic": finite_or_none(f_statistic),
        "df_between": k - 1,
        "df_within": int(n - k),
        "p_value": p_value,
        "eta_squared": between / (between + within) if between + within > 0 else None,
    }


def kruskal_wallis(histogram: Histogram) -> dict[str, float | int | None] | None:
    """Kruskal-Wallis H test with tie correction (scipy.stats.kruskal), from exact value counts.

    Ranks come from the histogram: every value's tied events share the mid-rank of their block.
    """
    sizes = histogram.group_sizes
    k, n = len(sizes), float(sizes.sum())
    if k < 2 or n < 2:
        return None
    ties = histogram.counts.sum(axis=0)
    mid_ranks = np.cumsum(ties) - (ties - 1) / 2
    rank_sums = histogram.counts @ mid_ranks
    h = 12.0 / (n * (n + 1)) * float((rank_sums**2 / sizes).sum()) - 3 * (n + 1)
    correction = 1 - float((ties**3 - ties).sum()) / (n**3 - n)
    if correction <= 0:
        return None  # every value identical: no ranking information
    h /= correction
    return {
        "h_statistic": h,
        "degrees_of_freedom": k - 1,
        "p_value": float(special.chdtrc(k - 1, h)),
        "epsilon_squared": h / (n - 1),
    }
