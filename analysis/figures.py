"""Paper figures from the study frame: PDF (vector, TrueType fonts) + PNG, at one-column (3.3 in)
and two-column (6.9 in) widths, Okabe-Ito colours (safe for the common colour-vision deficiencies),
8 pt text. A figure the data cannot support is skipped with a note instead of drawn half-empty.

Every figure is seed-aware: a configuration (one value per searched axis) is drawn as its mean with
a 95% Student-t interval over seeds, its single seeds faint behind it. One figure per searched axis;
the Pareto front is computed on configuration means; reference arms (method=head_only / full) and
the zero-shot baseline are reference lines. Figures are registered by name in FIGURES.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.plotting import (  # noqa: E402
    ACC_CI,
    AXIS_TITLES,
    MARKERS,
    OKABE_ITO,
    REFERENCES,
    STYLE,
    WIDTHS,
    Skip,
    baseline_line,
    complete,
    config_label,
    legend_below,
    log_x,
    match,
    mean_bars,
    new_figure,
    reference_lines,
    reference_name,
    seed_dots,
    split,
)
from analysis import curves as learning  # noqa: E402  (learning curves; `curves` is a local name below)
from analysis import forgetting  # noqa: E402
from analysis.stats import (  # noqa: E402,F401 - pareto_mask: tests
    LABELS,
    configurations,
    pareto_mask,
    saturating_fit,
    t_interval,
)

ci95 = t_interval  # the name tables and older callers use


def acc_label(configs: pd.DataFrame) -> str:
    """What the points are: a single seed is not a mean ± CI."""
    n = configs["n"] if "n" in configs and len(configs) else pd.Series([0])
    if n.max() <= 1:
        return "accuracy (1 seed per configuration)"
    if n.min() <= 1:
        return "accuracy (mean ± 95% CI over seeds; 1-seed points bare)"
    return ACC_CI

# ---------------------------------------------------------------------------- registry

FIGURES: dict[str, object] = {}


def figure(name: str):
    def register(fn):
        FIGURES[name] = fn
        return fn
    return register


# ---------------------------------------------------------------------------- figures


@figure("accuracy_vs_compute")
def accuracy_vs_compute(loaded, width: str):
    """Configuration means against FLOPs and device-hours (log x); the Pareto front on the means."""
    lora, refs, axes = split(loaded)
    lora = lora[(lora["flops"] > 0) & (lora["device_hours"] > 0)]
    configs = configurations(lora, axes)
    if len(configs) < 2:
        raise Skip(f"needs 2 configurations with cost, has {len(configs)}")
    panels = [("flops", "compute (FLOPs, train + eval; mean over seeds)"), ("device_hours", "device time (device-hours)")]
    fig, axs = new_figure(width, *((2, 1) if width == "1col" else (1, 2)), height=4.6 if width == "1col" else 2.9)
    key = axes[0] if axes else None
    groups = sorted(configs[key].astype(str).unique()) if key else ["all"]
    col = {g: OKABE_ITO[i % 7] for i, g in enumerate(groups)}
    for ax, (x, xlabel) in zip(axs.flat, panels):
        for i, g in enumerate(groups):
            sub = configs[configs[key].astype(str) == g] if key else configs
            trials = lora[lora[key].astype(str) == g] if key else lora
            seed_dots(ax, trials[x], trials["accuracy"], col[g])
            bad = learning.degenerate_trials(loaded)
            bad = bad[bad[key].astype(str) == g] if key else bad
            learning.degenerate_marks(ax, bad[x], bad["accuracy"], col[g])
            mean_bars(ax, sub[x], sub, col[g], MARKERS[i % 8], f"{LABELS.get(key, key)}={g}" if key else "configurations",
                   line=False)
        front = configs[pareto_mask(configs[x], configs["mean"])].sort_values(x)
        ax.step(front[x], front["mean"], where="post", color="black", lw=0.9, zorder=4)
        ax.scatter(front[x], front["mean"], s=40, facecolors="none", edgecolors="black", linewidths=1.0,
                   label="Pareto front (means)", zorder=5, gid="pareto")
        if len(configs) <= 8 and len(axes) > 1:  # name each point when there are few
            for _, c in configs.iterrows():
                ax.annotate(config_label(c, axes[1:]), (c[x], c["mean"]), fontsize=5, xytext=(3, 3),
                            textcoords="offset points", color="0.3")
        for method, g in refs.groupby("method"):
            _, _, color = REFERENCES.get(method, (method, ":", "0.3"))
            mean, half, _n = t_interval(g["accuracy"])
            ax.errorbar([g[x].mean()], [mean], yerr=[0 if np.isnan(half) else half], color=color, marker="X",
                        ms=6, capsize=2.5, ls="none", label=reference_name(method, g), zorder=4)
        baseline_line(ax, lora)
        log_x(ax, pd.concat([configs[x], refs[x]]))
        ax.set_xlabel(xlabel)
        ax.set_ylabel(acc_label(configs))
    legend_below(fig, axs, ncol=2 if width == "1col" else min(4, len(groups) + 2))
    return fig


def axis_figure(loaded, width: str, axis: str, max_lines: int = 7):
    """Accuracy against one searched axis: one line per setting of the other axes (the best first),
    configuration means ± 95% CI, seeds faint; train size gets a saturating power-law fit."""
    lora, refs, axes = split(loaded)
    if axis not in lora or lora[axis].astype(str).nunique() < 2:
        raise Skip(f"needs 2+ values of {axis} among complete trials")
    others = [a for a in axes if a != axis]
    configs = configurations(lora, [axis, *others])
    numeric = pd.api.types.is_numeric_dtype(lora[axis]) and axis != "lora.targets"
    groups = [g for _, g in configs.groupby(others, dropna=False)] if others else [configs]
    groups.sort(key=lambda g: -g["mean"].max())
    shown = groups[:max_lines]
    if not numeric:  # categories in order of trainable parameters: the cost they add
        cats = list(configs.groupby(axis)["trainable_params"].mean().sort_values().index.astype(str))
    fig, axs = new_figure(width, height=(2.2 + 0.15 * len(shown)) if width == "1col" else 3.0)
    ax = axs[0, 0]
    for i, g in enumerate(shown):
        g = g.sort_values(axis)
        color, marker = OKABE_ITO[i % 7], MARKERS[i % 8]
        varying = [k for k in others if configs[k].astype(str).nunique() > 1]  # a name omits constant axes
        name = config_label(g.iloc[0], varying) if varying else (
            f"mean ± 95% CI ({int(g['n'].max())} seeds)" if g["n"].max() > 1 else "1 seed per configuration")
        trials = match(lora, g.iloc[0], others)
        if numeric:
            dodge = 1 + 0.03 * (i - (len(shown) - 1) / 2)  # lines apart on the log axis: bars stay readable
            xs, txs = g[axis] * dodge, trials[axis] * dodge * 0.985  # seeds just left of their bar
        else:
            off = 0.12 * (i - (len(shown) - 1) / 2)
            xs = np.array([cats.index(str(v)) for v in g[axis]]) + off
            txs = np.array([cats.index(str(v)) for v in trials[axis]]) + off - 0.05
        seed_dots(ax, txs, trials["accuracy"], color)
        bad = match(learning.degenerate_trials(loaded), g.iloc[0], others)
        bad = bad if numeric else bad[bad[axis].astype(str).isin(cats)]
        learning.degenerate_marks(ax, bad[axis] * dodge * 0.985 if numeric else
                                np.array([cats.index(str(v)) for v in bad[axis]]) + off - 0.05, bad["accuracy"], color)
        mean_bars(ax, xs, g, color, marker, name, line=numeric)
        if axis == "data.train_size":
            fit = saturating_fit(trials[axis], trials["accuracy"])
            if fit:
                ax.plot(fit["grid"], fit["curve"], color=color, lw=0.8, ls="--", zorder=2)
                ax.fill_between(fit["grid"], *np.clip(fit["band"], 0, 1), color=color, alpha=0.12, lw=0, zorder=1)
                lo, hi = fit["interval"]
                ax.errorbar([fit["at"]], [fit["prediction"]], yerr=[[fit["prediction"] - lo], [hi - fit["prediction"]]],
                            color=color, marker="o", mfc="white", capsize=2.5, zorder=3,
                            label=f"fit a - b·n^-c, predicted at {fit['at']:,.0f}" if i == 0 else None)
    reference_lines(ax, refs)
    baseline_line(ax, lora)
    if numeric:
        vals = sorted(set(configs[axis].astype(float)))
        if vals[0] > 0 and vals[-1] / vals[0] >= 4:
            log_x(ax, vals + ([2 * vals[-1]] if axis == "data.train_size" else []), ticks=True)
    else:
        params = configs.groupby(axis)["trainable_params"].mean()
        ax.set_xticks(range(len(cats)), [f"{c}\n{params[c]:,.0f}" if c in params else c for c in cats])
        ax.grid(axis="x", visible=False)
    ax.set_xlabel(AXIS_TITLES.get(axis, axis))
    ax.set_ylabel(acc_label(configs))
    legend_below(fig, axs, ncol=1 if width == "1col" else 2)
    return fig


AXIS_FIGURES = {"lora.r": "accuracy_vs_rank", "lora.alpha": "accuracy_vs_alpha", "lora.alpha_over_r":
                "accuracy_vs_alpha_over_r", "lora.targets": "accuracy_vs_targets", "data.train_size": "data_scaling",
                "train.lr": "accuracy_vs_lr"}


def axis_figure_name(axis: str) -> str:
    return AXIS_FIGURES.get(axis, "accuracy_vs_" + axis.replace(".", "_"))


@figure("alpha_rank_heatmap")
def alpha_rank_heatmap(loaded, width: str):
    """Mean accuracy over seeds for each (alpha, rank) cell."""
    ok, _, _ = split(loaded)
    if not {"lora.alpha", "lora.r"} <= set(ok) or ok["lora.alpha"].nunique() < 2 or ok["lora.r"].nunique() < 2:
        raise Skip("needs 2+ alphas and 2+ ranks among complete trials")
    if ok.groupby("lora.r")["lora.alpha"].nunique().max() < 2:
        raise Skip("alpha is tied to rank in this study (one alpha per rank): nothing to separate")
    grid = ok.pivot_table(index="lora.alpha", columns="lora.r", values="accuracy", aggfunc="mean").sort_index(
        ascending=False)
    fig, axs = new_figure(width, height=2.6 if width == "1col" else 3.0)
    ax = axs[0, 0]
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
    fig.colorbar(im, ax=ax, label="mean accuracy over seeds", shrink=0.9)
    return fig


def curve_configs(loaded, limit: int = 5) -> pd.DataFrame:
    """The best configuration (by mean), then the Pareto configurations (by mean FLOPs)."""
    lora, _, axes = split(loaded)
    configs = configurations(lora[lora["flops"] > 0], axes)
    if configs.empty:
        return configs
    ranked = configs.sort_values(["mean", "cost"], ascending=[False, True])
    front = configs[pareto_mask(configs["cost"], configs["mean"])].sort_values("cost")
    order = list(dict.fromkeys([ranked.index[0], *front.index]))[:limit]
    return configs.loc[order]


@figure("training_curves")
def training_curves(loaded, width: str):
    """Train loss (EMA, mean over seeds; seeds faint) for the best and the Pareto configurations;
    eval accuracy against step only where intermediate evals exist."""
    history = loaded.history
    configs = curve_configs(loaded)
    have = set(history["trial"].dropna().astype(int))
    configs = configs[[bool(set(t) & have) for t in configs["trials"]]] if not configs.empty else configs
    if configs.empty:
        raise Skip("no history for the best/Pareto configurations")
    trials = [t for ts in configs["trials"] for t in ts]
    h_all = history[history["trial"].isin(trials)]
    evals = h_all.dropna(subset=["eval/accuracy"])
    intermediate = not evals.empty and (evals.groupby("trial")["step"].nunique() > 1).any()
    fig, axs = new_figure(width, *((2, 1) if width == "1col" else (1, 2)) if intermediate else (1, 1),
                    height=(4.6 if width == "1col" else 2.9) if intermediate else 2.6)
    ax_loss = axs.flat[0]
    _, _, axes = split(loaded)
    for i, (_, c) in enumerate(configs.iterrows()):
        color = OKABE_ITO[i % 7]
        label = f"{'best: ' if i == 0 else ''}{config_label(c, axes)} ({c['n']} seeds)"
        curves = []
        for t in c["trials"]:
            loss = history[history["trial"] == t].dropna(subset=["train/loss"]).sort_values("step")
            ema = loss.set_index("step")["train/loss"].ewm(alpha=0.1).mean()
            ax_loss.plot(ema.index, ema.values, color=color, lw=0.5, alpha=0.3)
            curves.append(ema)
        if curves:
            mean = pd.concat(curves, axis=1).mean(axis=1)
            ax_loss.plot(mean.index, mean.values, color=color, label=label)
        if intermediate:
            ev = evals[evals["trial"].isin(c["trials"])].groupby("step")["eval/accuracy"]
            st = pd.DataFrame([(s, *t_interval(v)) for s, v in ev], columns=["step", "mean", "ci", "n"])
            axs.flat[1].errorbar(st["step"], st["mean"], yerr=st["ci"].fillna(0), color=color, marker=MARKERS[i % 8],
                                 capsize=2, ms=3)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("train loss (EMA 0.9, nats)")
    if intermediate:
        baseline_line(axs.flat[1], loaded.trials)
        axs.flat[1].set_xlim(ax_loss.get_xlim())
        axs.flat[1].set_xlabel("optimizer step")
        axs.flat[1].set_ylabel(acc_label(configs))
    legend_below(fig, axs, ncol=1 if width == "1col" else 2)
    return fig


FIGURES["learning_curves"] = learning.learning_curves  # eval accuracy vs step per configuration (analysis/curves.py)
FIGURES["learning_forgetting"] = forgetting.learning_forgetting_figure  # eval.benchmarks (analysis/forgetting.py)


@figure("param_importance")
def param_importance(loaded, width: str, min_trials: int = 8):
    """fANOVA importance of each searched parameter for accuracy (Optuna's evaluator)."""
    import optuna

    df, study = loaded.trials, loaded.optuna_study
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
        target=lambda t: acc.get(t.number, np.nan))  # Optuna re-reads the storage: a trial set aside (degenerate)
    # or completed since the frame was read is not in acc, and a non-finite target is one Optuna leaves out
    names = list(imp)[::-1]
    fig, axs = new_figure(width, height=0.35 * len(names) + 0.8)
    ax = axs[0, 0]
    ax.barh(range(len(names)), [imp[n] for n in names], color=OKABE_ITO[0])
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel(f"importance for accuracy (fANOVA, fraction of variance; {len(done)} trials)")
    ax.grid(axis="y", visible=False)
    return fig


