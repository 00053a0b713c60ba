"""Training throughput of a harness trial vs the plain Hugging Face loops users write by hand.

    python -m bench.throughput                        # MiniLM (classification): harness vs Trainer
    python -m bench.throughput --model smollm2_135m   # Llama backbone: harness vs Trainer vs SFTTrainer
    python -m bench.throughput --quick                # tiny_bert, a few steps (smoke test)

What is compared. The harness trains sequence classification. TRL's SFTTrainer only trains causal
LMs (its loss is a fused LM head over the vocabulary), so it cannot run the MiniLM default at all.
The like-for-like anchor is therefore HF `Trainer` on the same AutoModelForSequenceClassification;
on a decoder model (`--model smollm2_135m`/`tiny_llama`) SFTTrainer also runs, on the same sentences
written as prompt/completion pairs ("Review: ... Sentiment:" -> " positive"), which adds a few
template tokens and the LM head over the vocabulary (SmolLM2: 49,152 x 576, ~28M MACs per token on
top of ~106M in the backbone), so its tokens/s is a slightly harsher yardstick for it.

Held equal: the base weights file, NF4 + double-quant base with fp32 compute (the CPU setting:
bf16 4-bit matmuls are ~20x slower here), LoRA r/alpha/dropout on the same resolved modules, the
classification head trained in full, batch size, steps, lr schedule, torch threads, no gradient
checkpointing, no eval and no logging in the timed loop. SFTTrainer defaults that would break that
are overridden: use_cpu=True, bf16=False, gradient_checkpointing=False, and it casts QLoRA adapter
weights to bf16, which is cast back to fp32. The plain loops keep their own data pipeline
(DataCollatorWithPadding: pad to the longest of a random batch); the harness groups by length.

The anchors at their best settings (issue 12), each beside its unbucketed form: `trainer_grouped` is
Trainer with its own length grouping (`train_sampling_strategy="group_by_length"`, transformers 5's name
for `group_by_length=True`); `sft_best` is SFTTrainer with `padding_free=True` (the batch's examples in
one row with position_ids and no padding; on CPU, sdpa gets a block-diagonal mask built from the
position_ids, so examples do not attend across: same loss as the padded batch). `sft_packed`
(packing_strategy="bfd", padding-free too) is available but not a default: it packs examples into
max_length rows, so a batch of 16 rows holds more examples and the batch size is no longer equal.

Each run is a fresh subprocess (peak memory = that process's peak RSS); variants are interleaved
(A B C A B C ...) and medians are reported. Throughput = non-padding training tokens / seconds of
the training loop (harness: its own `phase_seconds.train`; Trainer: on_train_begin -> on_train_end).
"""
from __future__ import annotations

import argparse
import functools
import itertools
import os
import tempfile
import time

from bench.common import QUICK, compose, median, report, run_child, save, table



def _base(args) -> list[str]:
    if args.quick:
        return list(QUICK)
    return [f"model={args.model}"] + ([f"model.max_length={args.max_length}"] if args.max_length else [])


# ---------------------------------------------------------------------------- the variants (child processes)


def run_harness(cfg, steps: int) -> dict:
    from harness.train import run

    out = tempfile.mkdtemp(prefix="bench-tp-")
    rec = run(compose([*cfg, f"train.max_steps={steps}", "train.eval_every=0", "eval.baseline=false",
                       "eval.max_examples=16", "tracking.mode=disabled", f"out_dir={out}", "study=bench_tp"]))
    return {"tokens": rec["tokens"], "padded_tokens": rec["padded_tokens"], "examples": rec["examples_seen"],
            "train_seconds": rec["phase_seconds"]["train"], "steps": rec["steps"]}


def _plain_setup(cfg_over: list[str]):
    """What a user writes by hand: the same weights, NF4 config and LoRA modules, no harness loop."""
    import torch
    from transformers import BitsAndBytesConfig

    from harness.data.load import load_splits
    from harness.trial.models import weights_path
    from harness.config.presets import head_names

    cfg = compose(cfg_over)
    torch.set_num_threads(cfg.hardware.threads or os.cpu_count() or 1)  # as the harness: all cores, 1 process
    splits = load_splits(cfg.data)
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=torch.float32, llm_int8_skip_modules=head_names(cfg.model.family))
    return cfg, splits, weights_path(cfg.model), bnb


class _Counting:
    """Counts the non-padding tokens that reach the model's forward in training (a collator count
    would also include the batch Trainer fetches ahead)."""

    def __init__(self, model):
        self.tokens = self.padded = self.examples = 0
        model.register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        mask, pos = kwargs.get("attention_mask"), kwargs.get("position_ids")
        if module.training and mask is not None:
            self.tokens += int(mask.sum())
            self.padded += mask.numel()
            self.examples += mask.shape[0]
        elif module.training and pos is not None:  # TRL padding-free: one flat row, no mask, a 0 starts each example
            self.tokens += pos.numel()
            self.padded += pos.numel()
            self.examples += int((pos == 0).sum())


