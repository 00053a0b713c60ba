"""The driver's loop in process, with an injected runner instead of trial processes: budget, seeds,
grid claiming, outcome classification and the summary, in seconds. The real trial processes are
exercised by test_study.py; this checks the bookkeeping around them."""
from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState

from conftest import LORA_RANK_TINY, NoProcessRunner
from harness.config.schema import complete, load
from harness.record import TrialRecord
from harness.runners import Ended
from harness.runners.process import write_config
from harness.study.driver import Driver
from harness.study.outcome import classify

TINY = ["model=tiny_bert", "data=tiny", "tracking.mode=disabled", "hardware.threads=1"]


class InProcessRunner(NoProcessRunner):
    """Stands in for ProcessRunner: 'trains' by formula (accuracy rises with r, wobbles with the seed),
    fails where told, and records what it was asked to run."""

    def __init__(self, fail_r=(), nan_r=()):
        self.ran: list[tuple[int, int, int]] = []  # (trial, lora.r, seed)
        self.fail_r, self.nan_r = set(fail_r), set(nan_r)

    def run(self, tcfg, run_dir, slot, started, beat, every):
        started(12345)
        beat()
        r, seed = tcfg.lora.r, tcfg.seed
        self.ran.append((tcfg.trial, r, seed))
        if r in self.fail_r:
            return Ended(1, TrialRecord(status="failed", reason=f"boom at r={r}"), Path(run_dir) / "log.txt")
        acc = math.nan if r in self.nan_r else 0.5 + 0.01 * r + 0.001 * seed
        rec = {"status": "complete", "accuracy": acc, "flops": 1e9 * r, "device_seconds": 1.0, "tokens": 100}
        write_config(tcfg, Path(run_dir))  # the summary's rerun command reads it
        return Ended(0, TrialRecord.model_validate(rec), Path(run_dir) / "log.txt")


def _driver(tmp_path, *extra, runner=None, study="d"):
    ov = [*TINY, *LORA_RANK_TINY, f"out_dir={tmp_path}", f"study={study}", *extra]
    return Driver(complete(load(ov)), ov, runner=runner or InProcessRunner())


def test_a_grid_with_seeds_runs_every_point_and_seed_once_and_a_resume_runs_nothing(tmp_path, capsys):
    d = _driver(tmp_path, "sweep.seeds=[0,1]")
    assert d.run() == 0
    assert sorted((r, s) for _, r, s in d.runner.ran) == [(2, 0), (2, 1), (8, 0), (8, 1), (32, 0), (32, 1)]
    assert [t.state for t in d.session.study.trials] == [TrialState.COMPLETE] * 6
    assert d.session.study.metric_names == ["accuracy"]  # optuna-dashboard shows "accuracy", not "Objective 0"
    again = _driver(tmp_path, "sweep.seeds=[0,1]")
    assert again.run() == 0 and again.runner.ran == []
    assert "0 to go" in capsys.readouterr().err


def test_the_budget_counts_trials_and_a_raised_budget_resumes_the_grid(tmp_path):
    d = _driver(tmp_path, "sweep.n_trials=2")
    d.run()
    assert [r for _, r, _ in d.runner.ran] == [2, 8]
    more = _driver(tmp_path, "sweep.n_trials=3")
    more.run()
    assert [r for _, r, _ in more.runner.ran] == [32]


def test_a_sampled_configuration_runs_once_per_seed(tmp_path):
    d = _driver(tmp_path, "sweep.sampler=random", "sweep.n_trials=6", "sweep.seeds=[0,1,2]",
                "sweep.space={lora.r: {choices: [2, 4, 8, 16, 32, 64]}}")
    d.run()
    by_config = Counter(r for _, r, _ in d.runner.ran)
    seeds = {r: sorted(s for _, rr, s in d.runner.ran if rr == r) for r in by_config}
    assert len(d.runner.ran) == 6 and all(v == [0, 1, 2] for v in seeds.values()), seeds


