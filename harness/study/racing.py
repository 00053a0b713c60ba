"""Racing (`sweep.racing`) and stopping when decided (`sweep.stop_when: decided`) for grid studies.

A configuration receives its seeds one round at a time: round k is every configuration's k-th seed
(the order of `sweep.seeds`). After round k (look k, k >= racing.min_seeds) each configuration that
is worse than its race's leader with the requested confidence gets no more seeds; the others go on
to every seed. A race is every configuration of the grid, or with `sweep.tune: AXIS` each arm's own
values of AXIS (the arm = a setting of the other axes): the lrs of one arm race each other, and the
arms, each at its own best lr, are what `stop_when: decided` compares (`sweep.compare: carry_over`: each
arm's own best lr against the lrs best at the other arms, harness/study/verdict.py).

The test (`racing.statistic: paired_t`, the verdicts' test on seeds): one-sided paired t of the
configuration against the leader (the best mean over the look's seeds) over the seeds both completed.
The correction: Bonferroni over the looks and the comparisons, each test at
    alpha' = (1 - confidence) / (L x (G - 1)),   L = len(seeds) - min_seeds looks, G = the race's size.
Why: the error that matters is stopping a race's truly best configuration c*. At a look, stopping c*
needs its test against the leader to reject; the leader is chosen by the same data, so that event lies
inside "c*'s test against some other configuration rejects", G - 1 tests each valid at alpha' (c* is
at least as good as every one); over L looks the union bound gives P(c* ever stopped) <= 1 - confidence,
whatever the dependence between looks and whoever leads. An alpha-spending bound (Pocock, O'Brien-Fleming)
would be less conservative but needs the looks' joint distribution, and a paired t at 1-4 degrees of
freedom with data-chosen leaders makes that approximate; with 3-5 seeds, L <= 3, so Bonferroni costs
little. The bound is per race (with tune, per arm).

Unstable configurations: at a look, before the tests, a configuration whose every seed so far (at least
min_seeds) collapsed or diverged (harness/metrics/convergence.py; the analysis sets such trials aside)
is stopped by that rule, not by a test: collapsed seeds score exactly chance (0.5 on balanced data), so
their differences to a steady leader can have no spread, and the t test, undefined there, would keep
them forever (the 2026-12-07 qlora_targets run: all_linear r=8 lr=4e-3, 0.5 at seeds 0 and 1). The
rule sits outside the confidence bound above: it stops the truly best configuration only if that one
degenerated in each of its first min_seeds seeds, a configuration no researcher would be recommended.

stop_when: decided: at each look the comparisons (or claims) the sweep names are tested, and the study
ends once they are decided or no seed left is likely to change them: harness/study/stopping.py says how.

Why not Optuna's WilcoxonPruner (optuna/pruners/_wilcoxon.py), with one configuration = one trial and
seeds = instances (trial.report(value, seed)):
- One trial would run all of a configuration's seeds, so its seeds run one after another in one
  worker: a trial is the unit Optuna hands to exactly one worker, retries as a whole and fails as a
  whole, so a kill -9 would lose every finished seed of the configuration (a retry copies params and
  attributes, not the finished seeds unless inherit_intermediate_values), and K workers could not
  share one configuration's seeds. Here a trial stays one (configuration, seed), the storage's
  WAITING -> RUNNING compare-and-set still hands each to exactly one worker, and every seed keeps its
  own record, W&B run and state.
- Its intermediate values are already taken: sweep.pruner (median, Hyperband) prunes on the steps of
  one run, and a trial has one pruner.
- It compares against study.best_trial only, a trial that must have reported every instance, and by
  the final objective value; while configurations run in parallel the best trial is unfinished.
- Its test, scipy's exact one-sided Wilcoxon signed-rank, cannot go below 1/2^n: p >= 0.25, 0.125,
  0.0625, 0.031 at n = 2, 3, 4, 5 seeds (measured: scipy.stats.wilcoxon, alternative="less", on n
  differences all of one sign). At a corrected threshold (0.05 over 3 looks and 3 lrs: 0.0083) it
  never prunes with the 3-5 seeds a finding has; the paired t does (a collapsed configuration is out
  after 2 seeds, tests/test_racing.py).
- Its p_threshold is per look, uncorrected (its docstring asks the user for a Pocock-corrected one).
So the decision is made here, from the storage, and its one Optuna-side effect is which queued trial
a worker claims.

Restart safety: every decision is a function of the storage (the trials' states and values and the
sweep), recomputed at each claim: nothing lives in driver memory. Every (configuration, seed) is
queued up front, as without racing; a worker claims the first eligible queued trial with the same
compare-and-set Optuna's queue uses; a claimed trial of a stopped configuration is told PRUNED at once
(user_attr racing=skipped, prune_reason says why), never run. A look is complete when every racing
configuration has its look's seeds settled (complete, failed or pruned; a trial awaiting its retry is
not settled), so the decisions are the same whoever computes them. Each stop is recorded as a study
user attr `racing:<configuration>` (its n, seeds, look, leader, difference, p and threshold) and the
study's stop as `stopped`, for the console summary and the analysis.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from harness.study import claims as claims_mod
from harness.study import stopping
from harness.study import verdict as vd

PENDING, COMPLETE, NOVALUE, SKIPPED, ABSENT = "pending", "complete", "novalue", "skipped", "absent"
SKIP_ATTR = "racing"  # user_attr racing=skipped on a trial the race did not run


@dataclass
class Rules:
    seeds: list
    direction: str
    axes: list[str]
    min_seeds: int | None          # None: no racing
    confidence: float
    stop_when: str
    margin: float
    tune: str | None
    futility: float = 0.0          # stop_when: give up a comparison whose chance of a verdict is below this
    compare: str = "arms"          # with tune: the arms at their best, or each arm's best carried over (verdict.py)
    claims: list = field(default_factory=list)  # compare="claims": sweep.claims, decided as worded (claims.py)

    @classmethod
    def of(cls, sw) -> Rules:
        r = sw.get("racing")
        return cls(list(sw.seeds), next(iter(sw.objectives.values())), list(sw.space),
                   None if r is None else int(r.min_seeds), 0.95 if r is None else float(r.confidence),
                   sw.get("stop_when", "budget"), float(sw.get("margin", 0.01)), sw.get("tune"),
                   float(sw.get("futility", 0.1)), sw.get("compare", "arms"),
                   claims_mod.plain(sw.get("claims")) if sw.get("compare") == "claims" else [])

    @property
    def on(self) -> bool:
        return self.min_seeds is not None or self.stop_when == "decided"

    def record(self) -> dict:
        """What a resume must agree on (a study attr)."""
        return {"racing": None if self.min_seeds is None else {"min_seeds": self.min_seeds,
                                                              "confidence": self.confidence},
                "stop_when": self.stop_when, "margin": self.margin, "tune": self.tune, "futility": self.futility,
                "compare": self.compare, **({"claims": self.claims} if self.compare == "claims" else {}),
                **({"interim_alpha": stopping.INTERIM_ALPHA} if self.stop_when == "decided" else {})}


@dataclass
class Cell:
    state: str
    value: float | None = None
    degenerate: str | None = None  # "collapsed" / "diverged" (harness/metrics/convergence.py), every attempt

    def to_come(self) -> bool:
        """Queued, running or done: seen from a look at an earlier round, data the comparison will still get."""
        return self.state in (PENDING, COMPLETE)


@dataclass
class Stop:
    """Why a configuration got no more seeds."""
    look: int
    n: int                  # seeds it completed by then
    shared: int             # seeds the test paired with the leader
    leader: str
    diff: float             # mean of (configuration - leader) over the shared seeds
    p: float | None         # one-sided paired t (None: stopped as unstable, no test)
    alpha: float | None     # the threshold p was below
    unstable: str | None = None  # "collapsed" / "diverged": every seed so far degenerate (the rule, not a test)

    def why(self, configs: dict) -> str:
        if self.unstable:
            return (f"unstable: {self.unstable} in every one of its {self.n} seeds after round {self.look} "
                    f"(harness/metrics/convergence.py; a rule, not a test: {100 * abs(self.diff):.2f} points below "
                    f"{vd.label(configs[self.leader], vd.shown(configs))})")
        return (f"worse than {vd.label(configs[self.leader], vd.shown(configs))} by {100 * abs(self.diff):.2f} points over "
                f"{self.shared} shared seeds after round {self.look} (one-sided paired t p = {self.p:.2g} < "
                f"{self.alpha:.2g})")


@dataclass
class State:
    configs: dict[str, dict]
    cells: dict[str, dict]
    stopped: dict[str, Stop] = field(default_factory=dict)
    looks_done: int = 0
    decided: dict | None = None      # the stop of the whole study: look, why, verdict sentences
    verdicts: list = field(default_factory=list)  # the last look's (stop_when)


# ---------------------------------------------------------------------------- the storage -> cells


def cells_of(trials, seeds: list, max_retry: int, grace_s: float, now: datetime | None = None):
    """(configs, cells): every grid configuration (config key -> params) and its seeds' states.
    A FAIL that a retry will repeat is PENDING: settled only once its driver told it (user_attr
    settled), its retries are used up, or it has waited a grace period without one."""
    from optuna.trial import TrialState as S

    now = now or datetime.now()
    retried = {n for t in trials for n in [t.system_attrs.get("failed_trial"), *t.system_attrs.get("retry_history", [])]
               if n is not None}
    configs, attempts = {}, {}
    for t in trials:
        ua = t.user_attrs
        if ua.get("reference") or "point" not in ua:
            continue
        params = json.loads(ua["point"])
        seed = params.pop("seed", None)
        if seed not in seeds:
            continue
        k = vd.config_key(params)
        configs[k] = params
        attempts.setdefault((k, seed), []).append(t)
    cells = {k: {s: Cell(ABSENT) for s in seeds} for k in configs}
    for (k, s), ts in attempts.items():
        done = [t for t in ts if t.state == S.COMPLETE and t.values]
        if done:
            bad = {t.user_attrs.get("degenerate") for t in done}
            cells[k][s] = Cell(COMPLETE, sum(t.values[0] for t in done) / len(done),
                               next(iter(bad)) if len(bad) == 1 else None)
        elif any(t.state in (S.WAITING, S.RUNNING) for t in ts):
            cells[k][s] = Cell(PENDING)
        elif any(t.state == S.FAIL and t.number not in retried and not _settled(t, max_retry, grace_s, now) for t in ts):
            cells[k][s] = Cell(PENDING)
        elif all(t.user_attrs.get(SKIP_ATTR) == "skipped" for t in ts):
            cells[k][s] = Cell(SKIPPED)
        else:
            cells[k][s] = Cell(NOVALUE)
    return configs, cells


def _settled(t, max_retry: int, grace_s: float, now: datetime) -> bool:
    if t.user_attrs.get("settled") is True:
        return True
    if max_retry < len(t.system_attrs.get("retry_history", [])) + 1:
        return True  # RetryHeartbeatStaleTrialCallback makes no further retry
    done = t.datetime_complete
    return done is not None and now - done > timedelta(seconds=grace_s)  # its reaper died before retrying it


# ---------------------------------------------------------------------------- the race


def race(configs: dict, cells: dict, rules: Rules) -> State:
    """Run the looks over the cells: which configurations are stopped, the last complete look, and
    whether the study is decided. A pure function of its inputs (the bench replays it)."""
    st = State(configs, cells)
    n_seeds = len(rules.seeds)
    groups = vd.arms(configs, rules.tune) if rules.tune else {"all": list(configs)}
    for k in range(1, n_seeds + 1):
        active = [c for c in configs if c not in st.stopped]
        if any(cells[c][s].state == PENDING for c in active for s in rules.seeds[:k]):
            break
        st.looks_done = k
        values = {c: {s: cells[c][s].value for s in rules.seeds[:k] if cells[c][s].state == COMPLETE} for c in configs}
        if rules.min_seeds is not None and rules.min_seeds <= k < n_seeds:
            for members in groups.values():
                _set_aside_unstable(st, [c for c in members if c in active], values, k, rules)
                _eliminate(st, [c for c in members if c in active and c not in st.stopped], len(members), values, k,
                           rules)
        if rules.stop_when == "decided" and k >= 2:
            stopping.decide(st, values, k, rules)
            if st.decided is not None:
                break
    return st


def _set_aside_unstable(st: State, active: list[str], values: dict, k: int, rules: Rules) -> None:
    """Stop a configuration whose every seed so far (>= min_seeds) collapsed or diverged.
    Why a rule: identical collapsed values (0.5 at every seed on balanced data) give paired differences
    without spread, where the t test is undefined and would never stop them."""
    kinds = {c: _unstable(st, c, values, rules) for c in active}
    leader = vd.best_of([c for c in active if not kinds[c]] or active, values, rules.direction)
    for c, kind in kinds.items():
        if kind and leader is not None and c != leader:
            shared = [s for s in values[c] if s in values[leader]]
            diff = sum(values[c][s] - values[leader][s] for s in shared) / max(len(shared), 1)
            st.stopped[c] = Stop(k, len(values[c]), len(shared), leader, diff, None, None, kind)


def _unstable(st: State, c: str, values: dict, rules: Rules) -> str | None:
    kinds = {st.cells[c][s].degenerate for s in values[c]}
    return "/".join(sorted(kinds)) if len(values[c]) >= rules.min_seeds and None not in kinds else None


def _eliminate(st: State, active: list[str], size: int, values: dict, k: int, rules: Rules) -> None:
    if len(active) < 2:
        return
    alpha = (1 - rules.confidence) / ((len(rules.seeds) - rules.min_seeds) * (size - 1))
    leader = vd.best_of(active, values, rules.direction)
    if leader is None:
        return
    sign = vd.DIRECTIONS[rules.direction]
    for c in active:
        shared = [s for s in values[c] if s in values[leader]]
        if c == leader or len(shared) < 2:
            continue
        d = [sign * (values[c][s] - values[leader][s]) for s in shared]  # < 0: c is worse
        p = vd.p_less(d)
        if p < alpha:
            st.stopped[c] = Stop(k, len(values[c]), len(shared), leader, sum(d) / len(d) * sign, p, alpha)


# ---------------------------------------------------------------------------- claiming


def round_of(t, seeds: list) -> int:
    seed = t.user_attrs.get("seed")
    return seeds.index(seed) + 1 if seed in seeds else len(seeds) + 1


def plan(waiting, st: State, rules: Rules):
    """The queued trials in claim order as (action, trial): "skip" (a stopped configuration's seed: claim
    it and tell it PRUNED) or "run"; a trial whose round waits on an incomplete look is left queued."""
    for t in sorted(waiting, key=lambda t: (round_of(t, rules.seeds), t.number)):
        if st.decided is not None:
            return
        if t.user_attrs.get("reference"):
            yield "run", t  # reference arms are not raced: they fill the gaps between rounds
            continue
        params = json.loads(t.user_attrs.get("point", "{}"))
        params.pop("seed", None)
        if vd.config_key(params) in st.stopped:
            yield "skip", t
            continue
        r = round_of(t, rules.seeds)
        if rules.min_seeds is not None and r > rules.min_seeds and r - 1 > st.looks_done:
            continue  # round r follows look r - 1, which some configuration has not finished yet
        yield "run", t


def stop_record(c: str, stop: Stop, st: State) -> dict:
    return {"params": st.configs[c], "label": vd.label(st.configs[c], vd.shown(st.configs)),
            "leader": st.configs[stop.leader], **asdict(stop), "why": stop.why(st.configs),
            "seeds": [s for s, cell in st.cells[c].items() if cell.state == COMPLETE]}


def attr_name(c: str) -> str:
    return f"racing:{c}"


def summary_lines(attrs: dict, rules: Rules, trials) -> list[str]:
    """The console summary's racing and stop lines, from the study's user attrs."""
    out = []
    stops = [v for k, v in sorted(attrs.items()) if k.startswith("racing:")]
    if rules.min_seeds is not None:
        skipped = sum(1 for t in trials if t.user_attrs.get(SKIP_ATTR) == "skipped")
        out.append(f"racing: {len(stops)} configuration{'s' if len(stops) != 1 else ''} stopped early, {skipped} "
                   f"trial{'s' if skipped != 1 else ''} not run (told PRUNED, user_attr racing=skipped)")
        out += [f"  {s['label']}: {len(s['seeds'])} seeds, {s['why']}" for s in stops]
    stopped = attrs.get("stopped")
    if stopped:
        out.append(f"stopped because {stopped['why']} (stop_when=decided; Holm at alpha {stopped['alpha']:.3g} "
                   "per look; the analysis re-tests):")
        out += [f"  {line}" for line in stopped["verdicts"]]
    elif rules.stop_when == "decided":
        waiting = sum(1 for t in trials if t.state.name == "WAITING")  # an interrupted run: not out of seeds
        out.append(f"stop_when=decided: not decided yet; {waiting} queued trial{'s' if waiting != 1 else ''} remain "
                   "(rerun the command to resume)" if waiting else
                   "stop_when=decided: the seeds ran out before every comparison was decided")
    return out
