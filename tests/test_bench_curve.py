"""bench/curve.py's analysis on the records of a tiny real grid study (model=tiny_bert data=tiny, run
through the CLI as the benchmark runs its studies), and its plateau / convergence logic on planted curves."""
from __future__ import annotations

import json

import pytest

from bench import curve

PLANTED = [0, 10, 20, 30, 40]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("curve")
    assert curve.run(list(curve.QUICK), None, curve.QUICK, out) == 0
    return out, curve.load(out)


def _plateau_by_hand(steps, accs, tol):
    """The same definition written the other way round: walk back from the end while every eval is
    within tol below the level (the mean of the evals in the last 25% of the steps)."""
    last = [a for s, a in zip(steps, accs) if s >= 0.75 * steps[-1]]
    lv = sum(last) / len(last)
    i = len(steps)
    while i > 0 and accs[i - 1] >= lv - tol:
        i -= 1
    return steps[min(i, len(steps) - 1)]


def test_plateau_on_planted_curves():
    # climbs, then flat: levels off where it reaches the level and stays
    assert curve.plateau_step(PLANTED, [0.5, 0.6, 0.7, 0.8, 0.8]) == 30
    # an early touch of the level followed by a dip does not count; the dip is 2 points (> tol)
    assert curve.plateau_step(PLANTED, [0.5, 0.8, 0.78, 0.8, 0.8]) == 30
    # a dip within the 1-point tolerance does not break the plateau
    assert curve.plateau_step(PLANTED, [0.5, 0.8, 0.795, 0.8, 0.8]) == 10
    # still climbing: only the last eval is within 1 point of the level (0.85)
    rising = [0.5, 0.6, 0.7, 0.8, 0.9]
    assert curve.plateau_step(PLANTED, rising) == 40
    assert curve.gain_last_quarter(dict(zip(PLANTED, rising))) == pytest.approx(0.1)
    assert curve.gain_last_quarter(dict(zip(PLANTED, [0.5, 0.6, 0.7, 0.8, 0.8]))) == pytest.approx(0.0)


def test_early_stopping_semantics():
    c = dict(zip([0, 10, 20, 30, 40, 50, 60], [0.5, 0.6, 0.7, 0.7, 0.69, 0.71, 0.70]))
    # a tie (0.7 after 0.7) is no improvement: two evals without one stop at 40
    assert curve.early_stop(c, patience=2, min_delta=0.0) == 40
    # 0.71 beats 0.70 by 1 point: resets at 50, runs to the end with patience 3
    assert curve.early_stop(c, patience=3, min_delta=0.0) == 60
    # ... but not by more than min_delta=0.01 (float: 0.71 - 0.70 < 0.01 + eps): stops at 50
    assert curve.early_stop(c, patience=3, min_delta=0.011) == 50
    # the baseline at step 0 is not an eval of the trial
    assert curve.early_stop({0: 0.9, 10: 0.5, 20: 0.5}, patience=1, min_delta=0.0) == 20


def test_binomial_se_by_hand():
    assert curve.binomial_se(0.8, 400) == pytest.approx(0.02)          # sqrt(0.16 / 400)
    assert curve.binomial_se(0.8, 2000) == pytest.approx(0.0089443, rel=1e-4)
    assert curve.binomial_se(0.75, 400) == pytest.approx(0.0216506, rel=1e-4)


# the module's tiny 4-trial grid study in real processes: 13 s on the 2-core box at load ~2 (69 s at load 10)
def test_records_of_a_tiny_study(records):
    out, rows = records
    assert len(rows) == 4 and all(r["status"] == "complete" for r in rows)
    assert sorted((r["lr"], r["seed"]) for r in rows) == [(1e-3, 0), (1e-3, 1), (5e-2, 0), (5e-2, 1)]
    for r in rows:
        # step 0 (the baseline eval), the intermediate evals every 3 steps, the final eval at 12
        assert sorted(r["curve"]) == [0, 3, 6, 9, 12]
        raw = json.loads((out / r["study"] / "trials" / str(r["trial"]) / "result.json").read_text())
        assert r["curve"][12] == raw["accuracy"]
        assert r["collapsed"] == (abs(raw["accuracy"] - raw["majority_accuracy"]) < 1e-9)
        steps = sorted(r["curve"])
        accs = [r["curve"][s] for s in steps]
        assert curve.plateau_step(steps, accs) == _plateau_by_hand(steps, accs, curve.PLATEAU_TOL)


def test_summary_of_a_tiny_study(records, tmp_path):
    out, rows = records
    groups = curve.summarise(rows)
    assert [(g["lr"], g["n"]) for g in groups] == [(1e-3, 2), (5e-2, 2)]
    for g in groups:
        mine = [r for r in rows if r["lr"] == g["lr"]]
        for i, s in enumerate(g["steps"]):
            assert g["mean"][i] == pytest.approx(sum(r["curve"][s] for r in mine) / 2)
        assert g["plateau_step"] == _plateau_by_hand(g["steps"], g["mean"], curve.PLATEAU_TOL)
        finals = [r["curve"][12] for r in mine]
        assert g["spread_final"] == pytest.approx(max(finals) - min(finals))
        assert g["converged"] == (abs(g["gain_last25"]) < curve.CONVERGED_TOL)
    assert curve.analyse(out, "curve", tmp_path, "curve_quick") == 0
    saved = json.loads((tmp_path / "curve.json").read_text())
    assert len(saved["trials"]) == 4
    kept = [r for r in rows if not r["collapsed"]]
    for e in saved["early_stopping"]:
        assert e["trials"] == len(kept)
        stops = [curve.early_stop(r["curve"], e["patience"], e["min_delta"]) for r in kept]
        assert e["max_stop"] == max(stops) and e["max_stop"] <= 12 and (tmp_path / "curve.png").stat().st_size > 1000
    assert "plateau step" in (tmp_path / "curve.md").read_text()
