"""Racing and stop_when: decided in the driver's loop, in process (an injected runner that 'trains' by
formula), plus the statistics against hand-computed values. The real trial processes (kill -9) and two
workers on PostgreSQL are in test_racing_processes.py."""
from __future__ import annotations

import json
import math
import random
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState
from scipy import stats

from harness.config.schema import ConfigError, complete, load
from harness.record import TrialRecord
from harness.runners import Ended, InProcess
from harness.runners.process import write_config
from harness.study import racing
from harness.study import stopping
from harness.study import verdict as vd
from harness.study.driver import Driver
from conftest import LORA_RANK_TINY

TINY = ["model=tiny_bert", "data=tiny", "tracking.mode=disabled", "hardware.threads=1"]
SEEDS = [0, 1, 2, 3]


def accuracy(r: int, lr: float, seed: int) -> float:
    """Planted: r=2 has collapsed (chance); r=8 and r=32 are the same. A seed shifts every configuration
    alike (pairing removes it), plus a small noise of each (configuration, seed)."""
    base = {2: 0.50, 8: 0.80, 32: 0.80}[r] - (0.25 if lr > 0.05 else 0.0)
    shift = random.Random(f"seed {seed}").uniform(-0.02, 0.02)
    return base + shift + random.Random(f"{r} {lr} {seed}").uniform(-0.002, 0.002)


class FormulaRunner(InProcess):
    """Stands in for the warm workers: accuracy by formula, records what it ran."""

    def __init__(self, hold: threading.Event | None = None):
        self.ran: list[tuple[int, float, int]] = []  # (lora.r, train.lr, seed)
        self.lock = threading.Lock()

    def record(self, r: int, lr: float, seed: int) -> dict:
        return {"status": "complete", "accuracy": accuracy(r, lr, seed), "flops": 1e9 * r, "device_seconds": 1.0,
                "tokens": 100}

    def run(self, tcfg, run_dir, slot, started, beat, every):
        started(12345)
        beat()
        r, lr, seed = tcfg.lora.r, tcfg.train.lr, tcfg.seed
        with self.lock:
            self.ran.append((r, lr, seed))
        rec = self.record(r, lr, seed)
        write_config(tcfg, Path(run_dir))
        return Ended(0, TrialRecord.model_validate(rec), Path(run_dir) / "log.txt")


def _driver(tmp_path, *extra, runner=None, study="race", space="{lora.r: {choices: [2, 8, 32]}}"):
    ov = [*TINY, *LORA_RANK_TINY, f"out_dir={tmp_path}", f"study={study}", f"sweep.seeds={SEEDS}",
          f"sweep.space={space}", *extra]
    return Driver(complete(load(ov)), ov, runner=runner or FormulaRunner())


def _done(study) -> Counter:
    """(lora.r, seed) -> how many trials ran it to completion."""
    return Counter((t.params["lora.r"], t.user_attrs["seed"]) for t in study.trials if t.state == TrialState.COMPLETE)


# ---------------------------------------------------------------------------- the statistics, by hand


def test_the_one_sided_paired_t_matches_the_cauchy_tail_at_one_degree_of_freedom():
    d = [-0.30, -0.29]  # mean -0.295, sd 0.00707, se 0.005, t = -59, df 1: P(T <= t) = atan(1/59) / pi
    assert vd.p_less(d) == pytest.approx(math.atan(1 / 59) / math.pi, rel=1e-9)
    assert vd.p_two_sided(d) == pytest.approx(2 * math.atan(1 / 59) / math.pi, rel=1e-9)
    assert math.isnan(vd.p_less([0.1, 0.1])) and math.isnan(vd.p_less([0.1]))  # no spread / one seed: no test


def test_tost_is_the_larger_of_scipys_two_one_sided_t_tests():
    d = [0.004, -0.002, 0.001, 0.003]
    lo = stats.ttest_1samp(d, -0.01, alternative="greater").pvalue
    hi = stats.ttest_1samp(d, 0.01, alternative="less").pvalue
    assert vd.p_tost(d, 0.01) == pytest.approx(max(lo, hi), rel=1e-9)


