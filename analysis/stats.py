"""What a study's data supports: configuration means with Student-t intervals, paired comparisons
over shared seeds with Holm's correction, power, the best configuration and a recommendation.

A configuration is one value per searched axis; its trials differ only in `seed`. A seed fixes data
order and initialisation, so two configurations run with the same seeds are compared on their
per-seed differences (pairing removes the seed-to-seed noise both share). Reference arms
(method=head_only / full) are kept out of the comparisons and reported beside them.
Distributions come from scipy.stats; only Holm's step-down (a sort and a running max) is written here.
"""
from __future__ import annotations

import functools
import itertools
import math
import warnings

import numpy as np
import pandas as pd
from scipy import optimize, stats

from harness.study import seeds
from harness.study import verdict as seeds_verdict

# short axis names for labels, figures and tables
LABELS = {"lora.r": "r", "lora.alpha": "α", "lora.alpha_over_r": "α/r", "lora.targets": "targets",
          "data.train_size": "n", "train.lr": "lr", "lora.dropout": "dropout", "quant.mode": "quant", "model.name": "model",
          "train.max_steps": "steps", "method": "method"}
ALPHA = 0.05
POWER = 0.8


# ---------------------------------------------------------------------------- one sample


def t_interval(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of the Student-t interval, n (half-width NaN for n < 2): the driver's summary's."""
    return seeds.t_interval(np.asarray(values, float).tolist(), level)


def pareto_mask(cost, acc) -> np.ndarray:
    """True where no other point is at least as cheap and as accurate and strictly better in one."""
    c, a = np.asarray(cost, float)[:, None], np.asarray(acc, float)[:, None]
    dominated = (c.T <= c) & (a.T >= a) & ((c.T < c) | (a.T > a))  # [i, j]: j dominates i
    return ~dominated.any(axis=1)


# ---------------------------------------------------------------------------- configurations


def label(row, axes) -> str:
    """`r=8, targets=all_linear`: a configuration's name in figures, tables and sentences."""
    return ", ".join(f"{LABELS.get(k, k)}={fmt(row[k])}" for k in axes) or "all trials"


def fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) else str(v)


def per_seed_values(g: pd.DataFrame, metric: str) -> np.ndarray:
    """metric once per seed (the mean of a seed's runs); rows without a seed count one each."""
    seed = g["seed"] if "seed" in g else [None] * len(g)
    return np.asarray(seeds.seed_means(zip(seed, g[metric])), float)


def configurations(df: pd.DataFrame, axes: list[str], metric: str = "accuracy", cost: str = "flops") -> pd.DataFrame:
    """One row per configuration: its axes, n seeds, mean, sd and 95% half-width of metric, mean cost.
    n counts distinct seeds: a seed run twice (a sampler proposing a configuration again reruns all its
    seeds) is one observation, its runs averaged; counted twice it would narrow the interval for nothing."""
    rows = []
    for vals, g in df.groupby(axes, dropna=False, sort=True) if axes else [((), df)]:
        vals = vals if isinstance(vals, tuple) else (vals,)
        per_seed = per_seed_values(g, metric)
        mean, half, n = t_interval(per_seed)
        rows.append({**dict(zip(axes, vals)), "n": n, "mean": mean, "ci": half,
                     "sd": float(np.nanstd(per_seed, ddof=1)) if n > 1 else np.nan,
                     "cost": float(g[cost].mean()) if cost in g else np.nan,
                     **{c: float(g[c].mean()) for c in ("flops", "device_hours", "cost_usd", "trainable_params")
                        if c in g},
                     "seeds": sorted(int(s) for s in g["seed"].dropna()), "trials": sorted(int(t) for t in g["trial"]),
                     "set_aside": int(g["set_aside_seeds"].max()) if "set_aside_seeds" in g else 0})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["label"] = [label(r, axes) for _, r in out.iterrows()]
    return out


