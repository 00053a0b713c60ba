"""The trial: one script for 1..N processes.

    python -m harness.train runs/<study>/trials/<n>/config.yaml                 (1 process)
    accelerate launch --multi_gpu --num_processes 2 -m harness.train <config>  (N processes)

Stages, top to bottom: config -> data -> tokenizer -> model + adapters -> baseline eval -> train
(with intermediate evals for the pruner) -> final eval -> cost -> record + W&B. What differs per
task (cfg.task.type: classification, sft) comes from its module in TASKS. Rank 0 alone writes
the record, logs to W&B and talks to Optuna; the other ranks follow its prune decision.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from harness import adapters, optim
from harness import checkpoint as ckpt
from harness import config as config_mod
from harness.cost import Clock, eval_flops, matmul_params, param_counts, peak_memory_bytes, train_flops
from harness.progress import Progress
from harness.record import trial_dir
from harness.tracking import Run, provenance, usable_cpus, write_json

# The task-specific parts (data, items, collate, evaluate) live in one module per task; the loop,
# cost accounting and record below are shared. See harness/classify.py for the interface.
TASKS = {"classification": "harness.classify", "sft": "harness.sft"}


class TrialFailed(RuntimeError):
    """A trial that cannot produce a valid result (NaN loss, wrong world size, ...)."""


class TrialPruned(RuntimeError):
    """The pruner stopped this trial after an intermediate evaluation."""


def run_dir_of(cfg) -> Path:
    return trial_dir(cfg.out_dir, cfg.study, cfg.trial)


def _eval_log(ev: dict) -> dict:
    return {"eval/accuracy": ev["accuracy"], "eval/loss": ev["loss"],
            **{f"eval/{k}": v for k, v in ev.get("metrics", {}).items()}}


# ---------------------------------------------------------------------------- batching


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
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.removeprefix("module.").encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- the trial


def _baseline_path(cfg, test_items) -> Path:
    """Where the baseline eval of this base model + quantization + seed + test split is kept."""
    from harness.data import cache_dir

    spec = {k: config_mod.OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "model", "quant")}
    spec.update(seed=cfg.seed, mixed_precision=cfg.hardware.mixed_precision,
                eval={k: v for k, v in cfg.eval.items() if k not in ("batch_size", "baseline")},
                items=hashlib.sha256(json.dumps(test_items, sort_keys=True, default=str).encode()).hexdigest())
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir() / "baselines" / f"{cfg.model.name}-{key}.json"


def _method_line(cfg, targets) -> str:
    if cfg.method == "lora":
        return f"LoRA r={cfg.lora.r} alpha={cfg.lora.alpha:g} on {len(targets)} modules"
    return {"head_only": "head only (frozen base)", "full": "full fine-tune"}[cfg.method]


def _write_predictions(path: Path, preds: list[dict], test_items: list[dict], labels: list[str]) -> None:
    """trials/<n>/predictions.jsonl: one line per test item (id, prediction, reference, correct)."""
    with open(path, "w") as f:
        for p in preds:
            text = test_items[p["id"]].get("text", "") if p["id"] is not None else ""
            f.write(json.dumps({"id": p["id"], "prediction": labels[p["prediction"]], "reference": labels[p["reference"]],
                                "correct": p["correct"], "text": text[:200]}) + "\n")


def _threads(cfg) -> None:
    # the driver resolves hardware.threads into config.yaml (launch.cpu_threads); a single run splits
    # the usable cores over its processes
    n = cfg.hardware.threads or max(1, usable_cpus() // cfg.hardware.processes)
    torch.set_num_threads(n)


def run(cfg, reporter=None) -> dict:
    """Run one trial from a resolved config; returns the record (also written to result.json).

    reporter(step, metrics) -> bool is called on rank 0 after each intermediate eval; True prunes.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, gather_object

    import importlib

    cfg = config_mod.complete(cfg)
    task = importlib.import_module(TASKS[cfg.task.type])
    clock = Clock()
    on_cpu = cfg.hardware.device == "cpu"
    # Every LoRA parameter gets a gradient each step, and with activation checkpointing (non-reentrant,
    # models.py) find_unused_parameters=True would crash DDP: state it rather than rely on the default.
    accelerator = Accelerator(cpu=on_cpu, mixed_precision=cfg.hardware.mixed_precision,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    world = accelerator.num_processes
    if world != cfg.hardware.processes:
        reason = (f"world size is {world} but hardware.processes={cfg.hardware.processes}: the launcher started the "
                  "wrong number of processes (on CPU use `accelerate launch --multi_gpu --num_processes N` with "
                  "ACCELERATE_USE_CPU=1; `--cpu` and MULTI_CPU configs start one)")
        if accelerator.is_main_process:  # the driver reads the reason from the record
            run_dir_of(cfg).mkdir(parents=True, exist_ok=True)
            write_json(run_dir_of(cfg) / "result.json", {"status": "failed", "reason": reason, "study": cfg.study,
                                                         "trial": cfg.trial, "world_size": world})
        raise TrialFailed(reason)
    main = accelerator.is_main_process
    if on_cpu:
        _threads(cfg)
    t = cfg.train
    # train.batch_size is the global batch (split over ranks; the schema checks it divides) unless
    # keep_effective_batch=false makes it per process
    per_device = t.batch_size // world if t.keep_effective_batch else t.batch_size
    global_batch = per_device * world
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = config_mod.OmegaConf.to_container(cfg, resolve=True)

    # --- data (first: a size error costs nothing)
    with clock.phase("data"):
        splits = task.load_splits(cfg.data)
    # --- tokenizer + model + adapters
    import transformers

    from harness.models import load_base, load_tokenizer, prepare

    transformers.utils.logging.set_verbosity_error()  # the "newly initialized head" report is expected
    transformers.utils.logging.disable_progress_bar()

    with clock.phase("load"):
        # Seed before the base loads: its new classification head is initialised there, so an
        # unseeded load made two runs of one config differ (and the baseline eval with them).
        transformers.set_seed(cfg.seed)
        tokenizer = load_tokenizer(cfg)
        transformers.set_seed(cfg.seed)  # the new head is initialized inside from_pretrained
        model = load_base(cfg, len(splits.labels), accelerator.local_process_index if not on_cpu else "cpu", tokenizer)
    with clock.phase("tokenize"):
        train_items = task.items(tokenizer, splits.train, cfg)
        test_items = task.items(tokenizer, splits.test, cfg)
        if cfg.eval.max_examples:
            test_items = test_items[: cfg.eval.max_examples]
    pad_id = tokenizer.pad_token_id

    tracker = Run(cfg, resolved, run_dir, enabled=main)
    baseline, eval_tok, baseline_cached, baseline_flops = None, 0, False, None
    if cfg.eval.baseline:
        with clock.phase("baseline"):
            # the base model with its untrained head: what the adapters have to beat. It is the same
            # for every trial of a study that shares base, quant, seed and test split, so it is
            # computed once and read back (saves one full eval per trial).
            key_path = _baseline_path(cfg, test_items)
            cached = [json.loads(key_path.read_text()) if main and key_path.is_file() else None]
            if world > 1:
                broadcast_object_list(cached, from_process=0)  # all ranks skip, or all join the eval
            baseline, baseline_cached = cached[0], cached[0] is not None
            if baseline is None:
                baseline = task.evaluate(model, test_items, cfg, tokenizer, accelerator)
                baseline.pop("predictions", None)
                if main:
                    key_path.parent.mkdir(parents=True, exist_ok=True)
                    write_json(key_path, baseline)
            # a study-level cost, recorded beside the trial's own and never inside it: cold or warm
            # cache, one configuration and seed then costs the same (harness/cost.py)
            baseline_flops = eval_flops(matmul_params(model), baseline["tokens"])
    with clock.phase("load"):
        model, targets = prepare(model, cfg)
        # k-bit preparation makes the embeddings' output require grad: the backward then runs through every layer
        params = param_counts(model, input_grads=cfg.method == "lora" and cfg.quant.mode != "none")
    majority = task.reference_accuracy(test_items)

    if main:
        print(f"[harness] trial {cfg.study}/{cfg.trial}: {cfg.model.name} {cfg.quant.mode} on {cfg.data.name} "
              f"(train {len(train_items)}, test {len(test_items)}); {_method_line(cfg, targets)}, "
              f"{params['trainable_params']:,} trainable of {params['total_params']:,}; "
              f"{world} process(es) x {per_device} x accum {t.grad_accum} = {global_batch * t.grad_accum} "
              f"examples/step, {t.max_steps} steps", flush=True)

    # --- train
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt, sched = optim.build(trainable, t, accelerator.device)  # train.optim + train.lr_scheduler_type
    model, opt = accelerator.prepare(model, opt)
    model.train()
    stream = train_batches(train_items, global_batch, cfg.seed, t.group_by_length)
    tokens_seen = padded_seen = examples_seen = 0
    loss_ema, history, evals = None, [], []
    status, reason = "complete", None
    state = ckpt.TrialState(resolved)
    ckpt.attach(accelerator, sched, state)
    if t.resume_from:  # after prepare: load_state fills the prepared model/optimizer in place
        tokens_seen, padded_seen, examples_seen = ckpt.load(accelerator, Path(t.resume_from), state)
        loss_ema, history, evals = state.loss_ema, state.history, state.evals
        for _ in range(state.batches):  # the same place in the data order
            next(stream)
        ckpt.replay(tracker, state)
        if main:
            print(f"[harness] resumed from {t.resume_from} at step {state.step}", flush=True)
    step = resumed_at = state.step
    from tqdm.auto import tqdm

    bar = tqdm(total=t.max_steps, initial=step, desc=f"trial {cfg.trial}",
               disable=not main or os.environ.get("HARNESS_QUIET") == "1", dynamic_ncols=True, leave=False)
    progress = Progress(t.log_every if main else 0, t.max_steps, step,
                        write=lambda line: bar.write(line) if not bar.disable else print(line, flush=True))
    while step < t.max_steps:
        with clock.phase("train"):
            step_loss = 0.0
            for micro in range(t.grad_accum):
                gbatch = next(stream)
                mine = gbatch[accelerator.process_index::world]
                batch = task.collate([train_items[i] for i in mine], pad_id, accelerator.device)
                sync = micro == t.grad_accum - 1
                ctx = accelerator.no_sync(model) if (world > 1 and not sync) else nullcontext()
                with ctx:
                    with accelerator.autocast():
                        loss = model(**batch).loss / t.grad_accum
                    accelerator.backward(loss)
                step_loss += loss.detach().float().item()
                tokens_seen += batch["attention_mask"].sum().item()  # this rank's; summed below
                padded_seen += batch["attention_mask"].numel()
                examples_seen += len(gbatch)
            if world > 1:  # the global batch's loss, and every rank sees the same NaN check
                step_loss = accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "mean").item()
            if not math.isfinite(step_loss):
                status, reason = "failed", f"non-finite loss ({step_loss}) at step {step + 1}"
                break
            grad_norm = accelerator.clip_grad_norm_(trainable, t.max_grad_norm)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        step += 1
        loss_ema = step_loss if loss_ema is None else 0.9 * loss_ema + 0.1 * step_loss
        bar.update(1)
        bar.set_postfix(loss=f"{loss_ema:.4f}")
        if main:
            rec = {"train/loss": step_loss, "train/lr": sched.get_last_lr()[0], "train/grad_norm": float(grad_norm),
                   "train/tokens": tokens_seen}
            history.append({"step": step, **rec})
            tracker.log(rec, step=step)
        progress.step(step, step_loss, loss_ema, sched.get_last_lr()[0])
        if t.eval_every and step % t.eval_every == 0 and step < t.max_steps:
            with clock.phase("eval"):
                ev = task.evaluate(model, test_items, cfg, tokenizer, accelerator)
            eval_tok += ev["tokens"]
            ev.pop("predictions", None)
            evals.append({"step": step, "accuracy": ev["accuracy"], "loss": ev["loss"], **ev.get("metrics", {})})
            tracker.log(_eval_log(ev), step=step)
            decision = [bool(reporter(step, ev)) if (main and reporter) else False]
            if world > 1:
                broadcast_object_list(decision, from_process=0)  # every rank follows rank 0
            if decision[0]:
                status, reason = "pruned", f"pruned after step {step} (eval accuracy {ev['accuracy']:.4f})"
                break
        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < t.max_steps:
            state.step, state.batches, state.loss_ema = step, step * t.grad_accum, loss_ema
            state.history, state.evals = history, evals
            ckpt.save(accelerator, run_dir, state, [tokens_seen, padded_seen, examples_seen])
    bar.close()

    # --- final eval (skipped for failed runs: nothing to measure)
    final = None
    if status == "complete":
        with clock.phase("eval"):
            final = task.evaluate(model, test_items, cfg, tokenizer, accelerator)
        if main and "predictions" in final:  # per item, for error analysis and item-level pairing
            _write_predictions(run_dir / "predictions.jsonl", final.pop("predictions"), test_items, splits.labels)
        eval_tok += final["tokens"]
        if main:  # trials/<n>/adapter/ (train.save_adapter; harness/adapters.py)
            adapters.save(accelerator.unwrap_model(model), tokenizer, run_dir, cfg, splits.labels)
        evals.append({"step": step, "accuracy": final["accuracy"], "loss": final["loss"], **final.get("metrics", {})})
        tracker.log(_eval_log(final), step=step)

    # --- cost
    if world > 1:
        tokens_seen, padded_seen = (int(v) for v in accelerator.reduce(
            torch.tensor([tokens_seen, padded_seen], device=accelerator.device), reduction="sum").tolist())
    compute_s = sum(clock.phases.get(k, 0.0) for k in ("train", "eval"))  # the baseline is the study's
    tflops = train_flops(params, tokens_seen, t.gradient_checkpointing)
    eflops = eval_flops(params, eval_tok)
    peak = accelerator.reduce(torch.tensor(peak_memory_bytes(torch.device(accelerator.device)), device=accelerator.device),
                              reduction="max").item() if world > 1 else peak_memory_bytes(torch.device(accelerator.device))
    device_seconds = compute_s * world
    checksums = gather_object([adapter_checksum(model)]) if world > 1 else [adapter_checksum(model)]
    record = {
        "status": status, "reason": reason, "study": cfg.study, "trial": cfg.trial,
        "accuracy": final["accuracy"] if final else None,
        "eval_loss": final["loss"] if final else None,
        "method": cfg.method,
        "baseline_accuracy": baseline["accuracy"] if baseline else None, "baseline_cached": baseline_cached,
        "baseline_flops": baseline_flops, "baseline_seconds": clock.phases.get("baseline"),
        "majority_accuracy": majority,
        "best_intermediate_accuracy": max((e["accuracy"] for e in evals), default=None),
        "train_loss": history[-1]["train/loss"] if history else None,
        "steps": step, "examples_seen": examples_seen, "tokens": tokens_seen, "padded_tokens": padded_seen,
        "eval_tokens": eval_tok, "flops": tflops + eflops, "train_flops": tflops, "eval_flops": eflops,
        **params, "lora_modules": len(targets),
        "peak_memory_bytes": int(peak), "device_seconds": device_seconds, "wall_seconds": clock.total(),
        "phase_seconds": {k: round(v, 3) for k, v in clock.phases.items()},
        "tokens_per_second": tokens_seen / max(clock.phases.get("train", 1e-9), 1e-9),
        "cost_usd": device_seconds / 3600 * cfg.hardware.price_per_device_hour,
        "world_size": world, "per_device_batch_size": per_device, "grad_accum": t.grad_accum,
        "effective_batch_size": global_batch * t.grad_accum,
        "adapter_checksums": checksums,  # one per rank: equal when DDP kept the replicas in sync
        "train_size": len(train_items), "test_size": len(test_items), "labels": splits.labels,
        "data": splits.provenance, "evals": evals,
        "provenance": provenance(accelerator.device) if main else {},
        "resumed_from": {"dir": t.resume_from, "step": resumed_at} if t.resume_from else None,
    }
    # task metrics beyond accuracy/loss (sft: exact_match, rouge_l, bleu, ...), final and zero-shot
    record.update((final or {}).get("metrics", {}))
    record.update({f"baseline_{k}": v for k, v in (baseline or {}).get("metrics", {}).items()})
    record.update((final or baseline or {}).get("notes", {}))  # how the metrics were computed (BLEU signature)
    samples = {k: ev["samples"] for k, ev in (("baseline", baseline), ("final", final)) if ev and "samples" in ev}
    if samples:
        record["samples"] = samples
        for k, rows in samples.items():
            tracker.table(f"samples/{k}", rows)
    if main:
        record["wandb"] = tracker.info()
        write_json(run_dir / "result.json", {**record, "config": resolved, "history": history})
        tracker.finish({k: v for k, v in record.items() if isinstance(v, (int, float, str)) and v is not None},
                       exit_code=0 if status == "complete" else 1)
    accelerator.wait_for_everyone()
    if main and status != "failed" and t.checkpoint_every:
        ckpt.discard(run_dir)  # finished: the record has it all; only a retry would need the checkpoint
    accelerator.end_training()
    if status == "failed":
        raise TrialFailed(reason)
    if status == "pruned":
        raise TrialPruned(reason)
    return record


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m harness.train runs/<study>/trials/<n>/config.yaml", file=sys.stderr)
        return 2
    cfg = config_mod.read(argv[0])
    reporter = None
    if cfg.get("sweep") and int(os.environ.get("RANK", "0")) == 0:
        from harness.optuna_parts import trial_reporter  # rank 0 alone talks to Optuna

        reporter = trial_reporter(cfg)
    try:
        run(cfg, reporter)
    except ckpt.ResumeError as e:  # the driver checked it too; a hand-written config may not be
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrialPruned as e:
        if int(os.environ.get("RANK", "0")):
            return 0  # rank 0 reports it; a rank exiting first would get rank 0 killed by the launcher
        print(f"[harness] {e}", file=sys.stderr)
        return 3  # the driver reads this as PRUNED
    return 0


if __name__ == "__main__":
    sys.exit(main())
