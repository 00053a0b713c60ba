"""bench/racing_pooled.py's tests against scipy and a residual mean square computed by hand."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bench.racing_pooled import p_values, simulate

X = np.array([[0.80, 0.79, 0.81], [0.77, 0.78, 0.76], [0.79, 0.80, 0.78]])  # 3 configurations x 3 seeds


def test_the_paired_variant_is_scipys_one_sided_paired_t():
    for i in (1, 2):
        want = stats.ttest_rel(X[i], X[0], alternative="less").pvalue
        assert p_values(X, 0, "paired")[i] == pytest.approx(want, rel=1e-9)


def test_the_pooled_variant_uses_the_additive_fits_residual_mean_square_on_g_minus_1_times_k_minus_1_df():
    g, k = X.shape
    grand = X.mean()
    ss = sum((X[i, j] - X[i].mean() - X[:, j].mean() + grand) ** 2 for i in range(g) for j in range(k))
    s2 = ss / ((g - 1) * (k - 1))
    for i in (1, 2):
        t = (X[i].mean() - X[0].mean()) / np.sqrt(2 * s2 / k)
        assert p_values(X, 0, "pooled")[i] == pytest.approx(stats.t.cdf(t, (g - 1) * (k - 1)), rel=1e-9)
        assert p_values(X, 0, "max")[i] >= min(p_values(X, 0, "pooled")[i], p_values(X, 0, "paired")[i])


def test_a_race_of_a_clearly_worse_configuration_stops_it_and_keeps_the_best():
    out = simulate([0.8, 0.7, 0.8], [0.005] * 3, "paired", races=200)
    assert out["p_best_stopped"] < 0.05 and out["share_of_trials"] < 0.85