def test_holm_step_down_by_hand():
    assert vd.holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx([0.03, 0.06, 0.06, math.nan], nan_ok=True)


def test_the_elimination_threshold_is_bonferroni_over_looks_and_the_race():
    """4 seeds, min 2 -> 2 looks; 3 configurations -> 2 comparisons against the leader: 0.05 / 4."""
    cells = {vd.config_key({"r": r}): {s: racing.Cell(racing.COMPLETE, accuracy(r, 0.01, s)) for s in SEEDS[:2]}
             | {s: racing.Cell(racing.PENDING) for s in SEEDS[2:]} for r in (2, 8, 32)}
    configs = {vd.config_key({"r": r}): {"r": r} for r in (2, 8, 32)}
    rules = racing.Rules(SEEDS, "maximize", ["r"], 2, 0.95, "budget", 0.01, None)
    st = racing.race(configs, cells, rules)
    assert st.looks_done == 2 and list(st.stopped) == [vd.config_key({"r": 2})]
    stop = st.stopped[vd.config_key({"r": 2})]
    assert stop.alpha == pytest.approx(0.05 / 4) and stop.look == 2 and stop.n == 2
    leader = configs[stop.leader]["r"]
    d = [accuracy(2, 0.01, s) - accuracy(leader, 0.01, s) for s in SEEDS[:2]]
    assert stop.p == pytest.approx(stats.ttest_1samp(d, 0, alternative="less").pvalue, rel=1e-9)


# ---------------------------------------------------------------------------- the loop


def test_a_planted_bad_configuration_stops_after_the_minimum_seeds_and_the_good_ones_run_them_all(tmp_path, capsys):
    d = _driver(tmp_path, "sweep.racing={min_seeds: 2}")
    assert d.run() == 0
    ran = Counter((r, s) for r, _, s in d.runner.ran)
    assert sorted(s for r, s in ran if r == 2) == [0, 1]  # collapsed: out after round 2
    assert all(sorted(s for r, s in ran if r == good) == SEEDS for good in (8, 32))
    assert max(ran.values()) == 1  # nothing ran twice
    study = d.session.study
    skipped = [t for t in study.trials if t.user_attrs.get("racing") == "skipped"]
    assert sorted(t.user_attrs["seed"] for t in skipped) == SEEDS[2:]
    assert all(t.state == TrialState.PRUNED and t.params["lora.r"] == 2 for t in skipped)
    assert "stopped after 2 seeds" in skipped[0].user_attrs["prune_reason"]
    rec = study.user_attrs[racing.attr_name(vd.config_key({"lora.r": 2, "lora.alpha_over_r": 2}))]
    assert rec["n"] == 2 and rec["seeds"] == [0, 1] and rec["look"] == 2 and rec["p"] < rec["alpha"]
    out = capsys.readouterr()
    assert "racing: lora.r=2 gets no more seeds: worse than lora.r=32" in out.out
    assert "racing: 1 configuration stopped early, 2 trials not run" in out.out
    assert "lora.r=2: 2 seeds, worse than" in out.out
    again = _driver(tmp_path, "sweep.racing={min_seeds: 2}")  # a resume of a finished race runs nothing
    assert again.run() == 0 and again.runner.ran == []


def test_without_racing_every_configuration_runs_every_seed(tmp_path):
    d = _driver(tmp_path)
    assert d.run() == 0
    assert Counter(r for r, _, _ in d.runner.ran) == {2: 4, 8: 4, 32: 4}


