"""stop_when: decided with compare: claims (harness/study/claims.py): the study ends once every claim of
sweep.claims holds or is refuted, or no seed left is likely to decide it. The race as a pure function on
planted cells (p-values by hand), the predictive chances against a simulation of their model, and the
driver in process (the injected formula runner of test_racing.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from optuna.trial import TrialState
from scipy import stats

from harness.config.schema import ConfigError
from harness.study import claims, racing, stopping
from harness.study import verdict as vd
from tests.study.test_racing import SEEDS, _driver, accuracy

NOT_WORSE = {"says": "all matches attn", "axis": "t", "test": "not_worse", "b": "all", "a": "attn"}


def _state(vals: dict, k: int, claim: dict, futility: float = 0.0, seeds=(0, 1, 2, 3)):
    """Configurations t {attn, all} (no tune: each its own arm); vals t -> accuracy per seed; the look after round k."""
    configs = {vd.config_key({"t": t}): {"t": t} for t in ("attn", "all")}
    cells = {vd.config_key(p): {s: racing.Cell(racing.COMPLETE, vals[p["t"]][i]) if i < k else
                                racing.Cell(racing.PENDING) for i, s in enumerate(seeds)} for p in configs.values()}
    rules = racing.Rules(list(seeds), "maximize", ["t"], None, 0.95, "decided", 0.01, None, futility, "claims",
                         [claim])
    return racing.race(configs, cells, rules)


def test_a_claim_that_holds_stops_the_study_at_its_look():
    """all is ~1 point above attn with 0.1-point noise: after 2 seeds the one-sided t against -1 point at 1 df
    is above the interim look's 0.005 / (4 - 2); after 3 it is below: holds, and the study stops at look 3."""
    vals = {"attn": [0.800, 0.790, 0.81, 0.80], "all": [0.811, 0.799, 0.82, 0.81]}
    st = _state(vals, 3, NOT_WORSE)
    p = {}
    for k in (2, 3):
        d = [vals["all"][i] - vals["attn"][i] for i in range(k)]
        p[k] = stats.t.sf((np.mean(d) + 0.01) / (np.std(d, ddof=1) / math.sqrt(k)), k - 1)
    assert p[2] > stopping.look_alpha(4) == 0.0025 > p[3]
    assert st.verdicts[0].p == pytest.approx(p[3])
    assert st.verdicts[0].word == "holds" and st.decided["look"] == 3
    assert st.decided["why"] == "every claim decided after round 3 (1 holds)"
    assert st.decided["verdicts"] == [f"all matches attn: holds (1 component(s), b − a {100 * np.mean(d):+.2f} points; "
                                      f"p = {p[3]:.4f})"]


def test_a_claim_shown_false_is_refuted_and_one_still_open_keeps_the_study_going():
    worse = {"attn": [0.80, 0.79, 0.81, 0.80], "all": [0.75, 0.739, 0.76, 0.75]}  # 5 points below: b − a < −δ
    st = _state(worse, 3, NOT_WORSE)
    assert st.verdicts[0].word == "refuted" and st.decided["look"] == 3  # at 1 df p = 0.004 > 0.0025; at 2, below
    noisy = {"attn": [0.80, 0.79, 0.81, 0.80], "all": [0.80, 0.80, 0.78, 0.83]}  # +0.5 points, 1-point noise
    st = _state(noisy, 2, NOT_WORSE)
    assert st.verdicts[0].word == "undecided" and st.decided is None  # futility 0: seeds are left
    flipped = _state(worse, 3, {**NOT_WORSE, "b": "attn", "a": "all"})  # the same pair read the other way holds
    assert flipped.verdicts[0].word == "holds"


def test_a_claim_the_seeds_left_cannot_decide_is_given_up_below_futility():
    """+0.5 points with a 5-point seed SD after 2 of 4 seeds: the claim's chance bound is far below 0.1."""
    vals = {"attn": [0.80, 0.75], "all": [0.78, 0.78]}
    d = [vals["all"][i] - vals["attn"][i] for i in range(2)]
    hold, refute = claims.chances("not_worse", d, 4, 0.01, stopping.FINAL_ALPHA)  # the final test's level
    assert hold + refute < 0.1
    st = _state(vals, 2, NOT_WORSE, futility=0.1)
    assert st.decided is not None and st.decided["look"] == 2
    assert f"the bound on a verdict's chance {hold + refute:.2f} < 0.1" in st.decided["why"]
    assert _state(vals, 2, NOT_WORSE, futility=0.0).decided is None