def _timer():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            self.seconds = time.perf_counter() - self.t0

    return Timer()


def _train_args(cls, cfg, steps: int, out: str, **extra):
    t = cfg.train
    return cls(output_dir=out, max_steps=steps, per_device_train_batch_size=t.batch_size, learning_rate=t.lr,
               warmup_steps=int(t.warmup_ratio * steps), weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
               lr_scheduler_type="linear", use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
               report_to="none", save_strategy="no", logging_strategy="no", eval_strategy="no",
               dataloader_num_workers=0, disable_tqdm=True, seed=cfg.seed, **extra)


def _lora(cfg, model, task):
    from peft import LoraConfig

    from harness.trial.models import resolve_targets
    from harness.config.presets import head_names

    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=resolve_targets(model, cfg.model.family, cfg.lora.targets), task_type=task,
                      modules_to_save=head_names(cfg.model.family) if task == "SEQ_CLS" else None)


def run_trainer(cfg_over, steps: int, sampling: str = "random") -> dict:
    """sampling: "random" (Trainer's default), "group_by_length" (its own length grouping; transformers 5
    renamed `group_by_length=True` to `train_sampling_strategy="group_by_length"`: LengthGroupedSampler,
    mega-batches of 50 batches sorted by length, lengths read from input_ids before training starts, so
    outside the timed loop), or "harness" (a diagnostic, not an anchor setting: the harness's own batches,
    so both loops compute on the same tensors and only the per-step cost differs)."""
    import torch
    from datasets import Dataset
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    cfg, splits, path, bnb = _plain_setup(cfg_over)
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(splits.labels), dtype=torch.float32,
                                                               quantization_config=bnb, device_map={"": "cpu"})
    model.config.pad_token_id = tok.pad_token_id
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, _lora(cfg, model, "SEQ_CLS"))
    ds = Dataset.from_dict({"text": [e.text for e in splits.train], "label": [e.label for e in splits.train]})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=cfg.model.max_length), batched=True,
                remove_columns=["text"])
    timer = _timer()
    cls, extra = Trainer, {"train_sampling_strategy": sampling} if sampling == "group_by_length" else {}
    if sampling == "harness":
        from harness.trial.loop import train_batches

        stream = train_batches([{"input_ids": i} for i in ds["input_ids"]], cfg.train.batch_size, cfg.seed, True)
        order = [i for b in itertools.islice(stream, steps) for i in b]

        class SameBatches(Trainer):
            def _get_train_sampler(self, train_dataset=None):  # private: Trainer takes no sampler argument
                return order
        cls = SameBatches
    trainer = cls(model=model, args=_train_args(TrainingArguments, cfg, steps, tempfile.mkdtemp(), **extra),
                      train_dataset=ds, data_collator=DataCollatorWithPadding(tok), callbacks=[timer])
    collator = _Counting(trainer.model)
    trainer.train()
    return {"tokens": collator.tokens, "padded_tokens": collator.padded, "examples": collator.examples,
            "train_seconds": timer.seconds, "steps": trainer.state.global_step}


