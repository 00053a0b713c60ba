"""The racing benchmark's replay of a finished study (bench/racing.py --study): the grid is read from
a real Optuna storage (trials as the driver records them: user attr `point`, device-seconds), the
seeds every configuration completed are the grid's, and racing stops a planted bad configuration
after its minimum seeds in every ordering. No training: the trials are written into the storage."""
from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState, create_trial

import bench.common
from bench import racing as br

GOOD, BAD = 1e-3, 1e-2


def _study(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="grid", storage=url, direction="maximize")
    noise = [0.000, 0.004, -0.003, 0.002]
    for seed in range(4):
        for lr, acc, sign in ((GOOD, 0.80, 1), (BAD, 0.60, -1)):  # paired differences that vary by seed
            state = TrialState.PRUNED if (lr, seed) == (BAD, 3) else TrialState.COMPLETE  # the study's own race
            study.add_trial(create_trial(
                state=state, value=acc + sign * noise[seed] if state == TrialState.COMPLETE else None,
                params={}, distributions={},
                user_attrs={"point": json.dumps({"train.lr": lr, "seed": seed}), "device_seconds": 10.0 + seed}))
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.9, params={}, distributions={},
                                 user_attrs={"reference": "full", "point": json.dumps({"seed": 0})}))
    return url


def test_study_grid_keeps_the_seeds_every_configuration_completed(tmp_path):
    space, seeds, cache = br.study_grid(_study(tmp_path), "grid")
    assert space == {"train.lr": [GOOD, BAD]}  # the reference arm is not a grid point
    assert seeds == [0, 1, 2]                   # seed 3 of the bad lr was skipped by the study's race
    cell = cache[br.key({"train.lr": GOOD, "seed": 1})]
    assert cell["accuracy"] == pytest.approx(0.804) and cell["device_seconds"] == pytest.approx(11.0)


def test_replay_of_a_study_stops_the_planted_bad_configuration(tmp_path, monkeypatch):
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    space, seeds, cache = br.study_grid(_study(tmp_path), "grid")
    assert br.replay_main(space, seeds, [], cache, False, out="racing_grid") == 0
    out = json.loads((tmp_path / "racing_grid.json").read_text())
    row = {r["variant"]: r for r in out["rows"]}["racing"]
    assert row["orderings"] == 6 and row["same verdicts"] == 6
    # 20 points worse on both of the first two seeds: stopped after round 2 (the minimum), 5 of 6 cells run
    assert row["median trial share"] == pytest.approx(5 / 6)
    full = out["variants"]["racing"]["full_grid_verdicts"]
    assert [v["verdict"] for v in full.values()] == ["worse"]


def test_replay_reads_collapsed_cells_stops_them_by_the_unstable_rule_and_sets_them_aside(tmp_path, monkeypatch):
    """A configuration whose every seed collapsed (user attr `degenerate`, as the driver records it) is stopped
    after min_seeds by racing's unstable rule in every ordering, as the driver would, and its collapsed seeds are
    left out of the verdicts, as the analysis leaves them out: its comparison has no shared seed."""
    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    study = optuna.create_study(study_name="c", storage=url, direction="maximize")
    for seed in range(4):
        for lr, acc, bad in ((GOOD, 0.80 + 0.003 * (seed % 2), None), (BAD, 0.50, "collapsed")):
            study.add_trial(create_trial(state=TrialState.COMPLETE, value=acc, params={}, distributions={},
                                         user_attrs={"point": json.dumps({"train.lr": lr, "seed": seed}),
                                                     "device_seconds": 10.0, "degenerate": bad}))
    space, seeds, cache = br.study_grid(url, "c")
    assert cache[br.key({"train.lr": BAD, "seed": 0})]["degenerate"] == "collapsed"
    assert br.replay_main(space, seeds, [], cache, False, out="racing_c") == 0
    out = json.loads((tmp_path / "racing_c.json").read_text())
    racing_runs = out["variants"]["racing"]["runs"]
    assert len(racing_runs) == 24 and all(r["stopped"] == r["stopped_unstable"] == 1 for r in racing_runs)
    assert {r["variant"]: r for r in out["rows"]}["racing"]["median trial share"] == pytest.approx(6 / 8)
    full = out["variants"]["racing"]["full_grid_verdicts"]  # its seeds set aside: nothing left to pair with
    assert [(v["n"], v["verdict"]) for v in full.values()] == [(0, "undecided")]
