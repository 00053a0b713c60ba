"""Racing on a cached grid x seeds of real trials: how often racing (sweep.racing, and with
`stop_when: decided`) reaches the full grid's verdicts, and its share of the full grid's device-seconds,
replayed over orderings of the seeds.

    python -m bench.racing --grid-only   # train the 12 x 5 grid once (resumable, seed-major; ~1 core)
    python -m bench.racing               # train what is missing, then replay every ordering (seconds)
    python -m bench.racing --replay-only --seeds 4   # replay the first 4 seeds cached (a grid cut short)
    python -m bench.racing --quick       # tiny model, 4 x 3 grid (smoke test)
    python -m bench.racing --study runs/lr_rank/study.db --name lr_rank   # replay a finished grid study

--study reads the grid from a finished study's storage instead of training one: a findings study run
without early stops of its own (e.g. lr_rank, `python -m analysis.findings unpack lr_rank`) is a full
grid x seeds of converged trials; its seeds are those every configuration completed (a configuration the
study's own race stopped limits them), each cell charged the trial's recorded device-seconds.

Grid: train.lr {1e-3, 3e-3, 1e-2} x lora.r {4, 16} (alpha = 2r) x lora.targets {attn_qv, all_linear} on
the embedded default (MiniLM + rt_polarity, NF4), 40 steps x 16, the final eval on 200 held-out
examples, 1 torch thread, W&B off; seeds 0-4. Chosen to fit ~30 min of one core: a 40-step trial
takes ~25-35 s of CPU here (timed once before choosing; the 80-step default of bench.search takes
70-115 device-s). Every (point, seed) is trained once in this process and kept in
bench/results/racing_grid_40.json after each, seed-major (every point's seed 0, then seed 1, ...), so a
cut-short grid is a complete grid with fewer seeds.

The replay runs harness/study/racing.py's own race() on the cached values, round by round, exactly as
the driver's rounds go with a barrier between them (what parallel=1 does): a configuration's seed is
charged its cached device-seconds when the race gives it that seed. The comparisons are the sweep's
with `tune: train.lr`: each arm (r x targets) at its own best lr, arms differing in one axis.
"The full grid's verdicts" and the raced study's verdicts are the verdicts a finished study gets
(harness/study/verdict.py, Holm over the comparisons: what the analysis's paired-t path computes on the
final data), each on the data it holds, with collapsed / diverged cells set aside where the source
recorded them (as the analysis does). The full grid is one look, at alpha = 0.05; a raced study is tested at
the level the analysis would use (analysis/race.py level): 0.05 without `stop_when`, the stop look's level
where `stop_when: decided` stopped it, what the looks left (0.045) where it ran to its last seed. An ordering is a permutation of
the seeds (which one is round 1, 2, ...); every permutation is replayed.
Target (issue 25): the same verdicts in >= 9 of 10 orderings with <= 50% of the device-seconds.
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

from bench.common import QUICK, RESULTS, compose, save, table

SPACE = {"train.lr": [1e-3, 3e-3, 1e-2], "lora.r": [4], "lora.targets": ["attn_qv", "all_linear"]}
SEEDS = [0, 1, 2, 3, 4]
STEPS = ["train.max_steps=40", "train.eval_every=0", "eval.max_examples=200", "eval.baseline=false",
         "hardware.threads=1", "tracking.mode=disabled"]
QUICK_SPACE = {"train.lr": [1e-3, 3e-2], "lora.r": [4, 8]}
QUICK_SEEDS = [0, 1, 2]
QUICK_STEPS = [*QUICK, "train.max_steps=6", "train.eval_every=0", "eval.baseline=false", "tracking.mode=disabled"]
KEEP = ("status", "reason", "accuracy", "device_seconds", "wall_seconds", "degenerate")
WARM: dict = {}  # the loaded base model across cells, as a warm trial worker keeps it (harness/trial/worker.py)


def points(space: dict) -> list[dict]:
    out = [{}]
    for axis, values in space.items():
        out = [{**p, axis: v} for p in out for v in values]
    return out


def key(params: dict) -> str:
    return " ".join(f"{k}={params[k]}" for k in sorted(params))


def overrides_of(params: dict) -> list[str]:
    out = [f"{k}={v}" for k, v in params.items()]
    if "lora.r" in params:
        out.append(f"lora.alpha={2 * params['lora.r']}")  # alpha = 2r, as in the default sweeps
    return out


def train_cell(params: dict, seed: int, base: list[str], out_dir: str, number: int) -> dict:
    """One (point, seed) trained in this process; a diverged/failed trial is cached with its reason."""
    from harness.record import read_record
    from harness.train import TrialFailed, run, run_dir_of

    cfg = compose([*base, *overrides_of(params), f"seed={seed}", f"out_dir={out_dir}", "study=bench_racing",
                   f"trial={number}"])
    t0 = time.perf_counter()
    try:
        rec = run(cfg, cache=WARM)
    except TrialFailed:  # the record was written before the raise: keep its seconds
        rec = read_record(run_dir_of(cfg) / "result.json").model_dump(exclude_unset=True)
    return {"params": params, "seed": seed, **{f: rec.get(f) for f in KEEP},
            "process_seconds": time.perf_counter() - t0}


def run_grid(space: dict, seeds: list[int], base: list[str], cache_path: Path, deadline: float | None = None) -> dict:
    """Train every (point, seed) not yet cached, seed-major; write the cache after each."""
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    todo = [(p, s) for s in seeds for p in points(space) if key({**p, "seed": s}) not in cache]
    out_dir = tempfile.mkdtemp(prefix="bench-racing-")
    total = len(points(space)) * len(seeds)
    for i, (params, seed) in enumerate(todo):
        if deadline and time.time() > deadline:
            print(f"deadline reached: {len(todo) - i} cell(s) left; rerun to resume", flush=True)
            break
        entry = train_cell(params, seed, base, out_dir, i)
        cache[key({**params, "seed": seed})] = entry
        cache_path.write_text(json.dumps(cache, indent=1))  # after every cell: an interrupted grid resumes
        acc = "failed" if entry["accuracy"] is None else f"accuracy {entry['accuracy']:.4f}"
        print(f"[grid {len(cache)}/{total}] {key(params)} seed={seed}: {acc}, {entry['device_seconds'] or 0:.1f} "
              f"device-s, {entry['process_seconds']:.0f} s", flush=True)
    return cache


# ---------------------------------------------------------------------------- the replay


def grid_values(space: dict, seeds: list[int], cache: dict) -> tuple[dict, dict, dict, dict]:
    """(configs, values, seconds, degenerate): config key -> params; -> {seed: accuracy} (failed cells left
    out); -> {seed: device-seconds}; -> {seed: "collapsed" / "diverged"} where the cell recorded it (a cache
    written before 2026-12-07 has no such field: its collapsed cells count as plain values)."""
    from harness.study import verdict as vd

    configs, values, seconds, bad = {}, {}, {}, {}
    for p in points(space):
        k = vd.config_key(p)
        configs[k], values[k], seconds[k], bad[k] = p, {}, {}, {}
        for s in seeds:
            e = cache[key({**p, "seed": s})]
            seconds[k][s] = float(e["device_seconds"] or 0.0)
            if e["accuracy"] is not None:
                values[k][s] = float(e["accuracy"])
            if e.get("degenerate"):
                bad[k][s] = e["degenerate"]
    return configs, values, seconds, bad


def replay_race(configs: dict, values: dict, seconds: dict, order: list[int], rules, bad: dict | None = None) -> dict:
    """Racing round by round on cached cells, as the driver runs it with parallel=1: round k gives
    every configuration still in the race its seed order[k-1]; harness/study/racing.py decides (its
    unstable rule too: a cell carries its degenerate kind, as the driver's cells_of reads it)."""
    from harness.study import racing, stopping

    cells = {k: {s: racing.Cell(racing.PENDING) for s in order} for k in configs}
    spent, trials, st = 0.0, 0, None
    for s in order:
        stopped = st.stopped if st else {}
        for k in configs:
            if k in stopped:
                continue
            v = values[k].get(s)
            cells[k][s] = racing.Cell(racing.COMPLETE, v, (bad or {}).get(k, {}).get(s)) if v is not None else \
                racing.Cell(racing.NOVALUE)
            spent += seconds[k][s]
            trials += 1
        st = racing.race(configs, cells, rules)
        if st.decided is not None:
            break
    ran = {k: {s: c.value for s, c in cells[k].items() if c.state == racing.COMPLETE} for k in configs}
    return {"values": ran, "seconds": spent, "trials": trials, "stopped": {k: v.look for k, v in st.stopped.items()},
            "unstable": sum(1 for v in st.stopped.values() if v.unstable),
            "decided_at": st.decided["look"] if st.decided else None,
            "alpha": stopping.tested_at(rules.stop_when, st.decided)}  # what analysis/race.py tests it at


def kept(values: dict, bad: dict) -> dict:
    """The values the analysis compares: collapsed and diverged cells set aside (analysis/__main__.py)."""
    return {k: {s: v for s, v in vs.items() if s not in bad.get(k, {})} for k, vs in values.items()}


def final_verdicts(configs: dict, values: dict, axes: list[str], tune: str | None, margin: float,
                   alpha: float | None = None) -> dict:
    """What a finished study's data says (the analysis's paired-t path: Holm at alpha, 0.05 for a study
    with one look, over the comparisons): (arm a, arm b, axis) -> (verdict, the configurations compared)."""
    from harness.study import verdict as vd

    pairs, _ = vd.comparisons(configs, values, axes, tune, "maximize")
    out, shown = {}, vd.shown(configs)
    for v in vd.verdicts(values, pairs, configs, margin, vd.ALPHA if alpha is None else alpha, "maximize", tune):
        arm = lambda c: vd.label(configs[c], [a for a in shown if a != tune])  # noqa: E731
        out[f"{arm(v.b)} vs {arm(v.a)}"] = {"verdict": v.word, "b": vd.label(configs[v.b], shown),
                                            "a": vd.label(configs[v.a], shown),
                                            "diff": v.diff, "n": v.n, "p_diff_holm": v.p_diff_holm,
                                            "p_eq_holm": v.p_eq_holm}
    return out


VARIANTS = {  # name -> (racing min_seeds or None, confidence, stop_when, tune, futility)
    "racing": (2, 0.95, "budget", None, 0.0),
    "racing + stop_when=decided": (2, 0.95, "decided", None, 0.0),
    "stop_when=decided alone": (None, 0.95, "decided", None, 0.0),
    "racing, tune=train.lr": (2, 0.95, "budget", "train.lr", 0.0),
    "racing + decided, tune=train.lr": (2, 0.95, "decided", "train.lr", 0.0),
    "racing at confidence 0.8, tune=train.lr": (2, 0.8, "budget", "train.lr", 0.0),
    # sweep.futility (default 0.1): stop_when also gives up comparisons a verdict is unlikely to reach
    "decided, futility 0.1": (None, 0.95, "decided", None, 0.1),
    "racing + decided, futility 0.1": (2, 0.95, "decided", None, 0.1),
    "decided, futility 0.1, tune=train.lr": (None, 0.95, "decided", "train.lr", 0.1),
    "racing + decided, futility 0.1, tune=train.lr": (2, 0.95, "decided", "train.lr", 0.1),
}


def study_grid(storage: str, name: str) -> tuple[dict, list[int], dict]:
    """(space, seeds, cache) from a finished grid study: every searched trial's configuration and seed
    (user attr `point`), its value (a COMPLETE trial's; the rest cached as failed) and device-seconds.
    Seeds: those every configuration holds, so the grid is complete; reference arms are left out."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    cache: dict = {}
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get("reference") or "point" not in t.user_attrs or t.state not in (
                TrialState.COMPLETE, TrialState.FAIL):
            continue  # a trial the study's own race skipped (PRUNED) or never ran is not a cell
        params = json.loads(t.user_attrs["point"])
        seed = params.pop("seed")
        ok = t.state == TrialState.COMPLETE and t.values
        cache[key({**params, "seed": seed})] = {
            "params": params, "seed": seed, "status": "complete" if ok else "failed",
            "accuracy": float(t.values[0]) if ok else None,
            "device_seconds": t.user_attrs.get("device_seconds"), "trial": t.number,
            "degenerate": t.user_attrs.get("degenerate")}
    space: dict = {}
    for e in cache.values():
        for axis, v in e["params"].items():
            space.setdefault(axis, set()).add(v)
    space = {a: sorted(vs) for a, vs in space.items()}
    seeds = sorted({e["seed"] for e in cache.values()})
    seeds = [s for s in seeds if all(key({**p, "seed": s}) in cache for p in points(space))]
    return space, seeds, cache


def replay_main(space: dict, seeds: list[int], base: list[str], cache: dict, quick: bool, margin: float = 0.01,
                out: str = "racing") -> int:
    import random

    from harness.study import racing

    missing = [key({**p, "seed": s}) for s in seeds for p in points(space) if key({**p, "seed": s}) not in cache]
    if missing:
        raise SystemExit(f"{len(missing)} cells are not cached yet (first: {missing[0]}); run --grid-only, or "
                         f"replay fewer seeds with --seeds N")
    configs, values, seconds, bad = grid_values(space, seeds, cache)
    axes = list(space)
    full_seconds = sum(sum(v.values()) for v in seconds.values())
    orders = [list(o) for o in itertools.permutations(seeds)]
    ten = random.Random(0).sample(range(len(orders)), min(10, len(orders)))
    rows, detail = [], {}
    n_cells = len(configs) * len(seeds)
    for name, (min_seeds, confidence, stop_when, tune, futility) in VARIANTS.items():
        full = final_verdicts(configs, kept(values, bad), axes, tune, margin)
        runs = []
        for order in orders:
            rules = racing.Rules(order, "maximize", axes, min_seeds, confidence, stop_when, margin, tune, futility)
            r = replay_race(configs, values, seconds, order, rules, bad)
            got = final_verdicts(configs, kept(r["values"], bad), axes, tune, margin, r["alpha"])
            same = all(got.get(c, {}).get("verdict") == v["verdict"] for c, v in full.items())
            runs.append({"order": order, "same": same, "share": r["seconds"] / full_seconds, "alpha": r["alpha"],
                         "trial_share": r["trials"] / n_cells,
                         "stopped": len(r["stopped"]), "stopped_unstable": r["unstable"], "decided_at": r["decided_at"],
                         "differs": {c: [full[c]["verdict"], got.get(c, {}).get("verdict")] for c in full
                                     if got.get(c, {}).get("verdict") != full[c]["verdict"]}})
        shares = sorted(x["share"] for x in runs)
        rows.append({"variant": name, "orderings": len(runs), "same verdicts": sum(x["same"] for x in runs),
                     "same in the 10": sum(runs[i]["same"] for i in ten), "median share": shares[len(shares) // 2],
                     "max share": shares[-1], "share in the 10 (max)": max(runs[i]["share"] for i in ten),
                     "median trial share": sorted(x["trial_share"] for x in runs)[len(runs) // 2],
                     "met": sum(runs[i]["same"] for i in ten) >= 9 and max(runs[i]["share"] for i in ten) <= 0.5})
        detail[name] = {"full_grid_verdicts": full, "runs": runs}
    from harness.study import verdict as vd

    landscape = [{"configuration": vd.label(configs[k], vd.shown(configs)),
                  "mean accuracy": sum(values[k].values()) / len(values[k]) if values[k] else None,
                  "seeds": " ".join(f"{values[k].get(s, float('nan')):.3f}" for s in seeds),
                  "device-s": sum(seconds[k].values())} for k in configs]
    print(table(landscape, ["configuration", "mean accuracy", "seeds", "device-s"]))
    for name in ("racing", "racing, tune=train.lr"):
        print(f"full grid verdicts ({name.split(', ')[-1] if 'tune' in name else 'one-axis pairs'}):")
        for c, v in detail[name]["full_grid_verdicts"].items():
            print(f"  {c}: {v['verdict']} ({100 * v['diff']:+.2f} points, {v['n']} seeds, Holm p {v['p_diff_holm']:.3g})")
    cols = ["variant", "orderings", "same verdicts", "same in the 10", "median share", "max share",
            "share in the 10 (max)", "median trial share", "met"]
    print(table(rows, cols))
    path = save(out, {"space": space, "seeds": seeds, "base_overrides": base, "margin": margin,
                           "full_grid_device_seconds": full_seconds, "ten_orderings": [orders[i] for i in ten],
                           "columns": cols, "rows": rows, "landscape": landscape, "variants": detail}, quick)
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, 4 x 3 grid (smoke test)")
    ap.add_argument("--grid-only", action="store_true", help="train the missing cells, no replay")
    ap.add_argument("--stop-at", type=float, default=None, help="unix time: start no cell after it")
    ap.add_argument("--seeds", type=int, default=None, help="replay on the first N seeds only")
    ap.add_argument("--replay-only", action="store_true", help="train nothing: replay the cached cells")
    ap.add_argument("--study", default=None, help="a finished grid study's storage (a path or URL) to replay")
    ap.add_argument("--name", default=None, help="with --study: the study's name (results: racing_NAME.json)")
    args = ap.parse_args(argv)
    if args.study:
        if not args.name:
            raise SystemExit("--study needs --name (the study's name in that storage)")
        url = args.study if "://" in args.study else f"sqlite:///{args.study}"
        space, seeds, cache = study_grid(url, args.name)
        if len(seeds) < 3:
            raise SystemExit(f"{args.study}: only {len(seeds)} seed(s) complete for every configuration; need 3")
        print(f"{args.name}: {len(points(space))} configurations x seeds {seeds} from {args.study}")
        return replay_main(space, seeds[: args.seeds] if args.seeds else seeds, [f"study={args.study}"], cache,
                           False, out=f"racing_{args.name}")
    space, seeds = (QUICK_SPACE, QUICK_SEEDS) if args.quick else (SPACE, SEEDS)
    base = QUICK_STEPS if args.quick else STEPS
    cache_path = RESULTS / f"racing_grid_40{'.quick' if args.quick else ''}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache = json.loads(cache_path.read_text()) if args.replay_only and cache_path.is_file() else \
        {} if args.replay_only else run_grid(space, seeds, base, cache_path, args.stop_at)
    if args.grid_only:
        return 0
    return replay_main(space, seeds[: args.seeds] if args.seeds else seeds, base, cache, args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
