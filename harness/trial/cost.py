"""Compute accounting: parameters, tokens, FLOPs, device-seconds, peak memory, money.

FLOPs: the dense-transformer count (Kaplan et al. 2020, sec. 2.1), per token, padding excluded.
  N        weights of every matrix multiply the forward pass runs: each Linear layer (4-bit and 8-bit
           ones counted unpacked, in x out), the LoRA A/B matrices, the task head, and a causal LM's
           output layer even when it is tied to the input embedding (a d x V multiply per token, ~20%
           of SmolLM2-135M's forward). Embedding lookups multiply nothing and are left out.
  N_train  the trained ones among them (LoRA A/B + head; everything for method=full)
  N_bwd    the ones the backward pass runs through: every weight from the first trained one on, in
           module order (only the head for a linear probe), or all of them where the input embeddings
           are made to require grad (peft's k-bit preparation does, so every QLoRA trial)
  forward                  2 N T
  backward, input grads    2 N_bwd T
  backward, weight grads   2 N_train T
  activation checkpointing re-runs the forward: + 2 N T
  train = (2 N + 2 N_bwd + 2 N_train (+ 2 N)) T     = (4 N_frozen + 6 N_train) T for LoRA on every layer
  eval  = 2 N T
DoRA (lora.use_dora, peft 0.21 lora/variants.py + dora.py): with lora_dropout > 0, training runs each
adapted layer's frozen weight a second time on the dropped-out input (F.linear(dropout(x), W): the
first product cannot be reused), so per token and adapted d_in x d_out layer it adds 2 d_in d_out to
the forward and 2 d_in d_out to the backward (input grads; the weight is frozen), plus 2 d_in d_out
more under activation checkpointing. N_dora = the sum of d_in d_out over those layers:
  train += (4 N_dora (+ 2 N_dora)) T                 (0 without dropout, and always 0 in eval)
Left out for DoRA: the per-call (not per-token) weight norm ||W + s BA|| (one B A product, 2 r d_in
d_out, and ~3 d_in d_out elementwise per layer and forward call), a few % of a batch's cost at r=8.
Left out: attention scores (QK^T and AV: 4 L d per token and layer at sequence length L; for
MiniLM, d=384 and L~40, ~3% of the forward), biases, norms, activations, the optimizer; heads that
run once per sequence (BERT's pooler and classifier) are counted per token, which over-counts by
their (1 - 1/L) share. A trial's total is train + its own evals (intermediate + final); the
zero-shot baseline eval is a study-level cost (`baseline_flops`), never inside a trial's total,
so one configuration and seed costs the same whatever the caches hold.
tests/trial/test_cost.py checks this against torch.utils.flop_counter.FlopCounterMode.
"""
from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


def param_counts(model, input_grads: bool = False) -> dict[str, int]:
    """Parameter counts (4-bit weights counted unpacked) and the matmul weights of the FLOPs formula."""
    if hasattr(model, "get_nb_trainable_parameters"):  # peft: knows the packed 4-bit sizes
        trainable, total = model.get_nb_trainable_parameters()
    else:  # as peft counts: a packed 4-bit tensor holds 2 weights per byte of its storage
        sizes = [(p.numel() * (2 * p.element_size() if type(p).__name__ == "Params4bit" else 1), p.requires_grad)
                 for p in model.parameters()]
        trainable, total = sum(n for n, g in sizes if g), sum(n for n, _ in sizes)
    embed = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    return {"trainable_params": int(trainable), "total_params": int(total),
            "non_embedding_params": int(total - embed), **matmul_params(model, input_grads)}


def matmul_params(model, input_grads: bool = False) -> dict[str, int]:
    """N, N_train and N_bwd of the formula above, from the model's Linear layers in module order.
    input_grads: the embeddings' output requires grad, so the backward reaches every layer."""
    n = n_train = n_bwd = n_dora = 0
    reached = input_grads
    for name, m in model.named_modules():
        n_dora += _dora_rerun(m)
        # peft keeps an untouched copy of a trained head (modules_to_save) that never runs
        if not isinstance(m, torch.nn.Linear) or ".original_module" in name:
            continue
        size = m.in_features * m.out_features  # bitsandbytes packs weights; the multiply is in x out
        trained = m.weight.requires_grad
        reached = reached or trained
        n += size
        n_train += size if trained else 0
        n_bwd += size if reached else 0
    return {"matmul_params": n, "trainable_matmul_params": n_train, "backward_matmul_params": n_bwd,
            "dora_rerun_params": n_dora}


def _dora_rerun(m) -> int:
    """d_in x d_out of a peft LoRA layer whose DoRA re-runs the frozen weight in training (DoRA with
    dropout > 0, see the docstring), else 0."""
    use_dora, dropout = getattr(m, "use_dora", None), getattr(m, "lora_dropout", None)
    if not isinstance(use_dora, dict) or dropout is None or not hasattr(m, "get_base_layer"):
        return 0
    base = m.get_base_layer()
    rerun = any(on and not isinstance(dropout[k], torch.nn.Identity) for k, on in use_dora.items() if k in dropout)
    return base.in_features * base.out_features if rerun else 0


def train_flops(counts: dict[str, int], tokens: int, checkpointing: bool) -> float:
    n, n_bwd, n_tr = (counts[k] for k in ("matmul_params", "backward_matmul_params", "trainable_matmul_params"))
    dora = counts.get("dora_rerun_params", 0)
    per_token = 2 * n + 2 * n_bwd + 2 * n_tr + 4 * dora + ((2 * n + 2 * dora) if checkpointing else 0)
    return float(per_token) * tokens


def eval_flops(counts: dict[str, int], tokens: int) -> float:
    return 2.0 * counts["matmul_params"] * tokens


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
