"""Base model (+ bitsandbytes quantization) and peft LoRA adapters; target-module presets.

Where the base weights come from (model.source):
  package       a directory inside an installed Python package (the embedded MiniLM)
  gguf_package  a GGUF file inside an installed package, de-quantized once into a safetensors
                copy under the cache dir (the embedded SmolLM2), so later trials load in seconds
  hub           a Hugging Face hub id (users with internet)
  tiny          random weights built from model.tiny, saved once to the cache (tests)
Every source ends as a local directory (or hub id) loaded by the same `from_pretrained` call with
the same BitsAndBytesConfig, so tests exercise the quantization path users run.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from harness.data.load import tiny_vocab
from harness.data.sources import cache_dir, package_dir

# The target presets, the head names and ModelError live in harness/config/presets.py (no torch): the
# config schema checks a preset name without importing torch.
from harness.config.lora import peft_targets
from harness.config.presets import PRESETS, ModelError, check_targets, head_names, heads


def _linear_names(model) -> list[str]:
    import bitsandbytes as bnb

    kinds = (torch.nn.Linear, bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    return [n for n, m in model.named_modules() if isinstance(m, kinds)]


def _preset_pattern(family: str, preset: str) -> re.Pattern | None:
    """A preset as a regex over full module names; None for PEFT's all-linear on other families."""
    if preset in PRESETS.get(family, {}):
        return re.compile(PRESETS[family][preset])
    if preset == "peft_default":  # PEFT's per-model-type list: leaf names (q_proj, c_attn, query, ...)
        return re.compile(r"(^|\.)(" + "|".join(map(re.escape, peft_targets(family))) + r")$")
    return None  # all_linear for a family without our regexes: every Linear but heads and the output layer


def resolve_targets(model, family: str, targets) -> list[str]:
    """Preset or module names -> the full names of the Linear modules that get adapters."""
    out_layer = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = [n for n in _linear_names(model)
             if not any(n.split(".")[0] == h or n.startswith(h) for h in head_names(family))
             and (out_layer is None or model.get_submodule(n) is not out_layer)]
    if isinstance(targets, str):
        check_targets(family, targets)
        pattern = _preset_pattern(family, targets)
        picked = [n for n in names if pattern is None or pattern.search(n)]
    else:
        picked, unknown = [], []
        for t in targets:
            hit = [n for n in names if n == t or n.endswith("." + t)]
            (picked.extend(hit) if hit else unknown.append(t))
        if unknown:
            leaves = sorted({re.sub(r"^.*?\.\d+\.", "", n) for n in names})
            raise ModelError(f"lora.targets {unknown} match no Linear module of this model; it has: {leaves}")
    if not picked:
        raise ModelError(f"lora.targets={targets!r} matched no module of this model")
    return sorted(set(picked))


# ---------------------------------------------------------------------------- weights on disk