def best(configs: pd.DataFrame) -> pd.Series:
    """The configuration with the best mean; ties go to the lower compute (the driver's order). Among those
    with no seed set aside as degenerate, where any: the mean of a configuration whose other seeds collapsed
    is over the seeds that did not, and beats a stable one's by survivorship (the driver's pick, on every
    seed's value, collapsed ones included, also counts the collapses against it)."""
    if "set_aside" in configs and (configs["set_aside"] == 0).any() and (configs["set_aside"] > 0).any():
        configs = configs[configs["set_aside"] == 0]
    keys = [seeds.rank_key([m], ["maximize"], c) for m, c in zip(configs["mean"], configs["cost"])]
    return configs.iloc[min(range(len(keys)), key=keys.__getitem__)]


def tune(df: pd.DataFrame, axes: list[str], axis: str) -> tuple[pd.DataFrame, list[str], pd.DataFrame]:
    """Each arm at its own best value of `axis` (the papers' protocol for lr): for every setting of
    the other axes keep the trials of the axis value with the best mean. Returns (trials, the other
    axes, the configurations kept)."""
    others = [a for a in axes if a != axis]
    configs = configurations(df, axes)
    picked = pd.DataFrame([best(g) for _, g in (configs.groupby(others, dropna=False) if others else [((), configs)])])
    keep = np.zeros(len(df), bool)
    for _, c in picked.iterrows():
        keep |= np.logical_and.reduce([df[k].astype(str) == str(c[k]) for k in axes])
    return df[keep], others, picked


# ---------------------------------------------------------------------------- paired comparisons


def paired(a: pd.Series, b: pd.Series, level: float = 0.95) -> dict:
    """b - a over the seeds both ran (Series indexed by seed): mean, interval, paired-t p, exact
    sign-flip permutation p (free of the normality assumption, but never below 2 / 2^n)."""
    shared = sorted(set(a.dropna().index) & set(b.dropna().index))
    d = np.array([b[s] - a[s] for s in shared], float)
    n = len(d)
    out = {"n": n, "diff": float(d.mean()) if n else np.nan, "lo": np.nan, "hi": np.nan, "p_t": np.nan,
           "p_perm": np.nan, "sd_diff": float(d.std(ddof=1)) if n > 1 else np.nan}
    if n < 2:
        return out
    mean, half, _ = t_interval(d, level)
    out.update(lo=mean - half, hi=mean + half)
    if np.all(d == d[0]):  # no spread: t is undefined; a constant non-zero shift is still no proof with n seeds
        out.update(p_t=1.0 if d[0] == 0 else 0.0)
    else:
        out["p_t"] = seeds_verdict.p_two_sided([float(x) for x in d])  # the driver's paired t
    perm = stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf if n <= 16 else 20000,
                                  alternative="two-sided", random_state=0)
    out["p_perm"] = float(perm.pvalue)
    return out


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error over all the study's comparisons): the driver's
    (harness/study/verdict.py, which stop_when: decided uses), as an array."""
    return np.asarray(seeds_verdict.holm([float(p) for p in np.asarray(pvalues, float)]), float)


def power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of a two-sided paired t test at this effect, sd of differences and n (noncentral t)."""
    if n < 2 or not sd > 0:
        return np.nan
    df, nc = n - 1, abs(effect) / sd * math.sqrt(n)  # symmetric in the sign of the effect
    crit = stats.t.ppf(1 - alpha / 2, df)
    near = float(stats.nct.sf(crit, df, nc))
    # The far tail P(T' < -crit) needs Z + nc < 0, so it is below Phi(-nc); scipy's nct returns NaN
    # there for small df and moderate nc (df=1, nc=8: NaN), which made the MDE's root finder stop at n=2.
    far = float(stats.nct.cdf(-crit, df, nc))
    if math.isnan(far):
        far = 0.0 if nc > 5 else float(stats.norm.cdf(-nc))  # Phi(-5) = 3e-7: below any power we report
    if math.isnan(near):
        return 1.0 if nc > crit else np.nan  # NaN far out in the upper tail: power is 1 to print precision
    return min(1.0, near + far)


