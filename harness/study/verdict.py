"""The driver's own verdicts, for `sweep.stop_when: decided` (harness/study/racing.py runs them at each
look): for every comparison the sweep names, "better", "worse", "equivalent within ±δ" or "undecided".

The same tests as the analysis's verdicts on seeds (analysis/verdicts.py, which re-tests the finished
study with pandas/scipy, items and bootstrap included): per comparison, the paired differences over the
seeds both configurations completed; the two-sided paired t for a difference, TOST (two one-sided t
tests against -δ and +δ, p = the larger) for equivalence; Holm's step-down across the comparisons, once
over the difference tests and once over the equivalence tests. A comparison with < 2 shared seeds, or
with differences that do not vary (t undefined), is undecided here: the analysis's seeds x items
bootstrap may still decide it. Written small and torch-free, pandas-free (the driver never imports
analysis/); scipy.stats gives the t distribution only.

Comparisons: pairs of configurations that differ in exactly one searched axis (the analysis's
one-axis pairs, a = the smaller value, b - a reported); with `sweep.tune: AXIS`, each arm (a setting
of the other axes) enters at its own best value of AXIS and arms are paired the same way.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field

ALPHA = 0.05  # the analysis's α (analysis/stats.py ALPHA)
DIRECTIONS = {"maximize": 1, "minimize": -1}


def margin_words(margin: float) -> str:
    pts = 100 * margin
    return f"±{pts:g} point{'s' if pts != 1 else ''}"


def paired_t(d: list[float]) -> tuple[float, float, int]:
    """(mean, standard error, n) of paired differences; se NaN below 2 values or without spread."""
    n = len(d)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(d) / n
    if n < 2:
        return mean, math.nan, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    # accuracies are k/m: a smaller spread is float rounding, and t would be a division by ~0
    return mean, (sd / math.sqrt(n) if sd > 1e-12 else math.nan), n


def p_two_sided(d: list[float]) -> float:
    from scipy import stats

    mean, se, n = paired_t(d)
    return math.nan if math.isnan(se) else float(2 * stats.t.sf(abs(mean / se), n - 1))


def p_less(d: list[float]) -> float:
    """One-sided paired t p-value of H0 mean(d) >= 0 against mean(d) < 0 (NaN where t is undefined)."""
    from scipy import stats

    mean, se, n = paired_t(d)
    return math.nan if math.isnan(se) else float(stats.t.cdf(mean / se, n - 1))


def tost_sides(d: list[float], margin: float) -> tuple[float, float]:
    """The one-sided paired t p-values of TOST: against mean <= -δ and against mean >= +δ (NaN, NaN
    where t is undefined). The analysis's TOST (analysis/verdicts.tost) is this one."""
    from scipy import stats

    mean, se, n = paired_t(d)
    if math.isnan(se):
        return math.nan, math.nan
    return float(stats.t.sf((mean + margin) / se, n - 1)), float(stats.t.cdf((mean - margin) / se, n - 1))


def p_tost(d: list[float], margin: float) -> float:
    """TOST p: the larger of the two one-sided p-values (equivalence needs both sides rejected)."""
    lower, upper = tost_sides(d, margin)
    return math.nan if math.isnan(lower) else max(lower, upper)


def chance_of_a_verdict(d: list[float], n_final: int, margin: float, alpha: float = ALPHA) -> float:
    """The predictive probability that the paired differences d, continued to n_final shared seeds, end
    "better"/"worse" (two-sided paired t at alpha) or "equivalent within ±margin" (TOST at alpha).
    Spiegelhalter, Freedman & Blackburn's predictive power (1986): the true mean drawn from its
    posterior under a flat prior, N(m, s^2/n), the seeds to come from N(true mean, s^2), so the final
    mean is N(m, s^2 (N - n) / (N n)); the final test's standard error is taken as s / sqrt(N) (the seed
    SD known: an approximation at 2-4 seeds). alpha unadjusted (the analysis applies Holm): that
    overstates the chance, so a comparison is given up later, never sooner. NaN where d has < 2 values
    or no spread (no SD to project with)."""
    from scipy import stats

    mean, se, n = paired_t(d)
    if math.isnan(se) or n_final <= n:
        return math.nan if math.isnan(se) else 0.0
    sd = se * math.sqrt(n)
    tau = sd * math.sqrt((n_final - n) / (n_final * n))   # SD of the final mean, seen from now
    se_final = sd / math.sqrt(n_final)
    cut = stats.t.ppf(1 - alpha / 2, n_final - 1) * se_final                   # |final mean| beyond: a difference
    inner = max(0.0, margin - stats.t.ppf(1 - alpha, n_final - 1) * se_final)  # |final mean| within: equivalent
    if inner >= cut:
        return 1.0  # every final mean is one or the other
    cdf = stats.norm.cdf
    undecided = (cdf((cut - mean) / tau) - cdf((inner - mean) / tau)) + (cdf((-inner - mean) / tau) - cdf((-cut - mean) / tau))
    return float(1.0 - undecided)


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and is not counted in the family)."""
    order = sorted((i for i, p in enumerate(pvalues) if not math.isnan(p)), key=lambda i: pvalues[i])
    out, running = [math.nan] * len(pvalues), 0.0
    for rank, i in enumerate(order):
        running = max(running, (len(order) - rank) * pvalues[i])
        out[i] = min(1.0, running)
    return out


def config_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def label(params: dict, axes=None) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in params.items() if axes is None or k in axes)


def shown(configs: dict[str, dict]) -> list[str]:
    """The axes that take more than one value among the configurations: the ones a name needs."""
    axes = list(dict.fromkeys(k for c in configs.values() for k in c))
    return [k for k in axes if len({str(c.get(k)) for c in configs.values()}) > 1] or axes


def _sortable(v):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def one_axis_pairs(configs: dict[str, dict], axes: list[str]) -> list[tuple[str, str, str]]:
    """(a, b, axis) for every two configurations that differ in exactly one of `axes`; a sorts first."""
    keys = sorted(configs, key=lambda k: [_sortable(configs[k].get(a)) for a in axes])
    out = []
    for a, b in itertools.combinations(keys, 2):
        diff = [x for x in axes if str(configs[a].get(x)) != str(configs[b].get(x))]
        if len(diff) == 1:
            out.append((a, b, diff[0]))
    return out


@dataclass
class Verdict:
    a: str                 # configuration keys (config_key)
    b: str
    axis: str
    n: int                 # shared seeds
    diff: float            # mean of b - a
    p_diff: float
    p_eq: float
    p_diff_holm: float = math.nan
    p_eq_holm: float = math.nan
    word: str = "undecided"
    held: dict = field(default_factory=dict)

    tune: str | None = None

    def sentence(self, configs: dict[str, dict], margin: float) -> str:
        """'lora.r=16 (train.lr=0.003) vs lora.r=4 (train.lr=0.01) (at lora.targets=all_linear): +1.20 points
        over 3 shared seeds: better'."""
        a, b = configs[self.a], configs[self.b]
        at = f" (at {label(self.held)})" if self.held else ""
        tuned = (lambda p: f" ({label(p, [self.tune])})") if self.tune and self.tune != self.axis else (lambda p: "")
        diff = "no shared seeds" if not self.n else f"{100 * self.diff:+.2f} points over {self.n} shared seeds"
        return f"{label(b, [self.axis])}{tuned(b)} vs {label(a, [self.axis])}{tuned(a)}{at}: {diff}: {self.word}"


