"""Paper figures from the study frame: PDF (vector, TrueType fonts) + PNG, at one-column (3.3 in)
and two-column (6.9 in) widths, Okabe-Ito colours (safe for the common colour-vision deficiencies),
8 pt text. A figure the data cannot support is skipped with a note instead of drawn half-empty.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

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
LABELS = {"lora.r": "r", "lora.alpha": "α", "lora.targets": "targets", "data.train_size": "n", "train.lr": "lr",
          "lora.dropout": "dropout", "quant.mode": "quant", "model.name": "model", "train.max_steps": "steps"}
CONFIG_KEYS = ("lora.targets", "lora.r", "lora.alpha", "data.train_size", "train.lr", "lora.dropout",
               "train.max_steps", "quant.mode", "model.name", "data.name")
ACC = "accuracy on the test split"


class Skip(Exception):
    """The study's data does not support this figure; the message says why."""


# ---------------------------------------------------------------------------- helpers


def _log_x(ax, values) -> None:
    """Log x axis; within one decade, a few plain labels (matplotlib's minor log labels overlap there)."""
    from matplotlib import ticker

    ax.set_xscale("log")
    lo, hi = float(np.min(values)), float(np.max(values))
    if lo > 0 and hi / lo < 10:
        ax.xaxis.set_major_locator(ticker.MaxNLocator(4))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))


def pareto_mask(cost, acc) -> np.ndarray:
    """True where no other point is at least as cheap and as accurate and strictly better in one."""
    c, a = np.asarray(cost, float)[:, None], np.asarray(acc, float)[:, None]
    dominated = (c.T <= c) & (a.T >= a) & ((c.T < c) | (a.T > a))  # [i, j]: j dominates i
    return ~dominated.any(axis=1)


def ci95(values) -> tuple[float, float, int]:
    """Mean, half-width of the 95% Student-t interval, n (half-width NaN for n < 2)."""
    from scipy import stats

    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    n = len(v)
    if n < 2:
        return (float(v.mean()) if n else np.nan), np.nan, n
    return float(v.mean()), float(stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n)), n


def complete(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "complete") & df["accuracy"].notna()]


def varying(df: pd.DataFrame, keys=CONFIG_KEYS) -> list[str]:
    """The config keys that take more than one value among these trials."""
    return [k for k in keys if k in df and df[k].astype(str).nunique() > 1]


def config_label(row, keys) -> str:
    return ", ".join(f"{LABELS.get(k, k)}={_fmt(row[k])}" for k in keys) or "all trials"


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.integer, np.floating)) else str(v)


def _baseline(ax, df: pd.DataFrame, horizontal: bool = True) -> None:
    """The zero-shot reference: the base model with its untrained head, same test split."""
    b = df["baseline_accuracy"].dropna()
    if not b.empty:
        ax.axhline(b.median(), color="0.35", ls="--", lw=0.9, label="zero-shot (base model)", zorder=1)


def _legend_below(fig, axes, ncol: int) -> None:
    handles, labels = {}, {}
    for ax in np.asarray(axes).flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                labels[lab], handles[lab] = lab, h
    if handles:
        fig.legend(list(handles.values()), list(labels), loc="outside lower center", ncol=ncol)


def _new(width: str, rows: int = 1, cols: int = 1, height: float | None = None, **kw):
    w = WIDTHS[width]
    h = height or (w * 0.62 if cols == 1 else w / cols * 0.9) * rows
    return plt.subplots(rows, cols, figsize=(w, h), layout="constrained", squeeze=False, **kw)


def _colors(values) -> dict:
    return {v: OKABE_ITO[i % 7] for i, v in enumerate(values)}


# ---------------------------------------------------------------------------- figures


def accuracy_vs_compute(df: pd.DataFrame, width: str):
    """Accuracy against FLOPs and device-hours (log x); the Pareto front (cheapest for its accuracy)."""
    ok = complete(df)
    ok = ok[(ok["flops"] > 0) & (ok["device_hours"] > 0)]
    if len(ok) < 2:
        raise Skip(f"needs 2 complete trials with cost, has {len(ok)}")
    panels = [("flops", "compute (FLOPs, train + eval)"), ("device_hours", "device time (device-hours)")]
    fig, axes = _new(width, *((2, 1) if width == "1col" else (1, 2)), height=4.4 if width == "1col" else 2.7)
    targets = sorted(ok["lora.targets"].astype(str).unique())
    col = _colors(targets)
    for ax, (x, xlabel) in zip(axes.flat, panels):
        for i, t in enumerate(targets):
            sub = ok[ok["lora.targets"].astype(str) == t]
            ax.scatter(sub[x], sub["accuracy"], s=14, color=col[t], marker=MARKERS[i % 8], alpha=0.8,
                       label=f"targets={t}", zorder=2, linewidths=0)
        front = ok[pareto_mask(ok[x], ok["accuracy"])].sort_values(x)
        ax.step(front[x], front["accuracy"], where="post", color="black", lw=0.9, zorder=3)
        ax.scatter(front[x], front["accuracy"], s=36, facecolors="none", edgecolors="black", linewidths=1.0,
                   label="Pareto front", zorder=4, gid="pareto")
        _baseline(ax, ok)
        _log_x(ax, ok[x])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ACC)
    _legend_below(fig, axes, ncol=2 if width == "1col" else min(4, len(targets) + 2))
    return fig


