"""Search space: the `sweep.space` block -> Optuna suggestions -> dotted config overrides.

Axes use the config's own dotted names (`lora.r`, `train.lr`, `data.train_size`), so a trial is
the base config plus `key=value` overrides, exactly what a user types. One virtual axis:
`lora.alpha_over_r` sets `lora.alpha = lora.r x value`, so alpha can scale with the rank it
multiplies (alpha=2r is the usual recipe) instead of being searched independently.
"""
from __future__ import annotations

import itertools
import json
import math
import re

from omegaconf import DictConfig, OmegaConf

from harness.config.sweep import FollowCfg

VIRTUAL = {"lora.alpha_over_r": "lora.alpha"}  # virtual axis -> the config key it sets


def values_of(p) -> list:
    """The values a grid visits on one axis: its choices, or every step of an int/stepped range."""
    if p.choices is not None:
        return list(p.choices)
    step = p.step or 1
    n = int(math.floor((p.high - p.low) / step + 1e-9)) + 1
    vals = [p.low + i * step for i in range(n)]
    return [int(v) for v in vals] if p.type == "int" else [round(v, 12) for v in vals]


def grid(space: DictConfig | dict) -> list[dict]:
    """Every point of the product of the axes, in file order (first axis slowest)."""
    names = list(space.keys())
    return [dict(zip(names, combo)) for combo in itertools.product(*(values_of(space[k]) for k in names))]


def suggest(trial, space: DictConfig | dict) -> dict:
    """Ask the trial for one value per axis (fixed params of enqueued trials come back as given)."""
    params = {}
    for name, p in space.items():
        if p.choices is not None:
            params[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.type == "int":
            params[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            params[name] = trial.suggest_float(name, float(p.low), float(p.high), step=p.step, log=p.log)
    return params


def point_key(params: dict, seed: int) -> str:
    """A stable identity for (configuration, seed): how the driver tells grid points apart."""
    return json.dumps({**params, "seed": seed}, sort_keys=True)


def resolve(params: dict, cfg: DictConfig) -> dict:
    """Params with virtual axes turned into real config keys."""
    out = {k: v for k, v in params.items() if k not in VIRTUAL}
    if "lora.alpha_over_r" in params:
        r = out.get("lora.r", cfg.lora.r)
        out["lora.alpha"] = float(r * params["lora.alpha_over_r"])
    for key, f in follows(cfg).items():
        if f.axis in params:
            out[key] = f.value_at(params[f.axis])
    return out


def follows(cfg: DictConfig) -> dict[str, FollowCfg]:
    """sweep.follow of a composed config (validated by the schema already), as FollowCfg."""
    sw = cfg.get("sweep") if isinstance(cfg, DictConfig) else None
    f = sw.get("follow") if sw is not None else None
    return {k: FollowCfg(**OmegaConf.to_container(v)) for k, v in f.items()} if f else {}


def to_overrides(params: dict, cfg: DictConfig) -> list[str]:
    return [f"{k}={format_value(v)}" for k, v in resolve(params, cfg).items()]


_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def format_value(v) -> str:
    """A value in Hydra's override grammar (strings quoted unless plainly safe)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    s = str(v)
    if _BARE.fullmatch(s) and s.lower() not in ("true", "false", "null", "nan", "inf"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def diff_overrides(cfg: DictConfig, base: DictConfig, skip: tuple[str, ...] = ()) -> list[str]:
    """`key=value` overrides that turn `base` into `cfg` (both resolved), leaving out `skip` roots."""
    a = flat(OmegaConf.to_container(cfg, resolve=True))
    b = flat(OmegaConf.to_container(base, resolve=True))
    out = []
    for k, v in a.items():
        if k.split(".")[0] in skip or (k in b and b[k] == v):
            continue
        out.append(f"{k}={format_value(v)}" if k in b else f"+{k}={format_value(v)}")
    return out