def test_failed_and_non_finite_trials_are_fail_with_their_reason_and_the_sweep_goes_on(tmp_path, capsys):
    d = _driver(tmp_path, runner=InProcessRunner(fail_r=[2], nan_r=[8]))
    assert d.run() == 0  # one trial completed
    by_r = {t.params["lora.r"]: t for t in d.session.study.trials}
    assert by_r[2].state == TrialState.FAIL and by_r[2].user_attrs["fail_reason"] == "boom at r=2"
    assert by_r[8].state == TrialState.FAIL and by_r[8].user_attrs["fail_reason"] == "objective accuracy is nan"
    assert by_r[32].state == TrialState.COMPLETE and by_r[32].user_attrs["fail_reason"] is None
    out = capsys.readouterr().out
    assert "1 complete, 0 pruned, 2 failed" in out and "rerun trial 2" in out


def test_two_drivers_on_one_storage_never_share_a_grid_point(tmp_path):
    a, b = _driver(tmp_path, "sweep.seeds=[0,1]"), _driver(tmp_path, "sweep.seeds=[0,1]")
    a.session.open(), b.session.open()
    jobs = []
    while True:  # alternate the two drivers' claims
        got = [d.session.next_trial(0) for d in (a, b)]
        jobs += [j for j in got if j]
        if not any(got):
            break
    points = [(j[1]["lora.r"], j[2]) for j in jobs]
    assert sorted(points) == [(2, 0), (2, 1), (8, 0), (8, 1), (32, 0), (32, 1)]


def test_a_claimed_trial_has_its_folder_before_its_config_is_composed(tmp_path):
    """A worker killed right after its claim (composing the config takes ~1 s) still leaves one folder per
    trial in the storage: the soak found 18 of 234 trials without one when the folder came after compose."""
    d = _driver(tmp_path)
    d.session.open()
    trial, _, _ = d.session.next_trial(0)  # the claim alone: run_trial never starts
    assert (tmp_path / d.cfg.study / "trials" / str(trial.number)).is_dir()


def test_the_reaper_gives_a_dead_drivers_trial_its_folder(tmp_path):
    """The claim's commit comes before Optuna's ask returns: a driver killed in between leaves a trial
    without its folder; the driver that fails it as dead creates the folder (the second soak's 1 of 237)."""
    import socket
    import subprocess
    import sys

    d = _driver(tmp_path)
    d.session.open()
    trial, _, _ = d.session.next_trial(0)
    folder = tmp_path / d.cfg.study / "trials" / str(trial.number)
    folder.rmdir()  # as if the driver died before it got there
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    trial.set_user_attr("driver", f"{socket.gethostname()}:{gone.pid}")
    d.session.reap_stale()
    assert d.session.study.trials[trial.number].state == TrialState.FAIL and folder.is_dir()


@pytest.mark.parametrize("rc, record, state, reason", [
    (0, {"status": "complete", "accuracy": 0.7}, "COMPLETE", None),
    (1, {"status": "pruned", "reason": "pruned after step 8"}, "PRUNED", "pruned after step 8"),  # torchrun's 1
    (3, {"status": "pruned"}, "PRUNED", "pruned"),
    (1, {"status": "failed", "reason": "loss is nan at step 3"}, "FAIL", "loss is nan at step 3"),
    (-9, None, "FAIL", "killed by SIGKILL (out of memory?"),
    (-15, {"status": "complete", "accuracy": 0.7}, "FAIL", "killed by SIGTERM"),
    (2, None, "FAIL", "exit code 2"),
    (0, None, "FAIL", "exit code 0 but no complete result.json"),
    (0, {"status": "complete", "accuracy": None}, "FAIL", "objective accuracy is None"),
], ids=["complete", "pruned-torchrun", "pruned", "failed", "sigkill", "sigterm-after-record", "exit2", "no-record",
        "no-objective"])