def accuracy_vs_rank(df: pd.DataFrame, width: str):
    """Mean accuracy ± 95% CI over seeds against LoRA rank, one line per target preset."""
    ok = complete(df)
    if ok["lora.r"].nunique() < 2:
        raise Skip(f"needs 2+ ranks among complete trials, has {ok['lora.r'].nunique()}")
    fig, axes = _new(width, height=2.4 if width == "1col" else 2.8)
    ax = axes[0, 0]
    targets = sorted(ok["lora.targets"].astype(str).unique())
    col, nmax = _colors(targets), 1
    for i, t in enumerate(targets):
        g = ok[ok["lora.targets"].astype(str) == t].groupby("lora.r")["accuracy"]
        stats = pd.DataFrame([(r, *ci95(v)) for r, v in g], columns=["r", "mean", "ci", "n"]).sort_values("r")
        nmax = max(nmax, int(stats["n"].max()))
        ax.errorbar(stats["r"], stats["mean"], yerr=stats["ci"].fillna(0), color=col[t], marker=MARKERS[i % 8],
                    capsize=2.5, label=f"targets={t}")
    _baseline(ax, ok)
    ranks = sorted(ok["lora.r"].unique())
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [f"{r:g}" for r in ranks])
    ax.minorticks_off()
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel(ACC if nmax < 2 else "accuracy (mean ± 95% CI\nover seeds)")
    _legend_below(fig, axes, ncol=2 if width == "1col" else min(4, len(targets) + 1))
    return fig


