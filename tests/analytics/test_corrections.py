"""Holm's correction computed without statsmodels' gc.collect() gives statsmodels' figures and decisions."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from analytics.compare import holm


@pytest.mark.parametrize("seed", range(20))
def test_holm_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 40))
    p_values = rng.uniform(0, 0.2, count) ** rng.uniform(0.5, 3)
    p_values[rng.integers(0, count, count // 4)] = p_values[0]  # ties
    reject, expected, _, _ = multipletests(p_values, alpha=0.05, method="holm")
    adjusted = holm(p_values)
    np.testing.assert_allclose(adjusted, expected, rtol=0, atol=1e-15)
    assert ((adjusted <= 0.05) == reject).all()
