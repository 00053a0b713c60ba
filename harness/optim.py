"""The optimizer and learning-rate schedule of a trial (train.optim, train.lr_scheduler_type).

adamw_torch is torch's AdamW; adamw_8bit and paged_adamw_8bit are bitsandbytes' 8-bit AdamW (the
QLoRA recipe's paged one moves optimizer states to CPU memory under GPU memory pressure; CUDA only). The
schedule is transformers.get_scheduler with warmup = train.warmup_ratio x max_steps.
Torch-free at import: the config schema reads SCHEDULERS from here.
"""
from __future__ import annotations

# transformers.SchedulerType values get_scheduler builds from (warmup, total steps) alone; the others
# need arguments the config does not carry (reduce_lr_on_plateau a metric per step, cosine_with_min_lr
# a floor, warmup_stable_decay decay steps). tests/test_optim.py checks each is a SchedulerType.
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")


class OptimError(ValueError):
    """An optimizer the device cannot run; one line, raised before any training step."""


def device_error(optim: str, device: str) -> str | None:
    """Why optim cannot run on device (None: it can). Measured with bitsandbytes 0.50.2: AdamW8bit
    steps on CPU with uint8 states; PagedAdamW8bit on CPU warns "Paged optimizers are not supported on
    CPU" and silently runs unpaged, so it is refused there rather than recorded as something it is not."""
    if optim == "paged_adamw_8bit" and device != "cuda":
        return (f"train.optim=paged_adamw_8bit pages optimizer states between GPU and CPU memory, which bitsandbytes "
                f"does not do on {device}; use train.optim=adamw_8bit (8-bit states) or adamw_torch")
    return None


def build(params, train_cfg, device="cpu"):
    """(optimizer, scheduler) for the trainable params, from cfg.train. bitsandbytes keeps 32-bit
    states for tensors under 4,096 elements (its min_8bit_size), so small LoRA matrices stay 32-bit."""
    import torch
    from transformers import get_scheduler

    t = train_cfg
    why = device_error(t.optim, torch.device(device).type)
    if why:
        raise OptimError(why)
    if t.optim == "adamw_torch":
        opt = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    else:
        import bitsandbytes as bnb

        cls = bnb.optim.PagedAdamW8bit if t.optim == "paged_adamw_8bit" else bnb.optim.AdamW8bit
        opt = cls(params, lr=t.lr, weight_decay=t.weight_decay)
    sched = get_scheduler(t.lr_scheduler_type, opt, num_warmup_steps=int(t.warmup_ratio * t.max_steps),
                          num_training_steps=t.max_steps)
    return opt, sched
