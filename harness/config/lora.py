"""PEFT's LoraConfig fields and per-model-type target modules, readable without importing peft, and
the `lora:` section of the config schema built on them (LoraCfg; harness.config.schema re-exports it).

`python -m harness --cfg` must not import torch, and `import peft` does. So the schema reads a
small data file, harness/peft_lora.json, generated from the installed peft by
`python -m harness.config.lora` (tests/config/test_lora_fields.py fails when it no longer matches peft:
regenerate it after upgrading peft).
"""
from __future__ import annotations

import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_serializer, model_validator

DATA = Path(__file__).resolve().parent / "peft_lora.json"

# Our names for the four fields the harness has always had; PEFT's spellings are aliases of them.
ALIASES = {"lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "targets"}
# Fields the harness sets itself from the rest of the config (task, model, mode): not a user's.
HARNESS_SET = {"task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path",
               "revision", "inference_mode"}
# init_lora_weights values a trial can run: the others need a data pass or a config object the
# harness does not build (eva, corda, lora_ga), or a quantization peft does itself (loftq).
INIT_SUPPORTED = ("gaussian", "pissa", "olora", "orthogonal")
INIT_PISSA_NITER = re.compile(r"pissa_niter_\d+")


def generate() -> dict:
    """The data file's content, from the installed peft (imports torch)."""
    import dataclasses

    import peft
    from peft import LoraConfig
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as targets,
    )

    fields = {f.name: str(f.type) for f in dataclasses.fields(LoraConfig)}
    return {"peft_version": peft.__version__, "fields": fields, "targets": {k: list(v) for k, v in targets.items()}}


@cache
def _data() -> dict:
    return json.loads(DATA.read_text())


def fields() -> dict[str, str]:
    """LoraConfig field name -> its type, as peft declares it."""
    return _data()["fields"]


def peft_targets(model_type: str) -> list[str] | None:
    """PEFT's default target modules for a transformers model_type (None: PEFT has none)."""
    return _data()["targets"].get(model_type)


def model_types() -> list[str]:
    return sorted(_data()["targets"])


def is_field(key: str) -> bool:
    """`lora.<name>` where name is a LoraConfig field (or alias) a user may set."""
    section, _, name = key.partition(".")
    return section == "lora" and "." not in name and (name in ALIASES or (name in fields() and name not in HARNESS_SET))


def harness_set_error(name: str) -> str:
    return f"lora.{name} is set by the harness (from task, model and method); leave it out of the lora settings"


def check_init(value) -> None:
    """init_lora_weights: true/false or one of the initialisations a trial can run."""
    if isinstance(value, bool) or value in INIT_SUPPORTED or (isinstance(value, str) and INIT_PISSA_NITER.fullmatch(value)):
        return
    raise ValueError(f"lora.init_lora_weights={value!r} is not supported here; use true (PEFT's default), false, "
                     f"{', '.join(INIT_SUPPORTED)} or pissa_niter_N (eva, corda, lora_ga, loftq need a data pass or "
                     "a config object the harness does not build)")


# LoraConfig fields with our own declaration below (types and defaults checked here); every other one
# is declared from the data file as Any (peft checks its value when the trial builds the LoraConfig).
_OURS = {"r", "alpha", "dropout", "targets", "bias", "use_rslora", "use_dora", "init_lora_weights"}
PASSTHROUGH = tuple(f for f in fields() if f not in HARNESS_SET and f not in ALIASES and f not in _OURS)


class _LoraBase(BaseModel):
    """The `lora:` section: every field of peft's LoraConfig, under our names for the first four: r,
    alpha (lora_alpha), dropout (lora_dropout), targets (target_modules: a preset, "all-linear" or
    module names). Unknown keys are rejected with "did you mean" (harness/config/keys.py) like any other."""
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # as config/sweep.py _Strict

    r: int = Field(ge=1, description="LoRA rank")
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    targets: str | list[str]
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = False            # scale alpha/sqrt(r) instead of alpha/r (Kalajdzievski 2023)
    use_dora: bool = False              # weight-decomposed LoRA (Liu et al. 2024): more compute per token
    init_lora_weights: bool | str = True  # true: PEFT's default (A Kaiming, B zero); pissa, olora, gaussian, ...

    @model_validator(mode="before")
    @classmethod
    def _peft_spellings(cls, v):
        if not isinstance(v, dict):
            return v
        v = dict(v)
        for peft_name, ours in ALIASES.items():
            if peft_name in v:
                if ours in v and v[ours] != v[peft_name]:
                    raise ValueError(f"lora.{peft_name} and lora.{ours} are the same field; give one")
                v[ours] = v.pop(peft_name)
        if v.get("targets") == "all-linear":  # PEFT's spelling of our preset
            v["targets"] = "all_linear"
        for name in v:
            if name in HARNESS_SET:
                raise ValueError(harness_set_error(name))
        return v

    @field_validator("targets")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("lora.targets is empty: name a preset (attn_qv, attn, mlp, all_linear) or modules")
        return v

    @field_validator("init_lora_weights")
    @classmethod
    def _init(cls, v):
        check_init(v)
        return v

    @model_serializer(mode="wrap")
    def _only_set_passthrough(self, handler):
        # a passthrough field left unset stays out of the resolved config (and so peft's own default applies)
        return {k: v for k, v in handler(self).items() if not (k in PASSTHROUGH and v is None)}


LoraCfg = create_model("LoraCfg", __base__=_LoraBase, __doc__=_LoraBase.__doc__,
                       **{name: (Any, None) for name in PASSTHROUGH})


if __name__ == "__main__":  # regenerate the data file after a peft upgrade
    DATA.write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {DATA}", file=sys.stderr)
