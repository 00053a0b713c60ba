"""The study's stated claims (`sweep.claims`), each tested as it is worded.

A paper's claim is rarely "these two differ" or "these two are equivalent": QLoRA's "adapting every
linear layer matches or beats attention-only" is a non-inferiority claim, one-sided. Testing it with
the Comparisons section's two-sided difference test or TOST asks another question, and a weaker one
for this claim. A claim (harness/config/sweep.py ClaimCfg) names one searched axis, two of its values b
and a (or, for `equivalent`, none: every pair) and optionally `at` (settings of the other axes); it
covers every comparison of the report (analysis/verdicts.py: one axis apart, each arm at its own best
value of --tune) that moves that axis between those values there. Per such component, paired over seeds:

- not_worse: H0 b − a ≤ −δ against b − a > −δ, one-sided paired t (the lower side of TOST); opposite
  (the claim refuted there): b − a < −δ.
- better: H0 b − a ≤ 0, one-sided paired t; opposite: b − a < 0.
- equivalent: TOST within ±δ (the verdicts' test); opposite: |b − a| > δ (the nearer side, doubled).

Seed differences without spread use the seeds × items bootstrap for the same one-sided questions, as
the verdicts do; one shared seed decides nothing. Every component also gets the bootstrap's p: a claim
the t supports and the bootstrap does not holds "on this test set only".

A claim holds where it holds at every component: an intersection-union test (Berger, 1982,
Technometrics 24: 295), whose p is the largest component p and which is level α for the conjunction
with no correction over its components. Holm across the study's claims (their p's), and, for
"refuted", Holm across every component of every claim (one false "refuted" anywhere ≤ α).
The design's reach: per component the smallest margin (not_worse, equivalent) or difference (better)
that its seeds show with 80% power when the true difference is 0 (not_worse, equivalent) — the
t-quantile formulas of Chow, Shao & Wang, "Sample Size Calculations in Clinical Research", ch. 3 — and the
shared seeds that would reach δ; the claim's reach is its worst component's. Torch-free.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import planner, stats, verdicts
from harness.study import verdict as seeds_verdict
from harness.study import claims as study_claims
from harness.study.claims import sides  # the driver's test: stop_when and the report agree
from harness.study.stopping import FINAL_ALPHA  # the level a stop_when study's last look is tested at

def components(cmp: pd.DataFrame, claim: dict) -> list[tuple[pd.Series, bool]]:
    """(comparison row, flipped) for every comparison the claim covers; flipped: the row reads a − b. The
    driver's matching rule (harness/study/claims.py), on each row's two configurations."""
    out = []
    for _, r in cmp.iterrows() if not cmp.empty else ():
        configs = {"a": {r["axis"]: r["a_value"], **r["at"]}, "b": {r["axis"]: r["b_value"], **r["at"]}}
        out += [(r, a == "b") for a, _ in study_claims.components(claim, [("a", "b", r["axis"])], configs)]
    return out


def reach(sd: float, n: int, test: str, alpha: float = stats.ALPHA, power: float = stats.POWER) -> float:
    """The margin (difference, for `better`) n seeds show with this power at a true difference of 0 (Chow et al.):
    the closed-form inverse of analysis/planner.py's tost_power at a true 0 (and, one-sided, of its one side)."""
    if n < 2 or not sd > 0:
        return np.nan
    beta = 1 - power
    q = sps.t.ppf(1 - beta / 2, n - 1) if test == "equivalent" else sps.t.ppf(power, n - 1)
    return float((sps.t.ppf(1 - alpha, n - 1) + q) * sd / math.sqrt(n))


def seeds_to_reach(sd: float, margin: float, test: str, alpha: float = stats.ALPHA) -> int | None:
    """The shared seeds whose reach is within the margin (None above the planner's cap)."""
    if not sd > 0:
        return None
    return planner.smallest_n(lambda n: reach(sd, n, test, alpha) <= margin)


def _boot_sides(test: str, draws: np.ndarray, margin: float) -> tuple[float, float]:
    """The same two p-values from the seeds × items bootstrap draws (+1 correction)."""
    b = len(draws) + 1
    if test == "equivalent":
        return verdicts.bootstrap_p(draws, margin)[1], \
            min(1.0, 2 * min(1 + np.sum(draws >= -margin), 1 + np.sum(draws <= margin)) / b)
    edge = -margin if test == "not_worse" else 0.0
    return float((1 + np.sum(draws <= edge)) / b), float((1 + np.sum(draws >= edge)) / b)


