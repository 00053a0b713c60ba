"""Paper tables from the study frame: LaTeX (booktabs, via pandas' Styler) and Markdown (via tabulate).

- best.{tex,md}: the best configurations (seeds pooled: mean accuracy ± 95% CI), with cost;
- pareto.{tex,md}: the trials on the accuracy-vs-FLOPs Pareto front;
- trials.md: every trial with its state and reason, so failed and pruned ones stay visible.
Each paper table ends with the zero-shot baseline row (the base model with its untrained head).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.figures import LABELS, ci95, complete, pareto_mask, varying

LORA_KEYS = ("lora.targets", "lora.r", "lora.alpha")


def _flops_unit(values) -> tuple[float, str]:
    m = np.nanmedian(np.asarray(values, float)) if len(values) else 1.0
    for scale, name in ((1e18, "EFLOPs"), (1e15, "PFLOPs"), (1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs")):
        if m >= scale:
            return scale, name
    return 1.0, "FLOPs"


def _keys(df: pd.DataFrame) -> list[str]:
    """LoRA settings always; any other config key the study varied."""
    return list(dict.fromkeys([*LORA_KEYS, *varying(complete(df))]))


def _baseline_row(df: pd.DataFrame, keys: list[str]) -> dict | None:
    b = df["baseline_accuracy"].dropna()
    if b.empty:
        return None
    return {"trial(s)": "—", **{LABELS.get(k, k): "—" for k in keys}, "configuration": "zero-shot (base model)",
            "accuracy": f"{b.median():.4f}", "seeds": "—", "compute": "—", "device-h": "—", "cost (USD)": "—",
            "trainable params": "0"}


def best_configs(df: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    ok = complete(df)
    if ok.empty:
        return pd.DataFrame()
    keys = _keys(df)
    scale, unit = _flops_unit(ok["flops"])
    rows = []
    for vals, g in ok.groupby(keys, dropna=False):
        mean, half, n = ci95(g["accuracy"])
        rows.append({"trial(s)": ", ".join(str(int(t)) for t in sorted(g["trial"])),
                     **{LABELS.get(k, k): v for k, v in zip(keys, vals)},
                     "_mean": mean, "accuracy": f"{mean:.4f}" + (f" ± {half:.4f}" if n > 1 else ""), "seeds": n,
                     "compute": f"{g['flops'].mean() / scale:.3g}", "device-h": f"{g['device_hours'].mean():.3g}",
                     "cost (USD)": f"{g['cost_usd'].mean():.3g}", "trainable params": f"{int(g['trainable_params'].iloc[0]):,}"})
    out = pd.DataFrame(rows).sort_values("_mean", ascending=False).head(top).drop(columns="_mean")
    return _finish(out, df, keys, unit)


def pareto_set(df: pd.DataFrame) -> pd.DataFrame:
    ok = complete(df)
    ok = ok[ok["flops"] > 0]
    if ok.empty:
        return pd.DataFrame()
    keys = _keys(df)
    scale, unit = _flops_unit(ok["flops"])
    front = ok[pareto_mask(ok["flops"], ok["accuracy"])].sort_values("flops")
    out = pd.DataFrame({"trial(s)": front["trial"].astype(int).astype(str),
                        **{LABELS.get(k, k): front[k] for k in keys},
                        "accuracy": front["accuracy"].map("{:.4f}".format), "seeds": 1,
                        "compute": (front["flops"] / scale).map("{:.3g}".format),
                        "device-h": front["device_hours"].map("{:.3g}".format),
                        "cost (USD)": front["cost_usd"].map("{:.3g}".format),
                        "trainable params": front["trainable_params"].map("{:,.0f}".format)})
    return _finish(out, df, keys, unit)


def _finish(out: pd.DataFrame, df: pd.DataFrame, keys: list[str], unit: str) -> pd.DataFrame:
    base = _baseline_row(df, keys)
    if base is not None:
        out = pd.concat([out, pd.DataFrame([base])], ignore_index=True)
    if "configuration" in out:  # only the baseline row has one: fold it into the first key column
        first = LABELS.get(keys[0], keys[0])
        out[first] = out["configuration"].fillna(out[first])
        out = out.drop(columns="configuration")
    out = out.astype(str).replace({"nan": "", "None": ""})
    return out.rename(columns={"compute": f"compute ({unit})"})


def all_trials(df: pd.DataFrame) -> pd.DataFrame:
    keys = _keys(df)
    cols = ["trial", "state", "status", *keys, "seed", "accuracy", "flops", "device_hours", "source", "reason"]
    out = df[[c for c in cols if c in df]].copy()
    out["reason"] = out["reason"].fillna("")
    return out


NUMERIC = ("accuracy", "seeds", "compute", "device-h", "cost (USD)", "trainable params")
# Characters pdflatex without extra packages rejects, as LaTeX math / dashes.
TEX_SYMBOLS = {"±": r"$\pm$", "α": r"$\alpha$", "—": "---"}


def to_latex(table: pd.DataFrame, caption: str, label: str) -> str:
    # Styler escapes &, %, _, ... in cells and headers; hrules gives \toprule/\midrule/\bottomrule.
    sty = table.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    align = "".join("r" if c.startswith(NUMERIC) else "l" for c in table.columns)
    tex = sty.to_latex(hrules=True, caption=caption, label=label, position="t", position_float="centering",
                       column_format=align)
    for char, cmd in TEX_SYMBOLS.items():
        tex = tex.replace(char, cmd)
    return tex


def write_all(loaded, out: Path, say=print) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    df, study = loaded.trials, loaded.trials["study"].iloc[0]
    tex_study = str(study).replace("_", r"\_")  # captions are LaTeX source, not escaped by Styler
    written = []
    specs = [("best", best_configs(df), f"Best configurations of study {tex_study} (mean accuracy ± 95\\% CI over "
                                       "seeds), with training compute and trainable parameters."),
             ("pareto", pareto_set(df), f"Pareto set of study {tex_study}: no other trial is both cheaper in FLOPs "
                                        "and more accurate.")]
    for name, table, caption in specs:
        if table.empty:
            say(f"skipped table {name}: no complete trial")
            continue
        (out / f"{name}.tex").write_text(to_latex(table, caption, f"tab:{study}-{name}"))
        (out / f"{name}.md").write_text(table.to_markdown(index=False) + "\n")
        written += [out / f"{name}.tex", out / f"{name}.md"]
    (out / "trials.md").write_text(all_trials(df).to_markdown(index=False, floatfmt=".4g") + "\n")
    written.append(out / "trials.md")
    return written
