"""Racing keeps the driver's guarantees: kill -9 of a real driver mid-race and a rerun do every
(configuration, seed) exactly once; two drivers on one PostgreSQL database race one study without
running anything twice."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from harness.__main__ import main
from harness.config.schema import complete, load
from harness.study.driver import Driver
from tests.study.test_racing import SEEDS, TINY, FormulaRunner
from tests.study.test_study import _wait, load as load_study, sweep
from conftest import LORA_RANK_TINY


def _cells(study) -> dict:
    """(lora.r, seed) -> the states of its attempts, retried attempts left out."""
    retried = {n for t in study.trials for n in t.system_attrs.get("retry_history", [])}
    out: dict = {}
    for t in study.trials:
        if t.number not in retried:
            out.setdefault((t.params.get("lora.r", t.system_attrs.get("fixed_params", {}).get("lora.r")),
                            t.user_attrs["seed"]), []).append(t)
    return out


@pytest.mark.slow
@pytest.mark.process
def test_kill_9_of_a_racing_driver_then_rerun_does_every_configuration_and_seed_exactly_once(tmp_path, capsys):
    ov = sweep(tmp_path, "race9", """\
sweep:
  space:
    lora.r: {choices: [2, 4]}
  sampler: grid
  seeds: [0, 1, 2]
  racing: {min_seeds: 2}
""") + ["train.max_steps=60"]  # a few seconds a trial: the kill lands mid-trial, not between two
    driver = subprocess.Popen([sys.executable, "-m", "harness", *ov], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        def running_in_round_2():
            try:
                trials = load_study(tmp_path, "race9").get_trials(states=(TrialState.RUNNING,))
            except Exception:  # noqa: BLE001 - the study may not exist yet
                return None
            return next((t for t in trials if "pid" in t.user_attrs and t.user_attrs["seed"] == 1), None)

        victim = _wait(running_in_round_2, 300, "a running trial of round 2")
    finally:
        driver.kill()  # SIGKILL: no cleanup in the driver at all
        driver.wait()
    child = victim.user_attrs["pid"]
    _wait(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2],
          30, "the orphaned trial process to die with its driver")

    assert main(ov) == 0
    study = load_study(tmp_path, "race9")
    cells = _cells(study)
    assert sorted(cells) == [(r, s) for r in (2, 4) for s in (0, 1, 2)]
    for cell, ts in cells.items():  # exactly one final outcome each: run to completion, or skipped by the race
        assert len(ts) == 1 and (ts[0].state == TrialState.COMPLETE or ts[0].user_attrs.get("racing") == "skipped"), \
            (cell, [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in ts])
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["fail_reason"]
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    n = len(study.trials)
    assert main(ov) == 0 and len(load_study(tmp_path, "race9").trials) == n  # a third run runs nothing


class SlowFormula(FormulaRunner):
    """A trial takes a moment, so the two drivers' claims interleave."""

    def run(self, *args):
        time.sleep(0.3)
        return super().run(*args)


@pytest.mark.slow
def test_two_drivers_on_one_postgres_database_race_one_study_without_duplicates(tmp_path, fresh_pg):
    url, = fresh_pg(1)
    study = f"race_{uuid.uuid4().hex[:8]}"
    ov = [*TINY, *LORA_RANK_TINY, f"out_dir={tmp_path}", f"study={study}", f"sweep.seeds={SEEDS}",
          "sweep.space={lora.r: {choices: [2, 8, 32]}}", "sweep.racing={min_seeds: 2}", "storage=postgres",
          f"storage.url={url}"]
    drivers = [Driver(complete(load(ov)), ov, runner=SlowFormula()) for _ in range(2)]
    drivers[0].session.open()  # the first creates the study; the second, started at once, loads it
    codes = []
    threads = [threading.Thread(target=lambda d=d: codes.append(d.run())) for d in drivers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert codes == [0, 0]
    ran = Counter((r, s) for d in drivers for r, _, s in d.runner.ran)
    assert max(ran.values()) == 1, ran  # nothing ran twice
    assert sorted(s for r, s in ran if r == 2) == [0, 1]  # the collapsed one: out after round 2, in both drivers
    assert all(sorted(s for r, s in ran if r == good) == SEEDS for good in (8, 32))
    assert all(d.runner.ran for d in drivers), [d.runner.ran for d in drivers]  # both raced
    cells = _cells(drivers[0].session.study)
    assert all(len(ts) == 1 for ts in cells.values()) and len(cells) == 3 * len(SEEDS)
