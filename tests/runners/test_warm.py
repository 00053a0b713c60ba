"""Warm trial workers (harness/runners/warm.py) on the tiny model: a trial run warm gives the record it gives cold,
nothing leaks from one trial into the next (the base weights stay as loaded), and a failing, diverging or
killed trial fails alone while its worker (or a fresh replacement) runs the next one."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import threading

import pytest
import torch

from harness import train
from harness.record import trial_dir
from harness.runners.process import ProcessRunner
from harness.runners.warm import WarmRunner, make_runner
from harness.study.outcome import classify
from conftest import LORA_RANK_TINY

A = ("seed=0", "lora.r=2")
B = ("seed=1", "lora.r=4", "train.lr=3e-3", "lora.targets=all_linear")


def _submit(runner, cfg, pids=None):
    """runner.run as the driver calls it; returns the Outcome and the saved result.json (or None)."""
    d = trial_dir(cfg.out_dir, cfg.study, cfg.trial)
    d.mkdir(parents=True, exist_ok=True)
    out = classify(runner.run(cfg, d, 0, (pids if pids is not None else []).append, lambda: None, 0.2), ["accuracy"])
    saved = json.loads((d / "result.json").read_text()) if (d / "result.json").is_file() else None
    return out, saved


def _same(cold: dict, warm: dict) -> None:
    losses = [(c["train/loss"], w["train/loss"]) for c, w in zip(cold["history"], warm["history"], strict=True)]
    assert all(abs(c - w) <= 1e-6 for c, w in losses), losses
    assert warm["accuracy"] == cold["accuracy"] and warm["eval_loss"] == pytest.approx(cold["eval_loss"], abs=1e-6)
    assert warm["adapter_checksums"] == cold["adapter_checksums"]
    assert warm["baseline_accuracy"] == cold["baseline_accuracy"]


@pytest.mark.process
def test_a_trial_run_warm_equals_the_same_trial_run_cold_also_second_in_a_worker(tiny_cfg):
    """Cold: a fresh `python -m harness.train` per trial. Warm: trial A then a different trial B (other
    seed, rank, lr and targets) in ONE worker: each equals its own cold run (no state leaks from A into B)."""
    cold = ProcessRunner(1)
    cold_a = _submit(cold, tiny_cfg(*A, "trial=0", "train.eval_every=3"))[1]
    cold_b = _submit(cold, tiny_cfg(*B, "trial=1", "train.eval_every=3"))[1]
    warm, pids = WarmRunner(1), []
    try:
        out_a, warm_a = _submit(warm, tiny_cfg(*A, "trial=2", "train.eval_every=3"), pids)
        out_b, warm_b = _submit(warm, tiny_cfg(*B, "trial=3", "train.eval_every=3"), pids)
    finally:
        warm.close()
    assert out_a.state == out_b.state == "COMPLETE" and pids[0] == pids[1]  # one worker ran both
    assert warm_b["phase_seconds"].get("data") is None  # B reused what A loaded
    _same(cold_a, warm_a)
    _same(cold_b, warm_b)
    assert warm_a["adapter_checksums"] != warm_b["adapter_checksums"]


def _base_checksum(model) -> str:
    """Every weight and buffer of the base but the new head (re-drawn per trial), as raw bytes (4-bit too)."""
    h = hashlib.sha256()
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if name.split(".")[0] not in ("classifier", "score"):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
def test_adapters_come_off_and_leave_the_cached_base_as_loaded(tiny_cfg, model):
    """In process, the worker's own calls: after trial A the cached base holds the loaded weights (4-bit
    storage included), no LoRA module, the loaded requires_grad flags, and B still reuses it."""
    from accelerate import Accelerator

    from harness.trial.cost import Clock
    from harness.trial.shared import load_shared

    cfg_a = tiny_cfg(f"model={model}", *A, "trial=0", "tracking.mode=disabled")
    loaded = load_shared(cfg_a, train.TASKS["classification"], Accelerator(cpu=True), Clock()).model
    before = _base_checksum(loaded)
    cache: dict = {}
    train.run(cfg_a, cache=cache)
    (sh,) = cache.values()
    assert _base_checksum(sh.model) == before
    assert not [n for n, _ in sh.model.named_modules() if "lora" in n]
    assert {n: p.requires_grad for n, p in sh.model.named_parameters()} == sh.requires_grad
    train.run(tiny_cfg(f"model={model}", *B, "trial=1", "tracking.mode=disabled"), cache=cache)
    assert list(cache.values()) == [sh] and _base_checksum(sh.model) == before


@pytest.mark.process
def test_a_diverging_raising_or_killed_trial_fails_alone_and_a_grown_or_dead_worker_is_replaced(tiny_cfg):
    """One runner through every way a trial can go wrong (one worker start for all: each costs ~10 s of imports)."""
    warm, pids = WarmRunner(1), []
    killed_cfg = tiny_cfg("trial=5", "train.max_steps=400", "train.log_every=1", "eval.baseline=false")
    log = trial_dir(killed_cfg.out_dir, killed_cfg.study, 5) / "log.txt"

    def kill_mid_training():
        while "step 2/400" not in (log.read_text() if log.is_file() else ""):
            threading.Event().wait(0.05)
        os.kill(pids[5], signal.SIGKILL)

    try:
        nan, _ = _submit(warm, tiny_cfg("trial=0", "train.lr=1e30", "train.max_grad_norm=1e30"), pids)
        raised, _ = _submit(warm, tiny_cfg("trial=1", "model.tiny.num_attention_heads=3"), pids)  # 32 % 3 != 0
        ok, saved = _submit(warm, tiny_cfg("trial=2"), pids)
        assert len(set(pids)) == 1  # the same worker throughout
        warm.max_rss_growth = -1  # any growth (none, too) is past -1 byte: replaced after the next trial
        grown, _ = _submit(warm, tiny_cfg("trial=3", "eval.baseline=false"), pids)
        warm.max_rss_growth = 2**40
        fresh, _ = _submit(warm, tiny_cfg("trial=4", "eval.baseline=false"), pids)
        threading.Thread(target=kill_mid_training, daemon=True).start()
        killed, _ = _submit(warm, killed_cfg, pids)
        after, after_saved = _submit(warm, tiny_cfg("trial=6", "eval.baseline=false"), pids)
    finally:
        warm.close()
    assert nan.state == "FAIL" and "non-finite loss" in nan.reason
    assert raised.state == "FAIL" and "exit code 1" in raised.reason and "heads" in raised.reason, raised.reason
    assert ok.state == "COMPLETE" and saved["status"] == "complete"
    assert grown.state == fresh.state == "COMPLETE" and pids[3] == pids[0] != pids[4]
    assert pids[5] == pids[4]  # the fresh worker took the next trial, and was killed in it
    assert killed.state == "FAIL" and "killed by SIGKILL" in killed.reason
    assert after.state == "COMPLETE" and after_saved["status"] == "complete" and pids[6] != pids[5]


def test_the_default_runner_is_warm_with_cold_for_multi_process_trials_or_when_asked(tiny_cfg, capsys):
    sweep = LORA_RANK_TINY
    assert isinstance(make_runner(tiny_cfg(*sweep), 2), WarmRunner)
    assert isinstance(make_runner(tiny_cfg(*sweep, "sweep.workers=cold"), 1), ProcessRunner)
    assert capsys.readouterr().err == ""
    assert isinstance(make_runner(tiny_cfg(*sweep, "hardware.processes=2", "train.batch_size=16"), 1), ProcessRunner)
    assert "hardware.processes=2: each trial starts cold" in capsys.readouterr().err