def alpha_rank_heatmap(df: pd.DataFrame, width: str):
    """Mean accuracy for each (alpha, rank) cell."""
    ok = complete(df)
    if ok["lora.alpha"].nunique() < 2 or ok["lora.r"].nunique() < 2:
        raise Skip("needs 2+ alphas and 2+ ranks among complete trials")
    if ok.groupby("lora.r")["lora.alpha"].nunique().max() < 2:
        raise Skip("alpha is tied to rank in this study (one alpha per rank): nothing to separate")
    grid = ok.pivot_table(index="lora.alpha", columns="lora.r", values="accuracy", aggfunc="mean").sort_index(
        ascending=False)
    fig, axes = _new(width, height=2.6 if width == "1col" else 3.0)
    ax = axes[0, 0]
    ax.grid(False)
    im = ax.imshow(grid.values, cmap="viridis", aspect="auto")  # viridis: perceptually uniform, CVD-safe
    ax.set_xticks(range(grid.shape[1]), [f"{c:g}" for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{i:g}" for i in grid.index])
    ax.set_xlabel("LoRA rank r")
    ax.set_ylabel("LoRA alpha α")
    lo, hi = np.nanmin(grid.values), np.nanmax(grid.values)
    for (i, j), v in np.ndenumerate(grid.values):
        if not np.isnan(v):
            dark = (v - lo) / max(hi - lo, 1e-12) < 0.6
            ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=6.5, color="white" if dark else "black")
    fig.colorbar(im, ax=ax, label="mean accuracy", shrink=0.9)
    return fig


def data_scaling(df: pd.DataFrame, width: str, max_lines: int = 7):
    """Accuracy against training-set size (log x), one line per configuration, mean ± 95% CI over seeds."""
    ok = complete(df)
    if ok["data.train_size"].nunique() < 2:
        raise Skip(f"needs 2+ training-set sizes, has {ok['data.train_size'].nunique()}")
    keys = [k for k in varying(ok) if k != "data.train_size"]
    groups = list(ok.groupby(keys, dropna=False)) if keys else [((), ok)]
    groups.sort(key=lambda kv: -kv[1]["accuracy"].mean())
    shown = groups[:max_lines]
    # the legend sits below the axes, one line per configuration in one column: make room for it
    fig, axes = _new(width, height=(2.0 + 0.17 * len(shown)) if width == "1col" else 2.8)
    ax = axes[0, 0]
    for i, (_, g) in enumerate(shown):
        stats = pd.DataFrame([(n, *ci95(v)) for n, v in g.groupby("data.train_size")["accuracy"]],
                             columns=["n", "mean", "ci", "k"]).sort_values("n")
        dodge = 1 + 0.025 * (i - (len(shown) - 1) / 2)  # shift lines apart on the log axis: bars stay readable
        ax.errorbar(stats["n"] * dodge, stats["mean"], yerr=stats["ci"].fillna(0), marker=MARKERS[i % 8], capsize=2.5,
                    color=OKABE_ITO[i % 7], label=config_label(g.iloc[0], keys))
    _baseline(ax, ok)
    ax.set_xscale("log")
    sizes = sorted(ok["data.train_size"].unique())
    ax.set_xticks(sizes, [f"{s:,.0f}" for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel("training-set size (examples)")
    ax.set_ylabel("accuracy (mean ± 95% CI)")
    if len(groups) > max_lines and width == "1col":
        print(f"note: data_scaling shows the {max_lines} best of {len(groups)} configurations")
    _legend_below(fig, axes, ncol=1 if width == "1col" else 2)
    return fig


def curve_trials(df: pd.DataFrame) -> list[int]:
    """The best trial, then the Pareto trials (by FLOPs), at most 7."""
    ok = complete(df)
    ok = ok[ok["flops"] > 0]
    if ok.empty:
        return []
    best = int(ok.loc[ok["accuracy"].idxmax(), "trial"])
    front = ok[pareto_mask(ok["flops"], ok["accuracy"])].sort_values("flops")
    return list(dict.fromkeys([best, *front["trial"].astype(int)]))[:7]


def training_curves(df: pd.DataFrame, history: pd.DataFrame, width: str):
    """Train loss (EMA) and eval accuracy against step for the best and the Pareto trials."""
    trials = [t for t in curve_trials(df) if t in set(history["trial"].dropna().astype(int))]
    if not trials:
        raise Skip("no W&B history for the best/Pareto trials")
    fig, axes = _new(width, *((2, 1) if width == "1col" else (1, 2)), height=4.4 if width == "1col" else 2.7)
    ax_loss, ax_acc = axes.flat
    keys = list(dict.fromkeys(["lora.r", "lora.alpha", *varying(complete(df))]))  # say which run is which
    best = trials[0]
    for i, t in enumerate(trials):
        h = history[history["trial"] == t].sort_values("step")
        row = df[df["trial"] == t].iloc[0]
        label = f"trial {t}{' (best)' if t == best else ''}: {config_label(row, keys)}"
        loss = h.dropna(subset=["train/loss"])
        ax_loss.plot(loss["step"], loss["train/loss"].ewm(alpha=0.1).mean(), color=OKABE_ITO[i % 7], label=label)
        ev = h.dropna(subset=["eval/accuracy"])
        ax_acc.plot(ev["step"], ev["eval/accuracy"], color=OKABE_ITO[i % 7], marker=MARKERS[i % 8])
    _baseline(ax_acc, df)
    ax_acc.set_xlim(ax_loss.get_xlim())  # same step axis, even when only the final eval exists
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("train loss (EMA 0.9, nats)")
    ax_acc.set_xlabel("optimizer step")
    ax_acc.set_ylabel(ACC)
    _legend_below(fig, axes, ncol=1 if width == "1col" else 2)
    return fig


def param_importance(df: pd.DataFrame, study, width: str, min_trials: int = 8):
    """fANOVA importance of each searched parameter for accuracy (Optuna's evaluator)."""
    import optuna

    if study is None:
        raise Skip("needs the Optuna study (storage not found)")
    acc = complete(df).set_index("trial")["accuracy"]
    done = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.number in acc]
    params = sorted({p for t in done for p in t.params})
    if len(done) < min_trials or len(params) < 2:
        raise Skip(f"needs {min_trials}+ complete trials and 2+ searched parameters, has {len(done)} and "
                   f"{len(params)}")
    if acc[[t.number for t in done]].nunique() < 2:
        raise Skip("accuracy is the same in every complete trial: there is no variance to attribute")
    imp = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), params=params,
        target=lambda t: acc[t.number])
    names = list(imp)[::-1]
    fig, axes = _new(width, height=0.35 * len(names) + 0.8)
    ax = axes[0, 0]
    ax.barh(range(len(names)), [imp[n] for n in names], color=OKABE_ITO[0])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(f"importance for accuracy (fANOVA, fraction of variance; {len(done)} trials)")
    ax.grid(axis="y", visible=False)
    return fig


FIGURES = ("accuracy_vs_compute", "accuracy_vs_rank", "alpha_rank_heatmap", "data_scaling", "training_curves",
           "param_importance")


def draw(name: str, loaded, width: str):
    df = loaded.trials
    if name == "training_curves":
        return training_curves(df, loaded.history, width)
    if name == "param_importance":
        return param_importance(df, loaded.optuna_study, width)
    return globals()[name](df, width)


def write_all(loaded, out: Path, say=print) -> list[Path]:
    """Every figure the data supports, as PDF + PNG at both widths; a note for each skipped one."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with plt.rc_context(STYLE):
        for name in FIGURES:
            for width in WIDTHS:
                try:
                    fig = draw(name, loaded, width)
                except Skip as e:
                    if width == "1col":
                        say(f"skipped {name}: {e}")
                    break
                for ext in ("pdf", "png"):
                    path = out / f"{name}_{width}.{ext}"
                    fig.savefig(path, dpi=200)
                    written.append(path)
                plt.close(fig)
    return written