@figure("expected_best_vs_budget")
def expected_best_vs_budget(loaded, width: str):
    """Dodge et al. (2019): expected best configuration mean of n random configurations, against n
    and against compute, with a 95% bootstrap band (analysis/budget.py)."""
    from analysis import budget

    lora, _, axes = split(loaded)
    configs = configurations(lora, axes) if not lora.empty else pd.DataFrame()
    cv = budget.curve(configs) if not configs.empty else None
    if cv is None:
        raise Skip(f"needs 2 configurations with complete trials, has {len(configs)}")
    panels = [("n", "configurations tried (drawn at random)")]
    if np.all(np.isfinite(cv["compute"])) and cv["compute"][0] > 0:
        panels.append(("compute", "compute of the configurations tried (FLOPs, all seeds)"))
    fig, axs = new_figure(width, *((len(panels), 1) if width == "1col" else (1, len(panels))),
                          height=(2.3 * len(panels)) if width == "1col" else 2.9)
    for ax, (x, xlabel) in zip(axs.flat, panels):
        ax.plot(cv[x], cv["expected"], color=OKABE_ITO[0], marker="o", label="expected best (Dodge et al. 2019)")
        ax.fill_between(cv[x], cv["lo"], cv["hi"], color=OKABE_ITO[0], alpha=0.15, lw=0,
                        label=f"95% bootstrap band ({cv['n_boot']} resamples)")
        if x == "compute":
            log_x(ax, cv[x])
        else:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("expected best configuration mean")
    legend_below(fig, axs, ncol=2)
    return fig


def figure_names(loaded) -> list[str]:
    """The figures this study asks for: the fixed ones and one per searched axis."""
    axes = [a for a in loaded.axes if a != "method"]
    return ["accuracy_vs_compute", *(axis_figure_name(a) for a in axes), "alpha_rank_heatmap", "training_curves",
            "learning_curves", *(["learning_forgetting"] if forgetting.has_benchmarks(loaded.trials) else []),
            "param_importance", "expected_best_vs_budget"]


def draw(name: str, loaded, width: str):
    if name in FIGURES:
        return FIGURES[name](loaded, width)
    axis = next((a for a in loaded.axes if axis_figure_name(a) == name), None)
    if axis is None:
        raise Skip(f"{name}: not a figure of this study (its axes: {', '.join(loaded.axes)})")
    return axis_figure(loaded, width, axis)


def write_all(loaded, out: Path, say=print) -> list[Path]:
    """Every figure the data supports, as PDF + PNG at both widths; a note for each skipped one."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with plt.rc_context(STYLE):
        for name in figure_names(loaded):
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
