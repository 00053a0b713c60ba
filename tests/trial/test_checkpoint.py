"""In-trial checkpoints (harness/trial/checkpoint.py) and the progress line (harness/trial/progress.py), on tiny.

The resume test is the issue's: an interrupted trial, continued from its last checkpoint, gives the
record of an uninterrupted run (losses per step, accuracy, adapter checksum). Dropout (BERT's and
LoRA's) draws from torch's RNG every step, so a resume that lost the RNG state would differ.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness import train
from harness.trial import checkpoint as ckpt

SAME = ("accuracy", "eval_loss", "train_loss", "adapter_checksums", "steps", "tokens", "padded_tokens",
        "examples_seen", "evals", "status")


class Killed(BaseException):
    """Stands in for the SIGKILL of a long trial: raised right after a checkpoint is on disk."""


def _record(cfg) -> dict:
    return json.loads((train.run_dir_of(cfg) / "result.json").read_text())


def test_resume_gives_the_uninterrupted_record(tiny_cfg, monkeypatch, capsys):
    # grad_accum=2: two batches per step, and 6 x 32 examples cross the epoch boundary of 160
    common = ("train.max_steps=6", "train.grad_accum=2", "train.eval_every=3", "tracking.mode=disabled",
              "train.log_every=2")
    whole = tiny_cfg(*common, "trial=0")
    train.run(whole)
    assert "[harness] step 2/6 loss" in capsys.readouterr().out  # the progress line

    saved = []
    real_save = ckpt.save

    def save_then_die(accelerator, run_dir, state, counters):
        out = real_save(accelerator, run_dir, state, counters)
        saved.append(state.step)
        if state.step == 4:  # the second save: it replaced the first
            raise Killed
        return out

    monkeypatch.setattr(ckpt, "save", save_then_die)
    cut = tiny_cfg(*common, "trial=1", "train.checkpoint_every=2")
    with pytest.raises(Killed):
        train.run(cut)
    monkeypatch.setattr(ckpt, "save", real_save)
    assert saved == [2, 4]
    found = ckpt.resume_dir(train.run_dir_of(cut).parent.parent, {"failed_trial": 1, "retry_history": [1]})
    assert found == train.run_dir_of(cut) / "checkpoint"
    assert sorted(p.name for p in train.run_dir_of(cut).iterdir() if p.name.startswith("checkpoint")) == ["checkpoint"]

    resumed = tiny_cfg(*common, "trial=2", "train.checkpoint_every=2", f"train.resume_from={found}")
    train.run(resumed)
    assert "resumed from" in capsys.readouterr().out
    a, b = _record(whole), _record(resumed)
    for k in SAME:
        assert a[k] == pytest.approx(b[k], abs=1e-6) if isinstance(a[k], float) else a[k] == b[k], k
    assert [h["step"] for h in b["history"]] == list(range(1, 7))
    for ha, hb in zip(a["history"], b["history"]):
        assert ha["train/loss"] == pytest.approx(hb["train/loss"], abs=1e-6)
        assert ha["train/lr"] == pytest.approx(hb["train/lr"], abs=1e-12)
    assert b["resumed_from"] == {"dir": str(found), "step": 4} and a["resumed_from"] is None
    assert not (train.run_dir_of(resumed) / "checkpoint").exists()  # finished: discarded


def test_resume_refuses_another_configuration(tiny_cfg, monkeypatch):
    cfg = tiny_cfg("train.max_steps=2", "tracking.mode=disabled", "train.checkpoint_every=1", "trial=0")
    real_save = ckpt.save

    def save_then_die(*a):
        real_save(*a)
        raise Killed

    monkeypatch.setattr(ckpt, "save", save_then_die)
    with pytest.raises(Killed):
        train.run(cfg)
    monkeypatch.setattr(ckpt, "save", real_save)
    d = train.run_dir_of(cfg) / "checkpoint"
    other = tiny_cfg("train.max_steps=2", "tracking.mode=disabled", "train.lr=5e-3", f"train.resume_from={d}", "trial=1")
    with pytest.raises(ckpt.ResumeError, match="differs in: train"):
        train.run(other)


def _fake_checkpoint(d):
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"")
    (d / "custom_checkpoint_1.pkl").write_bytes(b"")
    return d


def test_resume_dir(tmp_path):
    """The attrs are the ones Optuna's retry callbacks write (checked below against real Optuna)."""
    assert ckpt.resume_dir(tmp_path, None) is None and ckpt.resume_dir(tmp_path, {}) is None
    assert ckpt.resume_dir(tmp_path, {"failed_trial": 3, "retry_history": [3]}) is None  # no folder
    half = tmp_path / "trials" / "3" / "checkpoint.tmp"  # killed during its first save
    half.mkdir(parents=True)
    assert ckpt.resume_dir(tmp_path, {"failed_trial": 3, "retry_history": [3]}) is None
    old = _fake_checkpoint(tmp_path / "trials" / "3" / "checkpoint.old")  # killed between the renames
    assert ckpt.resume_dir(tmp_path, {"failed_trial": 3, "retry_history": [3]}) == old
    assert ckpt.resume_dir(tmp_path, {"failed_trial": 3}) == old
    # 3 -> 5 -> 8: attempt 5 saved further, attempt 8 was killed before its first save
    newer = _fake_checkpoint(tmp_path / "trials" / "5" / "checkpoint")
    assert ckpt.resume_dir(tmp_path, {"failed_trial": 3, "retry_history": [3, 5, 8]}) == newer


def test_optuna_retry_attrs_are_what_resume_dir_reads():
    import optuna
    from optuna.storages import InMemoryStorage, RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    storage = InMemoryStorage()
    study = optuna.create_study(storage=storage)
    retry = RetryHeartbeatStaleTrialCallback(max_retry=3)  # what optuna_parts.retry_callback makes
    study.tell(study.ask(), state=TrialState.FAIL)
    retry(study, study.trials[-1])
    first_retry = study.trials[-1]
    assert first_retry.system_attrs == {"failed_trial": 0, "retry_history": [0]}
    storage.set_trial_state_values(first_retry._trial_id, TrialState.RUNNING)
    storage.set_trial_state_values(first_retry._trial_id, TrialState.FAIL)
    retry(study, study.trials[-1])
    assert study.trials[-1].system_attrs == {"failed_trial": 0, "retry_history": [0, 1]}  # not 1


@pytest.mark.process
def test_resume_from_not_a_checkpoint_is_bad_input(tmp_path):
    r = subprocess.run([sys.executable, "-m", "harness", "model=tiny_bert", "data=tiny", f"out_dir={tmp_path}/runs",
                        f"train.resume_from={tmp_path}"], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr  # the preflight: before any model loads, nothing written
    assert not (tmp_path / "runs").exists()
    assert "is not a checkpoint folder" in r.stderr and "Traceback" not in r.stderr


def test_progress_line():
    from harness.trial.progress import Progress

    lines = []
    p = Progress(every=5, total=12, start_step=0, write=lines.append)
    for s in range(1, 13):
        p.step(s, 0.5, 0.6, 1e-3)
    assert [ln.split()[2] for ln in lines] == ["5/12", "10/12", "12/12"]  # and the last step
    assert "step/s ETA 0:00:00" in lines[-1]
    assert Progress(0, 12, write=lines.append).step(5, 0.5, 0.6, 1e-3) is None  # off
