"""Search efficiency: device-time to reach the exhaustive grid's best accuracy (within 1 point)
for grid vs random vs TPE vs TPE + median pruning, 3 sampler seeds each.

    python -m bench.search            # MiniLM + rt_polarity, 8-point grid x 20 steps (~20 min, cached)
    python -m bench.search --quick    # tiny model, 4-point grid (smoke test)

Method (replay over a cached grid). Every grid point is trained once, in full, with its
intermediate evals (train.eval_every), and its record is kept in bench/results/search_grid*.json
(rerunning reuses it). Each strategy is then an Optuna study with a real sampler and pruner on the
same categorical space; a suggested configuration is "trained" by replaying its cached record:
the study is told its final accuracy and charged its measured device-seconds. Under pruning, the
cached intermediate accuracies are reported step by step and a pruned trial is charged only what
it had spent: baseline eval + train seconds x step/max_steps + the evals done so far. A resampled
configuration is charged again (a real sweep would retrain it). The cost of reaching the target is
the device-time summed up to the first completed trial whose accuracy >= grid best - 1 point.
Replaying instead of retraining makes 3 seeds x 4 strategies affordable on 2 cores; it leaves out
seed noise between a config's reruns (about +-1.5 points here), which a real sweep would add.
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time

from bench.common import QUICK, RESULTS, compose, median, save, table

SPACE = {"train.lr": [1e-3, 3e-3, 1e-2, 3e-2], "lora.targets": ["attn_qv", "all_linear"]}
# 20 steps (a quarter of the default 80), evals every 5 on 200 held-out examples, r=8: with the
# shared box at load 10-13 a step took ~4.5 s, so the 8 points fit ~20 min. One torch thread: with
# the box oversubscribed, 2 threads per process ran ~8x slower (BENCHMARKS.md).
STEPS = ["train.max_steps=20", "train.eval_every=5", "eval.max_examples=200", "hardware.threads=1"]
QUICK_SPACE = {"train.lr": [1e-3, 3e-2], "lora.r": [4, 8]}
STRATEGIES = ["grid", "random", "tpe", "tpe+pruning", "tpe+pruning(no warmup)"]


def key(params: dict) -> str:
    return " ".join(f"{k}={params[k]}" for k in sorted(params))


def overrides_of(params: dict) -> list[str]:
    out = [f"{k}={v}" for k, v in params.items()]
    if "lora.r" in params:
        out.append(f"lora.alpha={2 * params['lora.r']}")  # alpha = 2r, as in the default sweeps
    return out


def run_grid(space: dict, base: list[str], cache_path, limit=None) -> dict:
    """Train every grid point once (in this process), reusing records cached from earlier runs."""
    from harness.train import run

    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    points = [dict(zip(space, vals)) for vals in itertools.product(*space.values())]
    out_dir = tempfile.mkdtemp(prefix="bench-search-")
    for i, params in enumerate(points):
        k = key(params)
        if k in cache:
            continue
        t0 = time.perf_counter()
        cfg = compose([*base, *overrides_of(params), f"out_dir={out_dir}", "study=bench_search", f"trial={i}",
                       "tracking.mode=disabled"])
        rec = run(cfg)
        keep = ("accuracy", "device_seconds", "wall_seconds", "phase_seconds", "evals", "steps", "tokens")
        cache[k] = {"params": params, **{f: rec[f] for f in keep}, "process_seconds": time.perf_counter() - t0}
        cache_path.write_text(json.dumps(cache, indent=1))  # after every point: an interrupted grid resumes
        print(f"[grid {len(cache)}/{len(points)}] {k}: accuracy {rec['accuracy']:.4f}, "
              f"{rec['device_seconds']:.1f} device-s", flush=True)
    return {key(p): cache[key(p)] for p in points}


def charge(rec: dict, upto_step: int | None, norm: dict | None = None) -> float:
    """Device-seconds a trial costs if stopped right after its eval at upto_step (None: in full).
    With norm, the grid-median phase times replace this record's own (see `normalized`)."""
    ph = norm or rec["phase_seconds"]
    if upto_step is None and norm is None:
        return rec["device_seconds"]
    n_evals = len(rec["evals"])
    done = n_evals if upto_step is None else sum(1 for e in rec["evals"] if e["step"] <= upto_step)
    frac = 1.0 if upto_step is None else upto_step / rec["steps"]
    return ph.get("baseline", 0.0) + ph["train"] * frac + ph.get("eval", 0.0) * done / n_evals