def test_stop_when_decided_ends_a_study_with_a_planted_large_difference_early(tmp_path, capsys):
    d = _driver(tmp_path, "sweep.stop_when=decided", space="{lora.r: {choices: [2, 32]}}")
    assert d.run() == 0
    assert sorted((r, s) for r, _, s in d.runner.ran) == [(2, 0), (2, 1), (32, 0), (32, 1)]  # 4 of 8
    stopped = d.session.study.user_attrs["stopped"]
    assert stopped["look"] == 2 and stopped["why"].startswith("every comparison decided after round 2 (1 better)")
    acc = {(t.params["lora.r"], t.user_attrs["seed"]): t.values[0] for t in d.session.study.trials
           if t.state == TrialState.COMPLETE}
    diff = 100 * sum(acc[32, s] - acc[2, s] for s in (0, 1)) / 2
    assert stopped["verdicts"] == [f"lora.r=32 vs lora.r=2: {diff:+.2f} points over 2 shared seeds: better"]
    out = capsys.readouterr()
    assert "study stopped: every comparison decided after round 2" in out.out
    assert "stopped because every comparison decided after round 2 (1 better)" in out.out
    assert [t.state for t in d.session.study.trials].count(TrialState.WAITING) == 4  # never run, never lost
    again = _driver(tmp_path, "sweep.stop_when=decided", space="{lora.r: {choices: [2, 32]}}")
    assert again.run() == 0 and again.runner.ran == []  # the storage says it is decided


def test_stop_when_decided_waits_while_a_comparison_is_open_and_seeds_are_left():
    """Looks 2 and 3 leave a 1.5-point difference with 1-point noise undecided: no stop while seeds are
    left; at the last look no seed is left, so the study ends by its budget, not by a verdict."""
    seeds = [0, 1, 2, 3]
    a, b = vd.config_key({"r": 8}), vd.config_key({"r": 32})
    vals = {a: [0.80, 0.79, 0.81, 0.80], b: [0.82, 0.80, 0.82, 0.83]}
    configs = {a: {"r": 8}, b: {"r": 32}}
    rules = racing.Rules(seeds, "maximize", ["r"], None, 0.95, "decided", 0.01, None)
    for k in (2, 3):
        cells = {c: {s: racing.Cell(racing.COMPLETE, vals[c][i]) if i < k else racing.Cell(racing.PENDING)
                     for i, s in enumerate(seeds)} for c in configs}
        st = racing.race(configs, cells, rules)
        assert st.looks_done == k and st.decided is None and [v.word for v in st.verdicts] == ["undecided"]
        d = [vals[b][i] - vals[a][i] for i in range(k)]  # by hand: Holm over 1 comparison at 0.005 / 2 looks
        assert st.verdicts[0].p_diff == pytest.approx(stats.ttest_rel(vals[b][:k], vals[a][:k]).pvalue)
        assert st.verdicts[0].p_diff > 0.025 and st.verdicts[0].diff == pytest.approx(sum(d) / k)


def test_the_chance_of_a_verdict_matches_a_simulation_of_the_seeds_to_come():
    """Predictive power by simulation: the true mean from its flat-prior posterior N(m, s^2/n), the seeds
    to come from N(true, s^2), the final test with the SD known (the function's stated model)."""
    rng = np.random.default_rng(0)
    for d, n_final, margin in [([0.01, 0.03], 5, 0.01), ([-0.02, 0.05, 0.0], 5, 0.01), ([0.002, -0.001], 6, 0.01),
                               ([0.03, 0.05], 4, 0.01)]:
        n, m, sd = len(d), float(np.mean(d)), float(np.std(d, ddof=1))
        true = rng.normal(m, sd / math.sqrt(n), 40_000)
        rest = rng.normal(true[:, None], sd, (40_000, n_final - n)).sum(axis=1)
        final = (sum(d) + rest) / n_final
        se = sd / math.sqrt(n_final)
        decided = (np.abs(final) > stats.t.ppf(0.975, n_final - 1) * se) | \
                  (np.abs(final) < margin - stats.t.ppf(0.95, n_final - 1) * se)
        assert vd.chance_of_a_verdict(d, n_final, margin) == pytest.approx(decided.mean(), abs=0.01), d
    assert vd.chance_of_a_verdict([0.01, 0.02], 2, 0.01) == 0.0  # no seed to come
    assert math.isnan(vd.chance_of_a_verdict([0.01, 0.01], 5, 0.01))  # no spread: nothing to project with


