"""analysis on a tiny real study: real trials (tiny BERT, offline W&B run files), a real SQLite
Optuna study, read back through `wandb leet inspect` and checked against result.json and the study."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.config.schema import ROOT, ConfigError, complete, load

# (overrides) per trial; the grid varies rank, alpha, training-set size and seed so every figure
# has data. "lora.r=0" cannot run and lr=1e30 diverges (NaN loss): both FAIL, as in the driver.
GRID = [
    "lora.r=2 lora.alpha=4", "lora.r=8 lora.alpha=4", "lora.r=2 lora.alpha=16", "lora.r=8 lora.alpha=16",
    "lora.r=8 lora.alpha=16 seed=1", "lora.r=2 lora.alpha=4 data.train_size=80",
    "lora.r=8 lora.alpha=16 data.train_size=80", "lora.r=2 lora.alpha=16 data.train_size=80",
    "lora.r=8 lora.alpha=4 PRUNE", "lora.r=0", "lora.r=2 lora.alpha=4 train.lr=1e30 train.max_grad_norm=1e30",
]
# 30 steps at lr 5e-2 leave the tiny trials past chance: 4 steps at 1e-2 left every one collapsed (one class
# predicted for every item), and the analysis sets collapsed trials aside from every mean (issue 23)
BASE = ["model=tiny_bert", "data=tiny", "study=tiny_study", "train.max_steps=30", "train.eval_every=10",
        "train.lr=5e-2", "quant=none"]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    import optuna

    from harness.train import TrialFailed, TrialPruned, run

    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_CONSOLE="off", WANDB__DISABLE_STATS="true",
                      HARNESS_QUIET="1")
    out = tmp_path_factory.mktemp("runs")
    base = [*BASE, f"out_dir={out}"]
    cfg0 = load(base)
    (out / "tiny_study").mkdir()
    study = optuna.create_study(study_name="tiny_study", storage=cfg0.storage.url, direction="maximize")
    for spec in GRID:
        over = [o for o in spec.split() if o != "PRUNE"]
        params = {"data.train_size": "160", **dict(o.split("=") for o in over if o.startswith(("lora.", "data.")))}
        study.enqueue_trial({k: int(v) for k, v in params.items()})
        trial = study.ask()
        for k, v in params.items():  # as the driver's search space does: dotted config names
            trial.suggest_int(k, 0, 1000)
        over = [f"{k}={v}" for k, v in params.items()] + [o for o in over if not o.startswith(("lora.", "data."))]
        trial.set_user_attr("overrides", over)
        try:
            cfg = complete(load([*base, *over, f"+trial={trial.number}"]))
        except ConfigError as e:
            trial.set_user_attr("fail_reason", str(e))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        trial.set_user_attr("seed", cfg.seed)
        try:
            rec = run(cfg, reporter=(lambda step, ev: True) if "PRUNE" in spec else None)
        except TrialPruned as e:
            trial.set_user_attr("prune_reason", str(e))
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        except TrialFailed as e:
            trial.set_user_attr("fail_reason", str(e))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        trial.set_user_attr("accuracy", rec["accuracy"])
        study.tell(trial, rec["accuracy"])
    return out / "tiny_study"


def _load(study_dir: Path, **kw):
    """The W&B run files decoded (the opt-in cross-check), unless wandb_offline=False: result.json."""
    from analysis.runs import Study, load

    return load(Study("tiny_study", study_dir, f"sqlite:///{study_dir}/study.db"), **{"wandb_offline": True, **kw})


def _study(study_dir: Path):
    import optuna

    return optuna.load_study(study_name="tiny_study", storage=f"sqlite:///{study_dir}/study.db")


@pytest.fixture(scope="module")
def loaded(study_dir):
    return _load(study_dir, refresh=True)  # the one full read of all runs (two CLI calls per run)


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_loader_rows_match_study_and_records(study_dir, loaded):
    from analysis.runs import METRICS

    df = loaded.trials.set_index("trial")
    trials = _study(study_dir).trials
    assert sorted(df.index) == [t.number for t in trials]  # every trial, failed and pruned included
    for t in trials:
        row = df.loc[t.number]
        assert row["state"] == t.state.name
        if t.state.name == "COMPLETE":
            assert row["accuracy"] == t.value and row["status"] == "complete"
        result = study_dir / "trials" / str(t.number) / "result.json"
        if t.state.name == "FAIL" and not result.exists():  # died at config validation: Optuna's reason
            assert row["status"] == "failed" and "lora.r" in row["reason"]
            assert row["source"].startswith("optuna only")
            continue
        rec = json.loads(result.read_text())
        assert row["source"] == "wandb-offline"
        # a pruned trial finished as asked (exit code 0, summary status "pruned"); only a failed one is a failed run
        assert row["wandb_state"] == ("failed" if t.state.name == "FAIL" else "finished")
        for key in METRICS:  # W&B's summary, decoded by `wandb leet inspect`, equals the record exactly
            assert row[key] == rec.get(key) or (rec.get(key) is None and pd.isna(row[key])), key
        assert (row["lora.r"], row["lora.alpha"], row["seed"]) == (rec["config"]["lora"]["r"],
                                                                    rec["config"]["lora"]["alpha"], rec["config"]["seed"])
        hist = loaded.history[loaded.history["trial"] == t.number].set_index("step")
        assert [hist.loc[h["step"], "train/loss"] for h in rec["history"]] == [h["train/loss"] for h in rec["history"]]
        assert [hist.loc[e["step"], "eval/accuracy"] for e in rec["evals"]] == [e["accuracy"] for e in rec["evals"]]
    diverged = df[df["reason"].fillna("").str.contains("non-finite loss")]
    assert len(diverged) == 1 and diverged["state"].iloc[0] == "FAIL" and diverged["source"].iloc[0] == "wandb-offline"
    pruned = df[df["state"] == "PRUNED"]
    assert len(pruned) == 1 and pruned["status"].iloc[0] == "pruned" and "pruned after step 10" in pruned["reason"].iloc[0]


def _small_copy(study_dir: Path, tmp_path: Path, keep=("0", "1")) -> Path:
    """The study with only some trial directories: cheap to re-read."""
    import shutil

    copy = tmp_path / "tiny_study"
    shutil.copytree(study_dir, copy, symlinks=True, ignore=shutil.ignore_patterns("*.parquet"))
    for d in (copy / "trials").iterdir():
        if d.name not in keep:
            shutil.rmtree(d)
    return copy


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_result_json_stands_in_without_wandb_files(study_dir, loaded, tmp_path):
    import shutil

    copy = _small_copy(study_dir, tmp_path)
    shutil.rmtree(copy / "trials" / "1" / "wandb")  # as with tracking.mode=disabled
    got = _load(copy)
    ref = loaded.trials.set_index("trial")
    row = got.trials.set_index("trial").loc[1]
    assert row["source"].startswith("result.json")
    for key in ("accuracy", "flops", "device_seconds", "trainable_params", "lora.r"):
        assert row[key] == ref.loc[1, key]
    assert any("result.json" in n for n in got.notes)
    assert len(got.history[got.history["trial"] == 1]) == len(loaded.history[loaded.history["trial"] == 1])


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_frame_cache_is_reused_until_an_input_changes(study_dir, tmp_path):
    import time

    copy = _small_copy(study_dir, tmp_path)
    first = _load(copy).trials
    assert any("cached frame" in n for n in _load(copy).notes)
    time.sleep(0.05)
    next(copy.glob("trials/0/wandb/*/*.wandb")).touch()  # trial 0 changed, trial 1 did not
    again = _load(copy)
    assert any("reused 1 unchanged run(s) from the cache, read 1" in n for n in again.notes)
    pd.testing.assert_frame_equal(again.trials, first, check_dtype=False)


def _assert_written(folder: Path, name: str) -> None:
    from analysis.plotting import WIDTHS

    for width in WIDTHS:
        for ext in ("pdf", "png"):
            path = folder / f"{name}_{width}.{ext}"
            assert path.is_file() and path.stat().st_size > 1000, path


def _varied(loaded):
    """The study's frame with accuracies that depend on rank (chance-level tiny trials all tie):
    the study, its trials and costs stay real."""
    from analysis.runs import Loaded

    df = loaded.trials.copy()
    ok = df["status"] == "complete"
    noise = np.random.default_rng(0).normal(0, 0.01, ok.sum())
    df.loc[ok, "accuracy"] = 0.6 + 0.02 * np.log2(df.loc[ok, "lora.r"].astype(float)) + noise
    df.loc[ok, "degenerate"] = None  # the accuracies are made up: so is whether a trial collapsed
    return Loaded(df, loaded.history, loaded.optuna_study)


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_every_figure_is_written_when_the_data_supports_it(loaded, tmp_path):
    from analysis.figures import figure_names, write_all

    notes = []
    varied = _varied(loaded)
    write_all(varied, tmp_path, say=notes.append)
    assert notes == []
    names = figure_names(varied)
    assert {"accuracy_vs_rank", "accuracy_vs_alpha", "data_scaling"} <= set(names)  # one per varied axis
    for name in names:
        _assert_written(tmp_path, name)


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_importance_ranks_the_parameter_that_drives_accuracy(loaded):
    import matplotlib.pyplot as plt

    from analysis.figures import param_importance

    fig = param_importance(_varied(loaded), "1col")
    bars = {t.get_text(): p.get_width() for t, p in zip(fig.axes[0].get_yticklabels(), fig.axes[0].patches)}
    assert max(bars, key=bars.get) == "lora.r" and set(bars) == {"lora.r", "lora.alpha", "data.train_size"}
    plt.close(fig)


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_importance_leaves_out_a_trial_the_frame_set_aside(loaded):
    """A trial COMPLETE in the storage but not in the frame (set aside as degenerate, or finished after the frame
    was read): Optuna re-reads the storage, and the figure once ended in a KeyError on it (the lr_rank study)."""
    import matplotlib.pyplot as plt

    from analysis.figures import param_importance
    from analysis.runs import Loaded

    varied = _varied(loaded)
    ok = varied.trials[varied.trials["status"] == "complete"]
    dropped = Loaded(varied.trials.drop(index=ok.index[0]), varied.history, varied.optuna_study)
    fig = param_importance(dropped, "1col", min_trials=4)
    assert f"{len(ok) - 1} trials" in fig.axes[0].get_xlabel()
    plt.close(fig)


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_cli_writes_every_figure_and_table(study_dir, loaded, tmp_path, capsys):
    from analysis.__main__ import main
    from analysis.figures import figure_names

    FIGURES = figure_names(loaded)
    out = tmp_path / "report"
    assert main(["study=tiny_study", f"out_dir={study_dir.parent}", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "11 trials" in printed and "2 failed" in printed and "1 pruned" in printed
    # importance may lack the 8 non-degenerate trials it needs and say so; every other figure is drawn
    # (importance itself: the test below).
    drawn = [n for n in FIGURES if f"skipped {n}:" not in printed]
    assert set(FIGURES) - set(drawn) <= {"param_importance"}
    for name in drawn:
        _assert_written(out / "figures", name)
    for name in ("best.tex", "best.md", "pareto.tex", "pareto.md", "trials.md"):
        assert (out / "tables" / name).stat().st_size > 0
    best = (out / "tables" / "best.tex").read_text()
    assert "\\toprule" in best and "zero-shot (base model)" in best
    assert (study_dir / "trials.parquet").is_file()


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_pareto_points_drawn_are_exactly_the_non_dominated_configuration_means(loaded):
    import matplotlib.pyplot as plt

    from analysis.figures import accuracy_vs_compute
    from analysis.plotting import split
    from analysis.stats import configurations

    varied = _varied(loaded)
    lora, _, axes = split(varied)
    ok = configurations(lora, axes).rename(columns={"mean": "accuracy"})
    fig = accuracy_vs_compute(varied, "2col")
    for ax, x in zip(fig.axes, ("flops", "device_hours")):
        drawn = {tuple(p) for c in ax.collections if c.get_gid() == "pareto" for p in np.asarray(c.get_offsets())}
        pts = list(zip(ok[x], ok["accuracy"]))
        expected = {p for p in pts if not any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in pts)}
        assert drawn == expected and 1 <= len(expected) < len(pts)
    plt.close(fig)


@pytest.mark.parametrize("args, message", [
    (["study=no_such_study"], "no runs for study 'no_such_study'"),
    (["sweep=no_such_sweep"], "no_such_sweep"),
    ([], "which study?"),
    (["--wandb", "just-a-project", "--group", "x"], "ENTITY/PROJECT"),
    (["--epsilon", "200"], "--epsilon is in accuracy points"),
])
def test_missing_inputs_give_one_line_and_exit_2(args, message, tmp_path, capsys):
    from analysis.__main__ import main

    assert main([*args, f"out_dir={tmp_path}"] if args and "=" in args[0] else args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_study_dir_without_runs_is_a_clear_error(tmp_path, capsys):
    from analysis.__main__ import main

    (tmp_path / "empty" / "trials" / "0").mkdir(parents=True)  # a trial dir with no W&B files, no record
    assert main(["study=empty", f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no trials" in err and "\n" not in err


@pytest.mark.process
def test_cli_runs_as_a_module(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "analysis", "study=nothing_here", f"out_dir={tmp_path}"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().startswith("error: no runs for study 'nothing_here'")


DRIVER_SWEEP = """\
# @package _global_
# python -m harness sweep=tiny_driver hydra.searchpath=[file://DIR]
defaults:
  - override /model: tiny_bert
  - override /data: tiny
