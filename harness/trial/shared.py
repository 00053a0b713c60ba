"""What the trials of one study share, built once per process and, in a warm worker, kept between trials.

A Shared holds the splits, the tokenizer, the tokenized items and the (quantized) base model before
adapters, for one (task, model, quant, compute dtype, device, data). The cold path (`python -m
harness.train`) builds one per trial; a warm worker (harness/trial/worker.py) passes a cache, and each trial
then only gets what is its own: a new classification head from its seed (exactly the head a cold
load gives, see fresh_head), fresh LoRA adapters, optimizer, scheduler and data order. After the trial
release() takes the adapters off again (peft's unload), so the base weights are the loaded ones.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import transformers
from peft import PeftModel

from harness.config import schema as config_mod
from harness.data.load import Splits
from harness.trial import models
from harness.config.presets import head_names


@dataclass
class Shared:
    """What every trial of one (task, model, quant, compute dtype, device, data) shares: the splits,
    the tokenizer, the tokenized items and the (quantized) base model before adapters."""
    key: str
    splits: Splits
    tokenizer: object
    model: object
    train_items: list[dict]
    test_items: list[dict]
    requires_grad: dict = field(default_factory=dict)  # as loaded: restored after a trial


def shared_key(cfg) -> str:
    """The identity of a Shared: every config part that shapes the data, the tokens or the base."""
    parts = {k: config_mod.OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "model", "quant", "data")}
    parts.update(device=cfg.hardware.device, max_examples=cfg.eval.max_examples)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_shared(cfg, task, accelerator, clock) -> Shared:
    """data (first: a size error costs nothing) -> tokenizer -> base model (+ new head) -> tokenized splits."""
    with clock.phase("data"):
        splits = task.load_splits(cfg.data)
    device = "cpu" if cfg.hardware.device == "cpu" else accelerator.local_process_index
    with clock.phase("load"):
        tokenizer = models.load_tokenizer(cfg)
        # Seed right before the base loads: its new classification head is initialised inside
        # from_pretrained, so an unseeded load made two runs of one config differ (and the baseline eval).
        transformers.set_seed(cfg.seed)
        model = models.load_base(cfg, len(splits.labels), device, tokenizer)  # (looked up late: tests patch it)
    with clock.phase("tokenize"):
        train_items = task.items(tokenizer, splits.train, cfg)
        test_items = task.items(tokenizer, splits.test, cfg)
        if cfg.eval.max_examples:
            test_items = test_items[: cfg.eval.max_examples]
    return Shared(shared_key(cfg), splits, tokenizer, model, train_items, test_items,
                  {n: p.requires_grad for n, p in model.named_parameters()})


def reusable(cfg) -> bool:
    """Only LoRA leaves the base as it was (peft's unload takes the adapters off); head_only and full
    train base weights in place, and a multi-process trial is a cold accelerate launch."""
    return cfg.method == "lora" and cfg.hardware.processes == 1


def shared(cfg, task, accelerator, clock, cache: dict | None) -> Shared:
    """The Shared for this trial: from a warm worker's cache (with a fresh head for this seed), else loaded."""
    key = shared_key(cfg)
    sh = cache.get(key) if cache is not None else None
    if sh is not None:
        with clock.phase("load"):
            fresh_head(sh.model, cfg)
        return sh
    if cache:
        cache.clear()  # one base at a time: a second one would double the memory
    sh = load_shared(cfg, task, accelerator, clock)
    if cache is not None and reusable(cfg):
        cache[key] = sh
    return sh


def fresh_head(model, cfg) -> None:
    """Give the cached base the classification head a cold load with this seed gives: from_pretrained
    seeds nothing itself, and (the head being the only weights missing from the checkpoint) its only
    random draws are the head's init right after train.py's set_seed(seed). So: set_seed, then the
    model's own init on the head's modules, in module order (tests/runners/test_warm.py checks warm == cold)."""
    if cfg.task.type != "classification":
        return  # a causal LM's output layer is pretrained, not new
    transformers.set_seed(cfg.seed)
    # (peft appends its default head names to the modules_to_save list it is given, presets.HEADS's own
    # list: names repeat there, and a name may be listed that this architecture does not have)
    for head in [getattr(model, name) for name in dict.fromkeys(head_names(cfg.model.family)) if hasattr(model, name)]:
        for module in head.modules():
            # _init_weights: transformers' per-architecture init that from_pretrained applies to missing
            # weights; no public call re-initialises one module (initialize_weights skips loaded ones)
            model._init_weights(module)


def release(cfg, model, sh: Shared, cache: dict) -> None:
    """After a warm trial: take the adapters off the cached base (peft unload), undo what adapter set-up
    changed on it (gradient checkpointing, requires_grad), and drop the cache entry when anything is off,
    so the next trial loads a fresh base rather than inherit a changed one."""
    if cache.get(sh.key) is not sh:
        return
    try:
        base = model.unload() if isinstance(model, PeftModel) else model
        if base is not sh.model or [n for n, _ in base.named_parameters()] != list(sh.requires_grad):
            raise RuntimeError("the base did not come back as it was loaded")
        if getattr(base, "is_gradient_checkpointing", False):
            base.gradient_checkpointing_disable()
        for n, p in base.named_parameters():
            p.requires_grad_(sh.requires_grad[n])
            p.grad = None
    except Exception:  # noqa: BLE001 - a base we cannot restore is reloaded, never reused
        cache.pop(sh.key, None)
