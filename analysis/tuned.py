"""`--tune AXIS`: does the tuned axis's best value carry over from one arm to another, and does the grid bracket it?

The claim of "LoRA Without Regret" (Schulman et al., 2025) is about the argmax, not the accuracy: at a fixed
alpha the best learning rate is nearly independent of the rank. The Comparisons section (the ranks, each at its
own best lr) cannot test that. Here, for every arm b and every other arm's best value v that differs from b's
own best v_b, b at v is compared with b at v_b: the regret of carrying the other arm's value over, paired over
seeds with the verdicts' tests (analysis/verdicts.py), Holm across this family of regrets. Every regret
"equivalent within ±δ", or every arm with the same best value: the best value transfers between the arms.
One "worse": it depends on the arm.

Selection: v_b is the argmax of the same seed means the regret is measured on, so the regret reads more
negative than a fresh set of seeds would show. An "equivalent" verdict is therefore conservative; a "worse"
verdict is not, and the report says so. Torch-free.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from analysis import stats, verdicts


def arms(configs: pd.DataFrame, axis: str, others: list[str]):
    """(arm key, the arm's configurations) for every setting of the other axes."""
    if not others:
        return [((), configs)]
    return [((k if isinstance(k, tuple) else (k,)), g) for k, g in configs.groupby(others, dropna=False, sort=True)]


def on_edge(configs: pd.DataFrame, picked: pd.DataFrame, axis: str, others: list[str]) -> list[str]:
    """Labels of the arms whose best value is the smallest or largest one the arm ran (a wider grid might do better)."""
    out = []
    for key, g in arms(configs, axis, others):
        best = picked[np.logical_and.reduce([picked[k].astype(str) == str(v) for k, v in zip(others, key)])] \
            if others else picked
        values = pd.to_numeric(g[axis], errors="coerce")
        if best.empty or len(g) < 2 or values.isna().any():
            continue
        v = float(best.iloc[0][axis])
        if v in (values.min(), values.max()):
            out.append(f"{stats.label(best.iloc[0], others) or 'the study'} at {stats.LABELS.get(axis, axis)}="
                       f"{stats.fmt(v)} ({'lowest' if v == values.min() else 'highest'} of {len(g)})")
    return out


def regrets(df: pd.DataFrame, axes: list[str], axis: str, margin: float = verdicts.MARGIN,
            alpha: float = stats.ALPHA) -> pd.DataFrame:
    """One row per (arm b, another arm's best value v != b's own): b at v vs b at its own best, judged as a family."""
    others = [a for a in axes if a != axis]
    configs = stats.configurations(df, axes)
    if configs.empty or not others:
        return pd.DataFrame()
    _, _, picked = stats.tune(df, axes, axis)
    data = verdicts.by_seed(df, configs, axes)
    short = stats.LABELS.get(axis, axis)
    rows = []
    for key, g in arms(configs, axis, others):
        own = stats.best(g)
        carried = {}  # value -> the arms whose best it is
        for _, p in picked.iterrows():
            if tuple(str(p[k]) for k in others) != tuple(str(v) for v in key) and str(p[axis]) != str(own[axis]):
                carried.setdefault(str(p[axis]), []).append(stats.label(p, others))
        for value, sources in carried.items():
            there = g[g[axis].astype(str) == value]
            if there.empty:
                continue
            b = there.iloc[0]
            e = verdicts.evidence(data[own["label"]][0], data[b["label"]][0], data[own["label"]][1],
                                  data[b["label"]][1], margin, alpha)
            rows.append({"axis": axis, "held": stats.label(own, others), "a": own["label"], "b": b["label"],
                         "a_name": f"its own best {short}={stats.fmt(own[axis])}",
                         "b_name": f"{short}={stats.fmt(b[axis])} (best at {', '.join(sources)})",
                         "a_value": own[axis], "b_value": b[axis], **e})
    return verdicts.judge(pd.DataFrame(rows), margin, alpha)


def argmax_agreement(df: pd.DataFrame, axes: list[str], axis: str, n_boot: int = verdicts.N_BOOT,
                     seed: int = verdicts.BOOT_SEED) -> tuple[float, float] | None:
    """How stable "every arm has the same best value" is: the seeds resampled with replacement (the same draw for
    every configuration, as they share seeds), each arm's best value re-picked; the fractions of resamples in which
    every arm's best is the same grid point, and within one grid step of each other. None without shared seeds."""
    others = [a for a in axes if a != axis]
    ok = df.dropna(subset=["seed"])
    # seeds as rows, configurations as columns; a configuration racing stopped (or a trial set aside) leaves a
    # hole, and a resample's mean is over the seeds the configuration has (dropping the seed everywhere would
    # throw away every other configuration's run of it)
    grid = ok.pivot_table(index="seed", columns=axes, values="accuracy", aggfunc="mean")
    if len(grid) < 2 or not others:
        return None
    values = sorted(pd.unique(ok[axis]), key=float)
    step = {v: i for i, v in enumerate(values)}
    pos = [axes.index(a) for a in others]
    arm_of = [tuple(c[i] for i in pos) for c in grid.columns]
    col_step = np.array([step[c[axes.index(axis)]] for c in grid.columns])
    draws = np.random.default_rng(seed).integers(0, len(grid), size=(n_boot, len(grid)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample can miss every seed a configuration has
        means = np.nanmean(grid.to_numpy(float)[draws], axis=1)  # (n_boot, configurations)
    means = np.where(np.isnan(means), -np.inf, means)
    bests = []
    for arm in sorted(set(arm_of), key=str):
        cols = np.array([i for i, a in enumerate(arm_of) if a == arm])
        bests.append(col_step[cols][np.argmax(means[:, cols], axis=1)])
    bests = np.stack(bests, axis=1)  # (n_boot, arms): the grid step of each arm's best
    spread = bests.max(axis=1) - bests.min(axis=1)
    return float(np.mean(spread == 0)), float(np.mean(spread <= 1))


def conclusion(reg: pd.DataFrame, picked: pd.DataFrame, axis: str, margin: float) -> str:
    short, eq = stats.LABELS.get(axis, axis), verdicts.equivalent_word(margin)
    values = sorted({stats.fmt(v) for v in picked[axis]})
    if len(values) == 1:
        return (f"every arm's best {short} is the same grid point ({values[0]}): on this grid it transfers (no "
                "regret to test; whether that point is decisively the best within each arm is the lr comparisons' "
                "question, without --tune).")
    if reg.empty:
        return f"the arms' best {short} differ ({', '.join(values)}), but no arm ran another arm's best: untested."
    worse, undecided = int((reg["verdict"] == "worse").sum()), int((reg["verdict"] == "undecided").sum())
    if worse:
        return (f"**the best {short} depends on the arm**: {worse} of {len(reg)} carried-over values lose "
                f"significantly (Holm), though selection makes a loss read larger than fresh seeds would show.")
    if undecided:
        return (f"**undecided**: {len(reg) - undecided} of {len(reg)} carried-over values are {eq} of the arm's "
                f"own best, {undecided} undecided (their lines say what would decide them).")
    return (f"**the best {short} transfers**: every carried-over value is {eq} of the arm's own best "
            f"({len(reg)} of {len(reg)}, Holm; selection makes this conservative).")


def report_lines(df: pd.DataFrame, axes: list[str], axis: str, margin: float = verdicts.MARGIN,
                 alpha: float = stats.ALPHA) -> list[str]:
    """The report's section (empty when the study has no other axis to carry the value across)."""
    others = [a for a in axes if a != axis]
    if not others or df.empty:
        return []
    configs = stats.configurations(df, axes)
    _, _, picked = stats.tune(df, axes, axis)
    reg = regrets(df, axes, axis, margin, alpha=alpha)
    short = stats.LABELS.get(axis, axis)
    out = [f"## Does the best {axis} carry over between arms?",
           f"For each arm, the {short} that is best at another arm, against the arm's own best {short}: the regret "
           f"of carrying it over (b − a, paired over seeds; Holm across these {len(reg) or 'regrets: none here'}). The own best is picked on "
           "the same seeds, so a regret reads more negative than fresh seeds would show: 'equivalent' is "
           "conservative here, 'worse' is not.", ""]
    out += [f"- at {r['held']}: {verdicts.sentence({**r, 'held': ''}, margin)}" for _, r in reg.iterrows()]
    edges = on_edge(configs, picked, axis, others)
    if edges:
        out.append(f"- on the grid's edge (a wider grid might find a better {short}): {'; '.join(edges)}.")
    agree = argmax_agreement(df, axes, axis)
    if agree is not None:
        out.append(f"- how stable the bests are: in {100 * agree[0]:.1f}% of {verdicts.N_BOOT:,} resamples of the "
                   f"shared seeds (numpy seed {verdicts.BOOT_SEED}) every arm's best {short} is the same grid point, "
                   f"in {100 * agree[1]:.1f}% within one grid step of each other.")
    out += [f"- conclusion: {conclusion(reg, picked, axis, margin)}", ""]
    return out
