"""Helpers shared by the benchmarks: config composition, interleaved repeats, tables, results."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# Quiet local runs: no W&B network, no progress bars (the benchmarks time the work, not the UI).
QUIET_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_CONSOLE": "off",
             "WANDB__DISABLE_STATS": "true", "HARNESS_QUIET": "1", "TOKENIZERS_PARALLELISM": "false"}
for _k, _v in QUIET_ENV.items():
    os.environ.setdefault(_k, _v)

QUICK = ["model=tiny_bert", "data=tiny", "hardware.threads=1"]
# sweeps/lora_rank.yaml runs 2 seeds on 2 slots with early stopping for its users; the benchmarks built on it
# measure the harness, so they keep the one-seed, one-slot, no-early-stopping study they were designed on.
ONE_SLOT = ["sweep.seeds=[0]", "sweep.parallel=1", "train.early_stopping.patience=0"]

# A benchmark's child process prints its result as one line MARK + JSON (stdout also carries the trial's own output).
MARK = "BENCH_RESULT "


def report(result: dict) -> None:
    """In the child: hand the result to the parent."""
    print(MARK + json.dumps(result), flush=True)


def run_child(module: str, args: list[str]) -> tuple[dict | None, str, float]:
    """`python -m <module> <args>` in a fresh process: (its reported result, or None when it failed or
    reported nothing; an error line with its stderr's tail; its wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], check=False, capture_output=True,
                          text=True)  # the exit code is read below
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode or not lines:
        return None, f"exit {proc.returncode}:\n{proc.stderr[-3000:]}", wall
    return json.loads(lines[-1][len(MARK):]), "", wall


def compose(overrides: list[str]):
    from harness.config.schema import complete, load

    return complete(load(list(overrides)))


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "cuda": torch.cuda.is_available(),
            "load_avg_1m": os.getloadavg()[0], "time": time.strftime("%Y-%m-%dT%H:%M:%S")}


def table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda xs: "| " + " | ".join(x.ljust(w) for x, w in zip(xs, widths)) + " |"
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def save(name: str, payload: dict, quick: bool) -> Path:
    """bench/results/<name>.json (quick runs go to <name>.quick.json so they never replace real numbers)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}{'.quick' if quick else ''}.json"
    path.write_text(json.dumps({"benchmark": name, "quick": quick, "machine": machine(), **payload}, indent=1,
                               default=str))
    return path
