"""GPU throughput, MFU, peak memory and per-trial fixed cost: harness vs HF Trainer, NF4 vs bf16 base.

    python -m bench.gpu                      # on a CUDA machine: llama_1b_random, seq len 512 (bench/gpu_check.sh)
    python -m bench.gpu --quick --device cpu # a dry run of the same code on tiny_llama (numbers mean nothing)

What runs. Each variant in a fresh process (peak memory = torch.cuda.max_memory_allocated of that
process): the harness (`harness.train.run`, task=classification) and HF Trainer on the same
AutoModelForSequenceClassification, same weights, same BitsAndBytesConfig (NF4, double quant, bf16
compute) or a bf16 base (quant=none), same LoRA modules (all_linear) and r, bf16 autocast, AdamW, batch,
and the same data: synthetic 512-token sentences in the tiny word-level vocabulary (written to a JSONL
file, data=local), so no padding and no tokenizer differences. TRL's SFTTrainer is not carried to the
GPU machine (it needs `datasets`, absent there), so Trainer is the only anchor.

Throughput is steady state: steps after the first `--warmup` are timed one by one (CUDA synchronized
at each boundary; the harness's own loop already syncs on the loss each step), tokens are the
non-padding tokens of those steps. FLOPs per token come from harness/trial/cost.py (2N forward + 2N backward
for the frozen matmul weights' input gradients + 2N_trained weight gradients; the attention score
matmuls are left out, ~1.7% at 512 tokens on this shape), MFU = that rate / the bf16 matmul rate
measured here on one 8192^3 product. The NF4 harness run is also profiled for a few steps after the
timed ones (torch.profiler, top CUDA kernels by total time).

Issue #12 evidence: one trial cold (`python -m harness.train`, a fresh process: imports, load,
quantize) and two trials in one warm worker (the second reuses the quantized base): wall seconds per
trial from the runner's view, and the record's phase seconds.
"""
from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from bench.common import compose, report, run_child, save, table



def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


LOAD_PEAK: dict = {}


def _reset_peak():
    """Peak memory from the first training step on; the peak before it (load, quantize) is kept apart."""
    import torch

    if torch.cuda.is_available():
        LOAD_PEAK.setdefault("mib", torch.cuda.max_memory_allocated() / 2**20)
        torch.cuda.reset_peak_memory_stats()


def write_data(path: Path, n: int, words: int, seed: int = 0) -> Path:
    """n sentences of `words` vocabulary words (+ [CLS]/[SEP] = words + 2 tokens), labels by a word count."""
    from harness.data.load import (  # the tiny tokenizer's words: no [UNK] tokens
        _NEG,
        _POS,
        tiny_vocab,
    )

    rng, vocab = random.Random(seed), tiny_vocab()
    with path.open("w") as f:
        for i in range(n):
            text = [rng.choice(vocab) for _ in range(words)]
            label = int(sum(w in _POS for w in text) > sum(w in _NEG for w in text))
            f.write(json.dumps({"text": " ".join(text), "label": ["negative", "positive"][label]}) + "\n")
    return path


def overrides(args, quant: str, data: Path) -> list[str]:
    hw = ["hardware=gpu1"] if args.device == "cuda" else ["hardware=cpu", "hardware.threads=1"]
    return [f"model={args.model}", *hw, f"quant={quant}", "data=local", f"data.path={data}",
            f"data.train_size={args.batch * (args.steps + 4)}", "data.test_size=16", f"model.max_length={args.seq}",
            f"train.batch_size={args.batch}", "lora.targets=all_linear", "lora.r=16", "lora.dropout=0",
            "train.eval_every=0", "eval.baseline=false", "eval.max_examples=16", "tracking.mode=disabled",
            "train.log_every=0"]


# ---------------------------------------------------------------------------- child processes