def test_the_record_status_is_the_outcome_and_the_exit_code_explains_a_missing_one(tmp_path, rc, record, state,
                                                                                    reason):
    out = classify(Ended(rc, record and TrialRecord.model_validate(record), tmp_path / "log.txt"), ["accuracy"])
    assert out.state == state and (reason is None and out.reason is None or reason in out.reason), out
    assert out.values == ([0.7] if state == "COMPLETE" else None)


def test_cpu_threads_split_the_cores_this_process_may_use_over_the_concurrent_trial_processes():
    import os

    from harness.runners.process import cpu_threads

    cfg = complete(load(TINY[:-1]))  # hardware.threads unset
    cores = len(os.sched_getaffinity(0))
    assert cpu_threads(cfg, 1).hardware.threads == cores
    assert cpu_threads(cfg, 2).hardware.threads == max(1, cores // 2)
    assert cpu_threads(cfg, 64).hardware.threads == 1  # never 0
    assert cfg.hardware.threads is None  # the caller's config is left as it was
    assert cpu_threads(complete(load(TINY)), 64).hardware.threads == 1  # a set value is kept


def _chattr(flag: str, *paths: Path) -> bool:
    import subprocess

    return all(subprocess.run(["chattr", flag, str(p)], capture_output=True).returncode == 0 for p in paths)


def test_a_storage_that_becomes_read_only_mid_sweep_ends_the_driver_with_one_line(tmp_path):
    """Root ignores file permissions, so the study file and its directory are made immutable
    (chattr +i, ext4) after the first trial: the next write fails. The driver stops with one line
    naming the storage, and what was recorded before stays."""
    from harness.config.schema import ConfigError
    from harness.study.driver import run_study

    study_dir = tmp_path / "ro"

    class ReadOnlyAfterOne(InProcessRunner):
        def run(self, tcfg, *args):
            if self.ran and not _chattr("+i", study_dir / "study.db", study_dir):
                pytest.skip("chattr +i is not available here (needs root on ext4)")
            return super().run(tcfg, *args)

    ov = [*TINY, *LORA_RANK_TINY, f"out_dir={tmp_path}", "study=ro"]
    try:
        with pytest.raises(ConfigError) as e:
            run_study(complete(load(ov)), ov, runner=ReadOnlyAfterOne())
    finally:
        _chattr("-i", study_dir / "study.db", study_dir)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"storage sqlite:///{study_dir}/study.db: ") and "OperationalError" in msg, msg
    import optuna

    first = optuna.load_study(study_name="ro", storage=f"sqlite:///{study_dir}/study.db").trials[0]
    assert first.state == TrialState.COMPLETE and first.params["lora.r"] == 2


