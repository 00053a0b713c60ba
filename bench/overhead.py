"""Harness overhead: the share of a sweep's wall time spent outside train and eval steps.

    python -m bench.overhead                       # runs a small default sweep (lora_rank, 3 trials)
    python -m bench.overhead --from DIR --study S  # analyse a finished study instead (no compute)
    python -m bench.overhead --quick               # tiny model (smoke test)
    python -m bench.overhead --tag cold20 sweep.workers=cold   # one side of a warm/cold comparison

Accounting, from the sweep's own records: the driver's wall time (measured around
`python -m harness sweep=...`), each trial process's time (Optuna datetime_start -> complete) and
result.json phase_seconds. The wall time splits into
  driver         sweep wall - sum of trial process times (imports, study creation, between trials)
  process start  trial process time - the trial's in-process wall (interpreter, imports, W&B init/finish)
  data, load, tokenize, baseline    result.json phases (load = model load + quantization + adapters)
  train, eval    the steps themselves (eval = intermediate + final)
  other          in-process wall - the phases (W&B logging, writing the record)
overhead = 1 - (train + eval) / sweep wall. The baseline eval counts as overhead: it does not train
or measure the adapters, and it is the same for every trial of a base + data + quant.
With sweep.parallel=K the sweep had K trial slots for its wall time: the parts and the overhead are
shares of K x wall ("driver" is then every slot-second no trial held).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.common import ONE_SLOT, QUICK, save, table
from bench.sweeprun import read_trials, run_sweep

DEFAULT = ["sweep=lora_rank", *ONE_SLOT, "hardware.threads=1", "train.max_steps=20", "train.eval_every=10",
           "eval.max_examples=200"]
PHASES = ["data", "load", "tokenize", "baseline", "train", "eval"]


def breakdown(sweep_wall: float, trials: list[dict]) -> dict:
    proc = sum(t["process_seconds"] for t in trials)
    inproc = sum(t["trial_wall_seconds"] or 0.0 for t in trials)
    parts = {"driver": sweep_wall - proc, "process start": proc - inproc}
    for ph in PHASES:
        parts[ph] = sum(t["phase_seconds"].get(ph, 0.0) for t in trials)
    parts["other"] = inproc - sum(parts[ph] for ph in PHASES)
    return parts


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--from", dest="src", default=None, help="a finished study's directory (out_dir/study)")
    ap.add_argument("--study", default=None)
    ap.add_argument("--wall", type=float, default=None, help="with --from: the sweep's measured wall seconds")
    ap.add_argument("--tag", default="", help="saved as bench/results/overhead_<tag>.json (side-by-side runs)")
    ap.add_argument("overrides", nargs="*", help="extra sweep overrides")
    args = ap.parse_args(argv)
    if args.src:
        trials = read_trials(Path(args.src), args.study or Path(args.src).name)
        wall = args.wall or (max(t["end"] for t in trials) - min(t["start"] for t in trials))
        overrides = None
    else:
        overrides = ([*QUICK, "sweep=lora_rank", *ONE_SLOT, "sweep.n_trials=2", "train.max_steps=6",
                      "train.eval_every=3"] if args.quick else DEFAULT) + args.overrides
        out = run_sweep(overrides, Path(tempfile.mkdtemp(prefix="bench-overhead-")), "bench_overhead")
        trials, wall = out["trials"], out["wall_seconds"]
    # K concurrent trials (sweep.parallel=K): the sweep had K slots for its whole wall time
    slots = max((t.get("parallel") or 1 for t in trials), default=1)  # from the trials' own config.yaml
    capacity = slots * wall
    parts = breakdown(capacity, trials)
    rows = [{"part": k, "seconds": v, "share of wall": v / capacity} for k, v in parts.items()]
    rows.append({"part": "sweep wall" + (f" x {slots} slots" if slots > 1 else ""), "seconds": capacity,
                 "share of wall": 1.0})
    overhead = 1 - (parts["train"] + parts["eval"]) / capacity
    print(f"{len(trials)} trials; overhead (outside train+eval steps) = {overhead:.1%} of the sweep's wall time"
          + (f" x {slots} slots" if slots > 1 else ""))
    print(table(rows, ["part", "seconds", "share of wall"]))
    path = save(f"overhead_{args.tag}" if args.tag else "overhead",
                {"overrides": overrides, "sweep_wall_seconds": wall, "slots": slots, "overhead_share": overhead,
                 "parts": parts, "trials": trials}, args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