class StepTimer:
    """Per-step seconds and tokens; steady state = after `warmup` steps; optional profiler for the last steps."""

    def __init__(self, warmup: int, profile_from: int | None = None):
        self.warmup, self.profile_from, self.prof = warmup, profile_from, None
        self.seconds, self.tokens = [], []

    def step(self, fn, tokens_before, tokens_after):
        n = len(self.seconds)
        if n == 0:
            _reset_peak()
        if self.profile_from is not None and n == self.profile_from:
            from torch.profiler import ProfilerActivity, profile

            self.prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])
            self.prof.__enter__()
        _sync()
        t0 = time.perf_counter()
        out = fn()
        _sync()
        self.seconds.append(time.perf_counter() - t0)
        self.tokens.append(tokens_after() - tokens_before)
        return out

    def result(self) -> dict:
        if self.prof is not None:
            self.prof.__exit__(None, None, None)
        end = self.profile_from if self.profile_from is not None else len(self.seconds)
        secs, toks = self.seconds[self.warmup:end], self.tokens[self.warmup:end]
        out = {"timed_steps": len(secs), "timed_seconds": sum(secs), "timed_tokens": sum(toks),
               "first_step_seconds": self.seconds[0] if self.seconds else None}
        if self.prof is not None:
            try:  # a profiler failure must not lose the timed steps
                out.update(_profile_of(self.prof, len(self.seconds) - self.profile_from))
            except Exception as e:  # noqa: BLE001
                out["profile"] = {"error": repr(e)}
        return out


def _profile_of(prof, steps: int) -> dict:
    rows = prof.key_averages()
    dev = lambda r: getattr(r, "self_device_time_total", 0)
    total = sum(dev(r) for r in rows) or 1
    top = sorted(rows, key=dev, reverse=True)[:15]
    return {"profile": {"steps": steps, "sort": "self device time", "device_ms_total": total / 1e3,
                        "top": [{"name": r.key[:90], "calls": r.count, "device_ms": dev(r) / 1e3, "share": dev(r) / total}
                                for r in top]},
            "profile_table": rows.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=60)}


def run_harness(cfg_over, steps: int, warmup: int, profile: int) -> dict:
    from harness.trial import loop
    from harness.train import run

    timer = StepTimer(warmup, steps if profile else None)
    inner = loop._step  # wrapped here only (bench): the loop has no per-step hook, and steps must be timed alone

    def timed(model, opt, sched, trainable, stream, items, task, pad_id, accelerator, t, res):
        before = res.tokens
        return timer.step(lambda: inner(model, opt, sched, trainable, stream, items, task, pad_id, accelerator, t,
                                        res), before, lambda: res.tokens)

    loop._step = timed
    out = tempfile.mkdtemp(prefix="bench-gpu-")
    rec = run(compose([*cfg_over, f"train.max_steps={steps + profile}", f"out_dir={out}", "study=bench_gpu"]))
    r = timer.result()
    r.update(flops_per_token=rec["train_flops"] / rec["tokens"], steps=rec["steps"],
             phase_seconds=rec["phase_seconds"], record_peak_bytes=rec["peak_memory_bytes"])
    return r


def run_trainer(cfg_over, steps: int, warmup: int, profile: int) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from harness.tasks.classify import load_splits
    from harness.trial.cost import matmul_params, train_flops
    from harness.trial.models import (
        load_tokenizer,
        quantization_config,
        resolve_targets,
        weights_path,
    )

    cfg = compose(cfg_over)
    on_gpu = cfg.hardware.device == "cuda"
    splits, tok = load_splits(cfg.data), load_tokenizer(cfg)
    qconf = quantization_config(cfg)
    model = AutoModelForSequenceClassification.from_pretrained(
        weights_path(cfg.model), num_labels=len(splits.labels), quantization_config=qconf,
        dtype=torch.float32 if qconf else torch.bfloat16, device_map={"": 0 if on_gpu else "cpu"})
    model.config.pad_token_id = tok.pad_token_id
    if qconf:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout, task_type="SEQ_CLS",
                      target_modules=resolve_targets(model, "llama", cfg.lora.targets), modules_to_save=["score"])
    model = get_peft_model(model, lora)
    rows = [dict(tok(e.text, truncation=True, max_length=cfg.model.max_length), label=e.label) for e in splits.train]
    timer, counted = StepTimer(warmup), {"tokens": 0}

    def count(module, args, kwargs):
        if module.training and kwargs.get("attention_mask") is not None:
            counted["tokens"] += int(kwargs["attention_mask"].sum())

    model.register_forward_pre_hook(count, with_kwargs=True)

    class Steps(TrainerCallback):  # step boundaries: begin -> end of one optimizer step
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 0:
                _reset_peak()
            _sync()
            self.t0, self.tok0 = time.perf_counter(), counted["tokens"]

        def on_step_end(self, args, state, control, **kw):
            _sync()
            timer.seconds.append(time.perf_counter() - self.t0)
            timer.tokens.append(counted["tokens"] - self.tok0)

    t = cfg.train
    targs = TrainingArguments(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=t.batch_size,
                              learning_rate=t.lr, warmup_steps=int(t.warmup_ratio * steps), lr_scheduler_type="linear",
                              optim="adamw_torch", max_grad_norm=t.max_grad_norm, bf16=on_gpu, use_cpu=not on_gpu,
                              gradient_checkpointing=False, report_to="none", save_strategy="no",
                              logging_strategy="no", eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True,
                              seed=cfg.seed)
    trainer = Trainer(model=model, args=targs, train_dataset=rows, data_collator=DataCollatorWithPadding(tok),
                      callbacks=[Steps()])
    trainer.train()
    r = timer.result()
    r.update(flops_per_token=train_flops(matmul_params(model), 1, False), steps=trainer.state.global_step)
    return r


