"""The training loop of a trial: batches, optimizer steps, intermediate evals for the pruner, checkpoints.

train.run calls train_loop once per trial; everything the loop needs arrives as arguments, and what
it measured comes back as a LoopResult, so a warm worker runs it trial after trial with nothing left
over from the last one (fresh optimizer, scheduler and data stream each call).
"""
from __future__ import annotations

import hashlib
import math
import os
import random
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list
from tqdm.auto import tqdm

from harness.metrics.convergence import early_stop
from harness.trial import checkpoint as ckpt
from harness.trial import optim
from harness.trial.context import TrialContext
from harness.trial.progress import Progress


def train_batches(items: list[dict], global_batch: int, seed: int, group_by_length: bool):
    """Endless stream of global batches (lists of item indices), epoch after epoch.
    With group_by_length, each window of 50 batches is sorted by length before being cut, so a
    batch pads to a similar length; batch order is then shuffled. Every rank draws the same stream."""
    rng = random.Random(seed)
    epoch = 0
    while True:
        idx = list(range(len(items)))
        rng.shuffle(idx)
        if group_by_length:
            window = global_batch * 50
            idx = [i for w in range(0, len(idx), window)
                   for i in sorted(idx[w:w + window], key=lambda i: len(items[i]["input_ids"]))]
        batches = [idx[b:b + global_batch] for b in range(0, len(idx), global_batch)]
        batches = [b for b in batches if len(b) == global_batch] or batches  # drop a ragged tail
        if group_by_length:
            rng.shuffle(batches)
        yield from batches
        epoch += 1


def adapter_checksum(model) -> str:
    """sha256 of the trained parameters (LoRA + head), by name: equal on every rank after DDP."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.removeprefix("module.").encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def eval_log(ev: dict) -> dict:
    """An eval as W&B `eval/*` series (intermediate evals and the final one, at their optimizer step)."""
    return {"eval/accuracy": ev["accuracy"], "eval/loss": ev["loss"],
            **{f"eval/{k}": v for k, v in ev.get("metrics", {}).items()}}


def eval_entry(step: int, ev: dict) -> dict:
    """One point of the trial's eval curve (the record's `evals`); n: the items it scored, for the
    binomial standard error of the convergence verdict (harness/metrics/convergence.py)."""
    return {"step": step, "accuracy": ev["accuracy"], "loss": ev["loss"], "n": ev.get("n"), **ev.get("metrics", {})}


@dataclass
class LoopResult:
    """What the loop measured: how it ended, where, and its counters."""
    status: str = "complete"
    reason: str | None = None
    step: int = 0
    resumed_at: int = 0
    tokens: int = 0            # this rank's non-padding tokens (summed over ranks by the cost stage)
    padded: int = 0
    examples: int = 0
    eval_tokens: int = 0
    history: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    best_step: int | None = None   # the intermediate eval with the best train.early_stopping.metric


def _resume(cfg, accelerator, state, stream, tracker, res: LoopResult, main: bool):
    """Continue from train.resume_from: fills the prepared model/optimizer in place (after prepare)."""
    res.tokens, res.padded, res.examples = ckpt.load(accelerator, Path(cfg.train.resume_from), state)
    res.history, res.evals = state.history, state.evals
    for _ in range(state.batches):  # the same place in the data order
        next(stream)
    ckpt.replay(tracker, state)
    if main:
        print(f"[harness] resumed from {cfg.train.resume_from} at step {state.step}", flush=True)
    return state.loss_ema


def _step(model, opt, sched, trainable, stream, items, task, pad_id, accelerator, t, res: LoopResult) -> tuple:
    """One optimizer step over grad_accum micro-batches; returns (loss, grad_norm), loss NaN-checked by the caller."""
    world = accelerator.num_processes
    step_loss = 0.0
    for micro in range(t.grad_accum):
        gbatch = next(stream)
        mine = gbatch[accelerator.process_index::world]
        batch = task.collate([items[i] for i in mine], pad_id, accelerator.device)
        sync = micro == t.grad_accum - 1
        ctx = accelerator.no_sync(model) if (world > 1 and not sync) else nullcontext()
        with ctx:
            with accelerator.autocast():
                loss = model(**batch).loss / t.grad_accum
            accelerator.backward(loss)
        step_loss += loss.detach().float().item()
        res.tokens += batch["attention_mask"].sum().item()  # this rank's; summed by the cost stage
        res.padded += batch["attention_mask"].numel()
        res.examples += len(gbatch)
    if world > 1:  # the global batch's loss, and every rank sees the same NaN check
        step_loss = accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "mean").item()
    if not math.isfinite(step_loss):
        return step_loss, None
    grad_norm = accelerator.clip_grad_norm_(trainable, t.max_grad_norm)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return step_loss, grad_norm


def _plateau(es, res: LoopResult, step: int) -> bool:
    """train.early_stopping after this eval: stop here? Replayed from the evals so far (a resumed trial
    has them from its checkpoint), transformers' EarlyStoppingCallback semantics."""
    stop, res.best_step, best = early_stop(res.evals, es.metric, es.patience, es.min_delta)
    if stop:
        res.stopped_early = True
        res.reason = (f"early stop at step {step}: {es.metric} did not improve by more than {es.min_delta:g} in "
                      f"{es.patience} eval(s) (best {best:.4g} at step {res.best_step})")
    return stop