def _save_once(out: Path, *parts) -> Path:
    """save_pretrained each part into a private directory, then rename it into place: concurrent
    trials never load a half-written cache, and the loser of a race drops its copy."""
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    for part in parts:
        part.save_pretrained(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _tiny_dir(mcfg) -> Path:
    """Random-weight model + word-level tokenizer built from config, saved once (keyed by config)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import AutoConfig, AutoModel, PreTrainedTokenizerFast

    spec = dict(mcfg.tiny)
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_dir() / "models" / f"tiny-{key}"
    if (out / "config.json").is_file():
        return out
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + tiny_vocab())}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]")
    model_type = spec.pop("model_type")
    # a real model's vocab_size (llama_1b_random) keeps its embedding/lm_head cost; the word-level
    # tokenizer only ever emits the first len(vocab) ids
    vocab_size = max(spec.pop("vocab_size", 0), len(vocab))
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, pad_token_id=0, **spec)
    with torch.random.fork_rng(devices=[]):  # building the cache must not reset the trial's seeded RNG
        torch.manual_seed(0)
        model = AutoModel.from_config(config)
    return _save_once(out, model, fast)


def _gguf_dir(mcfg) -> Path:
    """De-quantize the packaged GGUF into safetensors once (12-18 s); later loads take seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pkg, rel = mcfg.path.split("/", 1)
    gguf = package_dir(pkg) / rel
    if not gguf.is_file():
        raise ModelError(f"{gguf} not found; run the README setup (make setup)")
    out = cache_dir() / "models" / mcfg.name
    if (out / "config.json").is_file():
        return out
    print(f"[harness] converting {gguf.name} to safetensors in {out} (once, ~15 s)", flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are de-quantized fp32 now, but transformers still marks the model as GGUF-quantized
    # and refuses to save it; drop the marker so the copy loads as a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return _save_once(out, model, tok)


def weights_path(mcfg) -> str:
    if mcfg.source == "tiny":
        return str(_tiny_dir(mcfg))
    if mcfg.source == "gguf_package":
        return str(_gguf_dir(mcfg))
    if mcfg.source == "package":
        pkg, _, rel = mcfg.path.partition("/")
        path = package_dir(pkg) / rel
        if not (path / "config.json").is_file():
            raise ModelError(f"no config.json in {path}; run the README setup (make setup)")
        return str(path)
    return mcfg.path  # hub id


# ---------------------------------------------------------------------------- build

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def quantization_config(cfg):
    from transformers import BitsAndBytesConfig

    q = cfg.quant
    skip = heads(cfg)  # None: transformers' default (lm_head and tied embeddings stay unquantized)
    fsdp = cfg.hardware.strategy == "fsdp"
    if q.mode in ("nf4", "fp4"):
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q.mode,
                                  bnb_4bit_use_double_quant=q.double_quant,
                                  bnb_4bit_compute_dtype=_DTYPES[q.compute_dtype],
                                  # FSDP shards float tensors only: store the 4-bit bytes as the
                                  # compute dtype so it can flatten them with the LoRA weights
                                  bnb_4bit_quant_storage=_DTYPES[q.compute_dtype] if fsdp else torch.uint8,
                                  llm_int8_skip_modules=skip)
    if q.mode == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return None


@contextmanager
def _hub_errors(m):
    """from_pretrained's OSError for a hub id (offline and not cached, no such repo) as one ModelError
    line. `python -m harness` checks the id before compute (harness/cli/preflight.py); this covers a trial
    started from its config file."""
    try:
        yield
    except OSError as e:
        if m.source != "hub":
            raise
        from huggingface_hub.constants import HF_HUB_OFFLINE

        from harness.data.sources import hub_hint

        raise ModelError(f"{hub_hint(m.path, HF_HUB_OFFLINE)} ({str(e).strip().splitlines()[0]})") from None


def load_tokenizer(cfg):
    from transformers import AutoTokenizer

    m = cfg.model
    with _hub_errors(m):
        tok = AutoTokenizer.from_pretrained(weights_path(m), revision=m.revision, trust_remote_code=m.trust_remote_code)
    if tok.pad_token is None:  # decoder LMs ship without one; EOS is the usual stand-in
        tok.pad_token = tok.eos_token
    return tok


def disable_avx512bf16_repack(model) -> int:
    """bitsandbytes 0.50.2 on AVX512-BF16 CPUs repacks 4-bit weights on the first eval-mode forward,
    after which LoRA gradients are silently wrong (up to 96%). Turn the repack off per layer."""
    import bitsandbytes as bnb

    n = 0
    for mod in model.modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            mod.support_avx512bf16_for_cpu = False
            n += 1
    return n


def _quantized_dir(cfg, num_labels: int, device) -> Path:
    """A saved copy of the already-quantized backbone (no head), built once per weights + quant
    setting. On CPU, bitsandbytes quantizes with plain torch ops: MiniLM's 37 Linear layers take
    ~5 s of every trial's load (17 s with the box loaded), reading the saved 4-bit copy well under
    1 s. The copy holds exactly the weights a fresh quantization gives (NF4 is deterministic), and
    the head is left out so each trial initialises it from its own seed as before."""
    from transformers import AutoModelForSequenceClassification, __version__ as tf_version
    import bitsandbytes as bnb

    m, q = cfg.model, cfg.quant
    src = weights_path(m)
    spec = {"src": src, "revision": m.revision, "mode": q.mode, "double_quant": q.double_quant,
            "compute_dtype": q.compute_dtype, "bnb": bnb.__version__, "transformers": tf_version}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_dir() / "models" / f"{m.name}-{q.mode}-{key}"
    if (out / "config.json").is_file():
        return out
    with torch.random.fork_rng(devices=[]), _hub_errors(m):  # the throwaway head init must not shift the RNG
        model = AutoModelForSequenceClassification.from_pretrained(
            src, num_labels=num_labels, revision=m.revision, trust_remote_code=m.trust_remote_code,
            quantization_config=quantization_config(cfg), dtype=torch.float32, device_map={"": device})
    _save_once(out, getattr(model, model.base_model_prefix))
    return out


def load_base(cfg, num_labels: int, device: str | int, tokenizer):
    """The quantized base model, ready for adapters: with a new classification head of num_labels
    (task=classification), or the causal LM with its own output layer (task=sft; num_labels unused)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    m = cfg.model
    qconf = quantization_config(cfg)
    dtype = torch.float32 if qconf is not None else _DTYPES[cfg.quant.compute_dtype]
    if cfg.task.type == "classification":
        auto, extra = AutoModelForSequenceClassification, {"num_labels": num_labels}
    else:
        auto, extra = AutoModelForCausalLM, {}
    src = {"pretrained_model_name_or_path": weights_path(m), "revision": m.revision, "quantization_config": qconf}
    if qconf is not None and cfg.hardware.device == "cpu" and cfg.task.type == "classification":
        # no quantization_config argument at all (even None would override the one saved with the copy)
        src = {"pretrained_model_name_or_path": str(_quantized_dir(cfg, num_labels, device))}
    with _hub_errors(m):
        model = auto.from_pretrained(**src, trust_remote_code=m.trust_remote_code, dtype=dtype,
                                     device_map={"": device}, **extra)
    model.config.pad_token_id = tokenizer.pad_token_id
    disable_avx512bf16_repack(model)
    return model


def lora_kwargs(cfg) -> dict:
    """cfg.lora as LoraConfig keyword arguments (target_modules aside): our four names in PEFT's
    spelling, every other field as given (the schema checked the names against LoraConfig)."""
    from omegaconf import OmegaConf

    lora = OmegaConf.to_container(cfg.lora, resolve=True) if not isinstance(cfg.lora, dict) else dict(cfg.lora)
    # an unset peft field (None) is left out, so peft's own default applies (megatron_core, loftq_config, ...)
    kw = {k: v for k, v in lora.items() if k not in ("r", "alpha", "dropout", "targets") and v is not None}
    kw.update(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"])
    head = heads(cfg) or []
    saved = [*head, *(m for m in kw.pop("modules_to_save", None) or [] if m not in head)]
    return {**kw, "modules_to_save": saved or None}


def add_adapters(model, cfg):
    """k-bit preparation, then LoRA on the resolved targets; a classification head trains in full."""
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    gc = cfg.train.gradient_checkpointing
    if cfg.quant.mode != "none":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gc, gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gc:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = resolve_targets(model, cfg.model.family, cfg.lora.targets)
    set_seed(cfg.seed)  # LoRA A init and the new head are otherwise unseeded
    lcfg = LoraConfig(target_modules=targets, **lora_kwargs(cfg),
                      task_type=TaskType.SEQ_CLS if cfg.task.type == "classification" else TaskType.CAUSAL_LM)
    model = get_peft_model(model, lcfg)
    return model, targets


# ---------------------------------------------------------------------------- reference arms
# The three options of fine-tuning lecture notes, as `method=`: lora (PEFT, the default), head_only
# (frozen base, trained head: the linear probe) and full (every weight trained; quant=none).


def train_head_only(model, cfg):
    """Freeze the base, train the new classification head in full: the linear probe."""
    names = head_names(cfg.model.family)
    for name, p in model.named_parameters():
        p.requires_grad = name.split(".")[0] in names
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelError(f"method=head_only found no head {names} in {cfg.model.name}")
    return model, []


def train_full(model, cfg):
    """Every weight trained (a full fine-tune); the config check keeps this to quant=none."""
    for p in model.parameters():
        p.requires_grad = True
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]


def prepare(model, cfg):
    """The trained part for cfg.method: LoRA adapters, the head alone, or everything.
    Returns (model, names of the modules whose weights train beyond the head)."""
    if cfg.method == "head_only":
        return train_head_only(model, cfg)
    if cfg.method == "full":
        return train_full(model, cfg)
    return add_adapters(model, cfg)