def test_stop_when_decided_gives_up_a_comparison_the_seeds_left_are_unlikely_to_decide():
    """A 1.5-point mean difference with a 5-point seed SD after 2 of 4 seeds: a verdict's predictive
    probability is ~0.005, below sweep.futility = 0.1, so the study stops at look 2 and says why;
    with futility 0 it waits for the seeds (the rule before it)."""
    seeds = [0, 1, 2, 3]
    a, b = vd.config_key({"r": 8}), vd.config_key({"r": 32})
    configs = {a: {"r": 8}, b: {"r": 32}}
    vals = {a: [0.80, 0.75], b: [0.78, 0.80]}
    cells = {c: {s: racing.Cell(racing.COMPLETE, vals[c][i]) if i < 2 else racing.Cell(racing.PENDING)
                 for i, s in enumerate(seeds)} for c in configs}
    chance = vd.chance_of_a_verdict([-0.02, 0.05], 4, 0.01, stopping.FINAL_ALPHA)  # the level of the final test
    assert chance < 0.01
    st = racing.race(configs, cells, racing.Rules(seeds, "maximize", ["r"], None, 0.95, "decided", 0.01, None, 0.1))
    assert st.decided is not None and st.decided["look"] == 2
    assert f"1 given up: a verdict's predictive probability with the seeds left {chance:.2f} < 0.1" in st.decided["why"]
    st = racing.race(configs, cells, racing.Rules(seeds, "maximize", ["r"], None, 0.95, "decided", 0.01, None, 0.0))
    assert st.decided is None and st.looks_done == 2


@pytest.mark.slow
def test_tune_races_each_arms_learning_rates_and_compares_the_arms_at_their_best(tmp_path, capsys):
    """lr=0.1 is planted 25 points worse in each arm: it stops after 2 seeds in both arms; the arms
    (r=2 vs r=32, each at lr=0.01) differ by 30 points: decided at round 2, the study stops there."""
    space = "{lora.r: {choices: [2, 32]}, train.lr: {choices: [0.01, 0.1]}}"
    d = _driver(tmp_path, "sweep.racing={min_seeds: 2}", "sweep.stop_when=decided", "sweep.tune=train.lr", space=space)
    assert d.run() == 0
    ran = Counter((r, lr) for r, lr, _ in d.runner.ran)
    assert ran == {(2, 0.01): 2, (2, 0.1): 2, (32, 0.01): 2, (32, 0.1): 2}
    attrs = d.session.study.user_attrs
    assert {json.dumps(v["params"], sort_keys=True) for k, v in attrs.items() if k.startswith("racing:")} == \
        {json.dumps({"lora.r": r, "lora.alpha_over_r": 2, "train.lr": 0.1}, sort_keys=True) for r in (2, 32)}
    assert attrs["stopped"]["verdicts"][0].startswith("lora.r=32 (train.lr=0.01) vs lora.r=2 (train.lr=0.01): +30")


def _carry_state(vals: dict, k: int, compare: str):
    """Arms r=8 / r=32 with lrs 1e-3 / 2e-3; vals (r, lr) -> accuracy per seed; the look after round k."""
    seeds = [0, 1, 2, 3]
    configs = {vd.config_key({"r": r, "lr": lr}): {"r": r, "lr": lr} for r in (8, 32) for lr in (1e-3, 2e-3)}
    cells = {vd.config_key(p): {s: racing.Cell(racing.COMPLETE, vals[p["r"], p["lr"]][i]) if i < k else
                                racing.Cell(racing.PENDING) for i, s in enumerate(seeds)} for p in configs.values()}
    rules = racing.Rules(seeds, "maximize", ["r", "lr"], None, 0.95, "decided", 0.01, "lr", 0.0, compare)
    return racing.race(configs, cells, rules)


