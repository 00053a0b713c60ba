"""Learning curves and what each configuration's trials rest on: the convergence verdict (gain over the
last 25% of steps, harness/metrics/convergence.py, the console summary's), the degenerate trials set
aside (collapsed / diverged), and the per-trial standard error the test split's size implies.

The figure `learning_curves` (registered in analysis/figures.py): held-out accuracy against optimizer
step per configuration, the mean over its non-degenerate seeds with a 95% Student-t band, single seeds
faint, degenerate seeds dotted and ended by an x. The curves are the records' `evals`: intermediate
evals every train.eval_every steps (on eval.intermediate_examples items when set), then the final eval.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.plotting import (ACC_CI, MARKERS, OKABE_ITO, Skip, baseline_line, config_label, legend_below,
                               new_figure)
from analysis.stats import per_seed_values, t_interval
from harness.metrics import convergence


def finished(df: pd.DataFrame) -> pd.Series:
    """Trials that ran to the end: complete, or complete and then relabelled "set aside (<kind>)" by
    analysis/items.py set_aside (a degenerate trial)."""
    return (df["status"] == "complete") | df["status"].astype(str).str.startswith("set aside")


def _lora_done(loaded) -> pd.DataFrame:
    """Finished LoRA trials, degenerate ones included (plotting.complete sets those aside)."""
    df = loaded.trials
    df = df[finished(df) & df["accuracy"].notna()]
    return df[df["method"].fillna("lora") == "lora"] if "method" in df else df


def _degenerate(df: pd.DataFrame) -> pd.Series:
    return df["degenerate"].notna() if "degenerate" in df else pd.Series(False, index=df.index)


def degenerate_trials(loaded) -> pd.DataFrame:
    """The complete LoRA trials set aside as collapsed or diverged (drawn, never averaged)."""
    df = _lora_done(loaded)
    return df[_degenerate(df)]


def degenerate_marks(ax, x, y, color) -> None:
    """Set-aside seeds in a figure: an x in the configuration's colour, one legend entry for all."""
    if len(x):
        ax.scatter(x, y, marker="x", s=16, color=color, linewidths=0.8, zorder=2,
                   label="collapsed / diverged seed (set aside)")


def status(loaded) -> pd.DataFrame:
    """One row per configuration: label, trials, set_aside ('2 collapsed'), unstable, and the convergence
    verdict over its non-degenerate seeds (mean gain over the last 25% of steps ± 95% t half-width)."""
    df = _lora_done(loaded)
    axes = [a for a in loaded.axes if a != "method"]
    named = [a for a in axes if df[a].astype(str).nunique() > 1] or axes  # a name omits the axes that do not vary
    rows = []
    for vals, g in (df.groupby(axes, dropna=False, sort=True) if axes else [((), df)]):
        bad = _degenerate(g)
        kinds = g.loc[bad, "degenerate"].value_counts().sort_index() if bad.any() else pd.Series(dtype=int)
        good = g[~bad]
        gains = per_seed_values(good, "last_quarter_gain") if "last_quarter_gain" in good else np.array([])
        mean, half, n = t_interval(gains)
        rows.append({"label": config_label(g.iloc[0], named), "trials": len(g), "trial_ids": set(g["trial"]), "n": len(good),
                     "set_aside": ", ".join(f"{c} {k}" for k, c in kinds.items()),
                     "unstable": 2 * int(bad.sum()) >= len(g), "gain": mean, "gain_ci": half, "gain_n": n,
                     "learning": convergence.verdict(mean if n else None, half)})
    return pd.DataFrame(rows)


def report_lines(loaded) -> list[str]:
    """A line per configuration for the report: its convergence verdict, the trials set aside, or
    "unstable at this setting" (no mean: half or more of its seeds degenerated)."""
    st = status(loaded)
    if st.empty:
        return ["- no complete LoRA trial."]
    measured = bool(st["gain_n"].sum())
    out = [] if measured else ["- convergence: not measured (no intermediate evals: set train.eval_every)"]
    for _, r in st.iterrows():
        if r["unstable"]:
            out.append(f"- {r['label']}: **unstable at this setting** ({r['set_aside']} of {r['trials']} trials); "
                       "no mean is reported")
            continue
        aside = f"{r['set_aside']} set aside, the means use the other {r['n']}" if r["set_aside"] else ""
        if measured:
            seeds = f"{r['gain_n']} seed{'s' if r['gain_n'] != 1 else ''}"
            out.append(f"- {r['label']}: {r['learning']} ({seeds})" + (f"; {aside}" if aside else ""))
        elif aside:
            out.append(f"- {r['label']}: {aside}")
    return out


def _climbing(r) -> bool:
    return bool(r["gain_n"]) and not r["unstable"] and convergence.converged(r["gain"]) is False


def not_converged(loaded) -> set[str]:
    """Labels of the configurations whose mean gain over the last 25% of steps exceeds the tolerance."""
    st = status(loaded)
    return set() if st.empty else {r["label"] for _, r in st.iterrows() if _climbing(r)}


