"""Replay search strategies over a cached grid: each strategy is a real Optuna study (sampler +
pruner) whose trials are "trained" by reading the cached record of the suggested grid point.

A cached record (bench/search.py writes them) holds the final accuracy, the intermediate evals
({"step", "accuracy"} every train.eval_every steps; the last entry is the final eval), the configured
max_steps and the measured phase_seconds (train, eval). Cost accounting, the same for every strategy:
  a completed trial  costs train + eval seconds (the record's device_seconds: the baseline eval is
                     cached per study, not per trial, so it is not charged)
  a pruned trial     costs train x stop_step / max_steps + eval x (evals run up to stop_step) / all evals
  a failed trial     is charged like a pruned one at the step it reached
  a resampled point  is charged again (a real sweep retrains it)
Cost to target = device-seconds summed up to and including the first COMPLETE trial whose accuracy
is >= grid best - tolerance. Replay leaves out the seed noise between reruns of one configuration.
Torch-free: the tests run it on a synthetic grid.
"""
from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Callable

# compute does not depend on these axes: configurations differing only here cost the same
COST_NEUTRAL = ("train.lr",)


def key(params: dict) -> str:
    return " ".join(f"{k}={params[k]}" for k in sorted(params))


def ordinal(values: list) -> bool:
    """Numeric axes (lr, r) are searched by their index in the sorted grid, so TPE models them as
    ordered (a log grid's index is log-uniform); strings (target presets) stay categorical."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def grid_space(space: dict) -> dict:
    """The GridSampler's space, in the parameter names `suggest` uses."""
    return {(f"{k}[i]" if ordinal(v) else k): (list(range(len(v))) if ordinal(v) else list(v)) for k, v in space.items()}


def suggest(trial, space: dict) -> dict:
    out = {}
    for k, vals in space.items():
        if ordinal(vals):
            ordered = sorted(vals)
            out[k] = ordered[trial.suggest_int(f"{k}[i]", 0, len(ordered) - 1)]
        else:
            out[k] = trial.suggest_categorical(k, list(vals))
    return out


# --- cost ------------------------------------------------------------------------------------------
def phase_costs(grid: dict, mode: str = "group") -> dict:
    """key -> {"train": s, "eval": s} charged for a full run of that configuration.

    measured  each record's own seconds
    group     the median over configurations that differ only in COST_NEUTRAL axes (the learning rate
              changes no FLOP; the shared box's load changes a config's seconds by when it ran)
    median    the grid-wide median (ignores that r and target sets change the compute)
    """
    if mode not in ("measured", "group", "median"):
        raise ValueError(f"cost mode {mode!r}: choose measured, group or median")

    def med(recs, ph):
        return statistics.median(r["phase_seconds"].get(ph, 0.0) for r in recs)

    out = {}
    for k, rec in grid.items():
        if mode == "measured":
            peers = [rec]
        elif mode == "median":
            peers = list(grid.values())
        else:
            sig = {a: v for a, v in rec["params"].items() if a not in COST_NEUTRAL}
            peers = [r for r in grid.values()
                     if {a: v for a, v in r["params"].items() if a not in COST_NEUTRAL} == sig]
        out[k] = {"train": med(peers, "train"), "eval": med(peers, "eval")}
    return out


def charge(rec: dict, cost: dict, stop_step: int | None) -> float:
    """Device-seconds of a trial stopped right after its eval at stop_step (None: run in full)."""
    if stop_step is None and rec.get("accuracy") is not None:
        return cost["train"] + cost["eval"]
    stop = rec.get("steps", rec["max_steps"]) if stop_step is None else stop_step  # failed: where it stopped
    n_evals = rec.get("n_evals") or len(rec["evals"])
    done = sum(1 for e in rec["evals"] if e["step"] <= stop)
    return cost["train"] * min(1.0, stop / rec["max_steps"]) + cost["eval"] * done / max(1, n_evals)


def _tell(study, trial, value=None, state=None) -> None:
    try:
        study.tell(trial, value, state=state)
    except RuntimeError:  # GridSampler calls study.stop() (outside optimize) once every point is done;
        pass              # the trial's state is stored before that (Optuna's tell sets it in `finally`)


