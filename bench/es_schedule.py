"""Does the schedule chosen under early stopping cost accuracy? (issue 23, item 3)

    python -m bench.es_schedule run        # the early-stopped trials (resumable: a finished seed is skipped)
    python -m bench.es_schedule            # compare with the linear-schedule curves of bench.curve: JSON + table

The early-stopping arm: the embedded default (MiniLM + rt_polarity, NF4, r=8 attn_qv) at lr 2e-3,
train.early_stopping.patience=3 (evals every 40 steps on the 400 test items), max_steps 600 as a cap,
so train.lr_scheduler_type resolves to constant_with_warmup. The reference arm: bench.curve's studies
curve_cls_s<seed> (the same lr, seeds, eval settings and test items; linear decay over all 600 steps),
read from their result.json. Paired by seed: the difference of final accuracies, and the steps the
early-stopped trial ran. One torch process at a time, 1 thread, nice 10: the box is shared.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import RESULTS, table

OUT = Path("runs/bench_es")
CURVE = Path(os.environ.get("BENCH_CURVE_RUNS", "runs/bench_curve"))
SEEDS = (0, 1, 2)
ARM = ["train.lr=2e-3", "train.max_steps=600", "train.eval_every=40", "eval.intermediate_examples=400",
       "train.early_stopping.patience=3", "hardware.threads=1", "tracking.mode=disabled", "train.save_adapter=none"]


def _record(path: Path) -> dict | None:
    from harness.record import read_record

    rec = read_record(path)
    return rec.model_dump() if rec is not None else None


def run() -> None:
    for s in SEEDS:
        res = OUT / "es_schedule" / "trials" / str(s) / "result.json"
        if res.is_file():
            continue
        cmd = [sys.executable, "-m", "harness", *ARM, f"seed={s}", f"trial={s}", "study=es_schedule", f"out_dir={OUT}"]
        print(" ".join(cmd), flush=True)
        subprocess.run(["nice", "-n", "10", *cmd], check=False)


def linear(seed: int) -> dict | None:
    """bench.curve's lr 2e-3 trial of this seed (linear schedule over 600 steps), if it has run."""
    for res in sorted((CURVE / f"curve_cls_s{seed}" / "trials").glob("*/result.json")):
        rec = _record(res)
        if rec and rec["status"] == "complete" and rec["config"]["train"]["lr"] == 2e-3:
            return rec
    return None


def analyse() -> dict:
    rows = []
    for s in SEEDS:
        es = _record(OUT / "es_schedule" / "trials" / str(s) / "result.json")
        lin = linear(s)
        if not es or es["status"] != "complete":
            continue
        rows.append({"seed": s, "es_schedule": es["config"]["train"]["lr_scheduler_type"], "es_accuracy": es["accuracy"],
                     "es_steps": es["steps"], "es_best_step": es["best_step"], "es_flops_saved": es["flops_saved"],
                     "linear_accuracy": lin["accuracy"] if lin else None, "linear_steps": lin["steps"] if lin else None,
                     "diff_points": 100 * (es["accuracy"] - lin["accuracy"]) if lin else None})
    diffs = [r["diff_points"] for r in rows if r["diff_points"] is not None]
    out = {"arm": ARM, "reference": f"{CURVE}/curve_cls_s<seed> lr 2e-3 (bench.curve)", "rows": rows,
           "mean_diff_points": sum(diffs) / len(diffs) if diffs else None, "n_paired": len(diffs)}
    if len(diffs) >= 2:
        from scipy import stats

        t = stats.ttest_1samp(diffs, 0.0)
        ci = t.confidence_interval(0.95)
        out.update(p_paired_t=float(t.pvalue), ci95_points=[float(ci.low), float(ci.high)])
    return out


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"]:
        run()
    res = analyse()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "es_schedule.json").write_text(json.dumps(res, indent=2) + "\n")
    print(table(res["rows"], list(res["rows"][0])) if res["rows"] else "no finished early-stopped trial yet")
    print({k: v for k, v in res.items() if k not in ("rows", "arm")})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
