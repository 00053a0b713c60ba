"""Expected best vs search budget (Dodge et al., EMNLP 2019, "Show Your Work").

The study's configuration means v_1..v_N (each the mean over its seeds) define an empirical CDF;
the expected maximum of n configurations drawn from it with replacement is
E[max_n] = Σ_i v_(i) · ((i/N)^n − ((i−1)/N)^n), v sorted ascending (Dodge et al., eq. 1). Against
compute, n draws cost n × the mean compute of a configuration (all its seeds). The band: the
curve recomputed on N_BOOT bootstrap resamples of the configuration means (numpy seed BOOT_SEED),
2.5th-97.5th percentiles. The sampler is the study's (`sweep.sampler`): the curve says what a
random pick of n of *these* configurations would reach, not what the sampler would do with n
trials. Torch-free.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

N_BOOT = 1000
BOOT_SEED = 0


def expected_max(values, ns) -> np.ndarray:
    """E[max of n draws with replacement from the empirical CDF of values], for each n in ns."""
    v = np.sort(np.asarray(values, float))
    big_n = len(v)
    i = np.arange(1, big_n + 1)
    ns = np.asarray(ns, float)[:, None]
    w = (i / big_n) ** ns - ((i - 1) / big_n) ** ns  # P(the max is the i-th smallest)
    return w @ v


def curve(configs: pd.DataFrame, n_boot: int = N_BOOT, seed: int = BOOT_SEED, cost: str = "flops") -> dict | None:
    """n = 1..N: expected best mean, its bootstrap band, and the compute of n configurations."""
    c = configs.dropna(subset=["mean"]) if "mean" in configs else configs[:0]
    if len(c) < 2:
        return None
    ns = np.arange(1, len(c) + 1)
    means = c["mean"].to_numpy(float)
    rng = np.random.default_rng(seed)
    boots = np.stack([expected_max(rng.choice(means, len(means)), ns) for _ in range(n_boot)])
    per_config = (c[cost] * c["n"]).to_numpy(float) if cost in c else np.full(len(c), np.nan)
    return {"n": ns, "expected": expected_max(means, ns), "lo": np.percentile(boots, 2.5, axis=0),
            "hi": np.percentile(boots, 97.5, axis=0), "compute": ns * np.nanmean(per_config),
            "configurations": len(c), "n_boot": n_boot}


def lines(configs: pd.DataFrame, sampler: str | None) -> list[str]:
    """The report's sentences: the expected best at 1, about half and all N configurations."""
    cv = curve(configs)
    if cv is None:
        return [f"- {len(configs)} configuration{'s' if len(configs) != 1 else ''}: no curve (needs 2 or more)."]
    picks = sorted({1, max(1, len(cv['n']) // 2), len(cv["n"])})
    out = [f"- expected best configuration mean of n configurations drawn at random from the study's {cv['configurations']} "
           f"(sampler {sampler or 'unknown'}; 95% bootstrap band, {cv['n_boot']} resamples of the configuration means):"]
    for n in picks:
        k = n - 1
        cost = f", {cv['compute'][k]:.3g} FLOPs" if np.isfinite(cv["compute"][k]) else ""
        out.append(f"- n = {n}: {cv['expected'][k]:.4f} [{cv['lo'][k]:.4f}, {cv['hi'][k]:.4f}]{cost}")
    return out
