"""What is checked before a study exists or resumes: the sweep's keys, objectives, pruner and every
value of every axis (each must compose into a valid config), its enqueued points and reference arms,
and `experiment_config`, the part of the config a resume must not change."""
from __future__ import annotations

import difflib

from omegaconf import DictConfig, OmegaConf

from harness.metrics import extra as eval_metrics
from harness.study import space as space_mod
from harness.config.schema import ConfigError, complete, load_with_choices
from harness.optuna_parts import make_pruner, make_sampler, where
from harness.record import INTERMEDIATE, METRICS


def check(cfg: DictConfig, base: list[str]) -> None:
    """Everything about the sweep that can be wrong, before any trial runs."""
    sw, where_ = cfg.sweep, where(cfg)
    for key in sw.space:
        target = space_mod.VIRTUAL.get(key, key)
        _settable(cfg, base, f"{where_}: sweep.space.{key}", target, "is searched")
        if target in sw.space and target != key:
            raise ConfigError(f"{where_}: sweep.space has both {key} and {target}; keep one")
    for key in space_mod.follows(cfg):
        _settable(cfg, base, f"{where_}: sweep.follow.{key}", key, "is set per configuration")
    if "seed" in sw.space:
        raise ConfigError(f"{where_}: sweep.space.seed: list seeds in sweep.seeds instead (one trial per seed)")
    for metric in sw.objectives:
        if metric not in METRICS and not eval_metrics.provides(cfg.eval.metrics, metric):  # any eval.metrics key too
            raise ConfigError(f"{where_}: sweep.objectives.{metric}: unknown metric; choose from {', '.join(METRICS)}")
    if sw.pruner != "none":
        metric = next(iter(sw.objectives))
        if metric not in INTERMEDIATE:
            raise ConfigError(f"{where_}: sweep.pruner={sw.pruner} needs an objective measured at intermediate evals "
                              f"({', '.join(INTERMEDIATE)}), not {metric}")
        if not cfg.train.eval_every:
            raise ConfigError(f"{where_}: sweep.pruner={sw.pruner} needs intermediate evals: set train.eval_every > 0")
    make_sampler(cfg), make_pruner(cfg)
    # every value an axis can take must give a valid config (a typo'd preset fails now, not in trial 7)
    for key, p in sw.space.items():
        vals = space_mod.values_of(p) if (p.choices is not None or sw.sampler == "grid") else [p.low, p.high]
        for v in vals:
            try:
                complete(load_with_choices([*base, *space_mod.to_overrides({key: v}, cfg)])[0])
            except ConfigError as e:
                raise ConfigError(f"{where_}: sweep.space.{key} value {v!r} gives an invalid config:\n{e}") from None
    for i, ref in enumerate(sw.enqueue):
        if set(ref) != set(sw.space):
            raise ConfigError(f"{where_}: sweep.enqueue[{i}] must give every axis of the space "
                              f"({', '.join(sw.space)}); got {', '.join(ref) or 'nothing'}")
    for i, ref in enumerate(sw.get("references") or []):
        if not ref:
            raise ConfigError(f"{where_}: sweep.references[{i}] is empty: give its overrides, e.g. {{method: head_only}}")
        try:
            complete(load_with_choices([*base, *reference_overrides(ref)])[0])
        except ConfigError as e:
            raise ConfigError(f"{where_}: sweep.references[{i}] gives an invalid config:\n{e}") from None


def _settable(cfg: DictConfig, base: list[str], where: str, target: str, how: str) -> None:
    """A key the sweep sets per trial (searched or followed) exists, and the command line does not also set it."""
    if OmegaConf.select(cfg, target, default="<absent>") == "<absent>" or target.split(".")[0] in ("sweep", "trial"):
        close = difflib.get_close_matches(target, space_mod.flat(OmegaConf.to_container(cfg)), n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        raise ConfigError(f"{where}: no such config key `{target}`; {hint}search spaces use the config's dotted names "
                          "(see `python -m harness --cfg`)")
    if any(o.split("=", 1)[0].lstrip("+~") == target for o in base):
        raise ConfigError(f"{where} {how}, but the command line also sets {target}; drop it from the command line (or "
                          "copy the sweep file and change it)")


def reference_overrides(ref) -> list[str]:
    """A reference arm's overrides (`quant: none` is the group choice quant=none, like on the command line)."""
    return [f"{k}={space_mod.format_value(v)}" for k, v in dict(ref).items()]


def reference_key(ref, seed: int) -> str:
    return "reference:" + space_mod.point_key(dict(ref), seed)



# Config roots and keys that name, place, track or schedule a study but cannot change a trial's result.
NOT_THE_EXPERIMENT = ("study", "trial", "out_dir", "storage", "tracking", "launcher", "sweep", "seed",
                      "hardware.threads", "train.log_every", "train.checkpoint_every", "train.resume_from")


def experiment_config(cfg: DictConfig) -> dict:
    """The base config that defines the study's experiment, flat: everything but the searched axes (and
    the keys that follow them), the seed (set per trial) and NOT_THE_EXPERIMENT. A resume must match it."""
    searched = {space_mod.VIRTUAL.get(k, k) for k in cfg.sweep.space} | set(space_mod.follows(cfg))
    return {k: v for k, v in space_mod.flat(OmegaConf.to_container(cfg, resolve=True)).items()
            if k not in searched and not any(k == x or k.startswith(x + ".") for x in NOT_THE_EXPERIMENT)}


def config_changes(old: dict, new: dict, allowed: list[str]) -> list[str]:
    """`key: was -> now` for every experiment key a resume would change, except the allowed ones. A key
    the study's config lacks that is null now is a setting added to the harness since, left off: no change."""
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}" for k in keys
            if old.get(k, "<absent>") != new.get(k, "<absent>") and not (k not in old and new[k] is None)
            and not any(k == a or k.startswith(a + ".") for a in allowed)]
