"""LoRA target presets per architecture family, and the heads kept out of quantization.

A static table (no torch import), so the config schema checks `lora.targets` in milliseconds;
harness/trial/models.py resolves the presets against a loaded model.

bert and llama have our regex presets (attn_qv, attn, mlp, all_linear). Any other model type PEFT
knows (model.family = a transformers model_type: qwen2, mistral, gpt2, t5, ...) gets two presets
derived from PEFT: `peft_default` (PEFT's per-model-type target modules) and `all_linear` (PEFT's
"all-linear": every Linear layer but the output layer); bert and llama get `peft_default` too.
"""
from __future__ import annotations

from harness.config.lora import model_types, peft_targets


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
# Other families: transformers names the sequence-classification head one of these two
OTHER_HEADS = ["classifier", "score"]
# encoder-only families: no causal LM head, so no task=sft
ENCODERS = {"bert", "roberta", "xlm-roberta", "distilbert", "deberta", "deberta-v2", "electra", "albert", "layoutlm"}


def families() -> list[str]:
    return sorted({*PRESETS, *model_types()})


def head_names(family: str) -> list[str]:
    # a copy: peft appends its default head names to the modules_to_save list it is given
    return list(HEADS.get(family, OTHER_HEADS))


def heads(cfg) -> list[str] | None:
    return head_names(cfg.model.family) if cfg.task.type == "classification" else None


def presets_of(family: str) -> list[str]:
    """The preset names that resolve for a family."""
    derived = (["peft_default"] if peft_targets(family) else []) + ["all_linear"]
    return sorted({*PRESETS.get(family, {}), *derived})


def check_family(family: str) -> None:
    if family not in families():
        import difflib

        close = difflib.get_close_matches(family, families(), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ModelError(f"model.family={family!r} is neither bert, llama nor a model type PEFT knows; {hint}"
                         "it is the transformers model_type (config.json's \"model_type\")")


def check_targets(family: str, targets) -> None:
    """Static check (no model loaded): a preset name must exist for the family."""
    check_family(family)
    if isinstance(targets, str) and targets not in presets_of(family):
        raise ModelError(
            f"lora.targets={targets!r} is not a preset for {family} models; "
            f"presets: {presets_of(family)} (or give a list of module names)")