def min_detectable_effect(sd: float, n: int, alpha: float = ALPHA, target: float = POWER) -> float:
    """The smallest mean difference a paired t test finds with `target` power at this n and sd."""
    if n < 2 or not sd > 0:
        return np.nan
    hi = sd
    while power(hi, sd, n, alpha) < target:  # bracket the root: power rises with the effect
        hi *= 2
        if hi > 1e6 * sd:  # cannot happen with a finite power function; guard rather than loop forever
            return np.nan
    return float(optimize.brentq(lambda e: power(e, sd, n, alpha) - target, 1e-12 * sd, hi))


def seeds_needed(sd: float, effect: float = 0.01, alpha: float = ALPHA, target: float = POWER, cap: int = 10_000):
    """Seeds a paired t test needs to detect `effect` with `target` power (None above cap)."""
    if not sd > 0:
        return None
    return next((n for n in range(2, cap + 1) if power(effect, sd, n, alpha) >= target), None)


def one_axis_pairs(configs: pd.DataFrame, axes: list[str]):
    """Pairs of configurations (i, j, axis) that differ in exactly one searched axis."""
    for i, j in itertools.combinations(range(len(configs)), 2):
        diff = [k for k in axes if fmt(configs.iloc[i][k]) != fmt(configs.iloc[j][k])]
        if len(diff) == 1:
            yield i, j, diff[0]


def comparisons(df: pd.DataFrame, axes: list[str], metric: str = "accuracy", alpha: float = ALPHA,
                effect: float = 0.01) -> pd.DataFrame:
    """Every one-axis pair: b - a over shared seeds, p (paired t), Holm across them, a verdict,
    the minimum detectable effect at 80% power and the seeds needed to detect `effect`."""
    configs = configurations(df, axes, metric)
    by_seed = {c["label"]: df[np.logical_and.reduce([df[k].astype(str) == str(c[k]) for k in axes])]
               .groupby("seed")[metric].mean() for _, c in configs.iterrows()} if axes else {}  # a re-run seed: once
    rows = []
    for i, j, axis in one_axis_pairs(configs, axes):
        a, b = configs.iloc[i], configs.iloc[j]
        r = paired(by_seed[a["label"]], by_seed[b["label"]])
        rows.append({"axis": axis, "a": a["label"], "b": b["label"], "a_value": a[axis], "b_value": b[axis],
                     "held": label(a, [k for k in axes if k != axis]) if len(axes) > 1 else "", **r,
                     "mde": min_detectable_effect(r["sd_diff"], r["n"], alpha),
                     "seeds_for_effect": seeds_needed(r["sd_diff"], effect, alpha)})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = holm(out["p_t"])
    out["verdict"] = [verdict(r, alpha) for _, r in out.iterrows()]
    return out


def verdict(r, alpha: float = ALPHA) -> str:
    """From b's side: better / worse / not distinguishable, never more than the test supports."""
    if r["n"] < 2 or np.isnan(r["p_holm"]):
        return f"untested ({r['n']} shared seed{'s' if r['n'] != 1 else ''})"
    if r["p_holm"] < alpha:
        return "better" if r["diff"] > 0 else "worse"
    return f"not distinguishable with {r['n']} seeds"


# ---------------------------------------------------------------------------- recommendation