@pytest.mark.process
def test_printing_a_config_imports_neither_torch_nor_optuna():
    """`python -m harness --cfg` (and every config error) stays fast: the schema, the presets and the
    record type are torch-free."""
    import subprocess
    import sys

    code = ("import sys; from harness.__main__ import main; main(['--cfg', 'sweep=lora_rank']); "
            "print(sorted(m for m in ('torch', 'optuna', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout[-500:] + out.stderr[-2000:]


def test_a_sweep_file_edited_mid_study_stops_the_driver_and_the_trial_runs_again(tmp_path, capsys):
    """Trials are composed from the files on disk: an edit mid-study must not silently change the experiment."""
    (tmp_path / "sweep").mkdir()
    sweep = tmp_path / "sweep" / "edited.yaml"
    text = ("# @package _global_\ntrain: {max_steps: 7}\nsweep:\n  space:\n    lora.r: {choices: [2, 4, 8]}\n"
            "  sampler: grid\n")
    sweep.write_text(text)

    class EditingRunner(InProcessRunner):
        def run(self, tcfg, *a):
            sweep.write_text(text.replace("max_steps: 7", "max_steps: 9"))  # the user edits the file
            return super().run(tcfg, *a)

    ov = [*TINY, "sweep=edited", f"hydra.searchpath=[file://{tmp_path}]", f"out_dir={tmp_path}/runs", "study=e"]
    d = Driver(complete(load(ov)), ov, runner=EditingRunner())
    assert d.run() == 2
    assert len(d.runner.ran) == 1  # the second trial never reached the runner
    assert "train.max_steps: 7 -> 9" in capsys.readouterr().err
    sweep.write_text(text)  # restored: the rerun finishes the grid, each point once
    again = Driver(complete(load(ov)), ov, runner=InProcessRunner())
    assert again.run() == 0
    assert sorted(r for _, r, _ in d.runner.ran + again.runner.ran) == [2, 4, 8]


def test_a_sweep_file_broken_mid_study_stops_the_driver_and_no_seed_is_spent(tmp_path, capsys):
    """An edit that makes the sweep file invalid (found live: a key the running code did not know yet) must not
    FAIL every queued trial for good: the driver stops, the trial is retried once the file loads again."""
    (tmp_path / "sweep").mkdir()
    sweep = tmp_path / "sweep" / "broken.yaml"
    text = "# @package _global_\nsweep:\n  space:\n    lora.r: {choices: [2, 4, 8]}\n  sampler: grid\n"
    sweep.write_text(text)

    class BreakingRunner(InProcessRunner):
        def run(self, tcfg, *a):
            sweep.write_text(text + "  not_a_setting: 1\n")  # the user's edit, invalid for this code
            return super().run(tcfg, *a)

    ov = [*TINY, "sweep=broken", f"hydra.searchpath=[file://{tmp_path}]", f"out_dir={tmp_path}/runs", "study=b"]
    d = Driver(complete(load(ov)), ov, runner=BreakingRunner())
    assert d.run() == 2
    err = capsys.readouterr().err
    assert "no longer load" in err and "not_a_setting" in err and len(d.runner.ran) == 1
    failed = [t for t in d.session.study.trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs["fail_reason"].startswith("interrupted")
    assert failed[0].user_attrs["settled"] is False  # racing waits for its retry instead of counting a hole
    sweep.write_text(text)
    again = Driver(complete(load(ov)), ov, runner=InProcessRunner())
    assert again.run() == 0
    assert sorted(r for _, r, _ in d.runner.ran + again.runner.ran) == [2, 4, 8]


def test_a_resume_ignores_settings_added_since_that_are_off_and_names_every_real_change():
    """A study created before a setting existed resumes when the new setting is null (off); any value that
    differs, or a setting that is on, is named."""
    from harness.study.checks import config_changes

    old = {"train.lr": 0.001, "eval.max_examples": None}
    assert config_changes(old, {**old, "eval.intermediate_examples": None}, []) == []
    assert config_changes(old, {**old, "eval.intermediate_examples": 50}, []) == [
        "eval.intermediate_examples: '<absent>' -> 50"]
    assert config_changes(old, {"train.lr": 0.002, "eval.max_examples": None}, []) == ["train.lr: 0.001 -> 0.002"]
    assert config_changes(old, {"train.lr": 0.001}, []) == ["eval.max_examples: None -> '<absent>'"]
    assert config_changes(old, {"train.lr": 0.002, "eval.max_examples": None}, ["train"]) == []


def test_telling_a_trial_another_worker_already_failed_as_stale_goes_on(tmp_path, capsys):
    """A slow worker finishing a trial whose heartbeat went stale: the other worker failed it and queued its
    retry; this tell must not crash the driver, and the trial stays failed (its retry stands)."""
    from harness.study.outcome import Outcome

    d = _driver(tmp_path)
    d.session.open()
    trial, _, _ = d.session.next_trial(0)
    d.session.study.tell(trial.number, state=TrialState.FAIL)  # what the stale-trial reaper does
    d.session.tell(trial, Outcome("COMPLETE", [0.7]), {"run_dir": str(tmp_path)}, interrupted=False)
    assert d.session.study.trials[trial.number].state == TrialState.FAIL
    assert "already failed as stale" in capsys.readouterr().err
