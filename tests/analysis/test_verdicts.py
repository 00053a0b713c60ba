"""analysis/verdicts.py, planner.py, budget.py against hand-computed values and simulated studies."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analysis import budget, planner, stats, verdicts


def test_tost_on_fixed_numbers_matches_two_one_sided_t_tests():
    d = np.array([0.004, -0.002, 0.006, 0.001, 0.003])
    # mean .0024, sd = sqrt(((.0016)^2 + (.0044)^2 + (.0036)^2 + (.0014)^2 + (.0006)^2) / 4) = .0030496, se = .0013638
    mean, se = 0.0024, math.sqrt((0.0016 ** 2 + 0.0044 ** 2 + 0.0036 ** 2 + 0.0014 ** 2 + 0.0006 ** 2) / 4) / math.sqrt(5)
    lower, upper, p = verdicts.tost(d, 0.01)
    assert lower == pytest.approx(sps.t.sf((mean + 0.01) / se, 4))   # H0: mean <= -.01, t = 9.09
    assert upper == pytest.approx(sps.t.cdf((mean - 0.01) / se, 4))  # H0: mean >= +.01, t = -5.57
    assert p == max(lower, upper) == pytest.approx(0.002549, abs=2e-5)
    assert verdicts.tost(d, 0.001)[2] > 0.5  # a margin inside the spread: no equivalence


def test_mcnemar_exact_on_a_fixed_table():
    # 2x2: both right 40, only a right 2, only b right 8, both wrong 10
    a = [1] * 40 + [1] * 2 + [0] * 8 + [0] * 10
    b = [1] * 40 + [0] * 2 + [1] * 8 + [0] * 10
    r = verdicts.mcnemar_exact(a, b)
    # 10 discordant; P(X <= 2 | Bin(10, 1/2)) = (1 + 10 + 45) / 1024; two-sided: twice that
    assert (r["only_a"], r["only_b"]) == (2, 8) and r["p"] == pytest.approx(112 / 1024)
    assert r["diff"] == pytest.approx(6 / 60)
    assert verdicts.mcnemar_exact([1, 0, 1], [1, 0, 1])["p"] == 1.0  # no discordant pair


def _simulated_diffs(rng, n, m, delta, seed_sd=0.04):
    """Per-seed, per-item b − a with known population difference delta: item probabilities for a
    uniform on [.3, .8], b's = a's + delta + an item effect uniform on ±.1 (mean 0), a uniform
    seed shift on ±seed_sd for each arm, and a and b's outcomes correlated through shared draws."""
    pa = rng.uniform(0.3, 0.8, m)
    pb = pa + delta + rng.uniform(-0.1, 0.1, m)
    h, g = (rng.uniform(-seed_sd, seed_sd, n)[:, None] for _ in range(2))
    ua = rng.uniform(size=(n, m))
    ub = np.where(rng.uniform(size=(n, m)) < 0.7, ua, rng.uniform(size=(n, m)))
    return (ub < pb + g).astype(float) - (ua < pa + h).astype(float)


def test_two_level_bootstrap_covers_a_planted_difference():
    rng, hits, studies = np.random.default_rng(1), 0, 200
    for k in range(studies):
        draws = verdicts.bootstrap_draws(_simulated_diffs(rng, 5, 200, 0.03), 1000, k)
        lo, hi = np.percentile(draws, [2.5, 97.5])
        hits += lo <= 0.03 <= hi
    # measured 0.97 (the crossed bootstrap counts the cell noise more than once: mildly conservative);
    # binomial sd over 200 studies ~ 0.015
    assert 0.92 <= hits / studies <= 0.99


def test_bootstrap_p_values_with_the_plus_one_correction():
    draws = np.array([-0.02, 0.0, 0.01, 0.02, 0.03])
    p_diff, p_eq = verdicts.bootstrap_p(draws, 0.015)
    assert p_diff == pytest.approx(2 * (1 + 2) / 6)  # two draws <= 0 (the smaller tail), two-sided
    assert p_eq == pytest.approx((1 + 2) / 6)        # two draws >= +.015 (one <= -.015)
    assert verdicts.bootstrap_p(np.zeros(99), 0.01) == (1.0, pytest.approx(1 / 100))