def test_carry_over_compares_each_arms_best_lr_with_the_other_arms_best():
    """r=8 peaks at lr 1e-3, r=32 at 2e-3, each 0.1 point below its best at the other's: compare=carry_over
    names the two regrets (same arm, the other arm's best lr), and both are equivalent within ±1 point at
    look 3 (TOST by hand; at 1 df not yet below the interim 0.0025), which ends the study there; compare=arms
    names the one pair of arms instead."""
    vals = {(8, 1e-3): [0.800, 0.790, 0.810, 0.8], (8, 2e-3): [0.799, 0.7885, 0.8095, 0.8],
            (32, 2e-3): [0.805, 0.795, 0.815, 0.8], (32, 1e-3): [0.8035, 0.7945, 0.8145, 0.8]}
    st = _carry_state(vals, 3, "carry_over")
    got = {(st.configs[v.a]["r"], st.configs[v.a]["lr"], st.configs[v.b]["lr"]): v for v in st.verdicts}
    assert set(got) == {(8, 1e-3, 2e-3), (32, 2e-3, 1e-3)}
    v8 = got[8, 1e-3, 2e-3]
    d = [vals[8, 2e-3][i] - vals[8, 1e-3][i] for i in range(3)]
    assert v8.diff == pytest.approx(np.mean(d)) and v8.p_eq == pytest.approx(vd.p_tost(d, 0.01))
    assert vd.p_tost(d[:2], 0.01) > stopping.look_alpha(4) > vd.p_tost(d, 0.01)
    assert all(v.word == "equivalent within ±1 point" for v in st.verdicts) and st.decided["look"] == 3
    assert v8.sentence(st.configs, 0.01).startswith(f"lr=0.002 vs lr=0.001 (at r=8): {100 * np.mean(d):+.2f} points "
                                                    "over 3 shared seeds")
    arms = _carry_state(vals, 3, "arms")
    assert [(arms.configs[v.a]["r"], arms.configs[v.b]["r"]) for v in arms.verdicts] == [(8, 32)]


def test_carry_over_with_one_best_lr_for_every_arm_names_nothing_to_decide():
    same = {(8, 1e-3): [0.80, 0.79, 0.81, 0.8], (8, 2e-3): [0.78, 0.77, 0.80, 0.8],
            (32, 1e-3): [0.81, 0.80, 0.82, 0.8], (32, 2e-3): [0.79, 0.78, 0.80, 0.8]}
    st = _carry_state(same, 2, "carry_over")
    assert st.verdicts == [] and st.decided is None  # the grid's budget decides, as without stop_when


def test_racing_settings_are_part_of_a_study(tmp_path):
    assert _driver(tmp_path, "sweep.racing={min_seeds: 2}").session.open()  # created
    with pytest.raises(ConfigError, match="created with racing"):
        _driver(tmp_path, "sweep.racing={min_seeds: 3}").session.open()
    with pytest.raises(ConfigError, match="created with racing"):
        _driver(tmp_path).session.open()
    assert _driver(tmp_path, "sweep.racing={min_seeds: 2}").session.open() is False  # the same rules resume