def intermediate_items(items: list[dict], cfg) -> list[dict]:
    """The held-out items the intermediate evals use: all, or eval.intermediate_examples of them drawn once
    with data.split_seed (the same subset at every step of every trial, so their curves compare)."""
    n = cfg.eval.intermediate_examples
    if not n or n >= len(items):
        return items
    return [items[i] for i in sorted(random.Random(cfg.data.split_seed).sample(range(len(items)), n))]


def train_loop(ctx: TrialContext, model, reporter):
    """Train the prepared model for train.max_steps; returns (the accelerate-prepared model, LoopResult)."""
    cfg, task, shared, accelerator, tracker, clock = ctx.cfg, ctx.task, ctx.shared, ctx.accelerator, ctx.tracker, ctx.clock
    t, main, world = cfg.train, ctx.main, accelerator.num_processes
    per_device = t.batch_size // world if t.keep_effective_batch else t.batch_size
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt, sched = optim.build(trainable, t, accelerator.device)  # train.optim + train.lr_scheduler_type
    model, opt = accelerator.prepare(model, opt)
    model.train()
    stream = train_batches(shared.train_items, per_device * world, cfg.seed, t.group_by_length)
    eval_items = intermediate_items(shared.test_items, cfg)
    res, loss_ema = LoopResult(), None
    state = ckpt.TrialState(ctx.resolved)
    ckpt.attach(accelerator, sched, state)
    if t.resume_from:
        loss_ema = _resume(cfg, accelerator, state, stream, tracker, res, main)
    step = res.resumed_at = state.step
    bar = tqdm(total=t.max_steps, initial=step, desc=f"trial {cfg.trial}",
               disable=not main or os.environ.get("HARNESS_QUIET") == "1", dynamic_ncols=True, leave=False)
    progress = Progress(t.log_every if main else 0, t.max_steps, step,
                        write=lambda line: bar.write(line) if not bar.disable else print(line, flush=True))
    pad_id = shared.tokenizer.pad_token_id
    while step < t.max_steps:
        with clock.phase("train"):
            step_loss, grad_norm = _step(model, opt, sched, trainable, stream, shared.train_items, task, pad_id,
                                         accelerator, t, res)
        if grad_norm is None:
            res.status, res.reason = "failed", f"non-finite loss ({step_loss}) at step {step + 1}"
            break
        step += 1
        loss_ema = step_loss if loss_ema is None else 0.9 * loss_ema + 0.1 * step_loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss_ema:.4f}")
        if main:
            rec = {"train/loss": step_loss, "train/lr": sched.get_last_lr()[0], "train/grad_norm": float(grad_norm),
                   "train/tokens": res.tokens}
            res.history.append({"step": step, **rec})
            tracker.log(rec, step=step)
        progress.step(step, step_loss, loss_ema, sched.get_last_lr()[0])
        if t.eval_every and step % t.eval_every == 0 and step < t.max_steps:
            with clock.phase("eval"):
                ev = task.evaluate(model, eval_items, cfg, shared.tokenizer, accelerator)
            res.eval_tokens += ev["tokens"]
            ev.pop("predictions", None)
            res.evals.append(eval_entry(step, ev))
            tracker.log(eval_log(ev), step=step)
            decision = [bool(reporter(step, ev)) if (main and reporter) else False]
            if world > 1:
                broadcast_object_list(decision, from_process=0)  # every rank follows rank 0
            if decision[0]:
                res.status, res.reason = "pruned", f"pruned after step {step} (eval accuracy {ev['accuracy']:.4f})"
                break
            if _plateau(t.early_stopping, res, step):  # the evals are reduced over ranks: every rank agrees
                break
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.max_steps:
            state.step, state.batches, state.loss_ema = step, step * t.grad_accum, loss_ema
            state.history, state.evals = res.history, res.evals
            ckpt.save(accelerator, ctx.run_dir, state, [res.tokens, res.padded, res.examples])
    bar.close()
    res.step = step
    return model, res
