"""Paper tables from the study frame: LaTeX (booktabs, via pandas' Styler) and Markdown (via tabulate).

- best.{tex,md}: every configuration (mean accuracy ± 95% CI over seeds), best mean first (ties:
  lower compute), with cost; then the reference arms (head only, full fine-tune) and the zero-shot
  baseline;
- pareto.{tex,md}: the configurations on the accuracy-vs-FLOPs Pareto front of the means;
- comparisons.{tex,md}: every pair of configurations differing in one searched axis, with the
  verdict of analysis/verdicts.py ("better", "worse", "equivalent within ±δ", "undecided"), the
  test it used, both Holm-corrected p-values, the seeds × items bootstrap interval, the MDE and,
  where the trials wrote per-item scores, the gold log-probability's difference;
- trials.md: every trial with its state and reason, so failed and pruned ones stay visible.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import race, verdicts
from analysis.items import test_items
from analysis.plotting import complete, reference_name, split
from analysis.stats import LABELS, configurations, fmt, pareto_mask, t_interval


def _flops_unit(values) -> tuple[float, str]:
    m = np.nanmedian(np.asarray(values, float)) if len(values) else 1.0
    for scale, name in ((1e18, "EFLOPs"), (1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs")):
        if m >= scale:
            return scale, name
    return 1.0, "FLOPs"


def _acc(mean, half, n, items: int | None = None) -> str:
    """mean ± 95% CI over seeds; one seed: no interval over seeds, the test items' one (verdicts.accuracy_text)."""
    if n > 1 and not np.isnan(half):
        return f"{mean:.4f} ± {half:.4f}"
    return verdicts.accuracy_text(mean, half, n, items)


def _config_rows(configs: pd.DataFrame, axes: list[str], scale: float, items: int | None = None) -> list[dict]:
    return [{**{LABELS.get(k, k): fmt(c[k]) for k in axes}, "accuracy": _acc(c["mean"], c["ci"], c["n"], items),
             "seeds": c["n"],
             "compute": f"{c['flops'] / scale:.3g}", "device-h": f"{c.get('device_hours', np.nan):.3g}",
             "cost (USD)": f"{c.get('cost_usd', np.nan):.3g}", "trainable params": f"{c['trainable_params']:,.0f}",
             "trial(s)": ", ".join(map(str, c["trials"]))} for _, c in configs.iterrows()]


def _reference_rows(refs: pd.DataFrame, all_trials: pd.DataFrame, axes: list[str], scale: float) -> list[dict]:
    """Reference arms and the zero-shot baseline, the first key column naming them."""
    first = LABELS.get(axes[0], axes[0]) if axes else "configuration"
    blank = {LABELS.get(k, k): "—" for k in axes}
    rows = []
    for method, g in refs.groupby("method"):
        mean, half, n = t_interval(g["accuracy"])
        rows.append({**blank, first: reference_name(method, g), "accuracy": _acc(mean, half, n), "seeds": n,
                     "compute": f"{g['flops'].mean() / scale:.3g}", "device-h": f"{g['device_hours'].mean():.3g}",
                     "cost (USD)": f"{g['cost_usd'].mean():.3g}",
                     "trainable params": f"{g['trainable_params'].mean():,.0f}",
                     "trial(s)": ", ".join(str(int(t)) for t in sorted(g["trial"]))})
    b = all_trials["baseline_accuracy"].dropna()
    if not b.empty:
        bf = all_trials["baseline_flops"].dropna() if "baseline_flops" in all_trials else pd.Series(dtype=float)
        rows.append({**blank, first: "zero-shot (base model)", "accuracy": f"{b.median():.4f}", "seeds": "—",
                     "compute": f"{bf.median() / scale:.3g} (once)" if not bf.empty else "—", "device-h": "—",
                     "cost (USD)": "—", "trainable params": "0", "trial(s)": "—"})
    return rows


def best_configs(loaded, top: int | None = None) -> pd.DataFrame:
    lora, refs, axes = split(loaded)
    if lora.empty and refs.empty:
        return pd.DataFrame()
    configs = configurations(lora, axes) if not lora.empty else pd.DataFrame()
    scale, unit = _flops_unit(complete(loaded.trials)["flops"])
    if not configs.empty:
        configs = configs.sort_values(["mean", "cost"], ascending=[False, True]).head(top)
    rows = (_config_rows(configs, axes, scale, test_items(lora)) if not configs.empty else []) + \
        _reference_rows(refs, loaded.trials, axes, scale)
    return _finish(pd.DataFrame(rows), unit)


def pareto_set(loaded) -> pd.DataFrame:
    lora, _, axes = split(loaded)
    lora = lora[lora["flops"] > 0]
    if lora.empty:
        return pd.DataFrame()
    configs = configurations(lora, axes)
    scale, unit = _flops_unit(lora["flops"])
    front = configs[pareto_mask(configs["cost"], configs["mean"])].sort_values("cost")
    return _finish(pd.DataFrame(_config_rows(front, axes, scale, test_items(lora))), unit)


