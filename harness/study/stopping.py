"""stop_when: decided, the look after each round of seeds (harness/study/racing.py runs the looks).

At each look k in 2 .. len(seeds) - 1 the comparisons the sweep names
(harness/study/verdict.py) are tested on the look's seeds, Holm across them at INTERIM_ALPHA / (len(seeds) - 2)
(Bonferroni over the looks that may stop the study), and a study that runs to its last seed is tested at
FINAL_ALPHA = alpha - INTERIM_ALPHA, so P(any false verdict, wherever the study stops) <= alpha per family.
The study ends at the first look where every comparison is decided, has no seed
left that could change it, or is given up: its predictive probability of ending better / worse /
equivalent once the seeds left are in (verdict.chance_of_a_verdict) is below `sweep.futility` (0.1;
0 = the literal "no seed left"). Giving up never makes a false verdict more likely (it only takes
chances to reject away), so the stated error rate holds; what it costs is power: under the projection's
model a given-up comparison would have reached a verdict with probability < futility (racing.json's
replay measures how often the full grid's verdicts are kept). The analysis re-tests the finished study
(analysis/verdicts.py: Holm, items and bootstrap too) at the same level: FINAL_ALPHA, or the level of the look
that stopped it (analysis/race.py level).

With `compare: claims` the claims are decided instead (harness/study/claims.py): each at the same alpha, done
once every claim holds or is refuted or none left undecided is likely to be.
"""
from __future__ import annotations

from harness.study import claims as claims_mod
from harness.study import verdict as vd


# The share of alpha the interim looks may spend; the last look (and the analysis of a study that ran to it) gets
# the rest. Spending all of alpha on the looks and again at the end reported false verdicts in up to 0.08 of
# simulated studies (bench/stop_when_alpha.py); 0.005 + 0.045 keeps the union bound at 0.05 (Haybittle-Peto's idea:
# strict interim looks, the final test nearly at alpha).
INTERIM_ALPHA = 0.005
FINAL_ALPHA = round(vd.ALPHA - INTERIM_ALPHA, 10)


def look_alpha(n_seeds: int) -> float:
    """Each interim look's level: INTERIM_ALPHA, Bonferroni over the looks 2 .. n_seeds - 1 that may stop the study."""
    return INTERIM_ALPHA / max(n_seeds - 2, 1)


def level(k: int, n_seeds: int) -> float:
    """The level of look k's verdicts: an interim look's share, or at the last seed the final test's."""
    return FINAL_ALPHA if k >= n_seeds else look_alpha(n_seeds)


def tested_at(stop_when: str | None, stopped: dict | None) -> float:
    """The α a finished study's data is tested at (the rule now): α without looks, the stopping look's level for a
    study stop_when stopped, FINAL_ALPHA for one that ran to its last seed (analysis/race.py, bench/racing.py)."""
    if stop_when != "decided":
        return vd.ALPHA
    return float(stopped["alpha"]) if stopped is not None else FINAL_ALPHA


def _seeds_left(st, keys: list[str], later: list) -> bool:
    """Whether a configuration still racing has a seed after the look (queued, running or done: seen
    from the look, its data are still to come), so the comparison could still change."""
    return any(c not in st.stopped and st.cells[c][s].to_come() for c in keys for s in later)


def decide(st, values: dict, k: int, rules) -> None:
    """At look k (its seeds' values): record in st.verdicts the comparisons' (or claims') verdicts, and in
    st.decided the study's stop where it is decided."""
    n_seeds = len(rules.seeds)
    alpha = level(k, n_seeds)
    survivors = {c for c in st.configs if c not in st.stopped}
    pairs, picked = vd.comparisons(st.configs, values, rules.axes, rules.tune, rules.direction, among=survivors,
                                   compare="arms" if rules.compare == "claims" else rules.compare)
    if rules.compare == "claims":
        return _decide_claims(st, values, k, rules, pairs, alpha)
    st.verdicts = vd.verdicts(values, pairs, st.configs, rules.margin, alpha, rules.direction, rules.tune)
    if not st.verdicts or k >= n_seeds:
        return
    arm_of = {c: arm for arm, cs in vd.arms(st.configs, rules.tune).items() for c in cs}
    members = vd.arms(st.configs, rules.tune)
    later = rules.seeds[k:]
    left = [v for v in st.verdicts if v.word == "undecided"
            and (_seeds_left(st, members[arm_of[v.a]], later) or _seeds_left(st, members[arm_of[v.b]], later))]
    chances = [_chance(st, v, values, later, rules) for v in left]
    if any(not c < rules.futility for c in chances):  # NaN (no SD yet) keeps it open
        return
    undecided = sum(v.word == "undecided" for v in st.verdicts)
    words = {}
    for v in st.verdicts:
        words[v.word] = words.get(v.word, 0) + 1
    tally = ", ".join(f"{n} {w}" for w, n in words.items() if w != "undecided")
    futile = f"; {len(left)} given up: a verdict's predictive probability with the seeds left " \
             f"{', '.join(f'{c:.2f}' for c in chances)} < {rules.futility:g}" if left else ""
    why = (f"every comparison decided after round {k} ({tally})" if not undecided else
           f"after round {k} every comparison is decided ({tally or 'none'}) or has no seed left that could change it "
           f"({undecided} undecided{futile})")
    st.decided = {"look": k, "why": why, "alpha": alpha,
                  "verdicts": [v.sentence(st.configs, rules.margin) for v in st.verdicts]}


def _more(st, a: str, b: str, later: list) -> int:
    """The later seeds both configurations can still get (queued, running or done but after the look)."""
    return sum(1 for s in later if all(c not in st.stopped and st.cells[c][s].to_come()
                                       for c in (a, b)))


def _chance(st, v, values: dict, later: list, rules) -> float:
    """The predictive probability that comparison v ends with a verdict once the later seeds both of its
    configurations can still get are in (verdict.chance_of_a_verdict; with tune, at today's picks)."""
    shared = [s for s in values[v.a] if s in values[v.b]]
    d = [values[v.b][s] - values[v.a][s] for s in shared]
    return vd.chance_of_a_verdict(d, len(shared) + _more(st, v.a, v.b, later), rules.margin, FINAL_ALPHA)


def _decide_claims(st, values: dict, k: int, rules, pairs: list, alpha: float) -> None:
    """compare=claims: decided once every claim holds or is refuted, or none left undecided is likely to be
    (harness/study/claims.py's bound below sweep.futility; NaN keeps it open)."""
    sign = vd.DIRECTIONS[rules.direction]
    signed = {c: {s: sign * x for s, x in v.items()} for c, v in values.items()}  # "b not worse" reads higher = better
    found = claims_mod.judge(rules.claims, signed, pairs, st.configs, rules.margin, alpha)
    st.verdicts = found
    if not found or k >= len(rules.seeds):
        return
    later = rules.seeds[k:]
    bounds = [claims_mod.chance_of_a_claim(v, [len(d) + _more(st, a, b, later) for d, (a, b) in zip(v.diffs, v.parts)],
                                           rules.margin, FINAL_ALPHA) for v in found if v.word == "undecided"]
    if any(not c < rules.futility for c in bounds):
        return
    st.decided = {"look": k, "why": claims_mod.why_stopped(found, bounds, k, rules.futility), "alpha": alpha,
                  "verdicts": [v.sentence() for v in found]}