def recommend(df: pd.DataFrame, axes: list[str], epsilon: float = 0.01, cost: str = "flops", metric: str = "accuracy",
              n_boot: int = 4000, seed: int = 0) -> dict:
    """The cheapest configuration whose mean is within epsilon of the best mean, and the bootstrap
    probability (seeds resampled together, keeping the pairing) that it really is within epsilon."""
    configs = configurations(df, axes, metric, cost)
    top = best(configs)
    near = configs[configs["mean"] >= top["mean"] - epsilon].sort_values(["cost", "mean"], ascending=[True, False])
    pick = near.iloc[0]
    grid = df.assign(_cfg=[label(r, axes) for _, r in df.iterrows()]).pivot_table(
        index="_cfg", columns="seed", values=metric, aggfunc="mean")
    rng = np.random.default_rng(seed)
    cols = rng.integers(0, grid.shape[1], size=(n_boot, grid.shape[1]))
    values = grid.to_numpy(float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample can miss every seed of a config
        means = np.stack([np.nanmean(values[:, c], axis=1) for c in cols])  # (n_boot, configs)
    row = list(grid.index).index(pick["label"])
    within = means[:, row] >= np.nanmax(means, axis=1) - epsilon
    return {"best": top, "pick": pick, "epsilon": epsilon, "cost": cost, "candidates": near,
            "probability": float(np.mean(within)), "n_boot": n_boot}


def _saturating(n, a, b, c):
    return a - b * np.power(n, -c)


def _fit_saturating(x, y, p0) -> np.ndarray | None:
    try:
        popt, _ = optimize.curve_fit(_saturating, x, y, p0=p0, bounds=([0, 0, 0], [1.5, np.inf, 3]), maxfev=20000)
    except (RuntimeError, ValueError):
        return None
    return popt


def saturating_fit(sizes, values, at: float | None = None, n_draws: int = 500, seed: int = 0) -> dict | None:
    """acc(n) = a - b n^-c fitted to every trial (scipy curve_fit); prediction at `at` (default 2x the
    largest size) with a 95% bootstrap band: refits on the trials resampled within each size (the seeds), or,
    where a size has one trial, on the fitted curve plus resampled residuals. Refits, not draws from the
    parameters' covariance: a, b and c are strongly correlated and the normal approximation gave bands
    past accuracy 1 on a curve whose points are ±1 point apart. None when the fit does not converge.
    The result is shared between calls on the same trials: treat it as read-only."""
    return _saturating_fit(tuple(np.asarray(sizes, float)), tuple(np.asarray(values, float)), at, n_draws, seed)


@functools.lru_cache(maxsize=16)  # the figure (at both widths), the recommendation and "How much data" fit the same trials
def _saturating_fit(xs: tuple, ys: tuple, at: float | None, n_draws: int, seed: int) -> dict | None:
    x, y = np.array(xs, float), np.array(ys, float)
    if len(np.unique(x)) < 3:
        return None
    popt = _fit_saturating(x, y, (y.max(), 1.0, 0.5))
    if popt is None:
        return None
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(x == v) for v in np.unique(x)]
    by_size = all(len(g) >= 2 for g in groups)
    resid = y - _saturating(x, *popt)
    draws = []
    for _ in range(n_draws):
        if by_size:
            idx = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
            refit = _fit_saturating(x[idx], y[idx], popt)
        else:
            refit = _fit_saturating(x, _saturating(x, *popt) + rng.choice(resid, size=len(y)), popt)
        if refit is not None:
            draws.append(refit)
    draws = np.array(draws).reshape(-1, 3)
    at = at or 2 * x.max()
    grid = np.geomspace(x.min(), at, 60)
    curves = np.stack([_saturating(grid, *d) for d in draws]) if len(draws) else np.full((1, len(grid)), np.nan)
    pred = _saturating(np.array([at]), *draws.T) if len(draws) else np.array([np.nan])
    return {"params": popt, "draws": draws, "resampled": "trials within each size" if by_size else "residuals",
            "at": at, "prediction": float(_saturating(at, *popt)),
            "interval": tuple(float(q) for q in np.nanpercentile(pred, [2.5, 97.5])), "grid": grid,
            "curve": _saturating(grid, *popt), "band": np.nanpercentile(curves, [2.5, 97.5], axis=0)}
