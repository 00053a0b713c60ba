"""Racing on a cached grid x seeds of real trials: how often racing (sweep.racing, and with
`stop_when: decided`) reaches the full grid's verdicts, and its share of the full grid's device-seconds,
replayed over orderings of the seeds.

    python -m bench.racing --grid-only   # train the 12 x 5 grid once (resumable, seed-major; ~1 core)
    python -m bench.racing               # train what is missing, then replay every ordering (seconds)
    python -m bench.racing --seeds 4     # replay on the first 4 seeds (a grid cut short)
    python -m bench.racing --quick       # tiny model, 4 x 3 grid (smoke test)

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
(harness/study/verdict.py at alpha = 0.05, Holm over the comparisons, one look: what the analysis's
paired-t path computes on the final data), each on the data it holds. An ordering is a permutation of
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
KEEP = ("status", "reason", "accuracy", "device_seconds", "wall_seconds")
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model, 4 x 3 grid (smoke test)")
    ap.add_argument("--grid-only", action="store_true", help="train the missing cells, no replay")
    ap.add_argument("--stop-at", type=float, default=None, help="unix time: start no cell after it")
    ap.add_argument("--seeds", type=int, default=None, help="replay on the first N seeds only")
    args = ap.parse_args(argv)
    space, seeds = (QUICK_SPACE, QUICK_SEEDS) if args.quick else (SPACE, SEEDS)
    base = QUICK_STEPS if args.quick else STEPS
    cache_path = RESULTS / f"racing_grid_40{'.quick' if args.quick else ''}.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    cache = run_grid(space, seeds, base, cache_path, args.stop_at)
    if args.grid_only:
        return 0
    from bench.racing_replay import replay_main  # noqa: PLC0415
    return replay_main(space, seeds[: args.seeds] if args.seeds else seeds, base, cache, args.quick)


if __name__ == "__main__":
    raise SystemExit(main())
