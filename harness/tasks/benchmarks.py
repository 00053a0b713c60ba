"""eval.benchmarks on the trial's own model, through lm-eval: the base model's scores (once per study,
cached like the zero-shot baseline) and the tuned model's, paired item by item, and the forgetting.

lm-eval's HFLM wraps the in-memory model (the peft model the loop trained, or the base before the
adapters go on): no reload from disk and no second copy. The tasks are the stock ones with local data
(benchmark_tasks/, read through lm-eval's own TaskManager with include_defaults=False: only these, and
no scan of lm-eval's 15,000 task files); the items are a seeded subset passed as simple_evaluate's
`samples=` (harness/data/benchmarks.py chooses them), so every trial and the base model see the same
ones. An evaluation leaves the model, the tokenizer and every RNG as it found them: a base eval read
from the cache and one computed must leave the training that follows the same.

Scores: each benchmark's metric (acc or acc_norm, BENCHMARKS) averaged over its chosen items (for
MMLU over all subjects' items: the stock group's weight_by_size mean). retention.<b> = tuned / base;
forgetting = mean over the benchmarks of (base - tuned), in score points (0.05 = 5 points lost).
Multi-process trials run it on rank 0 alone (HFLM cannot join an Accelerate launch with a given model).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from harness.data import benchmarks as data

TASK_DIR = Path(__file__).resolve().parent / "benchmark_tasks"


def plan(names: list[str], n: int | None, seed: int) -> dict[str, dict]:
    """{benchmark: {"metric", "samples": {lm-eval task: [doc indices]}}} for registered benchmarks."""
    data.require(names)
    return {b: {"metric": data.BENCHMARKS[b].metric, "samples": data.select(b, n, seed)} for b in names}


def _lm(model, tokenizer, batch_size: int, mixed_precision: str):
    """lm-eval's HFLM around the given model, counting the tokens it runs (padded batches: the compute)."""
    from lm_eval.models.huggingface import HFLM

    quiet = os.environ.get("HARNESS_QUIET") == "1"  # a study's trial: the driver's bar is the progress display

    class CountingLM(HFLM):
        tokens = 0

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm or quiet)

        def _model_call(self, inps, attn_mask=None, labels=None):
            self.tokens += int(inps.numel())
            return super()._model_call(inps, attn_mask=attn_mask, labels=labels)

    dtype = {"bf16": "bfloat16", "fp16": "float16"}.get(mixed_precision) if model.device.type == "cuda" else None
    # the token a context-free continuation is scored after: BOS, else EOS (lm-eval's own choice); a
    # tokenizer with neither (the tests' word-level one) gives its CLS or PAD
    prefix = None
    if tokenizer.bos_token_id is None and tokenizer.eos_token_id is None:
        prefix = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.pad_token_id
    return CountingLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, mixed_precision_dtype=dtype,
                      prefix_token_id=prefix)


