"""The schema's dotted keys, for "did you mean" on an unknown key (`lora.rank=16` -> `lora.r`).

Hydra answers an unknown key with "use +lora.rank=16", and following that hint ends at the
schema's "Extra inputs are not permitted": a dead end. Both now name the key the user meant,
from the schema itself (config.py) and from the names other libraries use for the same thing.
"""
from __future__ import annotations

import difflib
from functools import cache

from pydantic import BaseModel



def _fields(model: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    """Dotted schema keys -> whether the key holds a free-form dict (its sub-keys are the user's)."""
    out: dict[str, bool] = {}
    for name, f in model.model_fields.items():
        key, ann = f"{prefix}{name}", f.annotation
        if any(getattr(a, "__origin__", None) is dict for a in (ann, *getattr(ann, "__args__", ()))):
            # model.tiny, sweep.space, launcher.additional: free-form below
            out[key] = True
            continue
        if hasattr(ann, "__metadata__"):  # Annotated[A | B, discriminator]: the task
            ann = ann.__origin__
        subs = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        out[key] = False
        for sub in subs:
            out.update(_fields(sub, key + "."))
    return out


# Names users bring from transformers' TrainingArguments, peft's LoraConfig and W&B -> ours
ALIASES = {"rank": "lora.r", "lora_r": "lora.r", "lora_alpha": "lora.alpha", "lora_dropout": "lora.dropout",
           "target_modules": "lora.targets", "learning_rate": "train.lr", "num_steps": "train.max_steps",
           "per_device_train_batch_size": "train.batch_size", "gradient_accumulation_steps": "train.grad_accum",
           "max_seq_length": "model.max_length", "model_name_or_path": "model.path", "dataset_name": "data.path",
           "output_dir": "out_dir", "device": "hardware.device", "num_processes": "hardware.processes", "gpus": "hardware.processes",
           "project": "tracking.project", "entity": "tracking.entity", "storage": "storage.url"}


@cache
def schema_keys(schema: type[BaseModel]) -> dict[str, bool]:
    """The schema's dotted keys (config.py passes its ExperimentCfg: this module imports no harness)."""
    return _fields(schema)


def is_schema_key(key: str, schema: type[BaseModel]) -> bool:
    """A key the schema knows (or one under a free-form dict such as model.tiny.*)."""
    SCHEMA_KEYS = schema_keys(schema)
    parts = key.split(".")
    return key in SCHEMA_KEYS or any(SCHEMA_KEYS.get(".".join(parts[:i])) for i in range(1, len(parts)))


def did_you_mean(key: str, schema: type[BaseModel]) -> str:
    """'did you mean `lora.r`?' for an unknown key: a known alias, else the closest key of the same
    section (lora.ranks -> lora.r), else the closest key anywhere (loar.r -> lora.r)."""
    SCHEMA_KEYS = schema_keys(schema)
    section, _, leaf = key.rpartition(".")
    same = [k for k in SCHEMA_KEYS if section and k.rpartition(".")[0] == section]
    close = ([ALIASES[leaf]] if leaf in ALIASES else
             difflib.get_close_matches(key, same, n=1, cutoff=0.6)
             or [f"{section}.{m}" for m in difflib.get_close_matches(leaf, [k.rpartition(".")[2] for k in same],
                                                                     n=1, cutoff=0.5)]
             or difflib.get_close_matches(key, [k for k in SCHEMA_KEYS if not key.startswith(k + ".")], n=1,
                                          cutoff=0.6))  # not its own section: task.foo -> `task` helps nobody
    hint = f"did you mean `{close[0]}`? " if close and close[0] != key else ""
    return f"{hint}(`python -m harness --cfg` prints every key)"