def verdicts(values: dict[str, dict], pairs: list[tuple[str, str, str]], configs: dict[str, dict], margin: float,
             alpha: float, direction: str = "maximize", tune: str | None = None) -> list[Verdict]:
    """values: config key -> {seed: value}. Holm at `alpha` over the pairs, per family."""
    sign = DIRECTIONS[direction]
    varying = set(shown(configs))
    out = []
    for a, b, axis in pairs:
        shared = sorted(set(values.get(a, {})) & set(values.get(b, {})), key=str)
        d = [values[b][s] - values[a][s] for s in shared]
        mean = sum(d) / len(d) if d else math.nan
        held = {k: v for k, v in configs[a].items() if k not in (axis, tune) and k in varying}
        out.append(Verdict(a, b, axis, len(d), mean, p_two_sided(d), p_tost(d, margin), held=held, tune=tune))
    for v, pd_, pe in zip(out, holm([v.p_diff for v in out]), holm([v.p_eq for v in out])):
        v.p_diff_holm, v.p_eq_holm = pd_, pe
        if pe < alpha:
            v.word = f"equivalent within {margin_words(margin)}"
        elif pd_ < alpha:
            v.word = "better" if sign * v.diff > 0 else "worse"
    return out


def arms(configs: dict[str, dict], tune: str | None) -> dict[str, list[str]]:
    """arm key -> its configurations: with tune, the configurations sharing every other axis; else each
    configuration is its own arm."""
    if tune is None:
        return {k: [k] for k in configs}
    out: dict[str, list[str]] = {}
    for k, p in configs.items():
        out.setdefault(config_key({a: v for a, v in p.items() if a != tune}), []).append(k)
    return out


def best_of(keys: list[str], values: dict[str, dict], direction: str) -> str | None:
    """The configuration with the best mean over its seeds (ties: the first); None without values."""
    sign = DIRECTIONS[direction]
    scored = [(sign * sum(values[k].values()) / len(values[k]), -i, k) for i, k in enumerate(keys) if values.get(k)]
    return max(scored)[2] if scored else None


def comparisons(configs: dict[str, dict], values: dict[str, dict], axes: list[str], tune: str | None,
                direction: str, among: set[str] | None = None,
                compare: str = "arms") -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """The pairs the sweep names and, with tune, each arm's chosen configuration (arm -> config key).
    among: the configurations an arm may pick its best from (the race's survivors); default all.
    compare="carry_over": (arm b's own best, b at another arm's best value) for every arm b and every other
    arm's best value that differs from b's (the analysis's analysis/tuned.py, the same pairs)."""
    if tune is None:
        return one_axis_pairs(configs, axes), {k: k for k in configs}
    picked = {}
    for arm, keys in arms(configs, tune).items():
        pool = [k for k in keys if among is None or k in among] or keys
        best = best_of(pool, values, direction)
        if best is not None:
            picked[arm] = best
    if compare == "carry_over":
        return _carried(configs, tune, picked), picked
    chosen = {picked[arm]: configs[picked[arm]] for arm in picked}
    other = [a for a in axes if a != tune]
    pairs = one_axis_pairs({k: {a: v for a, v in p.items() if a != tune} for k, p in chosen.items()}, other)
    return pairs, picked


def _carried(configs: dict[str, dict], tune: str, picked: dict[str, str]) -> list[tuple[str, str, str]]:
    """(b's own best, b at the value best at another arm, tune) per arm b and distinct other best value."""
    by_arm = arms(configs, tune)
    pairs = []
    for arm, own in picked.items():
        values = sorted({str(configs[k][tune]) for a, k in picked.items() if a != arm} - {str(configs[own][tune])})
        for v in values:
            there = [k for k in by_arm[arm] if str(configs[k][tune]) == v]
            if there:
                pairs.append((own, there[0], tune))
    return pairs
