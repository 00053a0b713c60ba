"""train.optim and train.lr_scheduler_type: real torch / bitsandbytes optimizers and transformers'
schedules on a tiny model; the paged optimizer refused on CPU before compute."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config.schema import ConfigError, complete, load
from harness.trial.optim import SCHEDULERS, build


def test_every_listed_scheduler_is_a_transformers_scheduler():
    from transformers import SchedulerType

    assert set(SCHEDULERS) <= {s.value for s in SchedulerType}


@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedules_follow_transformers(name):
    import torch

    cfg = complete(load(["train.max_steps=10", "train.warmup_ratio=0.2", "train.lr=1e-3", f"train.lr_scheduler_type={name}"]))
    p = torch.nn.Parameter(torch.zeros(3))
    opt, sched = build([p], cfg.train)
    lrs = []
    for _ in range(10):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0 or name == "constant"  # warmup starts at 0 (constant has no warmup)
    assert max(lrs) == pytest.approx(1e-3)
    if name in ("linear", "cosine", "polynomial"):
        assert lrs[-1] < lrs[2]  # decays after warmup


def test_bad_scheduler_and_paged_optimizer_on_cpu_fail_before_compute():
    with pytest.raises(ConfigError, match="train.lr_scheduler_type='cosine_wrong': choose from linear, cosine"):
        complete(load(["train.lr_scheduler_type=cosine_wrong"]))
    with pytest.raises(ConfigError, match="paged_adamw_8bit pages optimizer states .* on cpu; use train.optim=adamw_8bit"):
        complete(load(["train.optim=paged_adamw_8bit"]))
    complete(load(["train.optim=paged_adamw_8bit", "hardware=gpu1"]))  # where it can run, it validates


@pytest.mark.parametrize("optim", ["adamw_torch", "adamw_8bit"])
def test_tiny_trial_trains_with_each_optimizer(tiny_cfg, optim):
    import bitsandbytes as bnb

    from harness import train
    from harness.runners.process import allocate_trial

    cfg = tiny_cfg(f"train.optim={optim}", "train.lr_scheduler_type=cosine", "train.max_steps=60",
                   "lora.targets=all_linear", "lora.r=64", "tracking.mode=disabled", "train.save_adapter=none")
    if optim == "adamw_8bit":  # r=64 makes LoRA matrices of 4,096+ elements: bitsandbytes' 8-bit states
        import torch

        opt, _ = build([torch.nn.Parameter(torch.zeros(64, 64))], cfg.train)
        assert isinstance(opt, bnb.optim.AdamW8bit)
    allocate_trial(cfg)
    rec = train.run(cfg)
    saved = json.loads((Path(cfg.out_dir) / cfg.study / "trials" / str(cfg.trial) / "result.json").read_text())
    losses = [h["train/loss"] for h in saved["history"]]
    assert rec["status"] == "complete" and sum(losses[-10:]) < 0.8 * sum(losses[:10])
    assert saved["history"][-1]["train/lr"] < saved["history"][10]["train/lr"]  # cosine decay reached the record
