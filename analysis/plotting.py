"""Style and drawing helpers of the paper figures (analysis/figures.py), and the selection of the
study frame they draw: complete trials, LoRA configurations vs reference arms, labels."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.runs import CONFIG_KEYS  # noqa: E402
from analysis.stats import LABELS, t_interval  # noqa: E402
from analysis.stats import label as config_label  # noqa: E402

# Okabe & Ito (2008), "Color Universal Design". Yellow last and unused: too faint on white.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
WIDTHS = {"1col": 3.3, "2col": 6.9}  # inches: one and two columns of a two-column paper
STYLE = {
    "font.size": 8, "axes.labelsize": 8, "axes.titlesize": 8, "legend.fontsize": 7, "xtick.labelsize": 7,
    "ytick.labelsize": 7, "axes.prop_cycle": matplotlib.cycler(color=OKABE_ITO[:7]), "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "lines.linewidth": 1.2,
    "lines.markersize": 4, "legend.frameon": False, "pdf.fonttype": 42, "ps.fonttype": 42,  # editable text in PDFs
    "savefig.bbox": "tight", "savefig.pad_inches": 0.02,
}
AXIS_TITLES = {"lora.r": "LoRA rank r", "lora.alpha": "LoRA alpha α", "lora.alpha_over_r": "α / r",
               "lora.targets": "adapted modules (trainable parameters)", "data.train_size": "training-set size (examples)",
               "train.lr": "learning rate"}
REFERENCES = {"head_only": ("head only (linear probe)", ":", "#D55E00"), "full": ("full fine-tune", "-.", "#000000")}
ACC = "accuracy on the test split"
ACC_CI = "accuracy (mean ± 95% CI over seeds)"


class Skip(Exception):
    """The study's data does not support this figure; the message says why."""


# ---------------------------------------------------------------------------- data helpers


def complete(df: pd.DataFrame) -> pd.DataFrame:
    """Complete trials that learned: a collapsed or diverged one (record `degenerate`) is set aside from
    every mean (analysis/curves.py counts and names them)."""
    ok = (df["status"] == "complete") & df["accuracy"].notna()
    if "degenerate" in df:
        ok &= df["degenerate"].isna()
    return df[ok]


def unstable_trials(df: pd.DataFrame, axes: list[str]) -> pd.Index:
    """Trials of configurations where half or more of the complete trials degenerated: such a
    configuration is "unstable at this setting" (analysis/curves.py), not a mean over its survivors."""
    done = df[(df["status"] == "complete") | df["status"].astype(str).str.startswith("set aside")]  # items.set_aside
    if "degenerate" not in done or done.empty:
        return pd.Index([])
    groups = done.groupby(axes, dropna=False) if axes else [((), done)]
    bad = [g.index for _, g in groups if 2 * g["degenerate"].notna().sum() >= len(g)]
    return bad[0].append(bad[1:]) if bad else pd.Index([])


def varying(df: pd.DataFrame, keys=CONFIG_KEYS) -> list[str]:
    """The config keys that take more than one value among these trials."""
    return [k for k in keys if k in df and df[k].astype(str).nunique() > 1]