def comparison_table(loaded, margin: float = verdicts.MARGIN, cmp: pd.DataFrame | None = None) -> pd.DataFrame:
    """The comparisons as a table: the same names, numbers and verdict words as the report's sentences."""
    if cmp is None:
        lora, _, axes = split(loaded)
        cmp = verdicts.compare(lora, axes, margin, race.level(loaded.optuna_study)[0]) if axes and not lora.empty \
            else pd.DataFrame()
    if cmp.empty:
        return cmp
    pts = verdicts.points
    return pd.DataFrame({
        "comparison (b vs a)": cmp["b_name"] + " vs " + cmp["a_name"], "held fixed": cmp["held"], "seeds": cmp["n"],
        "items": cmp["items"].map(lambda v: v or "—"), "b − a (points)": cmp["diff"].map(pts),
        "95% CI, seeds (t)": [f"[{pts(lo)}, {pts(hi)}]" if pd.notna(lo) else ("1 seed, no interval" if n == 1 else "—")
                              for lo, hi, n in zip(cmp["lo"], cmp["hi"], cmp["n"])],
        f"{100 * (1 - cmp['level'].iloc[0]):g}% CI, seeds × items": [f"[{pts(lo)}, {pts(hi)}]" if pd.notna(lo)
                                                                    else "—"
                                  for lo, hi in zip(cmp["boot_lo"], cmp["boot_hi"])],
        "test": cmp["test"], "p (difference)": cmp["p_diff"].map(_p), "p (Holm)": cmp["p_diff_holm"].map(_p),
        f"p (TOST ±{100 * margin:g}, Holm)": cmp["p_eq_holm"].map(_p), "verdict": cmp["verdict"] + np.where(
            cmp["this_test_set_only"], " (this test set only)", ""),
        "MDE 80% (points)": cmp["mde"].map(lambda v: pts(v, False)),
        "log-prob b − a (nats)": cmp["score_diff"].map(lambda v: f"{v:+.4f}" if pd.notna(v) else "—"),
        "log-prob p (Holm)": cmp["score_p_holm"].map(_p), "what would decide it": cmp["decide"]})


def _p(v) -> str:
    return "" if pd.isna(v) else ("<0.0001" if v < 1e-4 else f"{v:.4f}")


def _finish(out: pd.DataFrame, unit: str) -> pd.DataFrame:
    out = out.astype(str).replace({"nan": "", "None": ""})
    return out.rename(columns={"compute": f"compute ({unit})"})


def all_trials(df: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    cols = ["trial", "state", "status", "method", *axes, "seed", "accuracy", "flops", "device_hours", "source", "reason"]
    out = df[[c for c in dict.fromkeys(cols) if c in df]].copy()
    out["reason"] = out["reason"].fillna("")
    return out


NUMERIC = ("accuracy", "seeds", "items", "compute", "device-h", "cost (USD)", "trainable params", "b − a", "95%", "p (",
           "MDE", "log-prob")
# Characters pdflatex without extra packages rejects, as LaTeX math / dashes.
TEX_SYMBOLS = {"±": r"$\pm$", "α": r"$\alpha$", "—": "---", "−": "-", "×": r"$\times$"}


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    # Styler escapes &, %, _, ... in cells and headers; hrules gives \toprule/\midrule/\bottomrule.
    sty = table.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    align = "".join("r" if c.startswith(NUMERIC) else "l" for c in table.columns)
    tex = sty.to_latex(hrules=True, caption=caption, label=label, position="t", position_float="centering",
                       column_format=align)
    for char, cmd in TEX_SYMBOLS.items():
        tex = tex.replace(char, cmd)
    return tex


def tables(loaded, margin: float = verdicts.MARGIN) -> list[tuple[str, pd.DataFrame, str]]:
    """(name, table, LaTeX caption) of every paper table."""
    study = loaded.trials["study"].iloc[0]
    s = str(study).replace("_", r"\_")  # captions are LaTeX source, not escaped by Styler
    return [("best", best_configs(loaded), f"Configurations of study {s}, best mean first (mean accuracy ± 95\\% CI "
                                           "over seeds), with compute and trainable parameters; reference arms and the "
                                           "zero-shot baseline below."),
            ("pareto", pareto_set(loaded), f"Pareto set of study {s} on configuration means: no other configuration is "
                                           "both cheaper in FLOPs and more accurate on average."),
            ("comparisons", comparison_table(loaded, margin),
             f"Comparisons of study {s}: configurations that differ in one axis; verdicts better / worse / "
             f"equivalent within $\\pm${100 * margin:g} points (TOST) / undecided, Holm-corrected across the study "
             "per kind of test; MDE: the difference the verdict's test detects with 80\\% power.")]


def write_all(loaded, out: Path, say=print, margin: float = verdicts.MARGIN) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    study = loaded.trials["study"].iloc[0]
    written = []
    for name, table, caption in tables(loaded, margin):
        if table.empty:
            say(f"skipped table {name}: no complete trial" if name != "comparisons" else
                "skipped table comparisons: no two configurations differ in exactly one searched axis")
            continue
        (out / f"{name}.tex").write_text(to_latex(table, caption, f"tab:{study}-{name}"))
        (out / f"{name}.md").write_text(table.to_markdown(index=False) + "\n")
        written += [out / f"{name}.tex", out / f"{name}.md"]
    (out / "trials.md").write_text(all_trials(loaded.trials, loaded.axes).to_markdown(index=False, floatfmt=".4g") + "\n")
    written.append(out / "trials.md")
    return written
