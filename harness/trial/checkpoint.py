"""In-trial checkpoints: train.checkpoint_every saves, train.resume_from continues bit for bit.

A checkpoint is one folder written by Accelerate's save_state (trials/<n>/checkpoint/):
  model.safetensors      the trained parameters only (LoRA + head; all of them for method=full):
                         the frozen base is the config's and reloads, so a 7B base is not copied per save
  optimizer.bin          AdamW moments
  random_states_<r>.pkl  python/numpy/torch(/cuda) RNG of every rank (dropout draws)
  custom_checkpoint_0    the LR scheduler
  custom_checkpoint_1    TrialState: step, batches drawn from the data order, counters, history, evals
Only the last checkpoint is kept, and it appears whole or not at all: save_state writes
checkpoint.tmp/, which replaces checkpoint/ by renames (a kill mid-save leaves the previous one).

The retry of an interrupted trial is a new Optuna trial; resume_dir() finds the checkpoint of the
attempt it repeats, and the driver passes it as train.resume_from.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from harness.config.schema import ConfigError

from harness.record import CHECKPOINT as NAME, is_checkpoint, resume_dir  # noqa: F401 (the driver finds them there)
# what a run must share with the checkpoint it continues: everything that shapes the computation;
# names, paths, storage, launcher, tracking and the step-line/checkpoint cadence may change
_SAME = ("task", "model", "data", "lora", "quant", "method", "seed", "train", "eval", "hardware")
_FREE_IN = {"train": {"resume_from", "checkpoint_every", "log_every"}, "eval": {"batch_size"},
            "hardware": {"threads", "price_per_device_hour"}}


class ResumeError(ConfigError):
    """train.resume_from names a checkpoint this run cannot continue (bad input: exit 2)."""


def _fingerprint(resolved: dict) -> dict:
    fp = {k: resolved.get(k) for k in _SAME}
    for section, free in _FREE_IN.items():
        fp[section] = {k: v for k, v in resolved.get(section, {}).items() if k not in free}
    return fp


def check(cfg) -> None:
    """Before any model loads (preflight): train.resume_from was made by this configuration."""
    import torch
    from omegaconf import OmegaConf

    from harness.config.schema import complete

    resolved = OmegaConf.to_container(complete(cfg), resolve=True)  # as the trial will see it
    saved = torch.load(Path(cfg.train.resume_from) / "custom_checkpoint_1.pkl", map_location="cpu", weights_only=True)
    TrialState(resolved).load_state_dict(saved)


class TrialState:
    """Everything of the loop that is not a tensor: registered with Accelerate, saved in its folder."""

    def __init__(self, resolved: dict):
        self.fingerprint = _fingerprint(resolved)
        self.step = self.batches = 0
        self.counters: list[list[int]] = []  # per rank: tokens, padded tokens, examples (tokens are per rank)
        self.loss_ema: float | None = None
        self.history: list[dict] = []
        self.evals: list[dict] = []

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        if state["fingerprint"] != self.fingerprint:
            diff = sorted(k for k in set(state["fingerprint"]) | set(self.fingerprint)
                          if state["fingerprint"].get(k) != self.fingerprint.get(k))
            raise ResumeError(f"train.resume_from: the checkpoint was made by a different configuration "
                             f"(differs in: {', '.join(diff)})")
        vars(self).update(state)


def _trainable_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def attach(accelerator, sched, state: TrialState) -> None:
    """Register the scheduler and the loop state, and save/load only the trained parameters."""

    def save_hook(models, weights, output_dir):
        for i, model in enumerate(models):
            keep = _trainable_names(model)
            weights[i] = {k: v for k, v in weights[i].items() if k in keep}

    def load_hook(models, input_dir):
        from safetensors import safe_open

        # load_state(strict=False) must skip the frozen base, so check by name what it will load
        with safe_open(str(Path(input_dir) / "model.safetensors"), framework="pt") as f:
            saved = set(f.keys())
        for model in models:
            want = _trainable_names(model)
            if saved != want:
                raise ResumeError(f"train.resume_from: the checkpoint's parameters do not match this model's "
                                 f"trainable ones ({len(saved - want)} unexpected, {len(want - saved)} missing)")

    accelerator.register_for_checkpointing(sched, state)
    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save(accelerator, run_dir: Path, state: TrialState, counters: list[int]) -> Path:
    """Write trials/<n>/checkpoint/ atomically (every rank calls this)."""
    from accelerate.utils import gather_object

    final, tmp, old = (run_dir / n for n in (NAME, f"{NAME}.tmp", f"{NAME}.old"))
    state.counters = gather_object([counters]) if accelerator.num_processes > 1 else [counters]
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # a save that was killed half way
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every rank's RNG file is in tmp
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)  # left by a kill between the renames; final is newer
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load(accelerator, path: Path, state: TrialState) -> list[int]:
    """Restore everything save() wrote; returns this rank's counters (tokens, padded, examples)."""
    accelerator.load_state(str(path), strict=False)  # strict=False: the frozen base is not in the file
    if len(state.counters) != accelerator.num_processes:
        raise ResumeError(f"train.resume_from: the checkpoint was made by {len(state.counters)} process(es), "
                         f"this run has {accelerator.num_processes}")
    return state.counters[accelerator.process_index]


def replay(tracker, state: TrialState) -> None:
    """Log the restored history into this attempt's W&B run, so its curves start at step 1."""
    by_step: dict[int, dict] = {}
    for h in state.history:
        by_step.setdefault(h["step"], {}).update({k: v for k, v in h.items() if k != "step"})
    for e in state.evals:
        by_step.setdefault(e["step"], {}).update({f"eval/{k}": v for k, v in e.items() if k != "step"})
    for step in sorted(by_step):
        tracker.log(by_step[step], step=step)


def discard(run_dir: Path) -> None:
    """A finished trial needs no checkpoint (its record is written); only an interrupted one does."""
    for name in (NAME, f"{NAME}.tmp", f"{NAME}.old"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
