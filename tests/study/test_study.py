"""The study driver on the tiny model: real trial processes, a real SQLite study, real kills.

Each test writes its own small sweep file and points Hydra at it with `hydra.searchpath`.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from harness.__main__ import main

HEADER = """\
# @package _global_
# python -m harness sweep={name}
defaults:
  - override /model: tiny_bert
  - override /data: tiny
study: {name}
train: {{max_steps: 4, lr: 1.0e-2, max_grad_norm: 1.0e+30}}
eval: {{batch_size: 64, baseline: false}}
hardware: {{threads: 1}}
tracking: {{mode: disabled}}
"""


def sweep(tmp_path: Path, name: str, body: str) -> list[str]:
    (tmp_path / "sweep").mkdir(exist_ok=True)
    (tmp_path / "sweep" / f"{name}.yaml").write_text(HEADER.format(name=name) + body)
    return [f"sweep={name}", f"hydra.searchpath=[file://{tmp_path}]", f"out_dir={tmp_path}/runs"]


def load(tmp_path: Path, name: str) -> optuna.Study:
    # only once a trial directory exists: two processes creating the SQLite schema at once collide
    if not (tmp_path / "runs" / name / "trials").is_dir():
        raise KeyError(name)
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/runs/{name}/study.db")


def by_lr(study) -> dict:
    return {t.params["train.lr"]: t for t in study.trials}


@pytest.mark.process  # the real driver with its trial workers
def test_failures_are_recorded_with_reasons_and_the_sweep_finishes(tmp_path, capsys):
    """A trial that raises, one whose loss is NaN and one whose process is killed are FAIL with
    reasons; the good one completes; NSGA-II, two objectives, enqueue and 2 trials at a time."""
    ov = sweep(tmp_path, "fails", """\
sweep:
  space:
    train.lr: {choices: [1.0e-2, 1.0e-3, 1.0e+30]}
    model.tiny.num_attention_heads: {choices: [2, 3]}
    train.max_steps: {choices: [6, 5000]}
  objectives: {accuracy: maximize, flops: minimize}
  sampler: nsga2
  n_trials: 4
  parallel: 2
  enqueue:
    - {train.lr: 1.0e-2, model.tiny.num_attention_heads: 2, train.max_steps: 6}   # fine
    - {train.lr: 1.0e+30, model.tiny.num_attention_heads: 2, train.max_steps: 6}  # loss goes non-finite
    - {train.lr: 1.0e-2, model.tiny.num_attention_heads: 3, train.max_steps: 6}   # raises in the trial: 3 heads do not split 32
    # killed from outside below; long, so the killer's polls find it running (a 6-step trial could end between
    # a poll that reads its pid and the kill, and complete)
    - {train.lr: 1.0e-3, model.tiny.num_attention_heads: 2, train.max_steps: 5000}
""")
    killed = []

    def killer():  # SIGKILL the lr=1e-3 trial's process as soon as it has one
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            try:
                for t in load(tmp_path, "fails").get_trials(states=(TrialState.RUNNING,)):
                    if t.params.get("train.lr") == 1e-3 and "pid" in t.user_attrs:
                        os.kill(t.user_attrs["pid"], signal.SIGKILL)
                        killed.append(t.number)
            except Exception:  # noqa: BLE001 - the study may not exist yet
                pass
            time.sleep(0.2)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    rc = main(ov)
    watcher.join(timeout=5)
    out = capsys.readouterr().out
    assert rc == 0 and killed
    study = load(tmp_path, "fails")
    assert len(study.trials) == 4
    t = {(x.params["train.lr"], x.params["model.tiny.num_attention_heads"]): x for x in study.trials}
    ok, nan, raised, kill = t[(1e-2, 2)], t[(1e30, 2)], t[(1e-2, 3)], t[(1e-3, 2)]
    assert ok.state == TrialState.COMPLETE and 0 <= ok.values[0] <= 1 and ok.values[1] > 0
    assert nan.state == raised.state == kill.state == TrialState.FAIL
    assert "non-finite loss" in nan.user_attrs["fail_reason"]
    assert "attention heads (3)" in raised.user_attrs["fail_reason"], raised.user_attrs["fail_reason"]
    assert "killed by SIGKILL" in kill.user_attrs["fail_reason"]
    # the study alone is useful: overrides, run dir, seed and metrics on every trial
    assert ok.user_attrs["accuracy"] == ok.values[0] and ok.user_attrs["flops"] == ok.values[1]
    assert ok.user_attrs["seed"] == 0 and "train.lr=0.01" in ok.user_attrs["overrides"]
    assert json.loads((Path(ok.user_attrs["run_dir"]) / "result.json").read_text())["trial"] == ok.number
    assert (Path(kill.user_attrs["run_dir"]) / "config.yaml").is_file()
    assert [x.number for x in study.best_trials] == [ok.number]
    assert "Pareto set (1 trials)" in out and "rerun trial" in out and "python -m harness" in out


def _wait(pred, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.process
def test_kill_9_of_the_driver_then_rerun_loses_and_duplicates_nothing(tmp_path, capsys):
    """A multi-objective grid: kill -9 the driver mid-trial, rerun: every point completes exactly
    once, the orphaned trial is FAIL (driver died) and retried; a third run reruns nothing."""
    ov = sweep(tmp_path, "grid", """\
