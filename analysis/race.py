"""What racing and `stop_when: decided` did to a study, read back from its Optuna storage.

The driver (harness/study/racing.py) writes one study user attr `racing:<configuration>` per
configuration it stopped (its seeds, the look, the leader, the one-sided p against the threshold,
and why), a study attr `stopped` when every comparison was decided, and marks each (configuration,
seed) it never ran as a PRUNED trial with user attr `racing=skipped`. A raced study therefore has
unequal seeds per configuration by design: the report says which configuration stopped at which n
and why, so a reader does not take its fewer seeds (or the PRUNED rows) for failures.
"""
from __future__ import annotations

from harness.study import stopping
from harness.study import verdict as vd
from harness.study.racing import SKIP_ATTR


def facts(optuna_study) -> dict:
    """{'stops': [stop records], 'skipped': n trials not run, 'stopped': the study's stop record or None,
    'raced': whether the study was raced at all}; empty facts without a storage."""
    if optuna_study is None:
        return {"stops": [], "skipped": 0, "waiting": 0, "stopped": None, "raced": False}
    attrs = optuna_study.user_attrs
    rules = attrs.get("racing_rules") or {}
    stops = [v for k, v in sorted(attrs.items()) if k.startswith("racing:")]
    trials = optuna_study.get_trials(deepcopy=False)  # one read of the storage for both counts
    skipped = sum(1 for t in trials if t.user_attrs.get(SKIP_ATTR) == "skipped")
    raced = bool(stops or skipped or rules.get("racing"))
    waiting = sum(1 for t in trials if t.state.name == "WAITING")
    return {"stops": stops, "skipped": skipped, "waiting": waiting, "stopped": attrs.get("stopped"), "raced": raced,
            "stop_when": rules.get("stop_when")}


def report_lines(optuna_study) -> list[str]:
    """The report's "Racing and stopping" section (no lines for a study run without either)."""
    f = facts(optuna_study)
    if not f["raced"] and not f["stopped"] and f.get("stop_when") != "decided":
        return []
    out = ["## Racing and stopping"]
    if f["raced"]:
        n = len(f["stops"])
        out.append(f"Racing (`sweep.racing`) stopped {n} configuration{'s' if n != 1 else ''} early; {f['skipped']} "
                   f"(configuration, seed) trial{'s were' if f['skipped'] != 1 else ' was'} not run (PRUNED in the storage, "
                   "user attr `racing=skipped`, no run files). A stopped configuration keeps the seeds it ran: its "
                   "mean and interval above are over those.")
        out += [f"- {s['label']}: stopped after {len(s['seeds'])} seed{'s' if len(s['seeds']) != 1 else ''} "
                f"({', '.join(str(x) for x in s['seeds'])}) at look {s.get('look')}: {s['why']}" for s in f["stops"]]
    if f["stopped"]:
        st = f["stopped"]
        out.append(f"The study stopped because {st['why']} (`stop_when: decided`; the driver's Holm at alpha "
                   f"{st['alpha']:.3g} per look); its verdicts then:")
        out += [f"- {line}" for line in st["verdicts"]]
        if f["waiting"]:
            out.append(f"{f['waiting']} queued trial{'s' if f['waiting'] != 1 else ''} were left unrun (WAITING in "
                       "the storage, listed as queued above): the study needed no more seeds.")
        out.append("The comparisons above re-test every pair from the records; where they differ from these, "
                   "the re-test (on every seed run) is the one reported.")
    elif f.get("stop_when") == "decided" and f["waiting"]:
        out.append(f"`stop_when: decided`: not decided yet; {f['waiting']} queued trials remain (the study's command "
                   "resumes it).")
    elif f.get("stop_when") == "decided":
        out.append("`stop_when: decided`: the seeds ran out before every named comparison was decided.")
    if f.get("stop_when") == "decided":
        out.append(level(optuna_study)[1])
    return out + [""]


# bench/stop_when_alpha.py measures it (BENCHMARKS.md "What stopping early costs in error rate")
LOOKS_COST = ("The verdicts below are tested at α with no correction for the looks at which the study could have "
              "stopped (it stopped at one under the rule before the interim budget, which spent all of α on the "
              "looks): the union bound allows a false verdict in up to 2α of such studies; simulated at the null's "
              "boundary (bench/stop_when_alpha.py, 20,000 studies a design, seed SDs 0.5-2.5 points) the rate was at "
              "most 0.080 with 5 seeds and 0.068 with 17, against 0.05 for a fixed number of seeds.")


def level(optuna_study) -> tuple[float, str | None]:
    """The α the analysis tests a study at, and the sentence that says why (None: a study with a fixed number of
    seeds, at α). A study that could stop at each look (stop_when: decided) and ran to its last seed is tested at
    what the looks left (harness/study/stopping.py FINAL_ALPHA); one that stopped at a look, at that look's level.
    A study created before the interim budget that never stopped took the path the budget would have (its looks
    were more lenient and stopped nothing), so it is tested the same way; one that stopped under it cannot be."""
    attrs = optuna_study.user_attrs if optuna_study is not None else {}  # the trials are read only while it runs
    rules = attrs.get("racing_rules") or {}
    st = attrs.get("stopped")  # only ever set at an interim look: the last look ends a study by its budget
    alpha = stopping.tested_at(rules.get("stop_when"), st)
    if rules.get("stop_when") != "decided":
        return alpha, None
    if st is not None and "interim_alpha" not in rules:
        return vd.ALPHA, LOOKS_COST
    if st is not None:
        return alpha, (f"The verdicts below are tested at α = {alpha:.3g}, the level of the look that stopped the "
                       "study (harness/study/stopping.py), so that wherever a study stops, its false verdicts stay "
                       f"within {vd.ALPHA}.")
    going = _in_progress(optuna_study)
    if going:
        n_seeds, left = going
        a = stopping.look_alpha(n_seeds)
        return a, (f"The study is still running ({left} trial{'s' if left != 1 else ''} queued or running): this analysis "
                   f"is an interim look, so the verdicts below are tested at α = {a:.3g}, the level of the driver's own "
                   f"looks ({stopping.INTERIM_ALPHA:g} / ({n_seeds} seeds − 2); harness/study/stopping.py), not at the final "
                   f"{stopping.FINAL_ALPHA:g}: a look at the final level before the last seed is not in the design and "
                   f"would raise the error rate. Rerun the analysis once the study has finished.")
    return alpha, (f"The verdicts below are tested at α = {alpha:g}: {vd.ALPHA} less the {stopping.INTERIM_ALPHA:g} "
                   f"its interim looks could spend (harness/study/stopping.py), so that wherever a study stops, its false "
                   f"verdicts stay within {vd.ALPHA} (tested at {vd.ALPHA} after the looks, simulated studies reported up "
                   "to 0.08: bench/stop_when_alpha.py).")


def _in_progress(optuna_study) -> tuple[int, int] | None:
    """(the study's seeds, its trials queued or running) for a study with trials still to run, else None."""
    from optuna.trial import TrialState

    left = optuna_study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    if not left:
        return None
    seeds = {t.user_attrs.get("seed") for t in optuna_study.get_trials(deepcopy=False)} - {None}
    return len(seeds), len(left)


def console_lines(optuna_study) -> list[str]:
    """One line per fact, for `python -m analysis` without --report."""
    return [line for line in report_lines(optuna_study)[1:] if line]
