"""Issue 23: trials that finish learning and say so. The convergence verdict and the early-stopping rule
(harness/metrics/convergence.py) against hand-computed values and transformers' own
EarlyStoppingCallback; degenerate trials named, and set aside by the console summary; then real tiny
trials: early stopping at the plateau, per-item log-probabilities that agree with the logits, the sft
per-item NLL, item ids fixed across trials, and a seeded study whose huge-lr arm collapses."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.metrics import convergence as cv

TINY = ["model=tiny_bert", "data=tiny", "hardware.threads=1", "tracking.mode=disabled", "train.save_adapter=none",
        "eval.batch_size=64"]


def _curve(points, n=400):
    return [{"step": s, "accuracy": a, "loss": 1 - a, "n": n} for s, a in points]


# ---------------------------------------------------------------------------- the verdict (constructed curves)


def test_a_trial_cut_mid_climb_is_still_improving_with_the_hand_computed_gain_and_se():
    evals = _curve([(10, 0.50), (20, 0.60), (30, 0.70), (40, 0.80)])  # 75% of 40 steps = step 30
    gain, se = cv.last_quarter_gain(evals)
    assert gain == pytest.approx(0.10)
    assert se == pytest.approx(math.sqrt(0.7 * 0.3 / 400 + 0.8 * 0.2 / 400))
    text = cv.verdict(gain, 1.96 * se)
    assert text.startswith("still improving (+10.00 ± ") and "points over the last 25% of steps" in text


def test_a_trial_run_past_its_plateau_is_converged_and_the_quarter_point_is_interpolated():
    evals = _curve([(10, 0.5), (20, 0.8), (30, 0.85), (40, 0.85), (50, 0.85), (60, 0.848), (70, 0.852), (80, 0.851)])
    gain, _ = cv.last_quarter_gain(evals)
    assert gain == pytest.approx(0.851 - 0.848)
    assert cv.verdict(gain).startswith("converged (+0.30 points") and cv.converged(gain)
    # the quarter point between two evals: 75% of 90 steps = 67.5, between 60 (0.848) and 70 (0.852)
    gain90, _ = cv.last_quarter_gain(evals, steps=90)
    assert gain90 == pytest.approx(0.851 - (0.848 + 0.75 * 0.004))
    # a loss improves downwards; no eval before 75% of the steps: not measured
    assert cv.last_quarter_gain(evals, "eval_loss")[0] == pytest.approx(0.003) and \
        cv.last_quarter_gain(evals, "eval_loss")[1] is None
    assert cv.last_quarter_gain(_curve([(80, 0.9)]))[0] is None
    assert cv.verdict(None).startswith("not measured")


def test_the_gain_is_read_on_the_intermediate_evals_items_not_against_the_final_eval_on_another_set():
    # a fixed 400-item subset every 20 steps, then the final eval on all 1,000 items at the same last step
    sub = _curve([(40, 0.80), (60, 0.81), (80, 0.815)])
    gain, se = cv.last_quarter_gain([*sub, {"step": 80, "accuracy": 0.84, "n": 1000}])
    assert gain == pytest.approx(0.815 - 0.81) and cv.converged(gain)  # not 0.84 - 0.81 across item sets
    assert se == pytest.approx(math.sqrt(0.81 * 0.19 / 400 + 0.815 * 0.185 / 400))
    # whichever of the two scores higher: the subset's own end is used either way
    assert cv.last_quarter_gain([*sub, {"step": 80, "accuracy": 0.70, "n": 1000}])[0] == pytest.approx(0.005)
    # no subset eval at the last step: the final eval is the end, its own item count in the SE
    gain, se = cv.last_quarter_gain([*_curve([(40, 0.80), (60, 0.81)]), {"step": 80, "accuracy": 0.83, "n": 1000}])
    assert gain == pytest.approx(0.83 - 0.81) and se == pytest.approx(math.sqrt(0.81 * 0.19 / 400 + 0.83 * 0.17 / 1000))


# ---------------------------------------------------------------------------- early stopping: transformers' rule


@pytest.mark.parametrize("values, patience, delta", [
    ([0.5, 0.6, 0.6, 0.6, 0.7], 2, 0.0),          # equal is no improvement: stops at the 4th eval
    ([0.5, 0.6, 0.605, 0.61, 0.62, 0.6], 2, 0.01),  # small gains below min_delta count as none
    ([0.5, 0.4, 0.6, 0.55, 0.7, 0.7, 0.7], 3, 0.0),
    ([0.9, 0.8, 0.7], 1, 0.0),
])
def test_early_stopping_stops_where_transformers_early_stopping_callback_does(values, patience, delta):
    from transformers import EarlyStoppingCallback, TrainerControl, TrainerState

    cb, state = EarlyStoppingCallback(patience, delta), TrainerState()
    args = SimpleNamespace(metric_for_best_model="accuracy", greater_is_better=True)
    theirs = None
    for i, v in enumerate(values):
        control = TrainerControl()
        cb.on_evaluate(args, state, control, metrics={"eval_accuracy": v})
        if state.best_metric is None or v > state.best_metric:  # the Trainer's _determine_best_metric, after it
            state.best_metric = v
        if control.should_training_stop:
            theirs = i
            break
    ours = next((i for i in range(len(values)) if cv.early_stop(_curve(zip(range(1, i + 2), values[: i + 1])),
                                                                 "accuracy", patience, delta)[0]), None)
    assert ours == theirs


def test_early_stopping_off_never_stops_and_reports_the_best_step():
    evals = _curve([(5, 0.6), (10, 0.7), (15, 0.65)])
    assert cv.early_stop(evals, "accuracy", 0) == (False, 10, 0.7)
    assert cv.early_stop(evals, "eval_loss", 1)[:2] == (True, 10)  # loss 0.3 at step 10 is its lowest; 0.35 after


# ---------------------------------------------------------------------------- degenerate


def test_collapsed_and_diverged_are_named_at_the_stated_thresholds():
    assert cv.degenerate({"neg": 98, "pos": 2}, [0.7, 0.6]) == "collapsed"   # 98% one class
    assert cv.degenerate({"neg": 97, "pos": 3}, [0.7, 0.6]) is None
    assert cv.degenerate({"neg": 50, "pos": 50}, [0.7, float("nan")]) == "diverged"
    assert cv.degenerate({"neg": 50, "pos": 50}, [0.7] * 10 + [0.9] * 10) == "diverged"  # ends above its start
    assert cv.degenerate(None, [0.7] * 10 + [0.5] * 10) is None


def _trial(n, lr, seed, acc, degenerate=None, gain=0.0):
    return SimpleNamespace(number=n, state=SimpleNamespace(name="COMPLETE"), params={"train.lr": lr},
                           user_attrs={"seed": seed, "accuracy": acc, "flops": 1.0, "device_seconds": 1.0,
                                       "degenerate": degenerate, "last_quarter_gain": gain})


def test_the_console_summary_sets_degenerate_seeds_aside_and_names_an_unstable_setting():
    from harness.study import summary

    trials = [_trial(0, 1e-3, 0, 0.80, gain=0.001), _trial(1, 1e-3, 1, 0.82, gain=0.003),
              _trial(2, 1e-3, 2, 0.50, "collapsed"),
              _trial(3, 1.0, 0, 0.50, "collapsed"), _trial(4, 1.0, 1, 0.90, gain=0.05)]
    obj = {"accuracy": "maximize"}
    rows = {r["params"]["train.lr"]: r for r in summary.configurations(trials, obj)}
    ok, bad = rows[1e-3], rows[1.0]
    assert ok["accuracy"] == pytest.approx(0.81) and len(ok["seeds"]) == 2 and ok["set_aside"] == {"collapsed": 1}
    assert not ok["unstable"] and ok["learning"].startswith("converged (+0.20 ±")
    assert bad["unstable"]  # 1 of 2 degenerate: half
    best = summary.best_configuration(trials, obj)
    assert best["params"] == {"train.lr": 1e-3}  # 0.90 of the unstable setting is not the best
    table = summary.summary_table(trials, ["train.lr"], obj)
    assert "unstable at this setting" in table and "1 collapsed" in table
    assert "1 collapsed set aside" in summary.best_line(trials, ["train.lr"], obj)
    lines = summary.learning_lines(trials, ["train.lr"], obj)
    assert any("train.lr=1: unstable at this setting (1 collapsed of 2 trials)" in x for x in lines)


# ---------------------------------------------------------------------------- real tiny trials


@pytest.fixture
def env(monkeypatch):
    for k, v in dict(WANDB_MODE="offline", WANDB_SILENT="true", HARNESS_QUIET="1").items():
        monkeypatch.setenv(k, v)


def _run(tmp_path, *overrides, study="c", trial=0):
    from harness.config.schema import complete, load
    from harness.train import run

    return run(complete(load([*TINY, f"out_dir={tmp_path}", f"study={study}", f"trial={trial}", *overrides])))


def test_early_stopping_stops_at_the_plateau_and_records_what_it_saved(tmp_path, env):
    # lr 5e-2 on the tiny data climbs from 0.5 to its plateau (~0.9) within ~30 steps; the cap is 300
    rec = _run(tmp_path, "train.lr=5e-2", "train.max_steps=300", "train.eval_every=5",
               "train.early_stopping.patience=2")
    evals = rec["evals"][:-1]  # the last entry is the final eval
    assert rec["status"] == "complete" and rec["stopped_early"] and rec["steps"] < 100
    assert rec["accuracy"] >= 0.8  # it stopped on the plateau, not before the climb
    assert rec["steps"] == rec["best_step"] + 2 * 5  # two evals without improvement after the best one
    best = max(e["accuracy"] for e in evals)
    assert [e["step"] for e in evals if e["accuracy"] == best][0] == rec["best_step"]
    assert all(e["accuracy"] <= best for e in evals if e["step"] > rec["best_step"])
    assert rec["steps_saved"] == 300 - rec["steps"]
    assert rec["flops_saved"] == pytest.approx(rec["train_flops"] / rec["steps"] * rec["steps_saved"])
    assert "early stop at step" in rec["reason"]
    cfg = json.loads((tmp_path / "c" / "trials" / "0" / "result.json").read_text())["config"]
    assert cfg["train"]["lr_scheduler_type"] == "linear"  # the measured schedule under early stopping (BENCHMARKS.md)


def test_predictions_carry_log_probs_that_agree_with_the_logits(tmp_path, env):
    import torch
    from accelerate import Accelerator

    from harness.config.schema import complete, load
    from harness.tasks import classify
    from harness.trial.cost import Clock
    from harness.trial.shared import shared

    rec = _run(tmp_path, "train.lr=5e-2", "train.max_steps=20")
    rows = [json.loads(x) for x in (tmp_path / "c" / "trials" / "0" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == rec["test_size"] and sorted(r["id"] for r in rows) == list(range(rec["test_size"]))
    for r in rows:  # two labels: the predicted one is the argmax, and the two probabilities sum to one
        assert r["pred_logprob"] >= r["gold_logprob"] and (r["pred_logprob"] == r["gold_logprob"]) == r["correct"]
        if not r["correct"]:
            assert math.exp(r["gold_logprob"]) + math.exp(r["pred_logprob"]) == pytest.approx(1, abs=1e-5)
    assert rec["pred_histogram"] == {y: sum(r["prediction"] == y for r in rows) for y in rec["labels"]}
    # and against the logits themselves: the eval's numbers are log_softmax of the head's output
    cfg = complete(load([*TINY, f"out_dir={tmp_path}", "study=d"]))
    acc = Accelerator(cpu=True)
    sh = shared(cfg, classify, acc, Clock(), None)
    items = sh.test_items[:8]
    ev = classify.evaluate(sh.model, items, cfg, sh.tokenizer, acc)
    sh.model.eval()  # evaluate() leaves the model in train mode (dropout on)
    with torch.no_grad():
        logits = sh.model(**classify.collate(items, sh.tokenizer.pad_token_id, "cpu")).logits
    logp = torch.log_softmax(logits.float(), -1)
    for p in ev["predictions"]:
        assert p["gold_logprob"] == pytest.approx(logp[p["id"], items[p["id"]]["label"]].item(), abs=1e-5)
        assert p["pred_logprob"] == pytest.approx(logp[p["id"]].max().item(), abs=1e-5)


def test_item_ids_are_the_same_across_the_trials_of_a_study(tmp_path, env):
    _run(tmp_path, "seed=0", "train.max_steps=2", study="s")
    _run(tmp_path, "seed=1", "train.max_steps=2", "data.train_size=80", study="s", trial=1)
    a, b = ([json.loads(x) for x in (tmp_path / "s" / "trials" / str(n) / "predictions.jsonl").read_text().splitlines()]
            for n in (0, 1))
    assert [(r["id"], r["text"], r["reference"]) for r in a] == [(r["id"], r["text"], r["reference"]) for r in b]


def test_sft_predictions_carry_the_answer_nll_and_token_count(tmp_path, env):
    rec = _run(tmp_path, "model=tiny_llama", "data=tiny_sft", "task=sft", "train.max_steps=2", "train.lr=1e-3")
    rows = [json.loads(x) for x in (tmp_path / "c" / "trials" / "0" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == rec["test_size"] and all(r["n_tokens"] > 0 and r["nll"] > 0 for r in rows)
    # the per-item sums add up to the record's eval loss (mean token NLL) and perplexity
    nll, n = sum(r["nll"] for r in rows), sum(r["n_tokens"] for r in rows)
    assert rec["eval_loss"] == pytest.approx(nll / n, rel=1e-4)
    assert rec["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-3)
    assert rec["exact_match"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))


STUDY = """\
# @package _global_
defaults:
  - override /model: tiny_bert
  - override /data: tiny