sweep:
  space:
    lora.r: {choices: [2, 4]}
  objectives: {accuracy: maximize, flops: minimize}
  sampler: grid
""")
    driver = subprocess.Popen([sys.executable, "-m", "harness", *ov], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    try:
        def running():
            try:
                trials = load(tmp_path, "grid").get_trials(states=(TrialState.RUNNING,))
            except Exception:  # noqa: BLE001 - the study may not exist yet
                return None
            return next((t for t in trials if "pid" in t.user_attrs), None)

        victim = _wait(running, 120, "a running trial")
    finally:
        driver.kill()  # SIGKILL: no cleanup in the driver at all
        driver.wait()
    child = victim.user_attrs["pid"]
    _wait(lambda: not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2],
          10, "the orphaned trial process to die with its driver")

    assert main(ov) == 0
    err = capsys.readouterr().err
    assert "resuming study grid: 0 complete, 0 pruned, 0 failed, 2 to go" in err
    study = load(tmp_path, "grid")
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["lora.r"] for t in done) == [2, 4]  # 0 lost, 0 duplicated
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["fail_reason"]
    retry = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].params == dead.params and retry[0].state == TrialState.COMPLETE
    assert retry[0].user_attrs["fail_reason"] is None  # not inherited from the attempt it repeats
    # a Pareto set: no member is dominated by another complete trial
    front = study.best_trials
    assert front and all(not (o.values[0] >= f.values[0] and o.values[1] <= f.values[1] and o.values != f.values)
                         for f in front for o in done)

    assert main(ov) == 0  # resume of a finished study: nothing runs
    assert "resuming study grid: 2 complete, 0 pruned, 0 failed, 0 to go" in capsys.readouterr().err
    assert len(load(tmp_path, "grid").trials) == len(study.trials)


@pytest.mark.process  # the real driver with its trial workers
def test_a_pruned_trial_stops_early_and_is_marked_pruned(tmp_path):
    ov = sweep(tmp_path, "prune", """\
sweep:
  space:
    train.lr: {choices: [1.0e-2, 1.0e-7]}
  sampler: random
  pruner: median
  pruner_args: {n_startup_trials: 1, n_warmup_steps: 0}
  n_trials: 2
  enqueue: [{train.lr: 1.0e-2}, {train.lr: 1.0e-7}]
""") + ["lora.targets=all_linear", "train.max_steps=40", "train.eval_every=4"]
    assert main(ov) == 0
    good, stuck = by_lr(load(tmp_path, "prune"))[1e-2], by_lr(load(tmp_path, "prune"))[1e-7]
    assert good.state == TrialState.COMPLETE and len(good.intermediate_values) == 9  # steps 4..36
    assert stuck.state == TrialState.PRUNED and "pruned after step" in stuck.user_attrs["prune_reason"]
    rec = json.loads((Path(stuck.user_attrs["run_dir"]) / "result.json").read_text())
    assert rec["status"] == "pruned" and rec["steps"] < 40
    assert max(stuck.intermediate_values) == rec["steps"]  # reported through the storage up to the prune


def test_a_trial_left_running_by_a_driver_elsewhere_is_failed_after_the_grace_period_and_retried(tmp_path):
    """The heartbeat path (RDB storages): a RUNNING trial of a driver on another host goes stale."""
    from harness.config.schema import complete
    from harness.config.schema import load as compose
    from harness.optuna_parts import tally
    from harness.study.session import Session

    ov = sweep(tmp_path, "hb", """\
sweep:
  space: {lora.r: {choices: [2, 4]}}
  sampler: grid
  heartbeat_interval: 1
  grace_period: 1
