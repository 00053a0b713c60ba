"""LoRA target presets per architecture family, and the heads kept out of quantization.

A static table (no torch import), so the config schema checks `lora.targets` in milliseconds;
harness/models.py resolves the presets against a loaded model.
"""
from __future__ import annotations


class ModelError(ValueError):
    """A model or adapter setting that cannot work with this model."""


# Target presets per architecture family: regexes searched in full module names. Named presets,
# not lists, keep Optuna's categorical choices plain values.
_BERT = {
    "attn_qv": r"attention\.self\.(query|value)$",
    "attn": r"attention\.(self\.(query|key|value)|output\.dense)$",
    "mlp": r"layer\.\d+\.(intermediate|output)\.dense$",
}
_LLAMA = {
    "attn_qv": r"self_attn\.(q|v)_proj$",
    "attn": r"self_attn\.(q|k|v|o)_proj$",
    "mlp": r"mlp\.(gate|up|down)_proj$",
}
PRESETS = {
    fam: {**p, "all_linear": f"({p['attn']})|({p['mlp']})"} for fam, p in {"bert": _BERT, "llama": _LLAMA}.items()
}
# The classification head is new and trained in full: keep it out of quantization. A causal LM
# keeps its pretrained output layer; transformers' own default already leaves lm_head unquantized.
HEADS = {"bert": ["classifier"], "llama": ["score"]}


def heads(cfg) -> list[str] | None:
    return HEADS[cfg.model.family] if cfg.task.type == "classification" else None


def check_targets(family: str, targets) -> None:
    """Static check (no model loaded): a preset name must exist for the family."""
    if isinstance(targets, str) and targets not in PRESETS[family]:
        raise ModelError(
            f"lora.targets={targets!r} is not a preset for {family} models; "
            f"presets: {sorted(PRESETS[family])} (or give a list of module names)")