def component(r: pd.Series, flipped: bool, data: dict, test: str, margin: float, alpha: float = stats.ALPHA) -> dict:
    """One component's evidence, read as the claim is worded (b − a)."""
    a_lab, b_lab = (r["b"], r["a"]) if flipped else (r["a"], r["b"])
    (va, ia), (vb, ib) = data[a_lab], data[b_lab]
    shared = sorted(set(va.dropna().index) & set(vb.dropna().index))
    d = [float(vb[s] - va[s]) for s in shared]
    mean, se, n = seeds_verdict.paired_t(d)
    sd = float(np.std(d, ddof=1)) if n > 1 else np.nan
    names = (r["a_name"], r["b_name"]) if flipped else (r["b_name"], r["a_name"])
    out = {"where": r["held"], "pair": f"{names[0]} vs {names[1]}", "a": a_lab, "b": b_lab, "n": n, "diff": mean,
           "p": np.nan, "p_opp": np.nan, "p_boot": np.nan, "bound": (np.nan, np.nan), "test": "none",
           "reach": reach(sd, n, test, alpha),
           # a stopped study is tested at its look's level; the reach at the final level says how far the design was
           "reach_final": reach(sd, n, test, FINAL_ALPHA) if alpha < FINAL_ALPHA else np.nan,
           "seeds": seeds_to_reach(sd, margin, test, max(alpha, FINAL_ALPHA)) if n > 1 else None}
    m = verdicts._items_matrix(ia, ib, shared)  # noqa: SLF001 (the verdicts' own item alignment, one package)
    draws = verdicts.bootstrap_draws(m[1] - m[0]) if m is not None else None
    if draws is not None:
        out["p_boot"] = _boot_sides(test, draws, margin)[0]
    if n >= 2 and not math.isnan(se):
        out["p"], out["p_opp"] = (float(x) for x in sides(test, mean, se, n, margin))
        crit = sps.t.ppf(1 - alpha, n - 1) * se  # one-sided (1 − α) bounds; both: TOST's 1 − 2α interval
        out["bound"] = (mean - crit, mean + crit if test == "equivalent" else np.inf)
        out["test"] = "paired t"
    elif n >= 2 and draws is not None:  # no spread over seeds: t undefined, the bootstrap answers
        out["p"], out["p_opp"] = _boot_sides(test, draws, margin)
        out["test"] = "seeds × items bootstrap (no spread over seeds)"
    return out


def evaluate(cmp: pd.DataFrame, work: pd.DataFrame, axes: list[str], claims: list[dict], margin: float,
             alpha: float = stats.ALPHA) -> list[dict]:
    """Every claim with its components, IUT p, Holm across claims and its verdict."""
    if not claims:
        return []
    configs = stats.configurations(work, axes) if axes and not work.empty else pd.DataFrame()
    data = verdicts.by_seed(work, configs, axes) if not configs.empty else {}
    out = [{"claim": c, "parts": [component(r, f, data, c["test"], margin, alpha) for r, f in components(cmp, c)]}
           for c in claims]
    for c in out:
        ps = [p["p"] for p in c["parts"]]
        c["p"] = max(ps) if ps and not any(math.isnan(p) for p in ps) else np.nan
        bs = [p["p_boot"] for p in c["parts"]]
        c["p_boot"] = max(bs) if bs and not any(math.isnan(p) for p in bs) else np.nan
        c["reach"] = max((p["reach"] for p in c["parts"]), default=np.nan)
        c["reach_final"] = max((p["reach_final"] for p in c["parts"]), default=np.nan)
    for key in ("p", "p_boot"):
        for c, h in zip(out, stats.holm([c[key] for c in out])):
            c[key + "_holm"] = h
    parts = [p for c in out for p in c["parts"]]
    for p, h in zip(parts, stats.holm([p["p_opp"] for p in parts])):
        p["p_opp_holm"] = h
    for c in out:
        refuted = any(p["p_opp_holm"] < alpha for p in c["parts"])
        c["verdict"] = "refuted" if refuted else "holds" if c["p_holm"] < alpha else "undecided"
        c["test_set_only"] = c["verdict"] == "holds" and not c["p_boot_holm"] < alpha
    return out


def _worded(claim: dict, margin: float) -> str:
    lab = stats.LABELS.get(claim["axis"], claim["axis"])
    b, a = (f"{lab}={stats.fmt(claim[k])}" for k in ("b", "a")) if claim.get("b") is not None else ("", "")
    return {"not_worse": f"{b} at most {verdicts.margin_words(margin).lstrip('±')} below {a}",
            "better": f"{b} above {a}",
            "equivalent": f"{b} and {a} within {verdicts.margin_words(margin)}" if b else
            f"every pair of {lab} values within {verdicts.margin_words(margin)}"}[claim["test"]]


