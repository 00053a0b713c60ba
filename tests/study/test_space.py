"""Search spaces and sweep files: every shipped sweep composes and names real config keys; bad sweep
files fail before any trial with the file and key named; overrides round-trip through Hydra."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf

from harness.__main__ import main
from harness.config.schema import ROOT, ConfigError, complete, load
from harness.study import space
from harness.study.driver import check

SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_shipped_sweep_composes_and_every_axis_value_is_a_valid_config(path: Path):
    lines = path.read_text().splitlines()
    # Hydra reads the package header only before any other line; the command comes right after
    assert lines[0] == "# @package _global_" and lines[1] == f"# python -m harness sweep={path.stem}"
    cfg = complete(load([f"sweep={path.stem}"]))
    assert cfg.study == path.stem and cfg.sweep.file == f"sweeps/{path.stem}.yaml"
    check(cfg, [f"sweep={path.stem}"])  # every key exists, every value composes and validates


def test_the_shipped_set():
    assert {p.stem for p in SWEEPS} >= {"lora_rank", "lora_alpha", "target_modules", "dataset_size", "lora_joint"}
    joint = complete(load(["sweep=lora_joint"])).sweep
    assert set(joint.space) == {"lora.r", "lora.alpha_over_r", "lora.targets", "data.train_size", "train.lr"}
    assert dict(joint.objectives) == {"accuracy": "maximize", "flops": "minimize"}


def test_a_sweep_overrides_fixed_keys_and_the_command_line_wins():
    cfg = complete(load(["sweep=lora_joint"]))
    assert cfg.train.max_steps == 40 and cfg.study == "lora_joint"
    cfg = complete(load(["sweep=lora_joint", "train.max_steps=7", "study=mine", "sweep.n_trials=3"]))
    assert cfg.train.max_steps == 7 and cfg.study == "mine" and cfg.sweep.n_trials == 3


def test_grid_is_the_product_in_file_order_and_ranges_expand():
    spec = complete(load(["sweep=lora_rank"])).sweep.space
    assert space.grid(spec) == [{"lora.r": 2, "lora.alpha_over_r": 2}, {"lora.r": 8, "lora.alpha_over_r": 2},
                                {"lora.r": 32, "lora.alpha_over_r": 2}]
    rng = OmegaConf.create({"a": {"low": 1, "high": 7, "step": 3, "type": "int", "choices": None},
                            "b": {"choices": ["x", "y"]}})
    assert space.grid(rng) == [{"a": a, "b": b} for a in (1, 4, 7) for b in ("x", "y")]


def test_alpha_as_a_multiple_of_r():
    cfg = complete(load([]))
    assert space.to_overrides({"lora.r": 16, "lora.alpha_over_r": 2}, cfg) == ["lora.r=16", "lora.alpha=32.0"]
    # without r in the space, alpha follows the config's r
    assert space.to_overrides({"lora.alpha_over_r": 0.5}, cfg) == [f"lora.alpha={cfg.lora.r * 0.5}"]


def test_suggest_uses_the_config_names_and_types():
    spec = complete(load(["sweep=lora_joint"])).sweep.space
    fixed = {"lora.r": 4, "lora.alpha_over_r": 1, "lora.targets": "mlp", "data.train_size": 800, "train.lr": 3e-3}
    assert space.suggest(optuna.trial.FixedTrial(fixed), spec) == fixed
    trial = optuna.create_study().ask()
    params = space.suggest(trial, spec)
    assert isinstance(params["lora.r"], int) and 1e-4 <= params["train.lr"] <= 1e-2
    assert isinstance(trial.distributions["train.lr"], optuna.distributions.FloatDistribution)
    assert trial.distributions["train.lr"].log


@pytest.mark.parametrize("value", ["all_linear", "a b", "it's", "1e-3", "true", "null", "x=y", 3, 2.5e-7, True,
                                   None, ["q_proj", "v_proj"]])
def test_values_round_trip_through_hydra_overrides(value):
    cfg = load([f"+probe={space.format_value(value)}"])
    assert OmegaConf.to_container(cfg)["probe"] == value


def test_diff_overrides_rebuild_the_same_config():
    target = complete(load(["model=tiny_bert", "lora.r=16", "lora.targets=[query,value]", "train.lr=3e-4",
                            "data.train_size=100", "seed=3"]))
    base = complete(load(["model=tiny_bert"]))
    diff = space.diff_overrides(target, base)
    assert sorted(diff) == sorted(["lora.r=16", "lora.targets=[query,value]", "train.lr=0.0003",
                                   "data.train_size=100", "seed=3"])
    assert complete(load(["model=tiny_bert", *diff])) == target


# ---------------------------------------------------------------------------- bad sweep files

GOOD = """\
# @package _global_
# python -m harness sweep=bad
study: bad
sweep:
  space: {space}
  objectives: {objectives}
  sampler: {sampler}
  pruner: {pruner}
  n_trials: 2
