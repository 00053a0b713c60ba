"""What a trial keeps: its PEFT adapter in trials/<n>/adapter/ (what a study keeps of them: harness/study/keep.py).

trials/<n>/adapter/ holds what `peft.PeftModel.from_pretrained(base, dir)` loads: adapter_model.safetensors
(the LoRA matrices and, for classification, the trained head: peft saves modules_to_save with the
adapter), adapter_config.json (base_model_name_or_path = the unquantized base), the tokenizer, and
harness_adapter.json (task, labels, base, quantization: what `python -m harness.export` needs).

train.save_adapter: all (every trial keeps its adapter; the default of a single run), best (each
trial saves, and at the end of the study (or of each resume) only the best configuration's seeds
keep theirs; the default in a study), none. Best is report.best_configuration's: the highest mean of
the first objective over seeds, ties to lower FLOPs. Each trial's config.yaml and result.json are
attached to its Optuna trial with optuna.artifacts (stored under runs/<study>/artifacts/), and a kept
adapter's weights (under 50 MB) to the study, so optuna-dashboard shows them.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.record import ADAPTER, META, adapter_policy as policy


def save(model, tokenizer, run_dir: Path, cfg, labels: list[str] | None = None) -> Path | None:
    """Write trials/<n>/adapter/ (main process only; model unwrapped from DDP). None when nothing is
    kept: save_adapter=none, or method head_only/full (no PEFT adapter: their weights are the model)."""
    if policy(cfg) == "none" or cfg.method != "lora":
        return None
    from harness.trial.models import weights_path

    out = Path(run_dir) / ADAPTER
    base = weights_path(cfg.model)
    for pcfg in model.peft_config.values():  # the CPU 4-bit path loads a quantized copy: name the original
        pcfg.base_model_name_or_path = base
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {"task": cfg.task.type, "labels": labels, "base": base, "revision": cfg.model.revision,
            "family": cfg.model.family, "quant": cfg.quant.mode, "study": cfg.study, "trial": cfg.trial}
    (out / META).write_text(json.dumps(meta, indent=1) + "\n")
    return out