VARIANTS = {"harness": run_harness, "trainer": run_trainer}


def child(variant: str, steps: int, warmup: int, profile: int, cfg_over: list[str]) -> None:
    import torch

    from harness.trial.cost import peak_memory_bytes

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = VARIANTS[variant](cfg_over, steps, warmup, profile)
    out["train_peak_mib"] = peak_memory_bytes(dev) / 2**20  # since the first step (_reset_peak)
    out["load_peak_mib"] = LOAD_PEAK.get("mib")
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(0)
    report(out)


def spawn(variant: str, args, cfg_over: list[str], profile: int = 0) -> dict:
    r, error, wall = run_child("bench.gpu", ["--child", variant, "--steps", str(args.steps), "--warmup",
                                             str(args.warmup), "--profile", str(profile), "--", *cfg_over])
    return {"error": error, "process_seconds": wall} if r is None else {**r, "process_seconds": wall}


# ---------------------------------------------------------------------------- the parent


def matmul_peak(n: int = 8192, repeats: int = 10) -> dict:
    """bf16 n^3 matmul FLOP/s: the mean of `repeats` timed products after three warm-ups (random data)."""
    import torch

    if not torch.cuda.is_available():
        return {"n": n, "tflops": None, "note": "no CUDA device"}
    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / repeats
    del a, b
    torch.cuda.empty_cache()
    return {"n": n, "seconds": seconds, "tflops": 2 * n**3 / seconds / 1e12}


