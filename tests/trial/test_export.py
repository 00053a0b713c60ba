"""What a trial keeps: trials/<n>/adapter/ that peft loads, `python -m harness.export --merge` that
transformers loads and that reproduces the trial's test predictions, and a study keeping only the
best configuration's adapters (with Optuna artifacts)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness import train
from harness.runners.process import allocate_trial
from harness.study import keep

ROOT = Path(__file__).resolve().parents[2]
# Share of the trial's test predictions the merged export must reproduce. quant=none: the merged
# weights are W + s BA in float32, the trial's were W and s BA added per layer: the same up to
# rounding, so every prediction. nf4: the trial multiplied through bitsandbytes' 4-bit kernel in
# quant.compute_dtype (bfloat16), the export de-quantizes once to float32: logits move by ~1e-2,
# which may flip an item whose two logits are that close.
TOLERANCE = {"none": 1.0, "nf4": 0.95}


def _trial(tiny_cfg, *overrides):
    cfg = tiny_cfg("train.max_steps=60", "lora.targets=all_linear", "tracking.mode=disabled", *overrides)
    allocate_trial(cfg)
    train.run(cfg)
    return cfg, Path(cfg.out_dir) / cfg.study / "trials" / str(cfg.trial)


def _test_items(cfg):
    from harness.tasks import classify
    from harness.trial.models import load_tokenizer

    splits = classify.load_splits(cfg.data)
    return classify.items(load_tokenizer(cfg), splits.test, cfg), splits.labels


@pytest.mark.process
@pytest.mark.parametrize("quant", ["none", "nf4"])
def test_merged_export_loads_with_transformers_and_reproduces_the_predictions(tiny_cfg, quant):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from harness.trial.models import load_base, load_tokenizer

    cfg, tdir = _trial(tiny_cfg, f"quant={quant}")
    # the adapter as saved loads into its base with peft
    base = load_base(cfg, 2, "cpu", load_tokenizer(cfg))
    assert isinstance(PeftModel.from_pretrained(base, str(tdir / "adapter")), PeftModel)

    out = subprocess.run([sys.executable, "-m", "harness.export", str(tdir), "--merge"], cwd=ROOT,
                         capture_output=True, text=True, check=False, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    merged = Path(out.stdout.strip().splitlines()[-1])
    assert (merged / "model.safetensors").is_file()
    model = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    assert not any("4bit" in type(m).__name__ for m in model.modules())

    items, _ = _test_items(cfg)
    want = {p["id"]: p["prediction"] for p in map(json.loads, (tdir / "predictions.jsonl").read_text().splitlines())}
    got = {}
    with torch.no_grad():
        for x in items:
            logits = model(input_ids=torch.tensor([x["input_ids"]])).logits
            got[x["id"]] = model.config.id2label[int(logits.argmax(-1))]
    assert got.keys() == want.keys() and len(set(want.values())) == 2  # a trial that learned both classes
    same = sum(got[i] == want[i] for i in want) / len(want)
    assert same >= TOLERANCE[quant], f"{same:.3f} of the predictions reproduced"


def test_adapter_export_is_a_peft_folder_and_errors_are_one_line(tiny_cfg, tmp_path):
    from harness.export import main

    _, tdir = _trial(tiny_cfg, "quant=none", "train.max_steps=2", "eval.baseline=false")
    assert main([str(tdir), "--out", str(tmp_path / "a")]) == 0
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= {p.name for p in (tmp_path / "a").iterdir()}
    assert main([str(tdir), "--out", str(tmp_path / "a")]) == 2  # not empty
    assert main([str(tmp_path / "nowhere")]) == 2


def test_save_adapter_none_and_other_methods_keep_nothing(tiny_cfg):
    _, tdir = _trial(tiny_cfg, "quant=none", "train.max_steps=2", "eval.baseline=false", "train.save_adapter=none")
    assert not (tdir / "adapter").exists()
    _, tdir = _trial(tiny_cfg, "quant=none", "train.max_steps=2", "eval.baseline=false", "method=head_only")
    assert not (tdir / "adapter").exists()


def test_keep_best_keeps_the_best_configurations_seeds_and_attaches_artifacts(tmp_path, capsys):
    import optuna
    from omegaconf import OmegaConf
    from optuna.artifacts import get_all_artifact_meta

    cfg = OmegaConf.create({"out_dir": str(tmp_path), "study": "s", "train": {"save_adapter": None},
                            "sweep": {"objectives": {"accuracy": "maximize"}}})
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/study.db")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    # lr 0.1: mean 0.7 over two seeds; lr 0.2: one lucky seed 0.8 and one 0.5 (mean 0.65)
    for n, (lr, seed, acc) in enumerate([(0.1, 0, 0.7), (0.1, 1, 0.7), (0.2, 0, 0.8), (0.2, 1, 0.5)]):
        d = tmp_path / "s" / "trials" / str(n)
        (d / "adapter").mkdir(parents=True)
        (d / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
        (d / "config.yaml").write_text(f"seed: {seed}\nstudy: s\ntrial: {n}\nsweep: {{}}\ntrain: {{lr: {lr}}}\n")
        (d / "result.json").write_text("{}")
        study.enqueue_trial({"train.lr": lr})
        trial = study.ask()
        trial.suggest_categorical("train.lr", [0.1, 0.2])
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("accuracy", acc)
        trial.set_user_attr("flops", 1.0)
        trial.set_user_attr("run_dir", str(d))
        keep.attach_trial(trial, d, cfg)  # the driver's call, before tell
        study.tell(trial, acc)
    assert keep.keep_best(study, cfg) == [0, 1]
    assert [(tmp_path / "s" / "trials" / str(n) / "adapter").is_dir() for n in range(4)] == [True, True, False, False]
    assert "adapters kept: trials [0, 1]" in capsys.readouterr().err
    best = (tmp_path / "s" / "best.yaml").read_text()
    assert "accuracy 0.7 (mean of 2 seed(s) [0, 1], trials [0, 1]): train.lr=0.1" in best
    assert OmegaConf.create(best).train.lr == 0.1 and OmegaConf.create(best).study == "s-best"
    assert sorted(m.filename for m in get_all_artifact_meta(study.trials[2], storage=storage)) == ["config.yaml", "result.json"]
    study_files = lambda: sorted(m.filename for m in get_all_artifact_meta(study))
    assert study_files() == ["trial-0.adapter_model.safetensors", "trial-1.adapter_model.safetensors"]
    keep.keep_best(study, cfg)  # a resume: nothing attached twice
    assert len(study_files()) == 2
