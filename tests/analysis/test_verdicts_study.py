"""The whole analysis (figures, tables, report, plan) over small synthetic studies written as real
trial records (trials/<n>/result.json + predictions.jsonl, the layout analysis/runs.py reads):
1, 2 and 3 seeds per configuration, mixed seed counts, ties and zero variance, a single
configuration, all-degenerate trials, no per-item predictions. No traceback, and only the four
verdict words."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

M = 60  # test items per trial


def _record(study, trial, seed, cfg, acc, space, degenerate=None):
    r, lr, targets = cfg.get("lora.r", 8), cfg.get("train.lr", 1e-2), cfg.get("lora.targets", "attn_qv")
    return {"status": "complete", "reason": None, "study": study, "trial": trial, "accuracy": acc, "flops": 1e9 * r,
            "device_seconds": 2.0, "wall_seconds": 3.0 + trial % 3, "trainable_params": 100 * r, "cost_usd": 0.0,
            "test_size": M, "train_size": 100, "baseline_accuracy": 0.5, "baseline_flops": 1e7, "steps": 10,
            "degenerate": degenerate, "evals": [], "history": [{"step": 1, "train/loss": 0.7}, {"step": 2, "train/loss": 0.6}],
            "provenance": {"git_sha": "0123456789abcdef", "versions": {"numpy": np.__version__}},
            "config": {"study": study, "trial": trial, "seed": seed, "method": "lora",
                       "lora": {"r": r, "alpha": 2 * r, "targets": targets}, "data": {"name": "tiny", "train_size": 100,
                                                                                "test_size": M},
                       "train": {"lr": lr, "max_steps": 10, "batch_size": 16, "grad_accum": 1},
                       "model": {"name": "tiny_bert", "source": "tiny"}, "quant": {"mode": "none"},
                       "sweep": {"file": "synthetic", "space": space, "sampler": "grid", "seeds": [0, 1, 2]}}}


def write_study(root: Path, name: str, spec: list[tuple[dict, list[int]]], space: dict, acc, *, predictions=True,
                scores=False, degenerate=None) -> None:
    """spec: (configuration, its seeds); acc(cfg, seed) -> the number of items right (of M)."""
    trial = 0
    for cfg, seeds in spec:
        for seed in seeds:
            right = acc(cfg, seed)
            d = root / name / "trials" / str(trial)
            d.mkdir(parents=True)
            flag = degenerate(trial) if degenerate else None
            (d / "result.json").write_text(json.dumps(_record(name, trial, seed, cfg, right / M, space, flag)))
            if predictions:  # items 0..right-1 right: configurations share their hard items, as real ones do
                lines = [{"id": i, "prediction": "positive", "reference": "positive" if i < right else "negative",
                          "correct": i < right, "text": f"item {i}"} for i in range(M)]
                for line in lines:
                    if scores:
                        line["gold_logprob"] = float(np.log(0.9 if line["correct"] else 0.3) - 0.001 * line["id"])
                (d / "predictions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
            trial += 1


RANK = {"lora.r": {"choices": [2, 8, 32]}, "lora.alpha_over_r": {"choices": [2]}}
LR_TARGETS = {"lora.targets": {"choices": ["attn_qv", "peft_default"]}, "train.lr": {"choices": [1e-2, 1e-4]}}
STUDIES = {
    # lora_rank as a new user runs it: 3 ranks, 1 seed, alpha/r fixed
    "one_seed": dict(spec=[({"lora.r": r}, [0]) for r in (2, 8, 32)], space=RANK,
                     acc=lambda c, s: {2: 40, 8: 42, 32: 50}[c["lora.r"]]),
    "two_seeds": dict(spec=[({"lora.r": r}, [0, 1]) for r in (2, 8)], space={"lora.r": {"choices": [2, 8]}},
                      acc=lambda c, s: 40 + s + (3 if c["lora.r"] == 8 else 0) + (s if c["lora.r"] == 8 else 0)),
    # same adapters under two names (identical: ties, zero variance) and a planted lr difference
    "three_seeds": dict(spec=[({"lora.targets": t, "train.lr": lr}, [0, 1, 2]) for t in ("attn_qv", "peft_default")
                              for lr in (1e-2, 1e-4)], space=LR_TARGETS, scores=True,
                        acc=lambda c, s: (50 + s) if c["train.lr"] == 1e-2 else 30),
    "mixed_seeds": dict(spec=[({"lora.r": 2}, [0]), ({"lora.r": 8}, [0, 1]), ({"lora.r": 32}, [0, 1, 2])], space=RANK,
                        acc=lambda c, s: 40 + s + c["lora.r"] // 8),
    "single_config": dict(spec=[({"lora.r": 8}, [0, 1, 2])], space={"lora.r": {"choices": [8]}},
                          acc=lambda c, s: 45 + s),
    "all_degenerate": dict(spec=[({"lora.r": r}, [0, 1]) for r in (2, 8)], space={"lora.r": {"choices": [2, 8]}},
                           acc=lambda c, s: 30, degenerate=lambda t: ("collapsed", "diverged")[t % 2]),
    "no_predictions": dict(spec=[({"lora.r": r}, [0, 1]) for r in (2, 8)], space={"lora.r": {"choices": [2, 8]}},
                           acc=lambda c, s: 40 + s + (2 if c["lora.r"] == 8 else 0), predictions=False),
}
WORDS = re.compile(r"\*\*(better|worse|equivalent within ±1 point|undecided)\*\*")


def _run(args, capsys):
    from analysis.__main__ import main

    code = main(args)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "Traceback" not in out.out + out.err
    return out.out


@pytest.mark.parametrize("name", list(STUDIES))
def test_the_whole_analysis_runs_and_speaks_the_four_words(name, tmp_path, capsys):
    from harness.record import TrialRecord

    if name == "all_degenerate" and "degenerate" not in TrialRecord.model_fields:
        pytest.skip("harness/record.py does not declare the record field `degenerate` yet (the convergence issue)")
    kw = dict(STUDIES[name])
    write_study(tmp_path / "runs", name, kw.pop("spec"), kw.pop("space"), kw.pop("acc"), **kw)
    base = [f"study={name}", f"out_dir={tmp_path / 'runs'}", "--out", str(tmp_path / "out")]
    printed = _run([*base, "--report"], capsys)
    planned = _run([*base, "--plan"], capsys)
    md = (tmp_path / "out" / "report.md").read_text()
    plan = (tmp_path / "out" / "plan.md").read_text()
    for text in (md, plan, printed, planned, (tmp_path / "out" / "report.tex").read_text()):
        assert not re.search(r"\bnan\b", text, re.I) and "untested" not in text and "not distinguishable" not in text
    comparisons = [x for x in md.split("## Comparisons")[1].split("\n## ")[0].splitlines() if x.startswith("- ") and " vs " in x]
    assert all(len(WORDS.findall(x)) == 1 for x in comparisons), comparisons
    for x in comparisons:
        if "**undecided**" in x:
            assert " — " in x  # says what would decide it
    if name == "one_seed":
        assert [x.split(":")[0] for x in comparisons] == ["- r=8 vs r=2", "- r=32 vs r=2", "- r=32 vs r=8"]
        assert "McNemar exact p" in md and "α/r" not in md.split("## Comparisons")[1].split("## Accuracy")[0]
        assert "1 seed, no interval over seeds; 95% over 60 test items" in md and "1 seed each" in printed
        assert "**r=32**, 0.8333 (1 seed, no interval over seeds" in md  # the recommendation names r alone
    if name == "three_seeds":
        verdict = {x.split(":")[0]: WORDS.search(x).group(1) for x in comparisons}
        assert verdict["- targets=peft_default vs targets=attn_qv (at lr=0.01)"] == "equivalent within ±1 point"
        assert verdict["- lr=0.01 vs lr=0.0001 (at targets=attn_qv)"] == "better"
        assert "Wilcoxon" in md or "agree on all" in md
    if name == "all_degenerate":
        assert "set aside as degenerate: 4 trials (collapsed: 2, diverged: 2" in md
        assert "set aside 4 degenerate trial(s)" in printed and "nothing to plan" in plan
    if name == "single_config":
        assert "no two configurations differ" in md and "1 configuration: no curve" in md
    if name == "no_predictions":  # a constant 2-item shift over 2 seeds: no spread, no items: nothing to test against
        assert "no per-item gold log-probability" in md and "nothing to test them against" in md
    if comparisons:
        assert (tmp_path / "out" / "tables" / "comparisons.md").is_file()
        assert all(WORDS.search(x) for x in printed.split("comparisons (")[1].split("recommendation:")[0].splitlines()
                   if x.startswith("- "))


def test_config_dir_and_margin_flags(tmp_path, capsys):
    from analysis.__main__ import main

    kw = dict(STUDIES["three_seeds"])
    write_study(tmp_path / "runs", "three_seeds", kw.pop("spec"), kw.pop("space"), kw.pop("acc"), **kw)
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "three_seeds.yaml").write_text(
        "# @package _global_\nstudy: three_seeds\nsweep:\n  space:\n    train.lr: {choices: [1.0e-2, 1.0e-4]}\n"
        "  sampler: grid\n")
    args = ["sweep=three_seeds", "--config-dir", str(tmp_path / "conf"), f"out_dir={tmp_path / 'runs'}", "--plan",
            "--margin", "0.005", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    assert "margin ±0.5 points" in (tmp_path / "out" / "plan.md").read_text()
    sweep = tmp_path / "conf" / "sweep" / "three_seeds.yaml"
    sweep.write_text(sweep.read_text() + "  margin: 0.02\n")  # sweep.margin, when --margin is not given
    assert main(args[:-4] + ["--out", str(tmp_path / "out")]) == 0
    assert "margin ±2 points" in (tmp_path / "out" / "plan.md").read_text()
    capsys.readouterr()
    sweep.write_text(sweep.read_text().replace("margin: 0.02", "margin: 2"))
    assert main(args[:-4]) == 2 and "margin" in capsys.readouterr().err
    assert main(["sweep=three_seeds", "--config-dir", str(tmp_path / "nowhere")]) == 2
    assert main(["sweep=three_seeds", "--config-dir", str(tmp_path / "conf"), "--margin", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: --config-dir") and "not a directory" in err[0]
    assert err[1].startswith("error: --margin is a fraction of accuracy")


def test_plan_with_tune_plans_the_reports_comparisons(tmp_path, capsys):
    """--plan --tune AXIS plans what the --tune report compares: each arm at its own best AXIS value."""
    kw = dict(STUDIES["three_seeds"])
    write_study(tmp_path / "runs", "three_seeds", kw.pop("spec"), kw.pop("space"), kw.pop("acc"), **kw)
    base = ["study=three_seeds", f"out_dir={tmp_path / 'runs'}", "--out", str(tmp_path / "out"), "--plan"]
    _run(base, capsys)
    plain = (tmp_path / "out" / "plan.md").read_text()
    _run([*base, "--tune", "train.lr"], capsys)
    tuned = (tmp_path / "out" / "plan.md").read_text()
    rows = [x.split("|")[1].strip() for x in tuned.splitlines() if x.startswith("| ") and " vs " in x]
    assert "lr=0.01 vs lr=0.0001" in plain and "Each arm at its own best train.lr" not in plain
    assert rows == ["targets=peft_default vs targets=attn_qv"]
    assert "Each arm at its own best train.lr (`--tune`): " in tuned and tuned.count("lr=0.01") == 2
    assert "lr=0.0001" not in tuned


def test_report_with_tune_says_whether_the_best_lr_carries_over(tmp_path, capsys):
    """--report --tune: both target sets peak at lr 1e-2, so the section says it is the same grid point; printed too."""
    kw = dict(STUDIES["three_seeds"])
    write_study(tmp_path / "runs", "three_seeds", kw.pop("spec"), kw.pop("space"), kw.pop("acc"), **kw)
    printed = _run(["study=three_seeds", f"out_dir={tmp_path / 'runs'}", "--out", str(tmp_path / "out"), "--report",
                    "--tune", "train.lr"], capsys)
    md = (tmp_path / "out" / "report.md").read_text()
    section = md.split("## Does the best train.lr carry over between arms?")[1].split("\n## ")[0]
    assert "same grid point (0.01)" in section and "grid's edge" in section  # 1e-2 is the highest of the two
    assert "same grid point (0.01)" in printed.split("carry over between arms?")[1]
    assert "lr searched (below)" in md.split("## What was run")[1].split("\n## ")[0]  # not one trial's lr


def test_a_configuration_with_collapsed_seeds_is_not_an_arms_best_by_its_survivors(tmp_path, capsys):
    """lr 1e-2 collapses in 2 of 5 seeds (set aside) and its other 3 average a hair above lr 1e-4, which trains
    in all 5: the mean over survivors is conditioned on not collapsing, so --tune picks 1e-4 (stats.best), as
    the driver's pick over every seed's value does; without the rule it would be 1e-2."""
    from harness.record import TrialRecord

    if "degenerate" not in TrialRecord.model_fields:
        pytest.skip("no `degenerate` record field")
    spec = [({"lora.targets": t, "train.lr": lr}, [0, 1, 2, 3, 4]) for t in ("attn_qv", "peft_default")
            for lr in (1e-2, 1e-4)]
    collapsed = {(1e-2, 1), (1e-2, 3)}
    acc = lambda c, s: 30 if (c["train.lr"], s) in collapsed else (45 + s % 2 if c["train.lr"] == 1e-2 else 44 + s % 2)  # noqa: E731
    order = [(c["train.lr"], s) for c, seeds in spec for s in seeds]
    write_study(tmp_path / "runs", "aside", spec, LR_TARGETS, acc,
                degenerate=lambda t: "collapsed" if order[t] in collapsed else None)
    _run(["study=aside", f"out_dir={tmp_path / 'runs'}", "--out", str(tmp_path / "out"), "--report", "--tune",
          "train.lr"], capsys)
    md = (tmp_path / "out" / "report.md").read_text()
    picks = md.split("## Each arm at its own best train.lr")[1].split("\n## ")[0]
    assert "targets=attn_qv, lr=0.0001" in picks and "lr=0.01" not in picks
