"""Racing's rule for unstable configurations (harness/study/racing.py): every seed so far collapsed or
diverged -> stopped at the look, where the paired t, undefined on differences without spread, cannot."""
from __future__ import annotations

import math
from collections import Counter

from harness.study import racing
from harness.study import verdict as vd
from tests.study.test_racing import SEEDS, FormulaRunner, _driver

CONFIGS = {vd.config_key({"r": r}): {"r": r} for r in (2, 8, 32)}
RULES = racing.Rules(SEEDS, "maximize", ["r"], 2, 0.95, "budget", 0.01, None)


def _cells(values: dict, bad: dict) -> dict:
    """r -> [value at seeds 0, 1]; bad: r -> [degenerate kind or None at seeds 0, 1]."""
    return {vd.config_key({"r": r}): {s: racing.Cell(racing.COMPLETE, v[i], bad.get(r, [None, None])[i])
                                      for i, s in enumerate(SEEDS[:2])}
            | {s: racing.Cell(racing.PENDING) for s in SEEDS[2:]} for r, v in values.items()}


# the leader (r=8) scores the same at both seeds, and so does the collapsed r=2: differences without spread
VALUES = {2: [0.5, 0.5], 8: [0.8, 0.8], 32: [0.79, 0.795]}
R2 = vd.config_key({"r": 2})


def test_identical_collapsed_seeds_leave_the_t_test_undefined_so_without_the_rule_nothing_stops():
    assert math.isnan(vd.p_less([0.5 - 0.8, 0.5 - 0.8]))
    st = racing.race(CONFIGS, _cells(VALUES, {}), RULES)
    assert st.looks_done == 2 and st.stopped == {}


def test_a_configuration_collapsed_in_every_seed_so_far_is_stopped_as_unstable_not_by_a_test():
    st = racing.race(CONFIGS, _cells(VALUES, {2: ["collapsed", "collapsed"]}), RULES)
    assert list(st.stopped) == [R2]
    stop = st.stopped[R2]
    assert (stop.unstable, stop.look, stop.n, stop.p, stop.alpha) == ("collapsed", 2, 2, None, None)
    assert CONFIGS[stop.leader] == {"r": 8} and abs(stop.diff + 0.3) < 1e-12
    assert stop.why(CONFIGS).startswith("unstable: collapsed in every one of its 2 seeds after round 2")


def test_one_learned_seed_keeps_a_configuration_racing_and_a_mix_of_kinds_is_still_unstable():
    assert racing.race(CONFIGS, _cells(VALUES, {2: ["collapsed", None]}), RULES).stopped == {}
    mixed = racing.race(CONFIGS, _cells(VALUES, {2: ["collapsed", "diverged"]}), RULES)
    assert mixed.stopped[R2].unstable == "collapsed/diverged"


class CollapsingRunner(FormulaRunner):
    """r=2 collapses to exactly chance at every seed (the record says so); the others learn."""

    def record(self, r: int, lr: float, seed: int) -> dict:
        if r != 2:
            return super().record(r, lr, seed)
        return {"status": "complete", "accuracy": 0.5, "flops": 2e9, "device_seconds": 1.0, "tokens": 100,
                "degenerate": "collapsed"}


def test_the_driver_reads_collapsed_records_from_the_storage_and_stops_them_after_the_minimum_seeds(tmp_path, capsys):
    d = _driver(tmp_path, "sweep.racing={min_seeds: 2}", runner=CollapsingRunner())
    assert d.run() == 0
    ran = Counter((r, s) for r, _, s in d.runner.ran)
    assert sorted(s for r, s in ran if r == 2) == [0, 1]
    assert all(sorted(s for r, s in ran if r == good) == SEEDS for good in (8, 32))
    rec = d.session.study.user_attrs[racing.attr_name(vd.config_key({"lora.r": 2, "lora.alpha_over_r": 2}))]
    assert rec["unstable"] == "collapsed" and rec["p"] is None and rec["seeds"] == [0, 1]
    assert "lora.r=2: 2 seeds, unstable: collapsed in every one of its 2 seeds" in capsys.readouterr().out