"""
DEFAULTS = {"space": "{lora.r: {choices: [2, 4]}}", "objectives": "{accuracy: maximize}", "sampler": "tpe",
            "pruner": "none"}


@pytest.mark.parametrize("change,needles", [
    ({"sampler": "bayes"}, ["sweep.sampler", "'tpe'"]),
    ({"space": "{lora.r: {choices: []}}"}, ["sweep.space.lora.r", "choices is empty"]),
    ({"space": "{train.lr: {low: 0.1, high: 0.001}}"}, ["sweep.space.train.lr", "low=0.1 > high=0.001"]),
    ({"space": "{train.lr: {low: 0, high: 0.1, log: true}}"}, ["sweep.space.train.lr", "log scale needs low > 0"]),
    ({"objectives": "{acc: maximize}"}, ["sweep.objectives.acc", "unknown metric", "accuracy"]),
    ({"objectives": "{accuracy: up}"}, ["sweep.objectives.accuracy", "maximize"]),
    ({"space": "{lora.rank: {choices: [2, 4]}}"}, ["sweep.space.lora.rank", "no such config key"]),
    ({"space": "{lora.targets: {choices: [attn_qv, qkv]}}"}, ["sweep.space.lora.targets", "'qkv'"]),
    ({"space": "{train.lr: {low: 0.001, high: 0.1}}", "sampler": "grid"}, ["sampler=grid needs choices", "train.lr"]),
    ({"objectives": "{accuracy: maximize, flops: minimize}", "pruner": "median"}, ["pruner=median", "multi-objective"]),
    ({"objectives": "{flops: minimize}", "pruner": "median"}, ["sweep.pruner=median", "intermediate evals"]),
    ({"pruner": "median"}, ["train.eval_every > 0"]),
])
def test_a_bad_sweep_file_names_the_file_and_key_before_any_trial(tmp_path, capsys, change, needles):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "bad.yaml").write_text(GOOD.format(**{**DEFAULTS, **change}))
    rc = main(["sweep=bad", f"hydra.searchpath=[file://{tmp_path}]", f"out_dir={tmp_path}/runs"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"{tmp_path}/sweep/bad.yaml" in err, err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "runs").exists()  # no study, no trial


def test_the_command_line_cannot_also_set_a_searched_key():
    with pytest.raises(ConfigError, match="lora.r is searched"):
        check(complete(load(["sweep=lora_rank", "lora.r=4"])), ["sweep=lora_rank", "lora.r=4"])


def test_tpe_and_pruner_defaults_are_the_benchmarked_ones_and_sweep_args_override_them():
    """TPE multivariate + group with 4 startup trials, pruner rungs from 3/8 of the steps (BENCHMARKS.md
    section 3); a value in sweep.sampler_args / pruner_args wins over each."""
    from harness.optuna_parts import make_pruner, make_sampler

    base = ["sweep=lora_rank", "sweep.sampler=tpe", "sweep.n_trials=4", "train.max_steps=80", "train.eval_every=10"]
    tpe = make_sampler(complete(load(base)))
    assert (tpe.inner._multivariate, tpe.inner._group, tpe.inner._n_startup_trials) == (True, True, 4)
    tpe = make_sampler(complete(load([*base, "+sweep.sampler_args.multivariate=false",
                                      "+sweep.sampler_args.group=false", "+sweep.sampler_args.n_startup_trials=10"])))
    assert (tpe.inner._multivariate, tpe.inner._group, tpe.inner._n_startup_trials) == (False, False, 10)
    hb = make_pruner(complete(load([*base, "sweep.pruner=hyperband"])))
    assert (hb._min_resource, hb._max_resource, hb._reduction_factor) == (30, 80, 3)
    sh = make_pruner(complete(load([*base, "sweep.pruner=successive_halving", "train.eval_every=16"])))
    assert sh._min_resource == 16  # 3/8 of 80 = 30, down to an eval step
    med = make_pruner(complete(load([*base, "sweep.pruner=median", "+sweep.pruner_args.n_warmup_steps=5"])))
    assert med._n_warmup_steps == 5


# ---------------------------------------------------------------------------- sweep.follow

def test_a_followed_key_takes_the_value_its_axis_names_and_is_not_part_of_the_fixed_experiment():
    from harness.study.checks import experiment_config

    cfg = complete(load(["sweep=qlora_rank_confirm"]))
    picks = {2: 1e-3, 8: 5e-4, 32: 2.5e-4}  # the file's values, typed in again: a test of the lookup, not a copy
    for r, lr in picks.items():
        assert space.to_overrides({"lora.r": r, "lora.alpha_over_r": 2}, cfg) == \
            [f"lora.r={r}", f"lora.alpha={2.0 * r}", f"train.lr={lr!r}"]
    assert space.to_overrides({"lora.alpha_over_r": 2}, cfg) == [f"lora.alpha={2.0 * cfg.lora.r}"]  # no r: no lr
    assert "train.lr" not in experiment_config(cfg) and "lora.targets" in experiment_config(cfg)


FOLLOW = """\
# @package _global_
# python -m harness sweep=bad
study: bad
sweep:
  space: {{lora.r: {{choices: [2, 8]}}, lora.targets: {{choices: [attn_qv, all_linear]}}}}
  follow: {follow}
  sampler: grid
