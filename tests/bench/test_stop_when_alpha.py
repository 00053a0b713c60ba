"""bench/stop_when_alpha.py: its tests are scipy's, a fixed number of seeds keeps α, and the driver's looks
(harness/study/stopping.py's look_alpha) raise the rate above it, well beyond simulation noise."""
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
def test_fixed_seeds_keep_alpha_and_the_looks_add_to_it(test, true):
    r = sw.rates(test, true, 5, 0.5, np.random.default_rng(0), sims=20000)
    se = np.sqrt(0.05 * 0.95 / 20000)
    assert abs(r["fixed n"] - 0.05) < 4 * se          # the boundary of each null: level α exactly
    assert r["reported"] > r["fixed n"] + 8 * se      # a study that may stop early reports more false verdicts
    assert r["reported"] <= 2 * 0.05 + 4 * se          # but no more than the union bound allows
