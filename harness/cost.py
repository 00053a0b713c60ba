"""Compute accounting: parameters, tokens, FLOPs, device-seconds, peak memory, money.

FLOPs estimate (the usual dense-transformer approximation, attention score FLOPs ignored, which
for sequences of <=256 tokens under-counts by a few per cent):
  forward               2 * N * T        N = non-embedding parameters, T = tokens (padding excluded)
  backward, frozen      2 * N * T        gradients w.r.t. activations still flow through frozen W
  backward, trainable   4 * N_lora * T   activation + weight gradients of adapters and the head
  activation checkpointing re-runs the forward: + 2 * N * T
  train = (4 N + 4 N_lora (+ 2 N)) * T_train        eval = 2 N * T_eval
So a LoRA step costs ~2/3 of a full fine-tune step (6 N T), which is the saving to report.
"""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


def param_counts(model) -> dict[str, int]:
    """Trainable, total and non-embedding parameter counts; 4-bit weights counted unpacked."""
    trainable, total = model.get_nb_trainable_parameters()
    embed = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return {"trainable_params": int(trainable), "total_params": int(total),
            "non_embedding_params": int(total - embed)}


def train_flops(n_non_embed: int, n_trainable: int, tokens: int, checkpointing: bool) -> float:
    per_token = 4 * n_non_embed + 4 * n_trainable + (2 * n_non_embed if checkpointing else 0)
    return float(per_token) * tokens


def eval_flops(n_non_embed: int, tokens: int) -> float:
    return 2.0 * n_non_embed * tokens


def peak_memory_bytes(device: torch.device) -> int:
    """Peak accelerator memory allocated by torch, or this process's peak RSS on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB


@dataclass
class Clock:
    """Wall time per phase (load, tokenize, baseline, train, eval), for overhead accounting."""
    phases: dict[str, float] = field(default_factory=dict)
    t0: float = field(default_factory=time.perf_counter)

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def total(self) -> float:
        return time.perf_counter() - self.t0
