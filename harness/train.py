"""The trial: one script for 1..N processes.

    python -m harness.train runs/<study>/trials/<n>/config.yaml                 (1 process)
    accelerate launch --multi_gpu --num_processes 2 -m harness.train <config>  (N processes)

run() reads as its stages: setup -> data, tokenizer + base model, tokenized splits (the Shared part:
the same for every trial of one model, quant, dtype, device and data, so a warm worker keeps it) ->
cached baseline eval -> adapters -> train loop (loop.py) -> final eval -> cost -> record -> publish
(result.json, W&B). What differs per task (cfg.task.type) comes from its module in TASKS. Rank 0
alone writes the record, logs to W&B and talks to Optuna; the other ranks follow its prune decision.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
import transformers
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, gather_object

from harness.trial import adapters
from harness.trial import checkpoint as ckpt
from harness.tasks import TASKS, Task  # noqa: F401 (re-exported for tests)
from harness.tasks import benchmarks
from harness.config import schema as config_mod
from harness.trial.cost import Clock, eval_flops, matmul_params, param_counts, peak_memory_bytes, train_flops
from harness.data.load import cache_dir
from harness.metrics import convergence
from harness.trial.loop import (LoopResult, adapter_checksum, eval_entry, eval_log, intermediate_items,  # noqa: F401
                                train_batches, train_loop)
from harness.trial.models import prepare
from harness.optuna_parts import trial_reporter
from harness.record import TrialFailed, TrialPruned, TrialRecord, trial_dir, wandb_exit_code  # noqa: F401 (re-exported)
from harness.trial.context import TrialContext
from harness.trial.shared import Shared, release, shared  # noqa: F401 (Shared: tests)
from harness.trial.tracking import Run, provenance, usable_cpus, write_json


def run_dir_of(cfg) -> Path:
    return trial_dir(cfg.out_dir, cfg.study, cfg.trial)


# ---------------------------------------------------------------------------- stages


def setup(cfg) -> Accelerator:
    """The accelerator (its world size checked against hardware.processes) and this process's threads."""
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
            rec = TrialRecord(status="failed", reason=reason, study=cfg.study, trial=cfg.trial, world_size=world)
            write_json(run_dir_of(cfg) / "result.json", rec.model_dump())
        raise TrialFailed(reason)
    if on_cpu:
        # the driver resolves hardware.threads into config.yaml (launch.cpu_threads); a single run splits
        # the usable cores over its processes
        torch.set_num_threads(cfg.hardware.threads or max(1, usable_cpus() // cfg.hardware.processes))
    transformers.utils.logging.set_verbosity_error()  # the "newly initialized head" report is expected
    transformers.utils.logging.disable_progress_bar()
    return accelerator


def _baseline_path(cfg, test_items) -> Path:
    """Where the baseline eval of this base model + quantization + seed + test split is kept."""
    spec = {k: config_mod.OmegaConf.to_container(cfg[k], resolve=True) for k in ("task", "model", "quant")}
    spec.update(seed=cfg.seed, mixed_precision=cfg.hardware.mixed_precision,
                eval={k: v for k, v in cfg.eval.items() if k not in ("batch_size", "baseline", "intermediate_examples")
                      and not k.startswith("benchmark")},  # eval.benchmarks* have their own cache (tasks/benchmarks.py)
                items=hashlib.sha256(json.dumps(test_items, sort_keys=True, default=str).encode()).hexdigest())
    key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return cache_dir() / "baselines" / f"{cfg.model.name}-{key}.json"


def baseline_eval(ctx: TrialContext) -> tuple[dict | None, bool, float | None]:
    """The base model with its untrained head: what the adapters have to beat. The same for every trial of
    a study that shares base, quant, seed and test split, so it is computed once and read back.
    Returns (eval, read from the cache?, its FLOPs: a study-level cost kept beside the trial's own)."""
    cfg, task, sh, accelerator = ctx.cfg, ctx.task, ctx.shared, ctx.accelerator
    if not cfg.eval.baseline:
        return None, False, None
    with ctx.clock.phase("baseline"):
        main = ctx.main
        key_path = _baseline_path(cfg, sh.test_items)
        cached = [json.loads(key_path.read_text()) if main and key_path.is_file() else None]
        if accelerator.num_processes > 1:
            broadcast_object_list(cached, from_process=0)  # all ranks skip, or all join the eval
        baseline = cached[0]
        if baseline is None:
            baseline = task.evaluate(sh.model, sh.test_items, cfg, sh.tokenizer, accelerator)
            baseline.pop("predictions", None)
            if main:
                key_path.parent.mkdir(parents=True, exist_ok=True)
                write_json(key_path, baseline)
        return baseline, cached[0] is not None, eval_flops(matmul_params(sh.model), baseline["tokens"])


def attach_adapters(ctx: TrialContext):
    """The trained part (LoRA, head only, or everything) on the base: (model, targets, parameter counts)."""
    cfg = ctx.cfg
    with ctx.clock.phase("load"):
        model, targets = prepare(ctx.shared.model, cfg)
        # k-bit preparation makes the embeddings' output require grad: the backward then runs through every layer
        params = param_counts(model, input_grads=cfg.method == "lora" and cfg.quant.mode != "none")
    return model, targets, params


def _method_line(cfg, targets) -> str:
    if cfg.method == "lora":
        return f"LoRA r={cfg.lora.r} alpha={cfg.lora.alpha:g} on {len(targets)} modules"
    return {"head_only": "head only (frozen base)", "full": "full fine-tune"}[cfg.method]


def announce(ctx: TrialContext, targets, params) -> None:
    cfg, sh, world = ctx.cfg, ctx.shared, ctx.accelerator.num_processes
    t = cfg.train
    per_device = t.batch_size // world if t.keep_effective_batch else t.batch_size
    print(f"[harness] trial {cfg.study}/{cfg.trial}: {cfg.model.name} {cfg.quant.mode} on {cfg.data.name} "
          f"(train {len(sh.train_items)}, test {len(sh.test_items)}); {_method_line(cfg, targets)}, "
          f"{params['trainable_params']:,} trainable of {params['total_params']:,}; "
          f"{world} process(es) x {per_device} x accum {t.grad_accum} = {per_device * world * t.grad_accum} "
          f"examples/step, {t.max_steps} steps", flush=True)


def final_eval(ctx: TrialContext, model, res: LoopResult):
    """The eval of the finished model (skipped for failed or pruned runs: nothing to measure)."""
    cfg, task, sh, accelerator, run_dir = ctx.cfg, ctx.task, ctx.shared, ctx.accelerator, ctx.run_dir
    if res.status != "complete":
        return None
    with ctx.clock.phase("eval"):
        final = task.evaluate(model, sh.test_items, cfg, sh.tokenizer, accelerator)
    preds = final.pop("predictions", None)
    if preds is not None and sh.splits.labels:  # classification: what the head predicted, per label
        final["pred_histogram"] = {y: sum(p["prediction"] == i for p in preds) for i, y in enumerate(sh.splits.labels)}
    if accelerator.is_main_process and preds is not None:  # per item, for error analysis and pairing
        _write_predictions(run_dir / "predictions.jsonl", preds, sh.test_items, sh.splits.labels)
    res.eval_tokens += final["tokens"]
    if accelerator.is_main_process:  # trials/<n>/adapter/ (train.save_adapter; harness/trial/adapters.py)
        adapters.save(accelerator.unwrap_model(model), sh.tokenizer, run_dir, cfg, sh.splits.labels)
    res.evals.append(eval_entry(res.step, final))
    ctx.tracker.log(eval_log(final), step=res.step)
    return final


def _write_predictions(path: Path, preds: list[dict], test_items: list[dict], labels: list[str] | None) -> None:
    """trials/<n>/predictions.jsonl: one line per test item: id (its place in the test split, the same in every
    trial of a study), prediction, reference, correct, the text (its first 200 characters), and the item's
    continuous scores: classification gold_logprob / pred_logprob (log-softmax of the head's logits),
    sft nll / n_tokens (the answer's summed token NLL under teacher forcing, and its token count)."""
    with open(path, "w") as f:
        for p in preds:
            item = test_items[p["id"]] if p["id"] is not None else {}
            row = {**p, "text": (item.get("text") or item.get("prompt") or "")[:200]}
            if labels:  # classification: label ids -> names
                row.update(prediction=labels[p["prediction"]], reference=labels[p["reference"]])
            f.write(json.dumps(row) + "\n")


def cost(ctx: TrialContext, params: dict, res: LoopResult) -> dict:
    """Tokens (summed over ranks), FLOPs by the stated formula (cost.py), device-seconds, memory, money."""
    cfg, accelerator, clock = ctx.cfg, ctx.accelerator, ctx.clock
    world, device = accelerator.num_processes, torch.device(accelerator.device)
    if world > 1:
        res.tokens, res.padded = (int(v) for v in accelerator.reduce(
            torch.tensor([res.tokens, res.padded], device=accelerator.device), reduction="sum").tolist())
    compute_s = sum(clock.phases.get(k, 0.0) for k in ("train", "eval"))  # the baseline is the study's
    tflops = train_flops(params, res.tokens, cfg.train.gradient_checkpointing)
    eflops = eval_flops(params, res.eval_tokens)
    peak = peak_memory_bytes(device)
    if world > 1:
        peak = accelerator.reduce(torch.tensor(peak, device=accelerator.device), reduction="max").item()
    return {"tokens": res.tokens, "padded_tokens": res.padded, "eval_tokens": res.eval_tokens,
            "flops": tflops + eflops, "train_flops": tflops, "eval_flops": eflops, **params,
            "peak_memory_bytes": int(peak), "device_seconds": compute_s * world,
            "tokens_per_second": res.tokens / max(clock.phases.get("train", 1e-9), 1e-9),
            "cost_usd": compute_s * world / 3600 * cfg.hardware.price_per_device_hour}


def make_record(ctx: TrialContext, res: LoopResult, final, baseline, base_info: tuple, targets, costs: dict,
                checksums: list[str]) -> TrialRecord:
    """The typed record of this trial (record.py); result.json adds the config and the loss history."""
    cfg, sh, accelerator, clock = ctx.cfg, ctx.shared, ctx.accelerator, ctx.clock
    t, world = cfg.train, accelerator.num_processes
    per_device = t.batch_size // world if t.keep_effective_batch else t.batch_size
    baseline_cached, baseline_flops = base_info
    fields = dict(
        status=res.status, reason=res.reason, study=cfg.study, trial=cfg.trial,
        accuracy=final["accuracy"] if final else None, eval_loss=final["loss"] if final else None,
        method=cfg.method,
        baseline_accuracy=baseline["accuracy"] if baseline else None, baseline_cached=baseline_cached,
        baseline_flops=baseline_flops, baseline_seconds=clock.phases.get("baseline"),
        majority_accuracy=TASKS[cfg.task.type].reference_accuracy(sh.test_items),
        best_intermediate_accuracy=max((e["accuracy"] for e in res.evals), default=None),
        train_loss=res.history[-1]["train/loss"] if res.history else None,
        steps=res.step, examples_seen=res.examples, **costs, lora_modules=len(targets),
        wall_seconds=clock.total(), phase_seconds={k: round(v, 3) for k, v in clock.phases.items()},
        world_size=world, per_device_batch_size=per_device, grad_accum=t.grad_accum,
        effective_batch_size=per_device * world * t.grad_accum,
        adapter_checksums=checksums,  # one per rank: equal when DDP kept the replicas in sync
        train_size=len(sh.train_items), test_size=len(sh.test_items), labels=sh.splits.labels,
        data=sh.splits.provenance, evals=res.evals,
        provenance=provenance(accelerator.device) if accelerator.is_main_process else {},
        resumed_from={"dir": t.resume_from, "step": res.resumed_at} if t.resume_from else None,
    )
    extra = {}
    # task metrics beyond accuracy/loss (sft: exact_match, rouge_l, bleu, ...), final and zero-shot
    extra.update((final or {}).get("metrics", {}))
    extra.update({f"baseline_{k}": v for k, v in (baseline or {}).get("metrics", {}).items()})
    extra.update((final or baseline or {}).get("notes", {}))  # how the metrics were computed (BLEU signature)
    samples = {k: ev["samples"] for k, ev in (("baseline", baseline), ("final", final)) if ev and "samples" in ev}
    if samples:
        extra["samples"] = samples
    if t.eval_every:  # the intermediate evals' subset, when eval.intermediate_examples drew one (loop.py)
        extra["intermediate_eval_examples"] = len(intermediate_items(sh.test_items, cfg))
    extra.update(_learning(cfg, res, final, costs))
    return TrialRecord(**{**fields, **extra})


def _learning(cfg, res: LoopResult, final, costs: dict) -> dict:
    """Did the trial finish learning, and learn anything: its convergence verdict over the last quarter
    of its own steps, degenerate (collapsed / diverged), and what early stopping saved."""
    t = cfg.train
    metric = t.early_stopping.metric if t.early_stopping.patience else "accuracy"
    gain, se = convergence.last_quarter_gain(res.evals, metric, steps=res.step) if final else (None, None)
    losses = [h["train/loss"] for h in res.history]
    if res.status == "failed" and res.reason and res.reason.startswith("non-finite loss"):
        losses.append(float("nan"))  # the step that blew up is not in the history
    out = {"degenerate": convergence.degenerate((final or {}).get("pred_histogram"), losses),
           "pred_histogram": (final or {}).get("pred_histogram")}
    if final:
        out.update(last_quarter_gain=gain, last_quarter_gain_se=se,
                   convergence=convergence.verdict(gain, None if se is None else 1.96 * se,
                                                   points=convergence.is_binomial(metric) or metric == "accuracy"))
    if t.early_stopping.patience and res.status == "complete":
        saved = t.max_steps - res.step
        # an estimate, from this trial's own measured per-step train FLOPs (cost.py's formula over the tokens it
        # actually trained on), times the steps it did not run; the skipped steps' intermediate evals are not counted
        per_step = costs["train_flops"] / res.step if res.step else None
        out.update(stopped_early=res.stopped_early, best_step=res.best_step, steps_saved=saved,
                   flops_saved=per_step * saved if per_step is not None else None)
    return out  # validated: a key the type does not declare must be an eval.metrics number


def publish(rec: TrialRecord, tracker, resolved: dict, history: list[dict], run_dir: Path, main: bool) -> dict:
    """result.json (the record + config + loss history) and the W&B run's tables and summary (rank 0)."""
    record = rec.model_dump(exclude_unset=True)  # the keys this trial set: sft's metrics only for sft
    for k, rows in record.get("samples", {}).items():
        tracker.table(f"samples/{k}", rows)
    if main:
        record["wandb"] = tracker.info()
        write_json(run_dir / "result.json", {**record, "config": resolved, "history": history})
        flat = {f"{k}.{b}": v for k in ("benchmarks", "baseline_benchmarks", "retention")
                for b, v in (record.get(k) or {}).items()}  # W&B's summary keeps scalars only
        tracker.finish({k: v for k, v in {**record, **flat}.items() if isinstance(v, (int, float, str)) and v is not None},
                       exit_code=wandb_exit_code(rec.status))
    return record


# ---------------------------------------------------------------------------- the trial


def run(cfg, reporter=None, cache: dict | None = None) -> dict:
    """Run one trial from a resolved config; returns the record (also written to result.json).

    reporter(step, metrics) -> bool is called on rank 0 after each intermediate eval; True prunes.
    cache: a warm worker's {shared_key: Shared} (harness/trial/worker.py); None loads everything (the cold path).
    """
    cfg = config_mod.complete(cfg)
    task, clock = TASKS[cfg.task.type], Clock()
    accelerator = setup(cfg)
    main = accelerator.is_main_process
    run_dir = run_dir_of(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    resolved = config_mod.OmegaConf.to_container(cfg, resolve=True)
    sh = shared(cfg, task, accelerator, clock, cache)
    tracker = Run(cfg, resolved, run_dir, enabled=main)
    ctx = TrialContext(cfg, task, accelerator, sh, tracker, clock, run_dir, resolved)
    baseline, *base_info = baseline_eval(ctx)
    bench_base = benchmarks.on_base(cfg, sh.model, sh.tokenizer, accelerator, clock)  # eval.benchmarks, cached
    model = sh.model
    try:
        model, targets, params = attach_adapters(ctx)
        if main:
            announce(ctx, targets, params)
        model, res = train_loop(ctx, model, reporter)
        final = final_eval(ctx, model, res)
        bench = benchmarks.on_final(cfg, model, sh.tokenizer, accelerator, clock, bench_base, run_dir) if final else None
        if bench:  # the tuned model's benchmark eval is the trial's own compute
            res.eval_tokens += bench["benchmark_tokens"]
            bench["benchmark_flops"] = eval_flops(params, bench["benchmark_tokens"])
        costs = cost(ctx, params, res)
        checksums = [adapter_checksum(model)]
        if accelerator.num_processes > 1:
            checksums = gather_object(checksums)
    finally:
        if cache is not None:
            release(cfg, accelerator.unwrap_model(model), sh, cache)
    rec = make_record(ctx, res, final, baseline, tuple(base_info), targets, costs, checksums)
    if bench:
        rec = TrialRecord(**{**rec.model_dump(exclude_unset=True), **bench})
    record = publish(rec, tracker, resolved, res.history, run_dir, main)
    accelerator.wait_for_everyone()
    if main and res.status != "failed" and cfg.train.checkpoint_every:
        ckpt.discard(run_dir)  # finished: the record has it all; only a retry would need the checkpoint
    accelerator.end_training()
    if res.status == "failed":
        raise TrialFailed(res.reason)
    if res.status == "pruned":
        raise TrialPruned(res.reason)
    return record


def run_file(path, cache: dict | None = None) -> int:
    """One trial from its config.yaml; the exit code: 0 complete, 2 bad input, 3 pruned (a failed trial
    raises TrialFailed, its record says why). A warm worker calls it trial after trial."""
    cfg = config_mod.read(path)
    reporter = None
    if cfg.get("sweep") and int(os.environ.get("RANK", "0")) == 0:  # rank 0 alone talks to Optuna
        reporter = trial_reporter(cfg)
    try:
        run(cfg, reporter, cache)
    except ckpt.ResumeError as e:  # the driver checked it too; a hand-written config may not be
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrialPruned as e:
        if int(os.environ.get("RANK", "0")):
            return 0  # rank 0 reports it; a rank exiting first would get rank 0 killed by the launcher
        print(f"[harness] {e}", file=sys.stderr)
        return 3  # the driver reads this as PRUNED
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m harness.train runs/<study>/trials/<n>/config.yaml", file=sys.stderr)
        return 2
    return run_file(argv[0])


if __name__ == "__main__":
    sys.exit(main())
