"""The optimizer and learning-rate schedule of a trial (train.optim, train.lr_scheduler_type).

adamw_torch is torch's AdamW; adamw_8bit and paged_adamw_8bit are bitsandbytes' 8-bit AdamW (the
QLoRA recipe's paged one moves optimizer states to CPU memory under GPU memory pressure; CUDA only). The
schedule is transformers.get_scheduler with warmup = train.warmup_ratio x max_steps.
The static facts (SCHEDULERS, device_error) live in the schema, which checks them before any compute.
"""
from __future__ import annotations

from harness.config.schema import SCHEDULERS, OptimError, device_error  # noqa: F401 (static facts the schema checks)


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
