"""A trial on a tiny model, through the same code path as `python -m harness`: record, W&B run,
learning, failures and errors before compute."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness import train
from harness.data.load import DataError
from harness.runners.process import allocate_trial

RECORD_KEYS = {"accuracy", "baseline_accuracy", "flops", "tokens", "peak_memory_bytes", "device_seconds",
               "world_size", "trainable_params", "total_params", "wall_seconds", "cost_usd", "provenance",
               "config", "history", "status", "effective_batch_size"}


def _run(cfg):
    allocate_trial(cfg)
    rec = train.run(cfg)
    path = Path(cfg.out_dir) / cfg.study / "trials" / str(cfg.trial) / "result.json"
    return rec, json.loads(path.read_text())


@pytest.mark.process
def test_trial_writes_a_complete_record_and_a_readable_wandb_run(tiny_cfg):
    cfg = tiny_cfg("train.max_steps=40", "train.eval_every=20")
    rec, saved = _run(cfg)
    assert RECORD_KEYS <= saved.keys()
    assert saved["status"] == "complete" and saved["world_size"] == 1
    assert 0 <= saved["accuracy"] <= 1 and 0 <= saved["baseline_accuracy"] <= 1
    assert saved["tokens"] > 0 and saved["flops"] > saved["eval_flops"] > 0
    # FLOPs follow the stated formula (restated here; tests/trial/test_cost.py checks it against torch's count)
    n, nb, nt = (saved[k] for k in ("matmul_params", "backward_matmul_params", "trainable_matmul_params"))
    assert saved["train_flops"] == pytest.approx((2 * n + 2 * nb + 2 * nt) * saved["tokens"])
    assert saved["flops"] == saved["train_flops"] + saved["eval_flops"] and saved["baseline_flops"] > 0
    assert saved["peak_memory_bytes"] > 10 * 2**20 and saved["device_seconds"] > 0
    assert len(saved["history"]) == 40 and [e["step"] for e in saved["evals"]] == [20, 40]
    assert saved["config"]["lora"]["r"] == cfg.lora.r and saved["provenance"]["versions"]["peft"]
    # the W&B run is a real offline run file that W&B's own reader decodes
    run_dir = Path(saved["wandb"]["dir"]).parent
    assert list(run_dir.glob("run-*.wandb"))
    out = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", str(run_dir), "--summary",
                          "--json"], capture_output=True, text=True, timeout=120)
    run = json.loads(out.stdout)
    assert run["state"] == "finished" and run["name"] == f"t-{cfg.trial}"
    assert run["summary"]["accuracy"] == pytest.approx(saved["accuracy"])
    assert run["summary"]["train/loss"] == pytest.approx(saved["history"][-1]["train/loss"])
    assert run["config"]["lora"]["r"] == cfg.lora.r and run["step"] == 40


def test_tiny_trial_learns(tiny_cfg):
    """The generated task is learnable: LoRA on the 4-bit tiny model must beat its own baseline."""
    rec, saved = _run(tiny_cfg("train.max_steps=60", "lora.targets=all_linear", "tracking.mode=disabled"))
    assert rec["accuracy"] >= 0.8 > rec["baseline_accuracy"]
    losses = [h["train/loss"] for h in saved["history"]]
    assert sum(losses[-10:]) < 0.7 * sum(losses[:10])


def test_nested_subsets_reach_the_trial(tiny_cfg):
    small, _ = _run(tiny_cfg("data.train_size=32", "tracking.mode=disabled", "eval.baseline=false"))
    assert small["train_size"] == 32 and small["examples_seen"] == 6 * 16


def test_nan_loss_fails_the_trial_with_a_reason(tiny_cfg):
    cfg = tiny_cfg("train.lr=1e30", "train.max_grad_norm=1e30", "train.max_steps=20", "tracking.mode=disabled")
    with pytest.raises(train.TrialFailed, match="non-finite loss"):
        _run(cfg)
    saved = json.loads((Path(cfg.out_dir) / "t" / "trials" / str(cfg.trial) / "result.json").read_text())
    assert saved["status"] == "failed" and "non-finite" in saved["reason"]


def test_train_size_larger_than_the_data_fails_before_any_model_is_loaded(tiny_cfg, monkeypatch):
    import harness.trial.models

    def boom(*a, **k):
        raise AssertionError("model loaded before the data check")

    monkeypatch.setattr(harness.trial.models, "load_base", boom)
    with pytest.raises(DataError, match="train_size=5000"):
        train.run(tiny_cfg("data.train_size=5000", "trial=0"))


@pytest.mark.process
def test_cli_reports_a_bad_input_as_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness", "lora.r=0", f"out_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "lora.r" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "single").exists()  # nothing created for a config that cannot run


@pytest.mark.process
def test_cli_runs_a_trial_and_prints_accuracy_cost_and_paths(tmp_path):
    out = subprocess.run([sys.executable, "-m", "harness", "model=tiny_bert", "data=tiny", "train.max_steps=4",
                          f"out_dir={tmp_path}", "study=cli"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "accuracy" in out.stdout and "zero-shot baseline" in out.stdout and "FLOPs" in out.stdout
    assert f"{tmp_path}/cli/trials/0/result.json" in out.stdout and "wandb sync" in out.stdout
    assert f"adapter  {tmp_path}/cli/trials/0/adapter" in out.stdout  # a single run keeps its adapter
    assert (tmp_path / "cli/trials/0/adapter/adapter_config.json").is_file()
    assert math.isfinite(json.loads((tmp_path / "cli/trials/0/result.json").read_text())["accuracy"])


@pytest.mark.parametrize("method", ["head_only", "full"])
def test_reference_arms_train_what_they_say(tiny_cfg, method):
    rec, saved = _run(tiny_cfg(f"method={method}", "quant=none", "tracking.mode=disabled", "train.max_steps=4"))
    assert saved["status"] == "complete" and saved["method"] == method and saved["config"]["method"] == method
    if method == "head_only":  # the linear probe: BERT's classifier, hidden 32 x 2 labels + bias
        assert saved["trainable_params"] == 32 * 2 + 2 and saved["backward_matmul_params"] == 32 * 2
    else:
        assert saved["trainable_params"] == saved["total_params"]


def test_full_finetune_of_a_quantized_base_is_refused_before_compute(tiny_cfg):
    from harness.config.schema import ConfigError

    with pytest.raises(ConfigError, match="quant=none"):
        tiny_cfg("method=full", "quant=nf4")


def test_intermediate_evals_can_use_a_fixed_subset_and_the_final_eval_uses_all(tiny_cfg):
    """eval.intermediate_examples: the pruning evals get cheaper, the final accuracy stays the full split's;
    the record says how many examples the intermediate evals saw."""
    base = ("train.max_steps=6", "train.eval_every=2", "eval.baseline=false", "tracking=disabled")
    full, _ = _run(tiny_cfg(*base))
    sub, _ = _run(tiny_cfg(*base, "eval.intermediate_examples=10", "trial=1"))
    assert full["intermediate_eval_examples"] == full["test_size"] == 40 and sub["intermediate_eval_examples"] == 10
    assert sub["accuracy"] == full["accuracy"]  # evals do not touch training: same final model, same full split
    assert [e["step"] for e in sub["evals"]] == [2, 4, 6]
    assert sub["eval_tokens"] < full["eval_tokens"]  # two of the three evals on a quarter of the examples
    assert all(round(e["accuracy"] * 10, 6).is_integer() for e in sub["evals"][:2])  # accuracies of 10 examples
