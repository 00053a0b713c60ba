"""Seed statistics, written once for the driver's console summary (harness/study/summary.py) and the
analysis (analysis/stats.py): one value per seed, the Student-t interval of a mean over seeds, and the
order that picks the best configuration. Torch-free and pandas-free, so the driver imports it; scipy is
imported only for an interval over >= 2 seeds (importing scipy.stats costs the driver ~2 s).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

DIRECTIONS = {"maximize": -1, "minimize": 1}  # sort key sign: best first


def _finite(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def seed_means(pairs: Iterable[tuple[object, float | None]]) -> list[float]:
    """(seed, value) pairs -> one value per seed, the mean of that seed's runs: a seed run twice (a sampler
    proposing the configuration again reruns its seeds) is one observation, never two (counted twice it
    would narrow the interval for nothing). A pair without a seed counts on its own; missing values drop."""
    by_seed: dict = {}
    alone: list[float] = []
    for seed, v in pairs:
        if not _finite(v):
            continue
        if seed is None or (isinstance(seed, float) and math.isnan(seed)):
            alone.append(float(v))
        else:
            by_seed.setdefault(seed, []).append(float(v))
    return [sum(v) / len(v) for v in by_seed.values()] + alone


def t_interval(values: Iterable[float | None], level: float = 0.95) -> tuple[float, float, int]:
    """Mean, half-width of the Student-t interval of the mean, n (half-width NaN for n < 2; mean NaN for
    n = 0). Missing values are dropped."""
    v = [float(x) for x in values if _finite(x)]
    n = len(v)
    if n < 2:
        return (v[0] if n else math.nan), math.nan, n
    from scipy import stats  # here: one seed needs none

    mean = sum(v) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)), n


def rank_key(means: Iterable[float | None], directions: Iterable[str], cost: float | None) -> tuple:
    """Sort key of a configuration, best first: each objective's mean in its direction, then the lower
    mean cost (FLOPs); a missing mean or cost sorts last."""
    keys = [DIRECTIONS[d] * (m if _finite(m) else math.inf * -DIRECTIONS[d]) for m, d in zip(means, directions)]
    return (*keys, cost if _finite(cost) else math.inf)