study: collapse
train: {max_steps: 30, eval_every: 5}
eval: {batch_size: 64}
hardware: {threads: 1}
tracking: {mode: disabled}
sweep:
  space:
    train.lr: {choices: [5.0e-2, 10.0]}
  objectives: {accuracy: maximize}
  sampler: grid
  pruner: none
  seeds: [0, 1]
  workers: cold
"""


@pytest.mark.slow
@pytest.mark.process
def test_a_forced_collapse_is_flagged_and_set_aside_in_the_summary_and_the_report(tmp_path, capsys, env):
    """lr=10 pushes the tiny head to one class (every seed); lr=5e-2 learns: the summary and the report
    name the first unstable, the second a mean of its seeds, and the hard-items list ignores the collapse."""
    from analysis.__main__ import main as analyse
    from harness.__main__ import main

    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "collapse.yaml").write_text(STUDY)
    ov = ["sweep=collapse", f"hydra.searchpath=[file://{tmp_path}]", f"out_dir={tmp_path}/runs"]
    assert main(ov) == 0
    out = capsys.readouterr().out
    recs = {}
    for d in sorted((tmp_path / "runs" / "collapse" / "trials").iterdir()):
        r = json.loads((d / "result.json").read_text())
        recs[(r["config"]["train"]["lr"], r["config"]["seed"])] = r
    assert {k: r["degenerate"] for k, r in recs.items() if k[0] == 10.0} == {(10.0, 0): "collapsed",
                                                                             (10.0, 1): "collapsed"}
    assert all(r["degenerate"] is None for k, r in recs.items() if k[0] == 0.05)
    import optuna

    study = optuna.load_study(study_name="collapse", storage=f"sqlite:///{tmp_path}/runs/collapse/study.db")
    assert sorted(t.user_attrs["degenerate"] or "-" for t in study.trials) == ["-", "-", "collapsed", "collapsed"]
    assert "train.lr=10: unstable at this setting (2 collapsed of 2 trials)" in out
    assert "best = train.lr=0.05" in out and "[collapsed: set aside]" in out
    assert analyse([*ov, "--report"]) == 0
    report = (tmp_path / "runs" / "collapse" / "report.md").read_text()
    assert "lr=10: **unstable at this setting** (2 collapsed of 2 trials)" in report
    assert "per-trial standard error of accuracy implied by the test split" in report
    assert (tmp_path / "runs" / "collapse" / "figures" / "learning_curves_2col.png").is_file()
    hard = report.split("## Test items most configurations get wrong")[1]
    assert "1 configurations" in hard or "/1 configurations" in hard  # the collapsed setting is not counted
    capsys.readouterr()
    assert os.path.isfile(Path(tmp_path) / "runs" / "collapse" / "tables" / "best.md")


# ---------------------------------------------------------------------------- the analysis (a constructed frame)


def _frame():
    """lr x 3 seeds: 1e-3 clean (still climbing), 3e-3 with one collapsed seed, 1e-1 with two of three."""
    import numpy as np
    import pandas as pd

    from analysis.runs import Loaded

    rows, hist = [], []
    spec = {1e-3: [None, None, None], 3e-3: [None, None, "collapsed"], 1e-1: ["collapsed", "diverged", None]}
    n = 0
    for lr, kinds in spec.items():
        for s, kind in enumerate(kinds):
            acc = 0.5 if kind else 0.70 + 0.01 * s + (0.05 if lr == 3e-3 else 0.0)
            curve = [0.5, 0.5, 0.5, 0.5] if kind else [0.5, acc - 0.1, acc - 0.04, acc]  # steps 10..40
            rows.append({"trial": n, "seed": s, "train.lr": lr, "method": "lora", "accuracy": acc, "degenerate": kind,
                         "last_quarter_gain": curve[-1] - curve[-2], "flops": 1e9, "trainable_params": 100,
                         "test_size": 400})
            hist += [{"trial": n, "step": 10 * (i + 1), "eval/accuracy": a} for i, a in enumerate(curve)]
            n += 1
    df = pd.DataFrame(rows).assign(status="complete", study="syn", device_hours=1e-3, cost_usd=0.0,
                                   baseline_accuracy=0.5, baseline_flops=1e7, run_dir=None,
                                   sweep_axes=json.dumps(["train.lr"]))
    return Loaded(df, pd.DataFrame(hist).assign(**{"train/loss": np.nan}))


def test_the_analysis_sets_degenerate_seeds_aside_counts_them_and_marks_them_in_the_figures():
    import matplotlib.pyplot as plt

    from analysis import curves
    from analysis.figures import axis_figure
    from analysis.plotting import split
    from analysis.tables import best_configs

    loaded = _frame()
    lora, _, _ = split(loaded)
    assert sorted(set(lora["train.lr"])) == [1e-3, 3e-3] and lora["degenerate"].isna().all()  # 1e-1: unstable
    table = best_configs(loaded)
    row = table[table.iloc[:, 0].astype(str) == "0.003"].iloc[0]
    assert row["seeds"] == "2" and row["accuracy"].startswith("0.7550")  # the two clean seeds' mean
    lines = curves.report_lines(loaded)
    unstable = "- lr=0.1: **unstable at this setting** (1 collapsed, 1 diverged of 3 trials)"
    assert any(x.startswith(unstable) for x in lines)
    assert any(x.startswith("- lr=0.003: still improving (+4.00 ± 0.00 points") and "1 collapsed set aside" in x
               for x in lines)
    assert curves.not_converged(loaded) == {"lr=0.001", "lr=0.003"}
    se = curves.standard_error_line(loaded)
    assert "400 test items" in se and "2,000 test items would give" in se
    for fig in (curves.learning_curves(loaded, "2col"), axis_figure(loaded, "2col", "train.lr")):
        labels = fig.axes[0].get_legend_handles_labels()[1]
        assert "collapsed / diverged seed (set aside)" in labels
        xs = [c for c in fig.axes[0].collections if getattr(c, "get_label", lambda: "")() ==
              "collapsed / diverged seed (set aside)"]
        assert xs  # an x per set-aside seed, in the configuration's colour
        plt.close(fig)
