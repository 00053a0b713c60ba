"""bench/stop_when_alpha.py: its tests are scipy's, a fixed number of seeds keeps α, the looks of the rule before
the interim budget raised the rate well beyond simulation noise, and the budget's (harness/study/stopping.py)
keep it within α."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bench import stop_when_alpha as sw


def test_the_vectorised_tests_are_scipys():
    rng = np.random.default_rng(1)
    x = rng.normal(0.3, 1.0, size=(5, 7))
    for row, p_d, p_e in zip(x, sw.p_diff(x), sw.p_tost(x)):
        assert p_d == pytest.approx(stats.ttest_1samp(row, 0).pvalue)
        lo = stats.ttest_1samp(row, -sw.MARGIN, alternative="greater").pvalue
        hi = stats.ttest_1samp(row, sw.MARGIN, alternative="less").pvalue
        assert p_e == pytest.approx(max(lo, hi))


@pytest.mark.parametrize("test,true", [(sw.p_diff, 0.0), (sw.p_tost, sw.MARGIN)])
def test_fixed_seeds_keep_alpha_the_old_looks_add_to_it_and_the_budget_does_not(test, true):
    se = np.sqrt(0.05 * 0.95 / 20000)
    old = sw.rates(test, true, 5, 0.5, np.random.default_rng(0), sims=20000, rule=sw.RULES[list(sw.RULES)[1]])
    assert abs(old["fixed n at 0.05"] - 0.05) < 4 * se      # the boundary of each null: level α exactly
    assert old["reported"] > old["fixed n at 0.05"] + 8 * se  # looks at 0.05/(n-2), then 0.05: more false verdicts
    assert old["reported"] <= 2 * 0.05 + 4 * se              # but no more than the union bound allows
    now = sw.rates(test, true, 5, 0.5, np.random.default_rng(0), sims=20000)
    assert (now["look alpha"], now["final alpha"]) == (0.005 / 3, 0.045)
    assert now["reported"] <= 0.05 + 4 * se                  # the interim budget keeps the union bound at α
