"""The learning–forgetting side of a study run with eval.benchmarks (harness/tasks/benchmarks.py).

- benchmark_columns: the trial frame plus forgetting, bench.<b>, base.<b> and retention.<b> columns,
  read from each trial's result.json (the frame keeps scalars; these are the record's dicts).
- item_pairs / base_vs_tuned: the per-item rows of trials/<n>/benchmarks.jsonl (the same items for the
  base and the tuned model) and, per trial and benchmark, the exact McNemar test on the items whose
  verdict flipped (lost vs gained: under "no change" each flip is a fair coin).
- learning_forgetting: per configuration, the task metric and forgetting as means with Student-t
  intervals over seeds, and the Pareto front (more task metric, less forgetting) on the means.
- forgetting_comparisons: stats.comparisons on forgetting (paired over seeds, Holm), its verdicts
  read for a quantity where lower is better ("forgets less").
- learning_forgetting_figure: task metric vs forgetting, configuration means with both intervals,
  seeds faint, the Pareto front, reference arms (method=full) as their own points.
New functions only; analysis/figures.py, tables.py and report.py call them (see the hook list).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.plotting import (
    MARKERS,
    OKABE_ITO,
    REFERENCES,
    Skip,
    config_label,
    legend_below,
    match,
    new_figure,
    reference_name,
    seed_dots,
    split,
)
from analysis.stats import ALPHA, comparisons, configurations, holm, paired, pareto_mask, t_interval
from harness.record import read_record

FORGETTING = "forgetting (base − tuned, mean over benchmarks; 95% CI)"


def _record(run_dir) -> dict:
    rec = read_record(Path(str(run_dir)) / "result.json") if run_dir else None
    return rec.model_dump(exclude_unset=True) if rec is not None else {}


def benchmark_columns(trials: pd.DataFrame) -> pd.DataFrame:
    """trials with forgetting, benchmark_flops and, per benchmark b, bench.<b> (tuned), base.<b> and
    retention.<b>; NaN where a trial has no benchmark scores (failed, or eval.benchmarks empty)."""
    rows = []
    for run_dir in trials.get("run_dir", pd.Series([None] * len(trials), index=trials.index)):
        rec = _record(run_dir)
        row = {"forgetting": rec.get("forgetting"), "benchmark_flops": rec.get("benchmark_flops")}
        for key, prefix in (("benchmarks", "bench"), ("baseline_benchmarks", "base"), ("retention", "retention")):
            row.update({f"{prefix}.{b}": v for b, v in (rec.get(key) or {}).items()})
        rows.append(row)
    extra = pd.DataFrame(rows, index=trials.index).reindex(columns=list(dict.fromkeys(
        ["forgetting", "benchmark_flops", *(k for r in rows for k in r)]))).astype(float)
    return pd.concat([trials.drop(columns=[c for c in extra if c in trials]), extra], axis=1)


def has_benchmarks(trials: pd.DataFrame) -> bool:
    """Whether any trial of the study recorded benchmark scores (eval.benchmarks): the figure is asked only then."""
    return bool(benchmark_columns(trials)["forgetting"].notna().any()) if len(trials) else False


def benchmark_names(df: pd.DataFrame) -> list[str]:
    return sorted(c[len("bench."):] for c in df if c.startswith("bench."))


def item_pairs(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (trial, benchmark item): base and tuned metric values from trials/<n>/benchmarks.jsonl."""
    rows = []
    for trial, run_dir in zip(trials["trial"], trials.get("run_dir", [None] * len(trials))):
        path = Path(str(run_dir)) / "benchmarks.jsonl"
        if run_dir and path.is_file():
            rows += [{"trial": trial, **{k: r[k] for k in ("benchmark", "id", "metric", "base", "tuned")}}
                     for r in map(json.loads, path.read_text().splitlines())]
    return pd.DataFrame(rows, columns=["trial", "benchmark", "id", "metric", "base", "tuned"])


def base_vs_tuned(items: pd.DataFrame) -> pd.DataFrame:
    """Per trial and benchmark: items, base and tuned score, lost / gained items, and the exact McNemar
    p (binomial test of lost among lost + gained at 1/2) for 0/1 metrics; NaN for graded ones (mc2)."""
    rows = []
    for (trial, bench), g in items.groupby(["trial", "benchmark"], sort=True):
        binary = set(np.unique(g[["base", "tuned"]].to_numpy())) <= {0.0, 1.0}
        lost, gained = int((g["base"] > g["tuned"]).sum()), int((g["base"] < g["tuned"]).sum())
        p = (stats.binomtest(lost, lost + gained, 0.5).pvalue if lost + gained else 1.0) if binary else np.nan
        rows.append({"trial": trial, "benchmark": bench, "items": len(g), "base": g["base"].mean(),
                     "tuned": g["tuned"].mean(), "lost": lost, "gained": gained, "p_mcnemar": float(p)})
    return pd.DataFrame(rows)


