"""Does the schedule chosen under early stopping cost accuracy? (issue 23, item 3)

    python -m bench.es_schedule run        # the trials (resumable: each study is a grid study through the CLI)
    python -m bench.es_schedule            # analyse what is there: bench/results/es_schedule.json + a table

The embedded default (MiniLM + rt_polarity, NF4, r=8 attn_qv, the default 3,000/1,000 split) at lr 2e-3
with the committed sweeps' budget: a 600-step cap, evals every 40 steps on 400 of the test items, early
stopping patience 4 / min_delta 0.01. Three arms per seed, all in this one run (the box is noisy, so side
by side):
- `es_linear`: early stopping with the default schedule (null = linear planned over the cap: the choice);
- `es_constant`: early stopping with `constant_with_warmup` (the alternative argued for in BENCHMARKS.md);
- `full_linear`: no early stopping, linear over all 600 steps (what the trial would have reached).
Paired by seed (same data order, same initialisation, same test items): es_linear - es_constant and
es_linear - full_linear in points of final accuracy (the final eval on all 1,000 test items), with a
paired t interval, and the steps and FLOPs the early-stopped arms saved. One torch process, 1 thread, nice 10.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from bench.common import RESULTS, table
from bench.curve import run_study

OUT = Path("runs/bench_es")
SEEDS = (0, 1, 2)
BASE = ["train.lr=2e-3", "train.max_steps=600", "train.eval_every=40", "eval.intermediate_examples=400",
        "hardware.threads=1", "tracking.mode=disabled", "train.save_adapter=none"]
ES = ["train.early_stopping.patience=4", "train.early_stopping.min_delta=0.01"]
STUDIES = {}
for _s in SEEDS:  # seed-major, so a cut-short run already holds complete pairs
    STUDIES[f"es_s{_s}"] = [*BASE, *ES, "train.lr_scheduler_type=linear,constant_with_warmup", f"seed={_s}"]
    STUDIES[f"full_s{_s}"] = [*BASE, "train.lr_scheduler_type=choice(linear)", f"seed={_s}"]


def run() -> None:
    for name, overrides in STUDIES.items():
        print(f"{name} ...", flush=True)
        run_study(name, overrides, OUT)


def arms(out: Path = OUT) -> dict[tuple[str, int], dict]:
    """(arm, seed) -> the complete trial's record fields this benchmark reads."""
    from harness.record import read_record

    found = {}
    for path in sorted(out.glob("*/trials/*/result.json")):
        rec = read_record(path)
        if rec is None or rec.status != "complete":
            continue
        d = {**(rec.model_extra or {}), **{k: v for k, v in rec if v is not None}}
        t = d["config"]["train"]
        stopping = (t.get("early_stopping") or {}).get("patience", 0) > 0
        arm = ("es_" if stopping else "full_") + ("linear" if t["lr_scheduler_type"] == "linear" else "constant")
        found[(arm, d["config"]["seed"])] = {
            "accuracy": rec.accuracy, "steps": rec.steps, "best_step": d.get("best_step"),
            "flops": d.get("flops"), "flops_saved": d.get("flops_saved"), "wall_seconds": rec.wall_seconds}
    return found


def paired(found: dict, a: str, b: str) -> dict:
    """a - b in points over the seeds both arms have, with the paired t test and its 95% interval."""
    diffs = [100 * (found[(a, s)]["accuracy"] - found[(b, s)]["accuracy"])
             for s in SEEDS if (a, s) in found and (b, s) in found]
    out = {"comparison": f"{a} - {b}", "n_seeds": len(diffs), "diffs_points": diffs,
           "mean_points": sum(diffs) / len(diffs) if diffs else None}
    if len(diffs) >= 2 and len(set(diffs)) > 1:
        from scipy import stats

        t = stats.ttest_1samp(diffs, 0.0)
        ci = t.confidence_interval(0.95)
        out.update(p_paired_t=float(t.pvalue), ci95_points=[float(ci.low), float(ci.high)])
    return out


def analyse(out: Path = OUT) -> dict:
    found = arms(out)
    rows = [{"arm": a, "seed": s, **v} for (a, s), v in sorted(found.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
    return {"benchmark": "es_schedule", "base": BASE, "early_stopping": ES, "records": str(out), "rows": rows,
            "comparisons": [paired(found, "es_linear", "es_constant"), paired(found, "es_linear", "full_linear"),
                            paired(found, "es_constant", "full_linear")]}


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"]:
        run()
    from bench.common import machine

    res = {**analyse(), "machine": machine()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "es_schedule.json").write_text(json.dumps(res, indent=2) + "\n")
    print(table(res["rows"], list(res["rows"][0])) if res["rows"] else "no finished trial yet")
    for c in res["comparisons"]:
        print(c)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
