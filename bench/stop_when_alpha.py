"""What error rate does a study that may stop early report? A simulation of one comparison, no training.

    python -m bench.stop_when_alpha        # ~1 min; bench/results/stop_when_alpha.json

`stop_when: decided` looks after every round of seeds from 2 to len(seeds) - 1 and stops the study once a
comparison is decided at harness/study/stopping.py's look_alpha; the analysis tests the data it stopped on at
that level, or all the seeds where it never stopped at FINAL_ALPHA. Two rules: now, the looks share 0.005 and
the end gets 0.045 (union bound 0.05); before 2026-12-07, every look took 0.05 / (len(seeds) - 2) and the end a
full 0.05 again (union bound 0.10). The verdict a report gives is false if a look or the end produced it.
Measured here: the rate of a false
verdict at the null's boundary, for equivalence within ±1 point (TOST; the true difference is exactly 1
point) and for a difference (two-sided paired t; the true difference is 0), per number of seeds and seed SD
of the paired differences (points). One comparison bounds a claim of several: a claim holds only where each
of its components rejects (the intersection-union test), which is never more likely than one of them.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from bench.common import save, table
from harness.study.stopping import FINAL_ALPHA, look_alpha
from harness.study.verdict import ALPHA

SIMS, MARGIN = 20000, 1.0
CASES = [(n, sd) for n in (5, 10, 17) for sd in (0.5, 1.3, 2.5)]


def p_tost(x: np.ndarray) -> np.ndarray:
    k = x.shape[1]
    m, se = x.mean(1), x.std(1, ddof=1) / np.sqrt(k)
    return np.maximum(stats.t.sf((m + MARGIN) / se, k - 1), stats.t.cdf((m - MARGIN) / se, k - 1))


def p_diff(x: np.ndarray) -> np.ndarray:
    k = x.shape[1]
    t = x.mean(1) / (x.std(1, ddof=1) / np.sqrt(k))
    return 2 * stats.t.sf(np.abs(t), k - 1)


# (each interim look's level, the final level) per number of seeds: the harness's rule, and the one before it
RULES = {"interim budget (now)": lambda n: (look_alpha(n), FINAL_ALPHA),
         "every look at 0.05 / (n - 2), then 0.05 (before 2026-12-07)": lambda n: (ALPHA / (n - 2), ALPHA)}


def rates(test, true: float, n: int, sd: float, rng, sims: int = SIMS, rule=RULES["interim budget (now)"]) -> dict:
    d = rng.normal(true, sd, size=(sims, n))
    look, last = rule(n)
    stopped = np.zeros(sims, bool)
    for k in range(2, n):  # the driver's looks; a study that stops is tested on the seeds it stopped on, at the look's level
        stopped |= test(d[:, :k]) < look
    p_all = test(d)  # every seed: the last look's test, and the fixed-n test it is compared with
    return {"look alpha": look, "final alpha": last, "stops early": float(stopped.mean()),
            "fixed n at 0.05": float((p_all < ALPHA).mean()), "reported": float((stopped | (p_all < last)).mean())}


def main() -> int:
    rng = np.random.default_rng(0)
    rows = []
    for rule_name, rule in RULES.items():
        for name, test, true in (("equivalent (TOST), true diff 1 point", p_tost, MARGIN),
                                 ("different (paired t), true diff 0", p_diff, 0.0)):
            for n, sd in CASES:
                rows.append({"rule": rule_name, "verdict": name, "seeds": n, "seed SD (points)": sd,
                             **rates(test, true, n, sd, rng, rule=rule)})
    se = float(np.sqrt(ALPHA * (1 - ALPHA) / SIMS))
    cols = ["rule", "verdict", "seeds", "seed SD (points)", "look alpha", "final alpha", "stops early",
            "fixed n at 0.05", "reported"]
    print(table(rows, cols))
    print(f"one SE of a rate near {ALPHA}: {se:.4f} ({SIMS} simulated studies a row)")
    print(f"wrote {save('stop_when_alpha', {'sims': SIMS, 'margin_points': MARGIN, 'se_at_alpha': se, 'columns': cols, 'rows': rows}, False)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
