"""eval.metrics through `evaluate`: the local modules give the numbers the libraries give, an unknown
name fails at config time with one line, a trial records what it lists, and nothing imports
evaluate when the list is empty."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.config.schema import ConfigError, complete, load
from harness.metrics import extra as eval_metrics
from harness.metrics import scores as metrics

ROOT = Path(__file__).resolve().parents[2]


def test_local_modules_compute_what_the_libraries_compute():
    from sklearn.metrics import f1_score

    preds, refs = ["Iraq.", "the cat sat on the mat", "a b c d e"], ["iraq", "the cat is on the mat", "a b c d f"]
    got = eval_metrics.compute(["exact_match", "rouge_l", "bleu"], preds, refs)
    assert got == pytest.approx({"exact_match": metrics.exact_match(preds, refs), "rouge_l": metrics.rouge_l(preds, refs),
                                 "bleu": metrics.bleu(preds, refs)[0]})
    labels_p, labels_r = [0, 1, 1, 2, 0], [0, 1, 2, 2, 1]
    got = eval_metrics.compute(["accuracy", "f1"], labels_p, labels_r)
    assert got == pytest.approx({"accuracy": 3 / 5, "f1": f1_score(labels_r, labels_p, average="macro")})
    assert eval_metrics.compute(["accuracy"], ["yes", "no"], ["yes", "yes"]) == {"accuracy": 0.5}  # strings too
    assert eval_metrics.compute([], preds, refs) == {}


def test_unknown_metric_fails_at_config_time_with_one_line():
    with pytest.raises(ConfigError, match=r"eval.metrics: 'no_such_metric_xyz' cannot be loaded .*local metrics: "
                                          r"exact_match, rouge_l, bleu, accuracy, f1") as e:
        complete(load(["eval.metrics=[accuracy,no_such_metric_xyz]"]))
    assert "\n" not in str(e.value)


@pytest.mark.process
def test_empty_metrics_import_no_evaluate():
    code = ("import sys; from harness.config.schema import complete, load; import harness.tasks.classify, harness.tasks.sft; "
            "complete(load([])); print('evaluate' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_a_trial_records_its_listed_metrics_and_they_can_be_objectives(tiny_cfg):
    from omegaconf import open_dict

    from harness import train
    from harness.runners.process import allocate_trial
    from harness.study import driver as study

    cfg = tiny_cfg("eval.metrics=[accuracy,f1]", "quant=none", "train.max_steps=20", "tracking.mode=disabled",
                   "train.save_adapter=none")
    allocate_trial(cfg)
    rec = train.run(cfg)
    saved = json.loads((Path(cfg.out_dir) / cfg.study / "trials" / str(cfg.trial) / "result.json").read_text())
    assert 0 <= saved["f1"] <= 1 and saved["accuracy"] == pytest.approx(rec["accuracy"])
    assert "f1" in saved["evals"][-1] and "baseline_f1" in saved

    sweep = load(["sweep=lora_rank", "eval.metrics=[f1]"])
    with open_dict(sweep):
        sweep.sweep.objectives = {"f1": "maximize"}
    study.check(complete(sweep), ["sweep=lora_rank", "eval.metrics=[f1]"])
    with open_dict(sweep):
        sweep.eval.metrics = []
    with pytest.raises(ConfigError, match="sweep.objectives.f1: unknown metric"):
        study.check(complete(sweep), ["sweep=lora_rank"])