def learning_forgetting(df: pd.DataFrame, axes: list[str], metric: str = "accuracy") -> pd.DataFrame:
    """One row per configuration: n seeds, metric mean/ci, forgetting mean/ci, and `pareto` (no other
    configuration has at least the metric and at most the forgetting, strictly better in one)."""
    df = df[df["forgetting"].notna()]
    task = configurations(df, axes, metric)
    if task.empty:
        return task
    forget = configurations(df, axes, "forgetting")
    out = task.assign(forgetting=forget["mean"].to_numpy(), forgetting_ci=forget["ci"].to_numpy())
    out["pareto"] = pareto_mask(out["forgetting"], out["mean"])
    return out


def forgetting_comparisons(df: pd.DataFrame, axes: list[str], alpha: float = ALPHA, effect: float = 0.01) -> pd.DataFrame:
    """One-axis pairs on forgetting (b - a over shared seeds, paired t, Holm), as stats.comparisons does for
    the task metric; the verdict says which forgets less (a lower forgetting is the better side)."""
    out = comparisons(df[df["forgetting"].notna()], axes, "forgetting", alpha, effect)
    if not out.empty:
        out["verdict"] = [v.replace("better", "forgets more").replace("worse", "forgets less")
                          if v in ("better", "worse") else v for v in out["verdict"]]
    return out


def reference_comparisons(lora: pd.DataFrame, refs: pd.DataFrame, axes: list[str], metric: str = "accuracy",
                          alpha: float = ALPHA) -> pd.DataFrame:
    """Each LoRA configuration against each reference arm (full fine-tuning): LoRA − reference over the shared
    seeds (stats.paired) on forgetting and on the task metric, Holm across each quantity's rows. The paper's
    claim ("LoRA forgets less") is a LoRA-vs-full question, which the one-axis pairs among LoRA arms never ask."""
    refs = refs[refs["forgetting"].notna()] if "forgetting" in refs else refs.iloc[:0]
    configs = learning_forgetting(lora, axes, metric)
    rows = []
    for method, g in refs.groupby("method"):
        for _, c in configs.iterrows():
            arm = match(lora[lora["forgetting"].notna()], c, axes)
            for quantity in ("forgetting", metric):
                rows.append({"lora": c["label"], "reference": reference_name(method, g), "quantity": quantity,
                             **paired(g.groupby("seed")[quantity].mean(), arm.groupby("seed")[quantity].mean())})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = np.nan
    for _, idx in out.groupby("quantity").groups.items():
        ok = [i for i in idx if not np.isnan(out.at[i, "p_t"])]
        out.loc[ok, "p_holm"] = holm(out.loc[ok, "p_t"])
    words = {"forgetting": ("forgets more", "forgets less"), metric: ("learns more", "learns less")}
    out["verdict"] = [words[q][0 if d > 0 else 1] if p < alpha else f"undecided ({n} shared seeds)"
                      for q, d, p, n in zip(out["quantity"], out["diff"], out["p_holm"].fillna(1.0), out["n"])]
    return out