def test_planner_seeds_against_the_closed_form_power_formula():
    sd, margin = 0.02, 0.01
    z = sps.norm.ppf
    diff_normal = ((z(0.975) + z(0.8)) * sd / margin) ** 2   # 31.4: a difference of margin, two-sided
    tost_normal = ((z(0.95) + z(0.9)) * sd / margin) ** 2    # 34.3: equivalence at a true difference of 0
    n = planner.seeds_to_decide(sd, margin)
    assert math.ceil(max(diff_normal, tost_normal)) <= n <= math.ceil(max(diff_normal, tost_normal)) + 3
    assert planner.tost_power(sd, n, margin) >= 0.8 and stats.power(margin, sd, n) >= 0.8
    assert min(planner.tost_power(sd, n - 1, margin), stats.power(margin, sd, n - 1)) < 0.8
    assert planner.seeds_to_decide(0.0, margin) == 2 and planner.seeds_to_decide(np.nan, margin) is None
    # McNemar items: (z.975 + z.8)^2 * discordance / margin^2 = 2.80159^2 * 0.1 / 1e-4 = 7848.9
    assert planner.items_for_mcnemar(0.1, 0.01) == 7849


def test_sd_at_items_keeps_the_global_part():
    # sd^2 = .0004 = global .0003 + flip .1 / 1000 items; at 4000 items: .0003 + .000025
    assert planner.sd_at_items(0.02, 0.1, 1000, 4000) == pytest.approx(math.sqrt(0.0003 + 0.1 / 4000))
    # an item part above the observed variance (2 seeds, by chance) is capped: 4x items shrink the SD 2x
    assert planner.sd_at_items(0.0042, 0.098, 1000, 4000) == pytest.approx(0.0042 / 2)


def test_min_detectable_effect_at_two_seeds_does_not_crash():
    mde = stats.min_detectable_effect(0.01, 2)  # scipy's nct tail is NaN here: the old root finder stopped
    assert np.isfinite(mde) and stats.power(mde, 0.01, 2) == pytest.approx(0.8, abs=1e-6)
    assert 0.1 < mde < 0.13  # noncentrality ~16 on 1 df: ~11.5 sd


def test_expected_max_against_hand_values():
    v = [0.5, 0.7, 0.9]
    # n = 1: the mean; n = 2: sum v_i ((i/3)^2 - ((i-1)/3)^2) = .5/9 + .7*3/9 + .9*5/9 = 7.1/9
    got = budget.expected_max(v, [1, 2, 50])
    assert got[0] == pytest.approx(0.7) and got[1] == pytest.approx(7.1 / 9) and got[2] == pytest.approx(0.9, abs=1e-6)
    configs = pd.DataFrame({"mean": v, "n": [2, 2, 2], "flops": [1.0, 2.0, 3.0]})
    cv = budget.curve(configs)
    assert cv["compute"].tolist() == pytest.approx([4.0, 8.0, 12.0])  # n × mean of (flops × seeds)
    assert (cv["lo"] <= cv["expected"] + 1e-12).all() and (cv["expected"] <= cv["hi"] + 1e-12).all()
    assert budget.curve(configs.iloc[:1]) is None


def _series(values):
    return pd.Series(values, index=range(len(values)), dtype=float)


def test_evidence_chooses_the_test_and_the_verdict_words():
    margin = 0.01
    same = verdicts.evidence(_series([0.70, 0.72, 0.71]), _series([0.70, 0.72, 0.71]), {}, {}, margin)
    assert same["test"] == "none" and np.isnan(same["p_diff"])  # no spread and no items: nothing to test against
    rng = np.random.default_rng(0)
    a = 0.70 + rng.normal(0, 0.002, 6)
    e = verdicts.evidence(_series(a), _series(a + 0.001 + rng.normal(0, 0.001, 6)), {}, {}, margin)
    assert e["test"] == "paired t over seeds" and e["p_eq"] < 0.01
    row = pd.Series({**e, "p_eq_holm": e["p_eq"], "p_diff_holm": e["p_diff"]})
    assert verdicts.verdict(row, margin) == "equivalent within ±1 point"
    assert verdicts.equivalent_word(0.005) == "equivalent within ±0.5 points"
    items = {0: pd.DataFrame({"correct": [1.0, 1, 0, 1, 0, 1], "score": np.nan})}
    worse = {0: pd.DataFrame({"correct": [0.0, 0, 0, 0, 0, 1], "score": np.nan})}
    one = verdicts.evidence(_series([4 / 6]), _series([1 / 6]), items, worse, margin)
    # 3 discordant items, all right only in a: 2 x (1/2)^3
    assert one["test"] == "McNemar exact (1 seed)" and one["p_diff"] == pytest.approx(2 / 8)
    assert np.isnan(one["p_eq"])  # one seed never shows equivalence