def split(loaded) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(LoRA trials, reference-arm trials, searched axes) among the complete trials."""
    df = complete(loaded.trials)
    method = df["method"].fillna("lora") if "method" in df else pd.Series("lora", index=df.index)
    axes = [a for a in loaded.axes if a != "method"]
    everyone = loaded.trials
    lora_all = everyone[everyone["method"].fillna("lora") == "lora"] if "method" in everyone else everyone
    lora = df[method == "lora"].drop(unstable_trials(lora_all, axes), errors="ignore")
    return lora.assign(set_aside_seeds=_set_aside_counts(lora, lora_all, axes)), df[method != "lora"], axes


def _set_aside_counts(lora: pd.DataFrame, lora_all: pd.DataFrame, axes: list[str]) -> pd.Series:
    """Per trial, how many trials of its configuration were set aside as degenerate (stats.best reads it:
    a mean over a configuration's surviving seeds is conditioned on not collapsing)."""
    aside = lora_all["status"].astype(str).str.startswith("set aside") if "status" in lora_all else \
        pd.Series(False, index=lora_all.index)
    per = aside.groupby([lora_all[a].astype(str) for a in axes]).transform("sum") if axes else \
        pd.Series(int(aside.sum()), index=lora_all.index)
    return per.reindex(lora.index, fill_value=0).astype(int)


def match(df: pd.DataFrame, row, keys) -> pd.DataFrame:
    return df[np.logical_and.reduce([df[k].astype(str) == str(row[k]) for k in keys])] if keys else df


# ---------------------------------------------------------------------------- drawing helpers


def log_x(ax, values, ticks: bool = False) -> None:
    """Log x axis; within one decade, a few plain labels (matplotlib's minor log labels overlap there)."""
    from matplotlib import ticker

    ax.set_xscale("log")
    v = np.asarray(values, float)
    if ticks:
        vals = sorted(set(v))
        ax.set_xticks(vals, [f"{x:g}" for x in vals])
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        return
    lo, hi = float(np.min(v)), float(np.max(v))
    if lo > 0 and hi / lo < 10:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(4))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:.3g}"))


def baseline_line(ax, df: pd.DataFrame) -> None:
    """The zero-shot reference: the base model with its untrained head, same test split."""
    b = df["baseline_accuracy"].dropna() if "baseline_accuracy" in df else pd.Series(dtype=float)
    if not b.empty:
        ax.axhline(b.median(), color="0.35", ls="--", lw=0.9, label="zero-shot (base model)", zorder=1)


def reference_lines(ax, refs: pd.DataFrame) -> None:
    """head_only / full as horizontal lines at their mean, their 95% interval shaded."""
    for method, g in refs.groupby("method"):
        name, ls, color = REFERENCES.get(method, (method, ":", "0.3"))
        mean, half, n = t_interval(g["accuracy"])
        ax.axhline(mean, color=color, ls=ls, lw=1.0, zorder=1,
                   label=f"{reference_name(method, g)} ({n} seed{'s' if n != 1 else ''}, {g['flops'].mean():.2g} FLOPs)")
        if n > 1:
            ax.axhspan(mean - half, mean + half, color=color, alpha=0.08, lw=0, zorder=0)


def reference_name(method: str, g: pd.DataFrame) -> str:
    """'head only (linear probe), lr 0.01': a reference arm runs at its own learning rate."""
    name = REFERENCES.get(method, (method,))[0]
    lrs = sorted(set(g["train.lr"].dropna())) if "train.lr" in g else []
    return name + (f", lr {', '.join(f'{v:g}' for v in lrs)}" if lrs else "")


def seed_dots(ax, x, y, color) -> None:
    ax.scatter(x, y, s=7, color=color, alpha=0.3, linewidths=0, zorder=2)


def mean_bars(ax, x, configs: pd.DataFrame, color, marker, label, line: bool = True):
    ax.errorbar(x, configs["mean"], yerr=configs["ci"].fillna(0), color=color, marker=marker, capsize=2.5,
                ls="-" if line else "none", label=label, zorder=3)


def legend_below(fig, axes, ncol: int) -> None:
    handles, labels = {}, {}
    for ax in np.asarray(axes).flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                labels[lab], handles[lab] = lab, h
    if handles:
        fig.legend(list(handles.values()), list(labels), loc="outside lower center", ncol=ncol)


def new_figure(width: str, rows: int = 1, cols: int = 1, height: float | None = None, **kw):
    w = WIDTHS[width]
    h = height or (w * 0.62 if cols == 1 else w / cols * 0.9) * rows
    return plt.subplots(rows, cols, figsize=(w, h), layout="constrained", squeeze=False, **kw)