def normalized(grid: dict) -> dict:
    """Median phase seconds over the grid. The shared box's load moved 3x while the grid ran, so a
    config's measured seconds say more about when it ran than about what it costs; every config here
    runs the same steps and evals (all_linear adds ~10-20% train time, ignored), so the default
    charges each one the median."""
    from statistics import median as med

    return {k: med(r["phase_seconds"].get(k, 0.0) for r in grid.values()) for k in ("baseline", "train", "eval")}


def simulate(strategy: str, seed: int, space: dict, grid: dict, target: float, max_trials: int,
             norm: dict | None) -> dict:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_grid = len(grid)
    if strategy == "grid":
        sampler = optuna.samplers.GridSampler(space, seed=seed)
    elif strategy == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:  # 4 random startup trials: the default 10 would be most of a 16-point space
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, n_grid // 4))
    steps = next(iter(grid.values()))["steps"]
    # no pruning decision before a quarter of the steps: at the first eval every config still sits
    # at chance, and pruning there killed the grid's best configuration (see BENCHMARKS.md)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=steps // 4 + 1 if strategy == "tpe+pruning"
                                          else 0) if strategy.startswith("tpe+pruning")
              else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    spent, pruned = 0.0, 0
    for n in range(1, max_trials + 1):
        trial = study.ask()
        params = {k: trial.suggest_categorical(k, v) for k, v in space.items()}
        rec = grid[key(params)]
        stop = None
        for e in rec["evals"][:-1]:  # intermediate evals; the last one is the final eval
            trial.report(e["accuracy"], e["step"])
            if trial.should_prune():
                stop = e["step"]
                break
        spent += charge(rec, stop, norm)
        if stop is not None:
            pruned += 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        try:
            study.tell(trial, rec["accuracy"])
        except RuntimeError:  # GridSampler calls study.stop() once every point is done: fine here
            pass
        if rec["accuracy"] >= target:
            return {"reached": True, "trials": n, "pruned": pruned, "device_seconds": spent}
        if strategy == "grid" and n == n_grid:
            break
    return {"reached": False, "trials": n, "pruned": pruned, "device_seconds": spent}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, 4-point grid (smoke test)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.01, help="accuracy below the grid best still counted")
    ap.add_argument("--cost", choices=["median", "measured"], default="median",
                    help="charge each config the grid-median phase seconds (default) or its own measured ones")
    ap.add_argument("--steps", type=int, default=None, help="train.max_steps of each grid point (default: config)")
    args = ap.parse_args(argv)
    space = QUICK_SPACE if args.quick else SPACE
    base = [*QUICK, "train.max_steps=6", "train.eval_every=2"] if args.quick else list(STEPS)
    if args.steps:
        base.append(f"train.max_steps={args.steps}")
    cache_path = RESULTS / f"search_grid{'.quick' if args.quick else ''}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    grid = run_grid(space, base, cache_path)
    best_key = max(grid, key=lambda k: grid[k]["accuracy"])
    best = grid[best_key]["accuracy"]
    target = best - args.tolerance
    norm = None if args.cost == "measured" else normalized(grid)
    total = sum(charge(r, None, norm) for r in grid.values())
    rows, runs = [], []
    for strategy in STRATEGIES:
        res = [simulate(strategy, s, space, grid, target, 3 * len(grid), norm) for s in range(args.seeds)]
        runs += [{"strategy": strategy, "seed": s, **r} for s, r in enumerate(res)]
        med = median([r["device_seconds"] for r in res])
        rows.append({"strategy": strategy, "reached": f"{sum(r['reached'] for r in res)}/{len(res)}",
                     "median trials": median([r["trials"] for r in res]),
                     "median pruned": median([r["pruned"] for r in res]),
                     "median device-s": med, "max device-s": max(r["device_seconds"] for r in res),
                     "share of grid": med / total})
    cols = ["strategy", "reached", "median trials", "median pruned", "median device-s", "max device-s",
            "share of grid"]
    print(f"grid: {len(grid)} points, {total:.0f} device-s in all ({args.cost} cost per config); best {best:.4f} ({best_key}); "
          f"target accuracy >= {target:.4f}")
    print(table(rows, cols))
    path = save("search", {"space": space, "base_overrides": base, "grid_device_seconds": total, "cost": args.cost,
                           "grid_best": best, "grid_best_config": best_key, "target": target, "rows": rows,
                           "runs": runs, "grid": grid}, args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