def test_accuracy_text_never_prints_nan():
    assert verdicts.accuracy_text(0.745, np.nan, 1, 400).startswith("0.7450 (1 seed, no interval over seeds; "
                                                                    "95% over 400 test items [0.")
    assert verdicts.accuracy_text(0.745, 0.012, 3) == "0.7450 ± 0.0120 (95% CI over 3 seeds)"
    assert "nan" not in verdicts.accuracy_text(0.745, np.nan, 1)


def test_degenerate_trials_are_set_aside_and_counted():
    from analysis.items import set_aside
    from analysis.runs import Loaded

    df = pd.DataFrame({"trial": range(4), "status": ["complete", "complete", "complete", "failed"],
                       "degenerate": [None, "collapsed", "diverged", None]})
    got, counts = set_aside(Loaded(df, pd.DataFrame()))
    assert counts == {"collapsed": 1, "diverged": 1}
    assert got.trials["status"].tolist() == ["complete", "set aside (collapsed)", "set aside (diverged)", "failed"]
    assert set_aside(Loaded(df.drop(columns="degenerate"), pd.DataFrame()))[1] == {}  # no such field: nothing set aside


def test_log_probability_line_and_where_it_disagrees_with_accuracy():
    ids = range(8)
    a = {0: pd.DataFrame({"correct": 1.0, "score": [-0.5, -0.6, -0.7, -0.2, -0.9, -0.4, -0.3, -0.8]}, index=ids)}
    b = {0: pd.DataFrame({"correct": 1.0, "score": a[0]["score"] - [0.1, 0.2, 0.15, 0.3, 0.05, 0.25, 0.12, 0.4]},
                         index=ids)}
    got = verdicts.score_test(a, b, [0])
    x = (b[0]["score"] - a[0]["score"]).to_numpy()
    assert got["score_items"] == 8 and got["score_diff"] == pytest.approx(x.mean())
    assert got["score_p"] == pytest.approx(sps.wilcoxon(x).pvalue) == pytest.approx(2 / 256)  # exact: all 8 negative
    row = {"score_items": 8, "score_diff": got["score_diff"], "score_p_holm": got["score_p"]}
    assert verdicts.agreement({**row, "verdict": "better"}) == "disagree: opposite directions"
    assert verdicts.agreement({**row, "verdict": "worse"}) == "agree"
    assert verdicts.agreement({**row, "verdict": "undecided"}) == "only log-probability separates them"
    assert verdicts.agreement({**row, "score_p_holm": 0.5, "verdict": "better"}) == "only accuracy separates them"
    assert verdicts.agreement({"score_items": 0, "score_p_holm": np.nan, "verdict": "better"}) == ""


def test_a_comparison_of_a_stopped_study_also_gets_its_mde_at_the_final_level():
    """The comparisons' side of the same: MDE at the stop look's level and at the final level (stats' own MDE)."""
    from harness.study.stopping import FINAL_ALPHA

    a = pd.Series([0.80, 0.79, 0.81, 0.80, 0.78, 0.82])
    d = pd.Series([0.012, -0.020, 0.031, -0.005, 0.010, -0.018])
    ev = {**verdicts.evidence(a, a + d, {}, {}, 0.01, 0.005 / 15), "a_name": "A", "b_name": "B", "held": ""}
    row = verdicts.judge(pd.DataFrame([ev]), 0.01, 0.005 / 15).iloc[0]
    assert row["mde_final"] == pytest.approx(stats.min_detectable_effect(float(d.std(ddof=1)), 6, FINAL_ALPHA))
    assert row["mde"] > 2 * row["mde_final"] and "at the final α 0.045" in verdicts.sentence(row, 0.01)
    ran_on = verdicts.judge(pd.DataFrame([{**ev, "level": FINAL_ALPHA}]), 0.01, FINAL_ALPHA).iloc[0]
    assert np.isnan(ran_on["mde_final"]) and "final α" not in verdicts.sentence(ran_on, 0.01)