def fixed_cost(args, cfg_over: list[str], steps: int = 5) -> dict:
    """Issue #12: one trial cold (fresh `python -m harness.train`) vs the same trial second in a warm worker."""
    from harness.runners.process import ProcessRunner
    from harness.record import TrialRecord, read_record, trial_dir
    from harness.study.outcome import classify
    from harness.runners.warm import WarmRunner

    out = tempfile.mkdtemp(prefix="bench-gpu-warm-")
    rows = []

    def one(runner, trial: int, how: str):
        cfg = compose([*cfg_over, f"train.max_steps={steps}", f"out_dir={out}", "study=gpu_warm", f"trial={trial}"])
        d = trial_dir(cfg.out_dir, cfg.study, cfg.trial)
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        o = classify(runner.run(cfg, d, 0, lambda pid: None, lambda: None, 1.0), ["accuracy"])
        wall = time.perf_counter() - t0
        rec = read_record(d / "result.json") or TrialRecord(status="failed")
        ph = rec.phase_seconds
        work = sum(ph.get(k, 0) for k in ("train", "eval", "final_eval", "baseline"))
        rows.append({"how": how, "trial": trial, "state": o.state, "wall_seconds": wall, "phase_seconds": ph,
                     "fixed_seconds": wall - work, "accuracy": rec.accuracy,
                     "adapter_checksums": rec.adapter_checksums})

    one(ProcessRunner(1), 0, "cold")
    warm = WarmRunner(1)
    try:
        one(warm, 1, "warm, first trial")
        one(warm, 2, "warm, second trial")
    finally:
        warm.close()
    return {"steps": steps, "rows": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="tiny_llama, seq 64, a few steps (a dry run)")
    ap.add_argument("--model", default="llama_1b_random")
    ap.add_argument("--seq", type=int, default=512, help="tokens per example (all examples this long: no padding)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per run (the first --warmup not timed)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--profile", type=int, default=3, help="steps profiled after the timed ones (NF4 harness run)")
    ap.add_argument("--parts", default="throughput,fixed", help="throughput,fixed")
    ap.add_argument("--variants", default="harness:nf4,trainer:nf4,harness:none,trainer:none")
    ap.add_argument("--out", default=None, help="also copy the JSON here (e.g. $OUT)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.steps, args.warmup, args.profile, args.overrides)
        return 0
    if args.quick:
        args.model, args.seq, args.batch, args.steps, args.warmup = "tiny_llama", 30, 4, 6, 2
    data = write_data(Path(tempfile.mkdtemp(prefix="bench-gpu-data-")) / "long.jsonl",
                      args.batch * (args.steps + 4) + 16, args.seq - 2)
    parts = args.parts.split(",")
    payload = {"parts": parts, "model": args.model, "seq": args.seq, "batch": args.batch, "steps": args.steps,
               "warmup": args.warmup,
               "matmul": matmul_peak() if args.device == "cuda" and "throughput" in parts else None}
    peak = (payload["matmul"] or {}).get("tflops")
    name = ({"throughput": "throughput_gpu", "fixed": "warm_gpu"}[parts[0]] if len(parts) == 1 else "gpu")
    name += ".cpu" if args.device == "cpu" else ""  # a dry run never replaces a GPU result

    def flush():
        path = save(name, payload, args.quick)
        if args.out:
            Path(args.out, path.name).write_text(path.read_text())
        return path

    if peak:
        print(f"bf16 {payload['matmul']['n']}^3 matmul: {peak:.0f} TFLOP/s", flush=True)
    if "throughput" in parts:
        rows = payload.setdefault("rows", [])
        for v in args.variants.split(","):
            variant, quant = v.split(":")
            r = spawn(variant, args, overrides(args, quant, data), args.profile if v == "harness:nf4" else 0)
            r.update(variant=variant, quant=quant)
            if "error" not in r:
                r["tokens_per_second"] = r["timed_tokens"] / r["timed_seconds"]
                r["tflops"] = r["tokens_per_second"] * r["flops_per_token"] / 1e12
                r["mfu"] = r["tflops"] / peak if peak else None
                print(f"{variant:8s} {quant:4s} {r['tokens_per_second']:9.0f} tok/s  {r['tflops']:.1f} TFLOP/s  "
                      f"MFU {r['mfu'] if r['mfu'] is None else round(100 * r['mfu'], 1)}%  "
                      f"peak {r['train_peak_mib']:.0f} MiB  ({r['process_seconds']:.0f} s process)", flush=True)
                if r.get("profile_table"):
                    print(r.pop("profile_table"), flush=True)
            else:
                print(f"{variant} {quant} FAILED: {r['error'][-1500:]}", flush=True)
            rows.append(r)
            flush()
        cols = ["variant", "quant", "tokens_per_second", "tflops", "mfu", "train_peak_mib", "load_peak_mib",
                "first_step_seconds", "process_seconds"]
        print(table([r for r in rows if "error" not in r], cols))
    if "fixed" in parts:
        try:
            payload["fixed_cost"] = fixed_cost(args, overrides(args, "nf4", data))
            for r in payload["fixed_cost"]["rows"]:
                print(f"{r['how']:20s} {r['state']:9s} wall {r['wall_seconds']:6.1f} s  fixed {r['fixed_seconds']:6.1f} s"
                      f"  phases {r['phase_seconds']}", flush=True)
        except Exception as e:  # noqa: BLE001 - the throughput rows above are kept either way
            payload["fixed_cost"] = {"error": repr(e)}
            print(f"fixed cost FAILED: {e!r}", flush=True)
    print(f"wrote {flush()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