# --- one replayed study --------------------------------------------------------------------------
def simulate(sampler, pruner, space: dict, grid: dict, costs: dict, target: float, max_trials: int,
             stop_when_done: bool = False, free_repeats: bool = False) -> dict:
    """Run one study until a COMPLETE trial reaches `target` or max_trials are spent. free_repeats:
    a configuration this study already ran is told its earlier outcome at no cost (what a driver
    that skips repeats would do; the harness does not today) instead of being retrained."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    spent, pruned, n = 0.0, 0, 0
    seen = {}  # key -> (state, value) of its first run in this study
    for n in range(1, max_trials + 1):
        trial = study.ask()
        params = suggest(trial, space)
        k = key(params)
        rec = grid[k]
        if free_repeats and k in seen:
            _tell(study, trial, seen[k][1], state=seen[k][0])
            continue
        stop = None
        for e in rec["evals"][:-1] if rec.get("accuracy") is not None else rec["evals"]:
            # intermediate evals only: the harness reports to the pruner before the last step
            trial.report(e["accuracy"], e["step"])
            if trial.should_prune():
                stop = e["step"]
                break
        spent += charge(rec, costs[k], stop)
        TS = optuna.trial.TrialState
        state = TS.PRUNED if stop is not None else TS.FAIL if rec.get("accuracy") is None else TS.COMPLETE
        seen.setdefault(k, (state, rec["accuracy"] if state == TS.COMPLETE else None))
        pruned += state == TS.PRUNED
        _tell(study, trial, rec["accuracy"] if state == TS.COMPLETE else None, state=state)
        if state == TS.COMPLETE and rec["accuracy"] >= target:
            return {"reached": True, "trials": n, "pruned": pruned, "distinct": len(seen), "device_seconds": spent}
        if stop_when_done and len(seen) == len(grid):
            break
    return {"reached": False, "trials": n, "pruned": pruned, "distinct": len(seen), "device_seconds": spent}


# --- strategies ----------------------------------------------------------------------------------
def strategies(steps: int, eval_every: int, n_startup: int) -> dict[str, Callable]:
    """name -> factory(seed, space) -> (sampler, pruner, stop_when_done). First rungs at a quarter and
    three eighths of the steps (20 and 30 of 80): earlier, every configuration still sits near chance
    and pruning there killed the grid's best (BENCHMARKS.md, the 20-step benchmark)."""
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    S, P = optuna.samplers, optuna.pruners

    def tpe(seed, multivariate=False):
        # n_startup random trials first: Optuna's default 10 would be 42% of a 24-point grid by itself
        return S.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=multivariate, group=multivariate)

    rungs = sorted({max(eval_every, (steps // 4) // eval_every * eval_every),
                    max(eval_every, (3 * steps // 8) // eval_every * eval_every)})
    out = {
        "grid": lambda seed, space: (S.GridSampler(grid_space(space), seed=seed), P.NopPruner(), True),
        "random": lambda seed, space: (S.RandomSampler(seed=seed), P.NopPruner(), False),
        "tpe": lambda seed, space: (tpe(seed), P.NopPruner(), False),
        "tpe(mv,group)": lambda seed, space: (tpe(seed, True), P.NopPruner(), False),
    }
    for r in rungs:
        out[f"tpe(mv,group)+hyperband(min {r})"] = (
            lambda seed, space, r=r: (tpe(seed, True), P.HyperbandPruner(min_resource=r, max_resource=steps,
                                                                         reduction_factor=3), False))
        out[f"tpe(mv,group)+SH(min {r})"] = (
            lambda seed, space, r=r: (tpe(seed, True), P.SuccessiveHalvingPruner(min_resource=r, reduction_factor=3),
                                      False))
        out[f"tpe(mv,group)+median(warmup {r})"] = (
            lambda seed, space, r=r: (tpe(seed, True), P.MedianPruner(n_startup_trials=n_startup, n_warmup_steps=r,
                                                                      interval_steps=eval_every), False))
    r = rungs[0]
    out[f"random+hyperband(min {r})"] = (
        lambda seed, space: (S.RandomSampler(seed=seed), P.HyperbandPruner(min_resource=r, max_resource=steps,
                                                                           reduction_factor=3), False))
    return out


def strategies_for(grid: dict, n_startup: int) -> dict[str, Callable]:
    """The strategies with rungs placed on this grid's steps and eval interval."""
    rec0 = max(grid.values(), key=lambda r: len(r["evals"]))  # a failed point may have stopped early
    evals = [e["step"] for e in rec0["evals"]]
    eval_every = evals[1] - evals[0] if len(evals) > 2 else rec0["max_steps"]
    return strategies(rec0["max_steps"], eval_every, n_startup)


def replay(space: dict, grid: dict, names: list[str], seeds: int, tolerance: float = 0.01,
           cost_mode: str = "group", n_startup: int = 4, budget_share: float = 0.30,
           min_reached: float = 0.9, free_repeats: bool = False) -> dict:
    """Every strategy x seeds; one row per strategy with the target verdict."""
    factories = strategies_for(grid, n_startup)
    unknown = [n for n in names if n not in factories]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; known: {list(factories)}")
    costs = phase_costs(grid, cost_mode)
    total = sum(charge(grid[k], costs[k], None) for k in grid)
    done = [k for k in grid if grid[k].get("accuracy") is not None]
    best_key = max(done, key=lambda k: grid[k]["accuracy"])
    target = grid[best_key]["accuracy"] - tolerance
    rows, runs = [], []
    for name in names:
        res = []
        for seed in range(seeds):
            sampler, pruner, stop_when_done = factories[name](seed, space)
            r = simulate(sampler, pruner, space, grid, costs, target, 2 * len(grid), stop_when_done, free_repeats)
            res.append(r)
            runs.append({"strategy": name, "seed": seed, **r})
        # an unreached seed counts as infinitely costly: the median is over all seeds
        shares = sorted(r["device_seconds"] / total if r["reached"] else math.inf for r in res)
        med = statistics.median(shares)
        n_reached = sum(r["reached"] for r in res)
        rows.append({"strategy": name, "reached": f"{n_reached}/{seeds}",
                     "median trials": statistics.median(r["trials"] for r in res),
                     "median pruned": statistics.median(r["pruned"] for r in res),
                     "median share": med, "p80 share": shares[min(len(shares) - 1, int(0.8 * len(shares)))],
                     "met": n_reached >= math.ceil(min_reached * seeds) and med <= budget_share})
    return {"grid_points": len(grid), "grid_device_seconds": total, "grid_best": grid[best_key]["accuracy"],
            "grid_best_config": best_key, "target": target, "cost_mode": cost_mode, "n_startup_trials": n_startup,
            "tolerance": tolerance, "free_repeats": free_repeats, "rows": rows, "runs": runs,
            "within_target": sorted(k for k in done if grid[k]["accuracy"] >= target)}