@pytest.mark.parametrize("test", ["not_worse", "better", "equivalent"])
def test_the_chances_match_a_simulation_of_the_seeds_to_come(test):
    """The model chance_of_a_verdict states: the true mean from N(m, s^2/n), the seeds to come from N(true, s^2),
    the final one-sided test (TOST for equivalent) with the seed SD known."""
    rng = np.random.default_rng(0)
    d, n_final, margin = [0.004, 0.012], 5, 0.01
    n, m, sd = len(d), float(np.mean(d)), float(np.std(d, ddof=1))
    true = rng.normal(m, sd / math.sqrt(n), 40_000)
    final = (sum(d) + rng.normal(true[:, None], sd, (40_000, n_final - n)).sum(axis=1)) / n_final
    se, one, two = sd / math.sqrt(n_final), stats.t.ppf(0.95, n_final - 1), stats.t.ppf(0.975, n_final - 1)
    if test == "equivalent":
        hold, refute = np.abs(final) < margin - one * se, np.abs(final) > margin + two * se
    else:
        edge = -margin if test == "not_worse" else 0.0
        hold, refute = final > edge + one * se, final < edge - one * se
    got = claims.chances(test, d, n_final, margin)
    assert got[0] == pytest.approx(hold.mean(), abs=0.01) and got[1] == pytest.approx(refute.mean(), abs=0.01)


def _claim_driver(tmp_path, claim: str, seeds=SEEDS):
    return _driver(tmp_path, "sweep.stop_when=decided", "sweep.compare=claims", f"sweep.claims=[{claim}]",
                   "sweep.futility=0", f"sweep.seeds={list(seeds)}")


def test_the_driver_stops_a_study_once_its_claim_holds_and_a_resume_keeps_the_claim(tmp_path, capsys):
    """r=32 and r=8 are planted equal (0.80; noise 0.2 points), r=2 collapsed: 'r=32 not worse than r=8'
    holds at the first look whose one-sided t clears 0.005 / (6 - 2); the queued seeds after it never run."""
    claim = "{says: 'r32 matches r8', axis: lora.r, test: not_worse, b: 32, a: 8}"
    seeds = list(range(6))  # 4 interim looks: a 1-point margin at 0.2-point noise clears 0.00125 by the 4th seed
    d = _claim_driver(tmp_path, claim, seeds)
    assert d.run() == 0
    lr = d.runner.ran[0][1]  # the sweep's lr: the formula's noise is keyed by it
    diffs = [accuracy(32, lr, s) - accuracy(8, lr, s) for s in seeds]
    looks = [k for k in range(2, len(seeds)) if stats.t.sf((np.mean(diffs[:k]) + 0.01) /
                                                           (np.std(diffs[:k], ddof=1) / math.sqrt(k)), k - 1) < 0.00125]
    stopped = d.session.study.user_attrs["stopped"]
    assert looks and stopped["look"] == looks[0] and stopped["verdicts"][0].startswith("r32 matches r8: holds")
    ran = sorted({s for _, _, s in d.runner.ran})
    assert ran == seeds[:looks[0]]  # every configuration ran exactly the seeds up to that look
    assert sum(t.state == TrialState.WAITING for t in d.session.study.trials) == 3 * (len(seeds) - looks[0])
    assert "study stopped: every claim decided after round" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="created with racing"):  # the claim is part of the study's rules
        _claim_driver(tmp_path, claim.replace("b: 32, a: 8", "b: 32, a: 2"), seeds).session.open()


def test_compare_claims_needs_claims(tmp_path):
    with pytest.raises(ConfigError, match="compare=claims needs sweep.claims"):
        _driver(tmp_path, "sweep.stop_when=decided", "sweep.compare=claims")
