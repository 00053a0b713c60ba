"""PEFT's whole LoRA through `lora:`: every LoraConfig field, PEFT's spellings, "did you mean",
presets for any model type PEFT knows, tiny trials with DoRA / rsLoRA / PiSSA, DoRA's extra FLOPs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config import lora as lora_fields
from harness.config.schema import ConfigError, complete, load

ROOT = Path(__file__).resolve().parents[2]


def test_the_data_file_matches_the_installed_peft():
    # regenerate with `python -m harness.config.lora` after a peft upgrade
    assert json.loads(lora_fields.DATA.read_text()) == json.loads(json.dumps(lora_fields.generate()))


def test_every_lora_config_field_is_accepted_and_reaches_peft(tiny_cfg):
    import peft

    from harness.trial.models import lora_kwargs

    cfg = tiny_cfg("lora.use_dora=true", "lora.rank_pattern={query: 4}", "lora.layers_to_transform=[0]",
                   "lora.lora_alpha=32", "lora.target_modules=all-linear")
    assert cfg.lora.alpha == 32 and cfg.lora.targets == "all_linear" and cfg.lora.use_dora
    lcfg = peft.LoraConfig(target_modules=["query"], **lora_kwargs(cfg))
    assert lcfg.use_dora and lcfg.rank_pattern == {"query": 4} and lcfg.layers_to_transform == [0]
    assert lcfg.lora_alpha == 32 and lcfg.modules_to_save == ["classifier"]


@pytest.mark.parametrize("override,message", [
    ("lora.use_droa=true", r"lora.use_droa: no such config key; did you mean `lora.use_dora`\?"),
    ("+lora.rank=8", r"lora.rank: Extra inputs are not permitted \(got 8\); did you mean `lora.r`\?"),
    ("lora.task_type=SEQ_CLS", r"lora.task_type is set by the harness"),
    ("lora.init_lora_weights=eva", r"init_lora_weights='eva' is not supported here"),
    ("model.family=qwen3x", r"did you mean 'qwen3'\?"),
    ("model.family=qwen2", (r"lora.targets='attn_qv' is not a preset for qwen2 models; presets: "
                            r"\['all_linear', 'peft_default'\]")),
])
def test_bad_lora_settings_fail_with_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        complete(load([override]))
    assert "\n" not in str(e.value)


def test_peft_spellings_in_a_yaml_lora_section():
    base = dict(complete(load([])))
    lora = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear"}
    from harness.config.schema import validate

    got = validate({**base, "lora": lora}).lora
    assert (got.alpha, got.dropout, got.targets) == (8, 0.0, "all_linear")
    with pytest.raises(ConfigError, match="lora_alpha and lora.alpha are the same field"):
        validate({**base, "lora": {**lora, "alpha": 16}})


@pytest.mark.process
def test_cfg_with_lora_fields_stays_torch_free():
    code = ("import sys; from harness.config.schema import complete, load; "
            "complete(load(['lora.use_dora=true', 'lora.rank_pattern={query: 4}', 'model.family=qwen2', "
            "'lora.targets=peft_default'])); print('torch' in sys.modules, 'peft' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]


TINY_MISTRAL = ["model.name=tiny_mistral", "model.family=mistral", "model.tiny.model_type=mistral"]


@pytest.mark.parametrize("preset,per_layer", [("peft_default", 2), ("all_linear", 7)])
def test_presets_derived_from_peft_resolve_for_another_model_type(tiny_cfg, preset, per_layer):
    from harness.trial.models import load_base, load_tokenizer, resolve_targets

    cfg = tiny_cfg("model=tiny_llama", *TINY_MISTRAL, f"lora.targets={preset}", "quant=none")
    base = load_base(cfg, 2, "cpu", load_tokenizer(cfg))
    assert type(base).__name__ == "MistralForSequenceClassification"
    names = resolve_targets(base, "mistral", preset)
    assert len(names) == per_layer * cfg.model.tiny.num_hidden_layers
    assert not any(n.startswith("score") for n in names)


@pytest.mark.parametrize("override", ["lora.use_dora=true", "lora.use_rslora=true", "lora.init_lora_weights=pissa",
                                      "lora.init_lora_weights=olora"])
def test_each_lora_variant_runs_a_tiny_trial(tiny_cfg, override):
    from harness import train
    from harness.runners.process import allocate_trial

    cfg = tiny_cfg(override, "quant=none", "train.max_steps=3", "eval.baseline=false", "train.save_adapter=none")
    allocate_trial(cfg)
    rec = train.run(cfg)
    assert rec["status"] == "complete" and rec["train_loss"] > 0
    saved = json.loads((Path(cfg.out_dir) / cfg.study / "trials" / str(cfg.trial) / "result.json").read_text())
    key, value = override.split("=")
    assert str(saved["config"]["lora"][key.split(".")[1]]).lower() == value


def test_dora_records_more_train_flops_than_lora_at_equal_rank(tiny_cfg):
    from harness import train
    from harness.runners.process import allocate_trial

    flops = {}
    for dora in ("false", "true"):
        cfg = tiny_cfg(f"lora.use_dora={dora}", "lora.r=4", "quant=none", "train.max_steps=3", "eval.baseline=false",
                       "train.save_adapter=none", "train.group_by_length=false")
        allocate_trial(cfg)
        rec = train.run(cfg)
        flops[dora] = (rec["train_flops"], rec["tokens"], rec["dora_rerun_params"])
    (lora, tok_l, n_l), (dora, tok_d, n_d) = flops["false"], flops["true"]
    assert tok_l == tok_d and n_l == 0 and n_d > 0
    assert dora - lora == pytest.approx(4 * n_d * tok_d)  # the docstring's count: a re-run forward + its input grads


def test_dora_formula_within_10_percent_of_torch_flop_counter(tiny_cfg):
    from tests.trial.test_cost import BATCH, LENGTH, _batch, _measured, _model

    from harness.trial.cost import param_counts, train_flops

    cfg, model = _model(tiny_cfg, "lora.use_dora=true", "lora.targets=all_linear")
    counts = param_counts(model)
    assert counts["dora_rerun_params"] > 0
    model.train()
    got = _measured(model, _batch(cfg, model), train_step=True)
    assert train_flops(counts, BATCH * LENGTH, checkpointing=False) == pytest.approx(got, rel=0.10)


def test_lora_variants_sweep_composes_and_every_point_validates():
    from harness.study import driver as study
    from harness.study import space

    cfg = complete(load(["sweep=lora_variants"]))
    study.check(cfg, ["sweep=lora_variants"])  # the driver's check: every axis value gives a valid config
    points = space.grid(cfg.sweep.space)
    assert len(points) == 8 and cfg.quant.mode == "none" and cfg.sweep.seeds == [0, 1, 2]
    for p in points:
        lora = complete(load(["sweep=lora_variants", *space.to_overrides(p, cfg)])).lora
        assert (lora.use_rslora, lora.use_dora, lora.init_lora_weights) == tuple(p.values())


def test_pissa_on_a_quantized_base_fails_before_compute():
    with pytest.raises(ConfigError, match="peft refuses on a quant.mode=nf4 base: add quant=none"):
        complete(load(["lora.init_lora_weights=pissa"]))