def run_tasks(model, tokenizer, samples: dict[str, list[int]], task_dirs=(TASK_DIR,), batch_size: int = 8,
              mixed_precision: str = "no") -> tuple[dict[str, list[dict]], int]:
    """lm-eval on the chosen documents of each task: ({task: per-item rows}, tokens run).

    A row: doc (the index in the task's scored split), target, ll (each choice's loglikelihood), pred
    (the argmax choice by raw loglikelihood) and each metric the task computes (acc, acc_norm, ...)."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if not samples or not all(samples.values()):  # lm-eval reads an empty index list as "every item"
        raise ValueError(f"run_tasks needs at least one item per task, got {({t: len(v) for t, v in samples.items()})}")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # "pretrained is not a str", per-task notes
    was_training, sides = model.training, (tokenizer.padding_side, tokenizer.truncation_side)
    devices = [model.device] if model.device.type == "cuda" else []
    py, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            lm = _lm(model, tokenizer, batch_size, mixed_precision)
            out = simple_evaluate(
                model=lm, tasks=sorted(samples), task_manager=TaskManager(include_path=[str(d) for d in task_dirs],
                                                                          include_defaults=False),
                samples={t: sorted(v) for t, v in samples.items()}, log_samples=True, bootstrap_iters=0,
                cache_requests=False, random_seed=None, numpy_random_seed=None, torch_random_seed=None,
                fewshot_random_seed=1234)  # the stock default: the same few-shot draw everywhere
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        model.train(was_training)
        tokenizer.padding_side, tokenizer.truncation_side = sides
    rows = {}
    for task, docs in samples.items():
        # lm-eval walks the chosen docs in split order and logs doc_id = indices[k] for the k-th: the
        # index in the split only because the lists passed above are sorted (an unsorted list mislabels)
        chosen = sorted(docs)
        metrics = [m["metric"] for m in out["configs"][task]["metric_list"]]
        rows[task] = sorted(({"doc": s["doc_id"], "target": s["target"],
                              "ll": [float(r[0]) for r in s["filtered_resps"]],  # per choice, for paired tests
                              "pred": int(np.argmax([r[0] for r in s["filtered_resps"]])),
                              **{m: float(s[m]) for m in metrics if m in s}} for s in out["samples"][task]),
                            key=lambda r: r["doc"])
        if [r["doc"] for r in rows[task]] != chosen:
            raise RuntimeError(f"lm-eval scored {len(rows[task])} of the {len(chosen)} chosen items of {task}")
    return rows, lm.tokens


def evaluate(model, tokenizer, bench_plan: dict[str, dict], task_dirs=(TASK_DIR,), batch_size: int = 8,
             mixed_precision: str = "no") -> dict:
    """Every benchmark of bench_plan in one lm-eval run: {"scores": {b: {score, metric, items, stderr}},
    "predictions": {b: [{"id": "<task>/<doc>", ...row}]}, "tokens", "seconds"}."""
    start = time.perf_counter()
    samples = {t: docs for p in bench_plan.values() for t, docs in p["samples"].items()}
    rows, tokens = run_tasks(model, tokenizer, samples, task_dirs, batch_size, mixed_precision)
    scores, preds = {}, {}
    for b, p in bench_plan.items():
        preds[b] = [{"id": f"{t}/{r['doc']}", **r} for t in sorted(p["samples"]) for r in rows[t]]
        vals = [r[p["metric"]] for r in preds[b]]
        k = len(vals)
        se = float(np.std(vals, ddof=1)) / math.sqrt(k) if k > 1 else None
        scores[b] = {"score": float(np.mean(vals)), "metric": p["metric"], "items": k, "stderr": se}
    return {"scores": scores, "predictions": preds, "tokens": tokens, "seconds": time.perf_counter() - start}


def forgetting(base: dict[str, dict], tuned: dict[str, dict]) -> tuple[dict[str, float], float]:
    """(retention.<b> = tuned / base (None where the base scored 0), forgetting = mean of base - tuned)
    over the benchmarks both scored.
    The two must have scored the same items (checked on the item ids by the caller that holds them)."""
    names = [b for b in tuned if b in base]
    retention = {b: tuned[b]["score"] / base[b]["score"] if base[b]["score"] else None for b in names}  # none of 0
    drop = [base[b]["score"] - tuned[b]["score"] for b in names]
    return retention, float(np.mean(drop)) if drop else None


# ---------------------------------------------------------------------------- the base model, cached

def base_key(cfg, bench: str, samples: dict[str, list[int]]) -> str:
    """What the base model's score on one benchmark depends on: the model and its quantization, the
    precision, the items, the data files and lm-eval's version. Not the trial seed: a causal LM's base
    has no randomly initialised part, so every seed of a study shares it."""
    from importlib.metadata import version

    from omegaconf import OmegaConf

    spec = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "quant")}
    spec.update(mixed_precision=cfg.hardware.mixed_precision, bench=bench, lm_eval=version("lm_eval"),
                files=data.manifest().get(bench, {}).get("tasks"), samples=samples)
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def base_path(cfg, bench: str, samples) -> Path:
    return data.cache_dir() / "baselines" / f"bench-{cfg.model.name}-{bench}-{base_key(cfg, bench, samples)}.json"


def base_scores(cfg, model, tokenizer, bench_plan: dict[str, dict], **kw) -> tuple[dict, list[str], int]:
    """The base model's evaluation of bench_plan: each benchmark read from the cache when an earlier trial
    of the study (or any run with the same model, items and data) computed it, the rest computed in one
    run and written. Returns (evaluation as evaluate() gives it, the benchmarks read from the cache,
    tokens run now: the study-level cost this trial paid)."""
    from harness.trial.tracking import write_json

    paths = {b: base_path(cfg, b, p["samples"]) for b, p in bench_plan.items()}
    cached = {b: json.loads(paths[b].read_text()) for b in bench_plan if paths[b].is_file()}
    todo = {b: p for b, p in bench_plan.items() if b not in cached}
    out = {"scores": {}, "predictions": {}, "tokens": 0, "seconds": 0.0}
    if todo:
        out = evaluate(model, tokenizer, todo, batch_size=cfg.eval.benchmark_batch_size,
                       mixed_precision=cfg.hardware.mixed_precision, **kw)
        for b in todo:
            paths[b].parent.mkdir(parents=True, exist_ok=True)
            write_json(paths[b], {"score": out["scores"][b], "predictions": out["predictions"][b]})
    for b, c in cached.items():
        out["scores"][b], out["predictions"][b] = c["score"], c["predictions"]
    return out, sorted(cached), out["tokens"]


def paired(base: dict, tuned: dict) -> dict[str, dict]:
    """Per benchmark, base vs tuned on the same items: {items, base, tuned, changed (items whose
    correctness flipped: lost, gained)}; a mismatch of the item ids is an error, never a silent mean."""
    out = {}
    for b, rows in tuned["predictions"].items():
        metric = tuned["scores"][b]["metric"]
        brows = {r["id"]: r for r in base["predictions"][b]}
        if set(brows) != {r["id"] for r in rows}:
            raise RuntimeError(f"benchmark {b}: the base and tuned models were scored on different items")
        lost = sum(1 for r in rows if brows[r["id"]][metric] > r[metric])
        gained = sum(1 for r in rows if brows[r["id"]][metric] < r[metric])
        out[b] = {"items": len(rows), "base": base["scores"][b]["score"], "tuned": tuned["scores"][b]["score"],
                  "lost": lost, "gained": gained}
    return out


# ---------------------------------------------------------------------------- the trial's two calls

def on_base(cfg, model, tokenizer, accelerator, clock) -> dict | None:
    """Before the adapters go on: the base model's benchmark scores (a study-level cost, phase
    "baseline", like the zero-shot baseline). Rank 0 alone; the other ranks wait and get None."""
    if not cfg.eval.benchmarks:
        return None
    from harness.trial.cost import eval_flops, matmul_params

    ev = None
    with clock.phase("baseline"):
        if accelerator.is_main_process:
            bench_plan = plan(list(cfg.eval.benchmarks), cfg.eval.benchmark_items, cfg.eval.benchmark_seed)
            model = accelerator.unwrap_model(model)
            ev, cached, tokens = base_scores(cfg, model, tokenizer, bench_plan)
            ev.update(plan=bench_plan, cached=cached, flops=eval_flops(matmul_params(model), tokens))
        accelerator.wait_for_everyone()
    return ev


def on_final(cfg, model, tokenizer, accelerator, clock, base: dict | None, run_dir: Path) -> dict | None:
    """After the final eval: the tuned model on the same items (phase "eval": the trial's own cost),
    trials/<n>/benchmarks.jsonl with one line per item (base and tuned side by side, for paired tests),
    and what the record keeps: scores, retention, forgetting, items, tokens."""
    if base is None:
        if cfg.eval.benchmarks:
            accelerator.wait_for_everyone()
        return None
    with clock.phase("eval"):
        tuned = evaluate(accelerator.unwrap_model(model), tokenizer, base["plan"], batch_size=cfg.eval.benchmark_batch_size,
                         mixed_precision=cfg.hardware.mixed_precision)
    pairs = paired(base, tuned)
    with open(run_dir / "benchmarks.jsonl", "w") as f:
        for b, rows in tuned["predictions"].items():
            brows = {r["id"]: r for r in base["predictions"][b]}
            metric = tuned["scores"][b]["metric"]
            for r in rows:
                f.write(json.dumps({"benchmark": b, "id": r["id"], "metric": metric, "target": r["target"],
                                    "base": brows[r["id"]][metric], "tuned": r[metric],
                                    "base_pred": brows[r["id"]]["pred"], "tuned_pred": r["pred"],
                                    "base_ll": brows[r["id"]]["ll"], "tuned_ll": r["ll"]}) + "\n")
    retention, forget = forgetting(base["scores"], tuned["scores"])
    accelerator.wait_for_everyone()
    return {"benchmarks": {b: s["score"] for b, s in tuned["scores"].items()},
            "baseline_benchmarks": {b: s["score"] for b, s in base["scores"].items()},
            "retention": retention, "forgetting": forget,
            "benchmark_items": {b: s["items"] for b, s in tuned["scores"].items()},
            "benchmark_tokens": tuned["tokens"], "benchmark_seconds": tuned["seconds"],
            "benchmark_baseline_cached": base["cached"], "benchmark_baseline_flops": base["flops"],
            "benchmark_pairs": pairs}