""")
    d = Session(complete(compose(ov)), ov)
    d.open()
    trial, params, seed = d.next_trial(time.time())
    trial.set_user_attr("driver", "elsewhere:1")  # not on this host: only the heartbeat can tell
    d.reap_stale()
    assert d.study.trials[trial.number].state == TrialState.RUNNING  # still fresh
    time.sleep(2.5)
    d.reap_stale()
    trials = d.study.trials
    assert trials[trial.number].state == TrialState.FAIL
    retry = [t for t in trials if t.state == TrialState.WAITING and t.system_attrs.get("failed_trial") == trial.number]
    assert [t.system_attrs["fixed_params"] for t in retry] == [params]
    assert tally(trials) == {**tally(trials), "done": 0, "waiting": 2, "retried": 1}  # the retry + point r=4


def _running_trial(tmp_path, name):
    try:
        return next((t for t in load(tmp_path, name).get_trials(states=(TrialState.RUNNING,))
                     if "pid" in t.user_attrs), None)
    except Exception:  # noqa: BLE001 - the study may not exist yet
        return None


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.process
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_driver_within_seconds_and_the_rerun_does_every_point_once(tmp_path, capsys, sig):
    """Ctrl-C, or the SIGTERM SLURM/Kubernetes send before a kill: the running trial is ended (its
    process group gone), recorded FAIL "interrupted" and retried by the rerun; 0 lost, 0 duplicated."""
    name = f"sig{sig.value}"
    ov = sweep(tmp_path, name, """\
sweep:
  space: {lora.r: {choices: [2, 4]}}
  sampler: grid
""") + ["train.max_steps=40"]  # still in start-up or training when signalled
    driver = subprocess.Popen([sys.executable, "-m", "harness", *ov], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    victim = _wait(lambda: _running_trial(tmp_path, name), 120, "a running trial")
    t0 = time.time()
    driver.send_signal(sig)
    out, err = driver.communicate(timeout=60)
    assert time.time() - t0 < 20, f"the driver took {time.time() - t0:.0f} s to stop"
    assert driver.returncode == 128 + sig.value and "stopping the running trials" in err, err[-2000:]
    assert _gone(victim.user_attrs["pid"]), "the trial's process group outlived the driver"
    stopped = load(tmp_path, name).trials[victim.number]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["fail_reason"].startswith("interrupted")
    assert main(ov) == 0
    study = load(tmp_path, name)
    assert sorted(t.params["lora.r"] for t in study.trials if t.state == TrialState.COMPLETE) == [2, 4]
    assert any(t.system_attrs.get("failed_trial") == victim.number for t in study.trials)


@pytest.mark.process
def test_a_second_ctrl_c_exits_at_once_and_the_rerun_still_does_every_point_once(tmp_path, capsys):
    ov = sweep(tmp_path, "twice", """\
sweep:
  space: {lora.r: {choices: [2, 4]}}
  sampler: grid
""") + ["train.max_steps=40"]
    driver = subprocess.Popen([sys.executable, "-m", "harness", *ov], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    victim = _wait(lambda: _running_trial(tmp_path, "twice"), 120, "a running trial")
    driver.send_signal(signal.SIGINT)
    driver.send_signal(signal.SIGINT)
    out, err = driver.communicate(timeout=30)
    assert driver.returncode == 130 and "Traceback" not in err, err[-2000:]
    _wait(lambda: _gone(victim.user_attrs["pid"]), 10, "the trial's process group to end")
    assert main(ov) == 0
    study = load(tmp_path, "twice")
    assert sorted(t.params["lora.r"] for t in study.trials if t.state == TrialState.COMPLETE) == [2, 4]


def test_a_study_is_one_experiment_a_resume_with_another_base_config_is_refused(tmp_path):
    """The base config is stored at creation; a resume that changes it (not the budget or parallelism) is
    refused with the differing keys, unless the user vouches for them in sweep.allow_changes."""
    from harness.config.schema import ConfigError, complete
    from harness.config.schema import load as compose
    from harness.study.session import Session

    ov = sweep(tmp_path, "one", """\
sweep:
  space: {lora.r: {choices: [2, 4]}}
  sampler: grid
  parallel: 1
  seeds: [0]
""")

    def opened(*extra):
        return Session(complete(compose([*ov, *extra])), [*ov, *extra]).open()

    assert opened() is True
    assert opened("sweep.parallel=2", "sweep.seeds=[0,1]", "hardware.threads=2") is False  # schedule and budget
    with pytest.raises(ConfigError, match=r"eval\.max_examples: None -> 4.*study=<new name>.*allow_changes"):
        opened("eval.max_examples=4")
    with pytest.raises(ConfigError, match=r"lora\.dropout: 0\.05 -> 0\.1"):
        opened("lora.dropout=0.1", "eval.max_examples=4", "+sweep.allow_changes=[eval.max_examples]")
    assert opened("eval.max_examples=4", "+sweep.allow_changes=[eval.max_examples]") is False
    assert opened("study=one_b", "eval.max_examples=4") is True  # a new name is a new experiment
