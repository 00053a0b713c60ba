"""What error rate does a study that may stop early report? A simulation of one comparison, no training.

    python -m bench.stop_when_alpha        # ~1 min; bench/results/stop_when_alpha.json

`stop_when: decided` looks after every round of seeds from 2 to len(seeds) - 1 and stops the study once a
comparison is decided at harness/study/stopping.py's look_alpha (0.05 / (len(seeds) - 2), Bonferroni over the
looks); the analysis then re-tests the data it stopped on, or all the seeds where it never stopped, at 0.05
with no correction for the looks (analysis/verdicts.py, analysis/claims.py). The verdict a report gives is
false if either produced it, so the union bound allows up to 2 x 0.05. Measured here: the rate of a false
verdict at the null's boundary, for equivalence within ±1 point (TOST; the true difference is exactly 1
point) and for a difference (two-sided paired t; the true difference is 0), per number of seeds and seed SD
of the paired differences (points). One comparison bounds a claim of several: a claim holds only where each
of its components rejects (the intersection-union test), which is never more likely than one of them.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

from bench.common import save, table
from harness.study.stopping import look_alpha
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


def rates(test, true: float, n: int, sd: float, rng, sims: int = SIMS) -> dict:
    d = rng.normal(true, sd, size=(sims, n))
    stopped = np.zeros(sims, bool)
    for k in range(2, n):  # the driver's looks; a study that stops is re-tested on the seeds it stopped on
        stopped |= test(d[:, :k]) < look_alpha(n)
    final = test(d) < ALPHA
    return {"stops early": float(stopped.mean()), "fixed n": float(final.mean()),
            "reported": float((stopped | final).mean())}


def main() -> int:
    rng = np.random.default_rng(0)
    rows = []
    for name, test, true in (("equivalent (TOST), true diff 1 point", p_tost, MARGIN),
                             ("different (paired t), true diff 0", p_diff, 0.0)):
        for n, sd in CASES:
            rows.append({"verdict": name, "seeds": n, "seed SD (points)": sd, "look alpha": look_alpha(n),
                         **rates(test, true, n, sd, rng)})
    se = float(np.sqrt(ALPHA * (1 - ALPHA) / SIMS))
    cols = ["verdict", "seeds", "seed SD (points)", "look alpha", "stops early", "fixed n", "reported"]
    print(table(rows, cols))
    print(f"one SE of a rate near {ALPHA}: {se:.4f} ({SIMS} simulated studies a row)")
    print(f"wrote {save('stop_when_alpha', {'sims': SIMS, 'margin_points': MARGIN, 'se_at_alpha': se, 'columns': cols, 'rows': rows}, False)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
