"""Thread defaults: 2 concurrent trials (sweep.parallel=2) with the default hardware.threads=null vs
explicit hardware.threads=1 vs the old collapse setting (2 threads per process, 2 processes).

    python -m bench.threads              # MiniLM, lora_rank x 2 ranks, 20 steps (~10-13 min on 2 shared cores)
    python -m bench.threads --variants default,threads=1,threads=2+spin,threads=2   # all four
    python -m bench.threads --quick      # tiny model (smoke test)

Variants (same study definition, fresh storage each; repeats alternate A B C A B C ...; the first three
run by default, threads=2 on request):
  default        hardware.threads unset: the driver resolves it to usable cores // concurrent trials
                 (launch.cpu_threads) and sets OMP_WAIT_POLICY=PASSIVE for trials that share cores
  threads=1      hardware.threads=1 given explicitly (the setting the other benchmarks pin)
  threads=2      2 threads per trial, 2 trials: processes x threads > cores; the driver still sets
                 OMP_WAIT_POLICY=PASSIVE
  threads=2+spin threads=2 as before the change: GOMP_SPINCOUNT=300000 is libgomp's spin count when
                 OMP_WAIT_POLICY is unset (libgomp env.c: "3 msec blocking when OMP_WAIT_POLICY is not
                 specified"), and an explicit GOMP_SPINCOUNT overrides the PASSIVE the driver sets
The driver's own environment carries no OMP_* variable (any set in this shell is dropped), so the
harness decides. A variant whose sweep runs past --cap seconds is killed and reported as "> cap".
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
from pathlib import Path

from bench.common import ONE_SLOT, QUICK, median, save, table
from bench.sweeprun import run_sweep

# W&B off: its init/finish is a fixed cost per trial that has nothing to do with threads
# a progress line every step (train.log_every=1): a variant killed at the cap still shows its step rate
BASE = ["sweep=lora_rank", *ONE_SLOT, "sweep.n_trials=2", "sweep.parallel=2", "train.max_steps=20", "train.eval_every=10",
        "eval.max_examples=200", "tracking.mode=disabled", "train.log_every=1"]
QUICK_BASE = [*[o for o in QUICK if not o.startswith("hardware.threads")], "sweep=lora_rank", *ONE_SLOT, "sweep.n_trials=2",
              "sweep.parallel=2", "train.max_steps=6", "train.eval_every=3", "tracking.mode=disabled"]
VARIANTS = {  # name -> (overrides, extra environment)
    "default": ([], {}),
    "threads=1": (["hardware.threads=1"], {}),
    "threads=2": (["hardware.threads=2"], {}),
    "threads=2+spin": (["hardware.threads=2"], {"GOMP_SPINCOUNT": "300000"}),
}


def clean_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "MKL_NUM"))}
    return {**env, **extra}


def measure(name: str, base: list[str], cap: float, rep: int) -> dict:
    overrides, extra = VARIANTS[name]
    out_dir = Path(tempfile.mkdtemp(prefix="bench-threads-"))
    out = run_sweep([*base, *overrides], out_dir, "bench_threads", env=clean_env(extra), timeout=cap)
    done = [t for t in out["trials"] if t["state"] == "COMPLETE"]
    per_step = [t["phase_seconds"]["train"] / t["steps"] for t in done if t.get("steps")]
    return {"variant": name, "repeat": rep, "timed_out": out["timed_out"], "wall_seconds": out["wall_seconds"],
            "study_dir": str(out_dir / "bench_threads"), "progress": progress_lines(out_dir / "bench_threads"),
            "trials_done": len(done), "threads": sorted({t["threads"] for t in done}),
            "train_s_per_step": median(per_step), "train_seconds": [t["phase_seconds"].get("train") for t in done],
            "eval_seconds": [t["phase_seconds"].get("eval") for t in done], "load_avg_1m": os.getloadavg()[0]}


def progress_lines(study_dir: Path) -> dict:
    """trial -> (last step logged, median step/s) from the `step k/n ... X step/s` lines: how far a
    killed variant got and how fast (each line's rate covers the steps since the previous line)."""
    out = {}
    for log in sorted(study_dir.glob("trials/*/log.txt")):
        hits = re.findall(r"step (\d+)/\d+ .*? ([\d.]+) step/s", log.read_text(errors="replace"))
        out[log.parent.name] = (int(hits[-1][0]), median([float(h[1]) for h in hits])) if hits else (0, None)
    return out


def summarize(runs: list[dict], names: list[str]) -> list[dict]:
    rows = []
    for name in names:
        rs = [r for r in runs if r["variant"] == name]
        walls = [r["wall_seconds"] for r in rs if not r["timed_out"]]
        capped = [r["wall_seconds"] for r in rs if r["timed_out"]]
        rows.append({"variant": name, "threads/trial": ",".join(str(t) for r in rs for t in r["threads"]) or "?",
                     "runs": len(rs), "timed out": len(capped),
                     "sweep wall s": f"{median(walls):.0f}" if walls and not capped else f"> {min(capped):.0f}",
                     "walls": " / ".join(f"{'>' if r['timed_out'] else ''}{r['wall_seconds']:.0f}" for r in rs),
                     "train s/step": median([r["train_s_per_step"] for r in rs]),
                     "steps logged": " / ".join(",".join(str(p[0]) for p in r["progress"].values()) or "0"
                                                for r in rs)})
    ref = next((r for r in rows if r["variant"] == "threads=1"), None)
    for r in rows:  # how much slower than explicit 1 thread (a lower bound when capped)
        if ref and not r["sweep wall s"].startswith(">") and not ref["sweep wall s"].startswith(">"):
            r["vs threads=1"] = float(r["sweep wall s"]) / float(ref["sweep wall s"])
        elif ref and not ref["sweep wall s"].startswith(">"):
            r["vs threads=1"] = "> " + f"{float(r['sweep wall s'][2:]) / float(ref['sweep wall s']):.1f}"
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny model (smoke test)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cap", type=float, default=150.0, help="seconds before a variant's sweep is killed")
    ap.add_argument("--name", default="threads", help="results file: bench/results/<name>.json")
    ap.add_argument("--variants", default="default,threads=1,threads=2+spin",
                    help=f"comma-separated, from {list(VARIANTS)}")
    args = ap.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    base = QUICK_BASE if args.quick else BASE
    runs = []
    for rep in range(args.repeats):
        for name in names:
            r = measure(name, base, args.cap, rep)
            runs.append(r)
            print(f"[{rep + 1}/{args.repeats}] {name}: {'> ' if r['timed_out'] else ''}{r['wall_seconds']:.0f} s, "
                  f"{r['trials_done']} trials, threads {r['threads']}, load {r['load_avg_1m']:.1f}", flush=True)
    rows = summarize(runs, names)
    cols = ["variant", "threads/trial", "runs", "timed out", "sweep wall s", "walls", "train s/step", "steps logged",
            "vs threads=1"]
    print(table(rows, cols))
    path = save(args.name, {"overrides": base, "cap_seconds": args.cap, "usable_cpus": len(os.sched_getaffinity(0)),
                            "variants": {k: VARIANTS[k] for k in names}, "columns": cols, "rows": rows, "runs": runs},
                args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