study: tiny_driver
train: {max_steps: 30, lr: 5.0e-2, eval_every: 10, max_grad_norm: 1.0e+30}
hardware: {threads: 1}
tracking: {mode: offline}
sweep:
  space:
    lora.r: {choices: [2, 8]}
    train.lr: {choices: [5.0e-2, 1.0e+30]}   # 1e30 diverges (NaN loss): that trial fails
  sampler: random
  n_trials: 3
  enqueue:
    - {lora.r: 2, train.lr: 5.0e-2}
    - {lora.r: 8, train.lr: 5.0e-2}
    - {lora.r: 2, train.lr: 1.0e+30}
"""


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_a_study_run_by_the_real_driver_reads_back_identically(tmp_path, capsys):
    """`python -m harness sweep=...` (trial processes, SQLite, offline W&B), then `python -m analysis`
    with the same overrides: one row per Optuna trial, values equal to result.json and the study."""
    import optuna

    from analysis.__main__ import main as analysis_main
    from analysis.runs import Study
    from analysis.runs import load as load_frame
    from harness.__main__ import main as harness_main

    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "tiny_driver.yaml").write_text(DRIVER_SWEEP)
    ov = ["sweep=tiny_driver", f"hydra.searchpath=[file://{tmp_path}]", f"out_dir={tmp_path}/runs"]
    harness_main(ov)  # exit code says a trial failed; the study itself is what we check
    capsys.readouterr()
    assert analysis_main([*ov, "--out", str(tmp_path / "out")]) == 0
    assert "3 trials (2 complete, 1 failed)" in capsys.readouterr().out
    study_dir = tmp_path / "runs" / "tiny_driver"
    trials = optuna.load_study(study_name="tiny_driver", storage=f"sqlite:///{study_dir}/study.db").trials
    df = load_frame(Study("tiny_driver", study_dir, f"sqlite:///{study_dir}/study.db"),
                    wandb_offline=True).trials.set_index("trial")
    assert sorted(df.index) == [t.number for t in trials]
    for t in trials:
        row = df.loc[t.number]
        assert row["state"] == t.state.name and row["seed"] == t.user_attrs["seed"]
        if t.state.name == "FAIL":
            assert row["status"] == "failed" and row["reason"] == t.user_attrs["fail_reason"]
            continue
        rec = json.loads((Path(t.user_attrs["run_dir"]) / "result.json").read_text())
        assert row["source"] == "wandb-offline" and row["lora.r"] == t.params["lora.r"]
        assert row["accuracy"] == t.values[0] == rec["accuracy"]
        for key in ("flops", "device_seconds", "trainable_params", "eval_loss", "cost_usd"):
            assert row[key] == rec[key] == t.user_attrs[key], key
    _assert_written(tmp_path / "out" / "figures", "accuracy_vs_compute")


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_records_are_the_default_source_and_agree_with_wandb(study_dir, loaded):
    """result.json read directly (no subprocess) gives the same frame as decoding the W&B files."""
    from analysis.runs import METRICS

    fast = _load(study_dir, wandb_offline=False, refresh=True)
    assert not any("disagree" in n for n in loaded.notes)  # the cross-check found W&B == result.json
    a, b = fast.trials.set_index("trial"), loaded.trials.set_index("trial")
    ran = b[b["source"] == "wandb-offline"].index
    assert len(ran) >= 8 and (a.loc[ran, "source"] == "result.json").all()
    for key in (*METRICS, "lora.r", "seed"):
        for t in ran:
            assert a.loc[t, key] == b.loc[t, key] or (pd.isna(a.loc[t, key]) and pd.isna(b.loc[t, key])), (t, key)


@pytest.mark.process  # the fixture's W&B runs (wandb-core) and `wandb leet` reads
def test_report_states_configurations_comparisons_and_a_recommendation(study_dir, loaded, tmp_path, capsys):
    from analysis.__main__ import main

    out = tmp_path / "rep"
    assert main(["study=tiny_study", f"out_dir={study_dir.parent}", "--out", str(out), "--report"]) == 0
    printed = capsys.readouterr().out
    md = (out / "report.md").read_text()
    for part in ("## What was run", "## Configurations", "## Comparisons", "## Recommendation", "zero-shot (base model)",
                 "Holm", "best configuration mean", "## Test items most configurations get wrong"):
        assert part in md, part
    # one seed per configuration but one (r=8, alpha=16: seeds 0 and 1): no pair shares 2 seeds, so each is
    # McNemar's exact test on the shared test items; chance-level tiny trials decide nothing
    comparisons = md.split("## Comparisons")[1].split("##")[0]
    lines = [x for x in comparisons.splitlines() if x.startswith("- ")]
    assert lines and all("1 seed, no interval over seeds" in x and "McNemar exact p" in x for x in lines)
    assert all(x.count("**undecided**") == 1 and " — " in x for x in lines)
    assert "recommendation:" in printed and "best configuration mean" in printed
    tex = (out / "report.tex").read_text()
    assert tex.startswith("\\documentclass") and "\\toprule" in tex and tex.rstrip().endswith("\\end{document}")