"""


@pytest.mark.parametrize("follow,needles", [
    ("{train.lr: {axis: lora.r, values: {2: 0.001}}}", ["follow.train.lr", "none for [8]"]),
    ("{train.lr: {axis: lora.r, values: {2: 0.001, 8: 0.002, 16: 0.003}}}", ["follow.train.lr", "[16] are not choices"]),
    ("{lora.r: {axis: lora.targets, values: {attn_qv: 2, all_linear: 8}}}", ["follow.lora.r", "is searched"]),
    ("{train.lr: {axis: lora.alpha, values: {2: 0.001}}}", ["follow.train.lr", "axis lora.alpha is not a searched"]),
    ("{train.rate: {axis: lora.r, values: {2: 0.001, 8: 0.002}}}", ["sweep.follow.train.rate", "no such config key"]),
    ("{train.lr: {axis: lora.r, values: {2: 0.001, 8: -1}}}", ["sweep.space.lora.r value 8", "train.lr"]),
])
def test_a_bad_follow_block_is_one_error_naming_the_key_before_any_trial(tmp_path, capsys, follow, needles):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "bad.yaml").write_text(FOLLOW.format(follow=follow))
    rc = main(["sweep=bad", f"hydra.searchpath=[file://{tmp_path}]", f"out_dir={tmp_path}/runs"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "runs").exists()


def test_a_resume_with_other_followed_values_is_refused(tiny_cfg, tmp_path):
    from harness.study.session import Session

    over = ["sweep=qlora_rank_confirm", "sweep.seeds=[5,6,7]", "train.early_stopping.patience=0"]
    new = Session(tiny_cfg(*over), over)
    assert new.open() is True
    assert Session(tiny_cfg(*over), over).open() is False  # the same file resumes
    text = (ROOT / "sweeps" / "qlora_rank_confirm.yaml").read_text()
    assert "8: 5.0e-4" in text
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "edited.yaml").write_text(text.replace("8: 5.0e-4", "8: 2.0e-3"))
    changed = [*over[1:], "sweep=edited", f"hydra.searchpath=[file://{tmp_path}]"]
    with pytest.raises(ConfigError, match="another search space"):
        Session(tiny_cfg(*changed), changed).open()