def learning_forgetting_figure(loaded, width: str, metric: str = "accuracy"):
    """Task metric (y) against forgetting (x): configuration means with 95% intervals on both, single
    seeds faint, the Pareto front on the means (up and to the left is better), reference arms as X."""
    lora, refs, axes = split(loaded)
    lora, refs = benchmark_columns(lora), benchmark_columns(refs)
    configs = learning_forgetting(lora, axes, metric)
    if len(configs) + refs["forgetting"].notna().sum() < 2:
        raise Skip("needs trials with eval.benchmarks scores (forgetting) in 2 configurations")
    fig, axs = new_figure(width)
    ax = axs[0, 0]
    key = axes[0] if axes else None
    groups = sorted(configs[key].astype(str).unique()) if key else ["all"]
    for i, g in enumerate(groups):
        sub = configs[configs[key].astype(str) == g] if key else configs
        trials = lora[lora[key].astype(str) == g] if key else lora
        seed_dots(ax, trials["forgetting"], trials[metric], OKABE_ITO[i % 7])
        ax.errorbar(sub["forgetting"], sub["mean"], xerr=sub["forgetting_ci"].fillna(0), yerr=sub["ci"].fillna(0),
                    color=OKABE_ITO[i % 7], marker=MARKERS[i % 8], ls="none", capsize=2.5, zorder=3,
                    label=config_label(sub.iloc[0], [key]) if key else "configurations")
    front = configs[configs["pareto"]].sort_values("forgetting")
    ax.plot(front["forgetting"], front["mean"], color="black", lw=0.9, zorder=4)
    ax.scatter(front["forgetting"], front["mean"], s=40, facecolors="none", edgecolors="black", linewidths=1.0,
               label="Pareto front (means)", zorder=5, gid="pareto")
    for method, g in refs[refs["forgetting"].notna()].groupby("method"):
        color = REFERENCES.get(method, (method, ":", "0.3"))[2]
        (my, hy, _), (mx, hx, _) = t_interval(g[metric]), t_interval(g["forgetting"])
        ax.errorbar([mx], [my], xerr=[0 if np.isnan(hx) else hx], yerr=[0 if np.isnan(hy) else hy], color=color,
                    marker="X", ms=6, capsize=2.5, ls="none", label=reference_name(method, g), zorder=4)
    ax.axvline(0, color="0.35", ls="--", lw=0.9, zorder=1, label="no forgetting (base model)")
    ax.set_xlabel(FORGETTING)
    ax.set_ylabel(f"{'exact match' if metric == 'accuracy' else metric} (mean ± 95% CI over seeds)")
    legend_below(fig, axs, ncol=2)
    return fig


def report_lines(lora: pd.DataFrame, axes: list[str], refs: pd.DataFrame | None = None) -> list[str]:
    """The report's "What fine-tuning cost the benchmarks" section; [] for a study without eval.benchmarks."""
    df = benchmark_columns(lora)
    if "forgetting" not in df or df["forgetting"].notna().sum() == 0:
        return []
    out = ["## What fine-tuning cost the benchmarks",
           "Forgetting = mean over the benchmarks of base - tuned score on the same items (lower is better; "
           "figure `learning_forgetting`). Per configuration, mean ± 95% CI over seeds:"]
    for _, r in learning_forgetting(df, axes).iterrows():
        out.append(f"- {r['label']}: forgetting {r['forgetting']:+.4f}"
                   + ("" if np.isnan(r["forgetting_ci"]) else f" ± {r['forgetting_ci']:.4f}")
                   + f" ({int(r['n'])} seed{'s' if r['n'] != 1 else ''}){'; on the Pareto front' if r['pareto'] else ''}")
    ref_df = benchmark_columns(refs) if refs is not None and not refs.empty else df.iloc[:0]
    for method, g in ref_df[ref_df["forgetting"].notna()].groupby("method"):
        m, h, n = t_interval(g["forgetting"])
        out.append(f"- {reference_name(method, g)} (reference arm): forgetting {m:+.4f}"
                   + ("" if np.isnan(h) else f" ± {h:.4f}") + f" ({n} seed{'s' if n != 1 else ''})")
    cmp = forgetting_comparisons(df, axes)
    out += [f"- {r['a']} vs {r['b']}: {r['verdict']} (Δ forgetting {r['diff']:+.4f}, paired over {int(r['n'])} seeds)"
            for _, r in cmp.iterrows()] if not cmp.empty and {"a", "b", "diff"} <= set(cmp) else []
    if not ref_df.empty:
        rc = reference_comparisons(df, ref_df, axes)
        if not rc.empty:
            out += ["", "Each LoRA configuration against the reference arm (LoRA − reference over the shared seeds, "
                        "paired t, Holm across each quantity's rows; the reference's forgetting is against its own "
                        "unquantized base):"]
            out += [f"- {r['lora']} vs {r['reference']}, {r['quantity']}: {r['diff']:+.4f} "
                    + ("" if np.isnan(r["lo"]) else f"[95% CI {r['lo']:+.4f}, {r['hi']:+.4f}] ")
                    + f"over {int(r['n'])} seeds" + ("" if np.isnan(r["p_t"]) else
                                                      f", p = {r['p_t']:.4f} (Holm {r['p_holm']:.4f})")
                    + f": **{r['verdict']}**" for _, r in rc.iterrows()]
            out.append("")
    pairs = base_vs_tuned(item_pairs(pd.concat([df, ref_df])))  # every trial, the reference arm's too
    for _, r in pairs.iterrows():
        out.append(f"- trial {r['trial']} {r['benchmark']}: {r['base']:.3f} -> {r['tuned']:.3f} on {r['items']} items "
                   f"({r['lost']} lost, {r['gained']} gained; McNemar exact p = {r['p_mcnemar']:.3g})")
    return [*out, ""]