def run_sft(cfg_over, steps: int, mode: str = "padded") -> dict:
    """mode: "padded" (SFTTrainer's defaults), "padding_free" (the batch's examples concatenated into one
    row, no padding; on CPU the sdpa mask is built block-diagonal from position_ids by transformers'
    masking_utils, so examples do not attend across), or "packed" (packing_strategy="bfd", which implies
    padding_free in TRL 1.16, but packs examples into max_length rows, so a batch holds more examples)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    cfg, splits, path, bnb = _plain_setup(cfg_over)
    if cfg.model.family != "llama":
        raise SystemExit(f"SFTTrainer trains causal LMs only; {cfg.model.name} is a {cfg.model.family} encoder")
    tok = AutoTokenizer.from_pretrained(path)
    tok.eos_token = tok.eos_token or tok.sep_token  # the tiny fixtures' word-level tokenizer has no EOS
    tok.pad_token = tok.pad_token or tok.eos_token
    bnb.llm_int8_skip_modules = None  # no classification head here
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, quantization_config=bnb,
                                                 device_map={"": "cpu"})
    lora = _lora(cfg, model, "CAUSAL_LM")
    texts = [e.text for e in splits.train]
    if mode == "padding_free":  # TRL refuses max_length with padding_free alone: cut the review as `padded` would
        ids = tok(texts, truncation=True, max_length=cfg.model.max_length, add_special_tokens=False)["input_ids"]
        texts = [tok.decode(i) if len(i) == cfg.model.max_length else t for i, t in zip(ids, texts)]
    ds = Dataset.from_dict({"prompt": [f"Review: {t}\nSentiment:" for t in texts],
                            "completion": [f" {splits.labels[e.label]}" for e in splits.train]})
    timer = _timer()
    extra = {"padded": {"max_length": cfg.model.max_length + 8},
             "padding_free": {"max_length": None, "padding_free": True},
             "packed": {"max_length": cfg.model.max_length + 8, "packing": True, "packing_strategy": "bfd"}}[mode]
    sargs = _train_args(SFTConfig, cfg, steps, tempfile.mkdtemp(), **extra)
    trainer = SFTTrainer(model=model, args=sargs, train_dataset=ds, processing_class=tok, peft_config=lora,
                         callbacks=[timer])
    for p in trainer.model.parameters():  # SFTTrainer casts QLoRA adapters to bf16; keep fp32 like the others
        if p.requires_grad:
            p.data = p.data.float()
    collator = _Counting(trainer.model)
    trainer.train()
    return {"tokens": collator.tokens, "padded_tokens": collator.padded, "examples": collator.examples,
            "train_seconds": timer.seconds, "steps": trainer.state.global_step}


VARIANTS = {"harness": run_harness, "trainer": run_trainer, "sft": run_sft,
            # the anchors at their best settings (issue 12): length grouping, padding-free, packing
            "trainer_grouped": functools.partial(run_trainer, sampling="group_by_length"),
            "trainer_same_batches": functools.partial(run_trainer, sampling="harness"),  # a diagnostic
            "sft_best": functools.partial(run_sft, mode="padding_free"),
            "sft_packed": functools.partial(run_sft, mode="packed")}


def child(variant: str, cfg_over: list[str], steps: int) -> None:
    import torch

    from harness.trial.cost import peak_memory_bytes

    out = VARIANTS[variant](cfg_over, steps)
    out["peak_rss_mib"] = peak_memory_bytes(torch.device("cpu")) / 2**20
    out["torch_threads"] = torch.get_num_threads()
    report(out)


# ---------------------------------------------------------------------------- the parent


def measure(variant: str, cfg_over: list[str], steps: int) -> dict:
    """One run in a fresh process. A variant may carry config overrides: `harness+hardware.threads=2`."""
    name, *extra = variant.split("+")
    r, error, wall = run_child("bench.throughput", ["--child", name, "--steps", str(steps), "--", *cfg_over, *extra])
    if r is None:
        raise RuntimeError(f"{variant} failed ({error})")
    r.update(variant=variant, process_seconds=wall, tokens_per_second=r["tokens"] / r["train_seconds"],
             examples_per_second=r["examples"] / r["train_seconds"], step_seconds=r["train_seconds"] / r["steps"],
             padding_share=1 - r["tokens"] / r["padded_tokens"])
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default="minilm", help="minilm | smollm2_135m | tiny_llama | tiny_bert")
    ap.add_argument("--max-length", type=int, default=None)
    ap.add_argument("--variants", default=None,
                    help="comma list of harness,trainer,trainer_grouped,sft,sft_best,sft_packed, each optionally with +key=value overrides "
                         "(e.g. harness+hardware.threads=2); default: all that apply")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for every variant (hardware.threads); 1 by default: see BENCHMARKS.md")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.overrides, args.steps)
        return 0
    cfg_over = _base(args) + ([f"hardware.threads={args.threads}"] if args.threads else [])
    family = compose(cfg_over).model.family
    variants = (args.variants.split(",") if args.variants
                else ["harness", "trainer", "trainer_grouped"] + (["sft", "sft_best"] if family == "llama" else []))
    steps = args.steps or (3 if args.quick else 30 if family == "bert" else 8)
    repeats = args.repeats or (1 if args.quick else 3)
    runs = []
    for rep in range(repeats):  # interleaved: A B C A B C ...
        for v in variants:
            r = measure(v, cfg_over, steps)
            r["repeat"] = rep
            runs.append(r)
            print(f"[{rep + 1}/{repeats}] {v:8s} {r['tokens_per_second']:8.0f} tok/s  {r['step_seconds']:.3f} s/step  "
                  f"peak {r['peak_rss_mib']:.0f} MiB", flush=True)
    rows = []
    ref = median([r["tokens_per_second"] for r in runs if r["variant"] == "harness"])
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        tps = median([r["tokens_per_second"] for r in rs])
        rows.append({"variant": v, "repeats": len(rs), "tokens_per_second": tps,
                     "examples_per_second": median([r["examples_per_second"] for r in rs]),
                     "step_seconds": median([r["step_seconds"] for r in rs]),
                     "padding_share": median([r["padding_share"] for r in rs]),
                     "peak_rss_mib": median([r["peak_rss_mib"] for r in rs]),
                     "process_seconds": median([r["process_seconds"] for r in rs]),
                     "harness_speedup": ref / tps})
    cols = ["variant", "repeats", "tokens_per_second", "examples_per_second", "step_seconds", "padding_share",
            "peak_rss_mib", "process_seconds", "harness_speedup"]
    print(f"model {args.model if not args.quick else 'tiny_bert'}, {steps} steps x batch "
          f"{compose(cfg_over).train.batch_size}, medians of {repeats} interleaved repeats")
    print(table(rows, cols))
    name = "throughput" + ("" if args.quick or args.model == "minilm" else f"_{args.model}")
    path = save(name, {"model": args.model, "steps": steps, "overrides": cfg_over, "columns": cols, "rows": rows,
                       "runs": runs}, args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