def not_converged_trials(loaded) -> set:
    """The trials of those configurations (a claim names its arms by their trials: analysis/claims.py)."""
    st = status(loaded)
    return set() if st.empty else set().union(*[r["trial_ids"] for _, r in st.iterrows() if _climbing(r)])


def standard_error_line(loaded) -> str:
    """The per-trial binomial SE of accuracy the test size implies, at the study's mean accuracy:
    sqrt(p (1 - p) / n), and what 2,000 test items would give."""
    df = _lora_done(loaded)
    n = df["test_size"].dropna() if "test_size" in df else pd.Series(dtype=float)
    if df.empty or n.empty:
        return "- per-trial standard error: not measured (no complete trial with a test size)"
    ok = df[~_degenerate(df)] if (~_degenerate(df)).any() else df
    p, size = float(ok["accuracy"].mean()), int(n.median())
    se = lambda m: 100 * math.sqrt(p * (1 - p) / m)  # noqa: E731
    return (f"- per-trial standard error of accuracy implied by the test split: √(p(1−p)/n) = {se(size):.2f} points "
            f"at p = {p:.3f}, n = {size:,} test items (the difference of two trials: √2× that, "
            f"{1.414 * se(size):.2f}); "
            f"2,000 test items would give {se(2000):.2f}")


def learning_curves(loaded, width: str, max_lines: int = 7):
    """Eval accuracy against optimizer step per configuration (best final mean first)."""
    df = _lora_done(loaded)
    hist = loaded.history
    if df.empty or hist.empty or "eval/accuracy" not in hist:
        raise Skip("no eval curves (set train.eval_every for intermediate evals)")
    ev = hist.dropna(subset=["eval/accuracy"])
    ev = ev[ev["trial"].isin(df["trial"])]
    if ev.empty or not (ev.groupby("trial")["step"].nunique() > 1).any():
        raise Skip("no trial has intermediate evals (train.eval_every=0): a curve needs 2+ eval steps")
    axes = [a for a in loaded.axes if a != "method"]
    groups = [g for _, g in (df.groupby(axes, dropna=False) if axes else [((), df)])]
    groups.sort(key=lambda g: -g.loc[~_degenerate(g), "accuracy"].mean() if (~_degenerate(g)).any() else math.inf)
    fig, axs = new_figure(width, height=2.6 if width == "1col" else 3.0)
    ax = axs[0, 0]
    drew_bad = False
    for i, g in enumerate(groups[:max_lines]):
        color, marker = OKABE_ITO[i % 7], MARKERS[i % 8]
        bad = set(g.loc[_degenerate(g), "trial"].astype(int))
        for t in g["trial"].astype(int):
            c = ev[ev["trial"] == t].sort_values("step")
            if t in bad:  # set aside: dotted, ended by an x
                ax.plot(c["step"], c["eval/accuracy"], color=color, lw=0.6, ls=":", alpha=0.6)
                ax.scatter(c["step"].iloc[-1:], c["eval/accuracy"].iloc[-1:], marker="x", s=18, color=color, zorder=4,
                           label=None if drew_bad else "collapsed / diverged seed (set aside)")
                drew_bad = True
            else:
                ax.plot(c["step"], c["eval/accuracy"], color=color, lw=0.5, alpha=0.3)
        good = ev[ev["trial"].isin(set(g["trial"].astype(int)) - bad)]
        if good.empty:  # every seed set aside: the dotted curves carry the configuration's name
            ax.plot([], [], color=color, lw=0.8, ls=":", label=f"{config_label(g.iloc[0], axes)} "
                    f"({len(bad)} seed{'s' if len(bad) != 1 else ''}, all set aside)")
            continue
        st = pd.DataFrame([(s, *t_interval(v)) for s, v in good.groupby("step")["eval/accuracy"]],
                          columns=["step", "mean", "ci", "n"])
        n_seeds = good["trial"].nunique()
        ax.plot(st["step"], st["mean"], color=color, marker=marker, ms=3,
                label=f"{config_label(g.iloc[0], axes)} ({n_seeds} seed{'s' if n_seeds != 1 else ''})")
        lo, hi = (st["mean"] - st["ci"].fillna(0)).clip(0, 1), (st["mean"] + st["ci"].fillna(0)).clip(0, 1)
        ax.fill_between(st["step"], lo, hi, color=color, alpha=0.15, lw=0)  # accuracy lives in [0, 1]
    baseline_line(ax, df)
    shown = ev["eval/accuracy"]
    ax.set_ylim(max(0.0, shown.min() - 0.05), min(1.0, shown.max() + 0.05))  # the curves, not a 2-seed t band
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ACC_CI.replace("accuracy", "held-out accuracy"))
    legend_below(fig, axs, ncol=1 if width == "1col" else 2)
    return fig
