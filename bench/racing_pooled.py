"""Would a pooled variance make racing stop sooner, and at what error? A simulation of one race, no training.

    python -m bench.racing_pooled          # ~1-2 min; bench/results/racing_pooled.json

bench/racing.py found racing on 2-3 seeds of a paired t saves little (BENCHMARKS.md "Racing"): its
standard error has k - 1 degrees of freedom. The textbook alternative (a randomized complete block
design, Montgomery, *Design and Analysis of Experiments*, ch. 4; F-Race's post-hoc tests) pools the
residual variance of a configuration x seed additive fit over the whole race: (G - 1)(k - 1) degrees of
freedom, se = sqrt(2 s^2 / k). It assumes every configuration has the same seed variance. This
simulation measures what that assumption costs where it fails, beside the paired t harness/study/racing.py
uses, with the driver's rules: seeds one round at a time, looks from min_seeds = 2 to len(seeds) - 1,
Bonferroni alpha = 0.05 / (looks x (G - 1)) one-sided against the look's leader.
Variants: "paired" (the driver's), "pooled", "max" (the larger of the pooled and the pair's own se, on
the pooled df: a common guard). Cases (accuracy means and seed SDs of 5 configurations, a shared seed
effect of 1 point): equal configurations; the best 3x / 5x noisier than the rest; lr_rank-like (its
measured means and SDs); a 2-point gap. Reported per case and variant: P(the truly best configuration
is stopped), which the racing bound keeps <= 0.05, and the share of trials run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats

OUT = Path(__file__).parent / "results" / "racing_pooled.json"
CASES = {"equal": ([0.8] * 5, [0.005] * 5),
         "best 3x noisier": ([0.803] + [0.8] * 4, [0.015] + [0.005] * 4),
         "best 5x noisier": ([0.803] + [0.8] * 4, [0.025] + [0.005] * 4),
         "lr_rank-like": ([0.7725, 0.7845, 0.7955, 0.738, 0.70], [0.006, 0.004, 0.004, 0.02, 0.03]),
         "gap 2 points": ([0.8, 0.78, 0.77, 0.75, 0.8], [0.005] * 5)}
VARIANTS = ("paired", "pooled", "max")


def p_values(x: np.ndarray, lead: int, variant: str) -> dict[int, float]:
    """One-sided p of each configuration (rows of x: configurations, columns: seeds) against the leader."""
    g, k = x.shape
    resid = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
    df = (g - 1) * (k - 1)
    s2 = (resid ** 2).sum() / df
    out = {}
    for i in range(g):
        if i == lead:
            continue
        d = x[i] - x[lead]
        own = d.var(ddof=1) / k
        se, dof = {"paired": (np.sqrt(own), k - 1), "pooled": (np.sqrt(2 * s2 / k), df),
                   "max": (np.sqrt(max(2 * s2 / k, own)), df)}[variant]
        out[i] = float(stats.t.cdf(d.mean() / se, dof)) if se > 0 else np.nan
    return out


def simulate(means, sds, variant: str, races: int, seeds: int = 5, min_seeds: int = 2, block: float = 0.01,
             rng_seed: int = 0) -> dict:
    rng = np.random.default_rng(rng_seed)
    g = len(means)
    alpha = 0.05 / ((seeds - min_seeds) * (g - 1))
    best, lost, used = int(np.argmax(means)), 0, 0
    for _ in range(races):
        x = (np.array(means)[:, None] + rng.normal(0, block, seeds)[None, :]
             + rng.normal(0, 1, (g, seeds)) * np.array(sds)[:, None])
        active, n = list(range(g)), {i: seeds for i in range(g)}
        for k in range(min_seeds, seeds):
            sub = x[active, :k]
            for j, p in p_values(sub, int(np.argmax(sub.mean(1))), variant).items():
                if p < alpha:
                    n[active[j]] = k
            active = [c for c in active if n[c] == seeds]
            if len(active) < 2:
                break
        lost += n[best] < seeds
        used += sum(n.values())
    return {"p_best_stopped": lost / races, "share_of_trials": used / races / (g * seeds)}


def main(races: int = 4000) -> dict:
    out = {"races": races, "seeds": 5, "min_seeds": 2, "confidence": 0.95, "cases": {}}
    for name, (means, sds) in CASES.items():
        out["cases"][name] = {"means": means, "sds": sds, **{v: simulate(means, sds, v, races) for v in VARIANTS}}
        print(name, {v: out["cases"][name][v] for v in VARIANTS}, flush=True)
    OUT.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
