"""Worker scaling: trials/hour of one study with 1 vs 2 trials at once (sweep.parallel).

    python -m bench.workers            # MiniLM, lora_rank x 2 seeds capped at 4 trials, 20 steps
    python -m bench.workers --quick    # tiny model (smoke test)

Both settings run the same study definition into fresh storage; runs alternate 1, 2, 1, 2 ...
(--repeats) so the box's load from other processes hits both. Every trial process gets
hardware.threads=1 in both settings: the 1-worker run could use 2 threads on an idle 2-core machine,
but on this shared box 2 threads per process ran ~8x slower (see BENCHMARKS.md), so 1 thread is the
better 1-worker baseline here. trials/hour = finished trials / sweep wall time x 3600.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import ONE_SLOT, QUICK, median, save, table
from bench.sweeprun import run_sweep

DEFAULT = ["sweep=lora_rank", *ONE_SLOT, "sweep.seeds=[0,1]", "sweep.n_trials=4", "hardware.threads=1",
           "train.max_steps=20", "train.eval_every=10", "eval.max_examples=200"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("overrides", nargs="*", help="extra sweep overrides")
    args = ap.parse_args(argv)
    base = ([*QUICK, "sweep=lora_rank", *ONE_SLOT, "sweep.seeds=[0,1]", "sweep.n_trials=4", "train.max_steps=6",
             "train.eval_every=3"] if args.quick else DEFAULT) + args.overrides
    runs = []
    for rep in range(args.repeats):
        for workers in (1, 2):
            out_dir = Path(tempfile.mkdtemp(prefix="bench-workers-"))
            out = run_sweep([*base, f"sweep.parallel={workers}"], out_dir, f"bench_workers_{workers}")
            done = [t for t in out["trials"] if t["state"] == "COMPLETE"]
            r = {"workers": workers, "repeat": rep, "study_dir": str(out_dir / f"bench_workers_{workers}"),
                 "trials": len(done), "wall_seconds": out["wall_seconds"],
                 "trials_per_hour": len(done) / out["wall_seconds"] * 3600,
                 "median_trial_process_seconds": median([t["process_seconds"] for t in done]),
                 "median_train_seconds": median([t["phase_seconds"].get("train") for t in done])}
            runs.append(r)
            print(f"[{rep + 1}/{args.repeats}] {workers} worker(s): {r['trials']} trials in {r['wall_seconds']:.0f} s "
                  f"= {r['trials_per_hour']:.1f} trials/h", flush=True)
    rows = []
    for w in (1, 2):
        rs = [r for r in runs if r["workers"] == w]
        rows.append({"workers": w, "runs": len(rs), "trials_per_hour": median([r["trials_per_hour"] for r in rs]),
                     "median trial process s": median([r["median_trial_process_seconds"] for r in rs]),
                     "median train s": median([r["median_train_seconds"] for r in rs])})
    speedup = rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"]
    rows[1]["speedup"], rows[0]["speedup"] = speedup, 1.0
    print(f"2 workers / 1 worker = {speedup:.2f}x trials/hour")
    print(table(rows, ["workers", "runs", "trials_per_hour", "speedup", "median trial process s", "median train s"]))
    path = save("workers", {"overrides": base, "speedup": speedup, "rows": rows, "runs": runs}, args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
