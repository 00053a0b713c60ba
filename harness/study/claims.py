"""The driver's view of `sweep.claims` for `stop_when: decided` with `compare: claims`: the study ends
once every claim it states holds or is refuted, or no seed left is likely to change one.

The same tests as the analysis's (analysis/claims.py, which re-tests the finished study with items and
the bootstrap): per component (a pair of arms, one axis apart, each at its own best tuned value, read as
the claim is worded: b − a), the one-sided paired t over shared seeds: not_worse H0 b − a ≤ −δ, better
H0 b − a ≤ 0, equivalent TOST within ±δ. A claim holds when every component rejects (intersection-union:
p = the largest component p), with Holm across the claims; refuted when a component shows the opposite
(b − a < −δ; < 0; |b − a| > δ), with Holm across every component. Torch-free and pandas-free.

Futility: per component the predictive probability (verdict.chance_of_a_verdict's model: the true mean
from its flat-prior posterior, the seeds to come from the measured seed SD) that the final test holds,
and that it refutes; a claim's chance of a verdict is at most the smallest hold chance plus the sum of
the refute chances, and a claim is given up only when that bound is below sweep.futility, so a claim is
never given up sooner than its own chance says.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from harness.config.sweep import same_value
from harness.study import verdict as vd


def sides(test: str, mean, se, n: int, margin: float):
    """(p of the claim, p of its opposite) from the paired t; elementwise over arrays of mean and se."""
    from scipy import stats

    t = stats.t(n - 1)
    if test == "equivalent":
        return np.maximum(t.sf((mean + margin) / se), t.cdf((mean - margin) / se)), \
            np.minimum(1.0, 2 * np.minimum(t.cdf((mean + margin) / se), t.sf((mean - margin) / se)))
    z = (mean + (margin if test == "not_worse" else 0.0)) / se
    return t.sf(z), t.cdf(z)


def chances(test: str, d: list[float], n_final: int, margin: float, alpha: float = vd.ALPHA) -> tuple[float, float]:
    """(predictive probability that the component's final test holds, that it refutes) with n_final shared
    seeds; NaN, NaN where d has < 2 values or no spread."""
    from scipy import stats

    mean, se, n = vd.paired_t(d)
    if math.isnan(se):
        return math.nan, math.nan
    if n_final <= n:  # nothing more to come: the verdict now is the final one
        p, opp = (float(x) for x in sides(test, mean, se, n, margin))
        return float(p < alpha), float(opp < alpha)
    sd = se * math.sqrt(n)
    tau = sd * math.sqrt((n_final - n) / (n_final * n))
    se_f = sd / math.sqrt(n_final)
    one = stats.t.ppf(1 - alpha, n_final - 1) * se_f
    cdf = stats.norm.cdf
    if test == "equivalent":
        inner = max(0.0, margin - one)
        outer = margin + stats.t.ppf(1 - alpha / 2, n_final - 1) * se_f
        return float(cdf((inner - mean) / tau) - cdf((-inner - mean) / tau)), \
            float(cdf((-outer - mean) / tau) + 1 - cdf((outer - mean) / tau))
    edge = -margin if test == "not_worse" else 0.0
    return float(1 - cdf((edge + one - mean) / tau)), float(cdf((edge - one - mean) / tau))


def components(claim: dict, pairs: list[tuple[str, str, str]], configs: dict[str, dict]) -> list[tuple[str, str]]:
    """(a, b) config keys, oriented as worded, for every pair the claim covers."""
    out = []
    for a, b, axis in pairs:
        if axis != claim["axis"]:
            continue
        if not all(same_value(configs[a].get(k), v) for k, v in (claim.get("at") or {}).items()):
            continue
        va, vb = configs[a].get(axis), configs[b].get(axis)
        if claim.get("b") is None or (same_value(vb, claim["b"]) and same_value(va, claim["a"])):
            out.append((a, b))
        elif same_value(vb, claim["a"]) and same_value(va, claim["b"]):
            out.append((b, a))
    return out


@dataclass
class ClaimVerdict:
    says: str
    test: str
    parts: list[tuple[str, str]]
    diffs: list[list[float]] = field(default_factory=list)
    p: float = math.nan
    p_holm: float = math.nan
    refuted: bool = False
    word: str = "undecided"

    def sentence(self) -> str:
        means = ", ".join(f"{100 * sum(d) / len(d):+.2f}" if d else "—" for d in self.diffs)
        return f"{self.says}: {self.word} ({len(self.parts)} component(s), b − a {means} points; p = {self.p:.4f})"


def judge(claims: list[dict], values: dict[str, dict], pairs: list[tuple[str, str, str]], configs: dict[str, dict],
          margin: float, alpha: float) -> list[ClaimVerdict]:
    """Every claim's verdict at this look (values: config key -> {seed: value}, direction already applied)."""
    out, opp = [], []
    for c in claims:
        v = ClaimVerdict(c["says"], c["test"], components(c, pairs, configs))
        ps = []
        for a, b in v.parts:
            shared = sorted(set(values.get(a, {})) & set(values.get(b, {})), key=str)
            d = [values[b][s] - values[a][s] for s in shared]
            v.diffs.append(d)
            mean, se, n = vd.paired_t(d)
            p, q = (math.nan, math.nan) if math.isnan(se) else (float(x) for x in sides(c["test"], mean, se, n, margin))
            ps.append(p)
            opp.append((v, q))
        v.p = max(ps) if ps and not any(math.isnan(p) for p in ps) else math.nan
        out.append(v)
    for v, h in zip(out, vd.holm([v.p for v in out])):
        v.p_holm = h
    for (v, _), h in zip(opp, vd.holm([q for _, q in opp])):
        v.refuted = v.refuted or h < alpha
    for v in out:
        v.word = "refuted" if v.refuted else "holds" if v.p_holm < alpha else "undecided"
    return out


def chance_of_a_claim(v: ClaimVerdict, n_final: list[int], margin: float, alpha: float = vd.ALPHA) -> float:
    """An upper bound on the claim's predictive probability of ending holds or refuted: the smallest
    component hold chance plus the sum of the refute chances (NaN keeps it open)."""
    cs = [chances(v.test, d, n, margin, alpha) for d, n in zip(v.diffs, n_final)]
    if not cs or any(math.isnan(h) for h, _ in cs):
        return math.nan
    return min(1.0, min(h for h, _ in cs) + sum(r for _, r in cs))


def why_stopped(found: list[ClaimVerdict], bounds: list[float], k: int, futility: float) -> str:
    """The study's stop, in words (bounds: the undecided claims' chance bounds, all below futility)."""
    tally = ", ".join(f"{sum(v.word == w for v in found)} {w}" for w in ("holds", "refuted") if any(v.word == w for v in found))
    if not bounds:
        return f"every claim decided after round {k} ({tally})"
    return (f"after round {k} every claim is decided ({tally or 'none'}) or no seed left is likely to decide it "
            f"({len(bounds)} undecided; the bound on a verdict's chance {', '.join(f'{c:.2f}' for c in bounds)} < "
            f"{futility:g})")


def plain(claims) -> list[dict]:
    """sweep.claims as JSON-ready dicts (a study attr records them: a resume must agree)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(claims, (DictConfig, ListConfig)):
        return OmegaConf.to_container(claims, resolve=True)
    return [dict(c) for c in claims or []]