@pytest.mark.parametrize("extra, message", [
    (["sweep.racing=true", "sweep.sampler=random", "sweep.n_trials=4"], "racing needs sampler=grid"),
    (["sweep.racing=true", "sweep.objectives={accuracy: maximize, flops: minimize}"], "racing needs one objective"),
    (["sweep.racing={min_seeds: 4}"], "racing needs more seeds than racing.min_seeds=4"),
    (["sweep.stop_when=decided", "sweep.seeds=[0,1]"], "stop_when=decided needs >= 3 seeds"),
    (["sweep.tune=train.lr"], "tune=train.lr is not a searched axis"),
    (["sweep.compare=carry_over"], "compare=carry_over needs sweep.tune"),
    (["sweep.racing={min_seeds: 1}"], "greater than or equal to 2"),
])
def test_racing_settings_that_cannot_work_are_refused_before_anything_runs(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        complete(load([*TINY, *LORA_RANK_TINY, f"sweep.seeds={SEEDS}", *extra]))


def test_a_queued_seed_waits_for_its_look_and_a_retry_awaiting_its_rerun_is_not_settled():
    """The barrier: round 3 waits while round 2 has a trial running (or failed and about to be retried)."""
    configs = {vd.config_key({"r": r}): {"r": r} for r in (2, 8)}
    done = lambda r, s: racing.Cell(racing.COMPLETE, accuracy(r, 0.01, s))  # noqa: E731
    cells = {k: {0: done(p["r"], 0), 1: done(p["r"], 1) if p["r"] == 8 else racing.Cell(racing.PENDING),
                 2: racing.Cell(racing.PENDING)} for k, p in configs.items()}
    rules = racing.Rules([0, 1, 2], "maximize", ["r"], 2, 0.95, "budget", 0.01, None)
    st = racing.race(configs, cells, rules)
    assert st.looks_done == 1 and not st.stopped

    class T:  # the fields plan() reads of a queued trial
        def __init__(self, number, r, seed):
            self.number, self.user_attrs = number, {"seed": seed, "point": json.dumps({"r": r, "seed": seed})}

    assert [(a, t.number) for a, t in racing.plan([T(5, 8, 2), T(1, 2, 1)], st, rules)] == [("run", 1)]


def test_a_look_sees_the_seeds_after_it_as_still_to_come():
    """Replayed once every seed is in, look 2 must not claim 'no seed left': the study ran on after it."""
    seeds = [0, 1, 2]
    a, b = vd.config_key({"r": 8}), vd.config_key({"r": 32})
    vals = {a: [0.80, 0.79, 0.81], b: [0.82, 0.80, 0.80]}
    configs = {a: {"r": 8}, b: {"r": 32}}
    cells = {c: {s: racing.Cell(racing.COMPLETE, vals[c][i]) for i, s in enumerate(seeds)} for c in configs}
    st = racing.race(configs, cells, racing.Rules(seeds, "maximize", ["r"], None, 0.95, "decided", 0.01, None))
    assert st.looks_done == 3 and st.decided is None
    cut = {c: {**cells[c], 2: racing.Cell(racing.ABSENT)} for c in configs}  # a budget that ends at round 2
    st = racing.race(configs, cut, racing.Rules(seeds, "maximize", ["r"], None, 0.95, "decided", 0.01, None))
    assert st.decided is not None and "no seed left" in st.decided["why"] and "1 undecided" in st.decided["why"]


def test_the_storage_says_which_seeds_are_settled_a_fail_awaiting_its_retry_is_not():
    """cells_of on real Optuna trials: complete -> its value; queued or running -> pending; a FAIL the
    driver told (settled) -> no value; a FAIL of a dead driver before its retry exists -> pending; once
    retried, the retry's state counts; a seed the race skipped -> skipped."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    study = optuna.create_study()
    dist = {"r": CategoricalDistribution([2, 8])}

    def add(r, seed, state, value=None, **attrs):
        system = attrs.pop("system", {})
        study.add_trial(optuna.trial.create_trial(
            state=state, values=None if value is None else [value], params={"r": r}, distributions=dist,
            user_attrs={"seed": seed, "point": json.dumps({"r": r, "seed": seed}), **attrs}, system_attrs=system))

    add(2, 0, TrialState.COMPLETE, 0.5, settled=True)
    add(2, 1, TrialState.FAIL, settled=True, fail_reason="loss is nan")       # the trial failed: final
    add(2, 2, TrialState.FAIL, fail_reason="driver 123 died")                 # dead driver, no retry yet
    add(8, 0, TrialState.FAIL, fail_reason="driver 123 died")                 # dead driver ...
    add(8, 0, TrialState.RUNNING, system={"failed_trial": 3, "retry_history": [3]})  # ... its retry runs
    add(8, 1, TrialState.PRUNED, racing="skipped", settled=True)
    add(8, 2, TrialState.WAITING)
    trials = study.get_trials(deepcopy=False)
    configs, cells = racing.cells_of(trials, [0, 1, 2, 3], max_retry=2, grace_s=60)
    r2, r8 = vd.config_key({"r": 2}), vd.config_key({"r": 8})
    assert {k: {s: c.state for s, c in v.items()} for k, v in cells.items()} == {
        r2: {0: "complete", 1: "novalue", 2: "pending", 3: "absent"},
        r8: {0: "pending", 1: "skipped", 2: "pending", 3: "absent"}}
    assert cells[r2][0].value == 0.5
    _, cells = racing.cells_of(trials, [0, 1, 2, 3], max_retry=0, grace_s=60)  # no retries allowed: final
    assert cells[r2][2].state == "novalue"


def test_an_interrupted_stop_when_study_says_it_is_not_decided_yet_not_out_of_seeds():
    import optuna

    rules = racing.Rules([0, 1], "maximize", ["lora.r"], None, 0.95, "decided", 0.01, None)
    done = optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.7)
    queued = optuna.trial.create_trial(state=TrialState.WAITING)
    assert racing.summary_lines({}, rules, [done, queued, queued]) == [
        "stop_when=decided: not decided yet; 2 queued trials remain (rerun the command to resume)"]
    assert racing.summary_lines({}, rules, [done]) == [
        "stop_when=decided: the seeds ran out before every comparison was decided"]


def test_a_study_from_before_the_interim_budget_goes_on_under_it_unless_it_stopped(tmp_path):
    """Its looks spent all of alpha; the budget's are stricter, so one that has not stopped made every decision
    the budget would have and resumes under it (recorded); one that stopped keeps its record, and resumes."""
    d = _driver(tmp_path, "sweep.stop_when=decided")
    assert d.session.open() is True
    study = d.session.study
    new = study.user_attrs["racing_rules"]
    assert new["interim_alpha"] == stopping.INTERIM_ALPHA == 0.005 and stopping.FINAL_ALPHA == 0.045
    old = {k: v for k, v in new.items() if k != "interim_alpha"}
    study.set_user_attr("racing_rules", old)
    again = _driver(tmp_path, "sweep.stop_when=decided")
    assert again.session.open() is False
    assert study.user_attrs["racing_rules"] == new and "now spend 0.005 of alpha" in again.session.notes[0]
    study.set_user_attr("racing_rules", old)
    study.set_user_attr("stopped", {"look": 2, "why": "planted", "alpha": 0.025, "verdicts": []})
    assert _driver(tmp_path, "sweep.stop_when=decided").session.open() is False
    assert study.user_attrs["racing_rules"] == old  # the rule it stopped under stands
    with pytest.raises(ConfigError, match="created with racing"):  # any other change is still refused
        _driver(tmp_path, "sweep.stop_when=decided", "sweep.futility=0.3").session.open()


def test_a_new_study_racing_the_whole_grid_of_several_axes_says_so_once():
    """Racing without tune over two varied axes: one note when the study is created, none on resume; with tune, or
    over one varied axis, none."""
    import tempfile
    from pathlib import Path

    two = "{lora.r: {choices: [2, 8]}, train.lr: {choices: [1e-3, 1e-2]}}"
    with tempfile.TemporaryDirectory() as d:
        first = _driver(Path(d), "sweep.racing=true", space=two)
        assert first.session.open() is True
        assert [n for n in first.session.notes if n.startswith("racing without sweep.tune")] and \
            "lora.r, train.lr" in first.session.notes[0]
        again = _driver(Path(d), "sweep.racing=true", space=two)
        assert again.session.open() is False and not again.session.notes
    for extra, space in ((("sweep.racing=true", "sweep.tune=train.lr"), two), (("sweep.racing=true",), None)):
        with tempfile.TemporaryDirectory() as d:
            drv = _driver(Path(d), *extra, **({"space": space} if space else {}))
            assert drv.session.open() is True and not drv.session.notes