def _part_line(p: dict, claim: dict, margin: float, climbing: set[str], alpha: float = stats.ALPHA) -> str:
    test = claim["test"]
    where = " ".join(x for x in (p["pair"] if claim.get("b") is None else "", f"at {p['where']}" if p["where"] else "")
                     if x) or "the study"
    if p["n"] < 2:
        return f"  - {where}: {p['n']} shared seed(s): nothing to test (one seed says nothing of seed noise)"
    lo, hi = p["bound"]
    bound = "" if not np.isfinite(lo) else (f", {100 * (1 - 2 * alpha):g}% interval [{verdicts.points(lo)}, "
                                            f"{verdicts.points(hi)}]" if test == "equivalent" else
                                            f", one-sided {100 * (1 - alpha):g}% lower bound {verdicts.points(lo)}")
    against = {"not_worse": f"against −{verdicts.margin_words(margin).lstrip('±')}", "better": "against 0",
               "equivalent": f"TOST {verdicts.margin_words(margin)}"}[test]
    reach_words = "smallest true difference these seeds show with 80% power" if test == "better" else \
        "smallest margin these seeds show with 80% power at a true difference of 0"
    seeds = f"; ~{p['seeds']} shared seeds would reach {verdicts.margin_words(margin).lstrip('±')}" \
        if p["seeds"] and p["seeds"] > p["n"] and not p["p"] < alpha else ""
    still = [x for x in (p["b"], p["a"]) if x in climbing]
    note = f" ({' and '.join(still)} still improving at its last evals: not what it can learn)" if still else ""
    return (f"  - {where}: {verdicts.points(p['diff'])} points{bound} over {p['n']} shared seeds; {p['test']} {against} "
            f"p = {verdicts._p(p['p'])}, refuted there: Holm p = {verdicts._p(p['p_opp_holm'])}; seeds × items "  # noqa: SLF001
            f"bootstrap p = {verdicts._p(p['p_boot'])}; {reach_words}: "  # noqa: SLF001
            f"{verdicts.points(p['reach'], False)} points{_at_final(p)}{seeds}{note}")


def _at_final(x: dict) -> str:
    r = x.get("reach_final", np.nan)
    return f"; {verdicts.points(r, False)} at the final α {FINAL_ALPHA:g}" if np.isfinite(r) else ""


def report_lines(results: list[dict], margin: float, tune: str | None = None,
                 climbing: set[str] = frozenset(), alpha: float = stats.ALPHA) -> list[str]:
    """The report's "Claims" section (empty without sweep.claims)."""
    if not results:
        return []
    tuned = f", each arm at its own best {tune}" if tune else ""
    out = ["## Claims", f"What the sweep file says the study sets out to show (`sweep.claims`), each tested as worded "
           f"over the comparisons below{tuned} (analysis/claims.py): **holds** where every component rejects its "
           f"null (intersection-union: the claim's p is the largest component p; Holm across the {len(results)} "
           f"claims), **refuted** where a component shows the opposite (Holm across every component), else "
           f"**undecided**; α = {alpha:.3g}.", ""]
    for c in results:
        claim = c["claim"]
        if not c["parts"]:
            out.append(f"- *{claim['says']}* ({_worded(claim, margin)}): no comparison of this study covers it.")
            continue
        p = f"p = {verdicts._p(c['p'])}, Holm {verdicts._p(c['p_holm'])}"  # noqa: SLF001
        only = " (this test set only: the seeds × items bootstrap does not support it)" if c["test_set_only"] else ""
        stated = f"; stated {claim['stated']}" if claim.get("stated") else ""
        out.append(f"- *{claim['says']}* ({_worded(claim, margin)}, {len(c['parts'])} component(s){stated}): "
                   f"**{c['verdict']}**{only} (intersection-union {p}; the design's reach: "
                   f"{verdicts.points(c['reach'], False)} points at 80% power{_at_final(c)})")
        out += [_part_line(x, claim, margin, climbing, alpha) for x in c["parts"]]
    return out + [""]


def console_lines(results: list[dict]) -> list[str]:
    return [f"- {c['claim']['says']}: {c['verdict']}{' on this test set only' if c['test_set_only'] else ''} (p = "
            f"{verdicts._p(c['p_holm'])} Holm; reach {verdicts.points(c['reach'], False)} points)"  # noqa: SLF001
            for c in results]


def for_study(lora: pd.DataFrame, axes: list[str], tune: str | None, claims: list[dict], margin: float,
              alpha: float = stats.ALPHA) -> list[dict]:
    """evaluate() on the study's arms, each at its own best `tune` value, as the report compares them."""
    if not claims or lora.empty:
        return []
    work, work_axes = stats.tune(lora, axes, tune)[:2] if tune and tune in axes else (lora, axes)
    cmp = verdicts.compare(work, work_axes, margin, alpha) if work_axes else pd.DataFrame()
    return evaluate(cmp, work, work_axes, claims, margin, alpha)


def climbing_labels(loaded, work: pd.DataFrame, axes: list[str]) -> set[str]:
    """The arms (as the comparisons name them) with a trial among the configurations still improving."""
    from analysis import curves

    stuck = curves.not_converged_trials(loaded)
    configs = stats.configurations(work, axes) if axes and not work.empty else pd.DataFrame()
    return {r["label"] for _, r in configs.iterrows() if set(r["trials"]) & stuck}
