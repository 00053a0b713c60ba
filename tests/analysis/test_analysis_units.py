"""analysis helpers on fixed inputs: Pareto front, confidence intervals, LaTeX tables, --publish offline."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.figures import ci95, pareto_mask


def test_pareto_mask_on_fixed_points():
    # (cost, accuracy): cheaper is better, more accurate is better
    pts = [(1, 0.60), (2, 0.70), (2, 0.65), (3, 0.70), (4, 0.80), (5, 0.75), (0.5, 0.50), (4, 0.80)]
    mask = pareto_mask([c for c, _ in pts], [a for _, a in pts])
    # (2, .65) loses to (2, .70); (3, .70) to (2, .70); (5, .75) to (4, .80); the two (4, .80) tie
    # and neither dominates the other, so both stay.
    assert mask.tolist() == [True, True, False, False, True, False, True, True]


def test_pareto_mask_single_point_and_all_equal():
    assert pareto_mask([3.0], [0.5]).tolist() == [True]
    assert pareto_mask([1, 2, 3], [0.5, 0.5, 0.5]).tolist() == [True, False, False]


def test_ci95_matches_student_t():
    mean, half, n = ci95([0.70, 0.72, 0.74])
    # sd = 0.02, t(0.975, 2) = 4.3027 -> 4.3027 * 0.02 / sqrt(3)
    assert (n, round(mean, 6), round(half, 4)) == (3, 0.72, 0.0497)
    assert np.isnan(ci95([0.7])[1]) and ci95([0.7])[2] == 1


def test_latex_table_is_booktabs_and_escaped():
    from analysis.tables import to_latex

    t = pd.DataFrame({"targets": ["all_linear"], "α": ["16"], "accuracy": ["0.7000 ± 0.0100"], "cost (USD)": ["—"]})
    tex = to_latex(t, "Best of study lora\\_rank.", "tab:x")
    for part in ("\\toprule", "\\midrule", "\\bottomrule", "all\\_linear", "$\\alpha$", "$\\pm$", "---", "{llrr}"):
        assert part in tex, part
    assert "±" not in tex and "α" not in tex


def test_publish_offline_says_why_it_is_skipped():
    from analysis.publish import publish

    msg = publish("lora_rank", None, None)
    assert msg.startswith("skipped --publish") and "wandb sync" in msg


def _synthetic(with_refs: bool = True):
    """A seeded study frame: targets x train_size, 3 seeds, plus head_only / full reference trials."""
    import json

    from analysis.runs import Loaded

    rows, rng = [], np.random.default_rng(0)
    for t, gain, params in (("attn_qv", 0.0, 2000), ("all_linear", 0.03, 7000)):
        for n in (100, 200, 400):
            for s in range(3):
                rows.append({"lora.targets": t, "data.train_size": n, "seed": s, "method": "lora",
                             "accuracy": 0.9 - 2 * n ** -0.5 + gain + rng.normal(0, 0.005), "flops": params * n * 1e3,
                             "trainable_params": params})
    if with_refs:
        rows += [{"lora.targets": "attn_qv", "data.train_size": 400, "seed": s, "method": m, "accuracy": acc,
                  "flops": f, "trainable_params": p} for s in range(3)
                 for m, acc, f, p in (("head_only", 0.6 + 0.01 * s, 1e8, 66), ("full", 0.85, 9e9, 10**6))]
    df = pd.DataFrame(rows).assign(status="complete", study="syn", device_hours=lambda d: d["flops"] / 1e15,
                                   cost_usd=0.0, baseline_accuracy=0.5, baseline_flops=1e7, run_dir=None,
                                   sweep_axes=json.dumps(["lora.targets", "data.train_size"]))
    df["trial"] = range(len(df))
    return Loaded(df, pd.DataFrame(columns=["trial", "step", "train/loss", "eval/accuracy"]))


def test_reference_arms_are_rows_and_lines_not_configurations():
    import matplotlib.pyplot as plt

    from analysis.figures import axis_figure
    from analysis.plotting import split
    from analysis.tables import best_configs, comparison_table

    loaded = _synthetic()
    lora, refs, axes = split(loaded)
    assert axes == ["lora.targets", "data.train_size"] and set(refs["method"]) == {"head_only", "full"}
    table = best_configs(loaded)
    first = table.columns[0]
    assert list(table[first].iloc[-3:]) == ["full fine-tune", "head only (linear probe)", "zero-shot (base model)"]
    assert len(table) == 6 + 3 and table[first].iloc[0] == "all_linear"
    cmp = comparison_table(loaded)
    assert len(cmp) == 3 + 2 * 3  # targets at each of 3 sizes; 3 size pairs for each of 2 targets
    fig = axis_figure(loaded, "2col", "data.train_size")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any(lab.startswith("head only (linear probe) (3 seeds") for lab in labels)
    assert any(lab.startswith("fit a - b·n^-c, predicted at 800") for lab in labels)  # 2x the largest size
    plt.close(fig)


def test_tune_keeps_each_arm_at_its_best_value():
    from analysis.stats import tune

    df = pd.DataFrame([(t, lr, s, acc) for s in range(3) for t, lr, acc in
                       (("qv", 1e-3, 0.60), ("qv", 1e-2, 0.70), ("all", 1e-3, 0.75), ("all", 1e-2, 0.65))],
                      columns=["lora.targets", "train.lr", "seed", "accuracy"]).assign(flops=1.0)
    df["trial"] = range(len(df))
    kept, axes, picked = tune(df, ["lora.targets", "train.lr"], "train.lr")
    assert axes == ["lora.targets"]
    assert dict(zip(picked["lora.targets"], picked["train.lr"])) == {"qv": 1e-2, "all": 1e-3}
    assert len(kept) == 6 and set(zip(kept["lora.targets"], kept["train.lr"])) == {("qv", 1e-2), ("all", 1e-3)}


def test_the_best_configuration_is_paired_with_each_reference_arm_over_seeds():
    from scipy import stats as st

    from analysis import report, stats
    from analysis.plotting import split

    lora, refs, axes = split(_synthetic())
    configs = stats.configurations(lora, axes)
    top = stats.best(configs)
    assert top["label"] == "targets=all_linear, n=400"
    full = refs[refs["method"] == "full"]
    (line,) = report._best_vs_reference(lora, configs, full)
    best = lora[lora["trial"].isin(top["trials"])].sort_values("seed")["accuracy"].to_numpy()
    diff, p = 100 * (best - 0.85).mean(), st.ttest_rel(best, np.full(3, 0.85)).pvalue  # by hand
    assert line.startswith("  - targets=all_linear, n=400 (the best configuration) − this arm: ")
    assert f"{diff:+.2f} points" in line and f"paired t p = {p:.4f}" in line and "over 3 shared seeds" in line
    assert report._best_vs_reference(lora, configs, full[full["seed"] == 0]) == []  # one shared seed: no line
