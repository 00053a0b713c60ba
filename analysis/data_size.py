"""How much data: for a `data.train_size` study, the size beyond which more data is equivalent within ±δ.

Two lines of evidence, each said with what it rests on:
- tested: the smallest size tried whose every larger size is "equivalent within ±δ" of it in the study's
  comparisons (paired over seeds, TOST, Holm across the study: analysis/verdicts.py). A larger size that is
  "better" rules a size out; an undecided pair leaves it open, and the line names the pair and its MDE.
- fitted: acc(n) = a − b·n^−c (analysis/stats.py saturating_fit) is within δ of its asymptote a from
  n = (b/δ)^(1/c) on; its 95% interval comes from the fit's bootstrap refits (stats.saturating_fit). An extrapolation, not a test:
  beyond the largest size tried it is said as such.
Torch-free.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import stats, verdicts

AXIS = "data.train_size"


def _pairs(cmp: pd.DataFrame, held: str) -> dict[tuple[float, float], pd.Series]:
    """(smaller size, larger size) -> the comparison row, for one setting of the other axes."""
    out = {}
    for _, r in cmp[(cmp["axis"] == AXIS) & (cmp["held"] == held)].iterrows():
        a, b = float(r["a_value"]), float(r["b_value"])
        out[(min(a, b), max(a, b))] = r
    return out


def tested_plateau(cmp: pd.DataFrame, held: str, margin: float) -> str:
    pairs = _pairs(cmp, held)
    sizes = sorted({s for p in pairs for s in p})
    if len(sizes) < 2:
        return "fewer than two sizes compared: untested"
    eq = verdicts.equivalent_word(margin)
    for n in sizes[:-1]:
        rows = [pairs.get((n, m)) for m in sizes if m > n]
        if any(r is None for r in rows):
            continue
        if all(r["verdict"] == eq for r in rows):
            return (f"**from n = {n:,.0f} on, more data is {eq}**: every larger size tried "
                    f"({', '.join(f'{m:,.0f}' for m in sizes if m > n)}) is {eq} of it (TOST, Holm)")
    last = sizes[-2], sizes[-1]
    r = pairs.get(last)
    if r is None:
        return "undecided: the two largest sizes share no comparison"
    mde = f"MDE {verdicts.points(r['mde'], False)} points" if np.isfinite(r["mde"]) else "MDE not computable"
    return (f"**undecided**: no size tried has every larger one {eq} of it; the two largest, n = {last[1]:,.0f} vs "
            f"{last[0]:,.0f}: **{r['verdict']}** ({verdicts.points(r['diff'])} points, {mde})")


def fitted_plateau(sizes, values, margin: float, n_draws: int = 500, seed: int = 0) -> str:
    fit = stats.saturating_fit(sizes, values, n_draws=n_draws, seed=seed)
    if not fit:
        return "fewer than 3 sizes or no convergent fit: no fitted plateau"
    a, b, c = fit["params"]
    if not (b > 0 and c > 0):
        return f"the fitted curve is flat (b = {b:.3g}, c = {c:.3g}): every size tried is on its plateau"
    at = (b / margin) ** (1 / c)
    draws = fit["draws"]
    ok = (draws[:, 1] > 0) & (draws[:, 2] > 0)
    with np.errstate(all="ignore"):
        ns = (draws[ok, 1] / margin) ** (1 / draws[ok, 2])
    lo, hi = np.nanpercentile(ns, [2.5, 97.5]) if ok.any() else (np.nan, np.nan)
    largest = float(np.max(np.asarray(sizes, float)))
    where = "inside the sizes tried" if at <= largest else f"beyond the largest size tried ({largest:,.0f}): an extrapolation"
    return (f"the fitted a − b·n^−c (a = {a:.4f}) is within {verdicts.margin_words(margin)} of its asymptote from n ≈ "
            f"{at:,.0f} [95% {lo:,.0f}, {hi:,.0f}; {len(draws)} bootstrap refits over {fit['resampled']}] on, {where}")


def report_lines(work: pd.DataFrame, axes: list[str], cmp: pd.DataFrame, margin: float) -> list[str]:
    """The report's section for a study that varies data.train_size (each arm at its best tuned value, if tuned)."""
    if AXIS not in axes or work.empty or cmp.empty:
        return []
    others = [k for k in axes if k != AXIS]
    out = [f"## How much data: the size beyond which more is {verdicts.equivalent_word(margin)}", ""]
    groups = work.groupby(others, dropna=False) if others else [((), work)]
    for key, g in groups:
        held = stats.label(g.iloc[0], verdicts.shown_axes(stats.configurations(work, axes), others)) if others else ""
        head = f"at {held}: " if held else ""
        out.append(f"- {head}tested: {tested_plateau(cmp, held, margin)}.")
        out.append(f"- {head}fitted: {fitted_plateau(g[AXIS], g['accuracy'], margin)}.")
    return out + [""]
