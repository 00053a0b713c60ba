"""The trial record (trials/<n>/result.json) as a type, and where a trial's files live.

train.py writes the record; the driver reads its `status` as the trial's one outcome and tells Optuna
its objectives; `python -m harness` prints it; analysis reads it back. The objective names a sweep
may use and the metrics copied into the Optuna trial's attributes are derived from the fields here,
so a new metric is added in one place. Torch-free: the driver and analysis import it.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError



class TrialFailed(RuntimeError):
    """A trial that cannot produce a valid result (NaN loss, wrong world size, ...)."""


class TrialPruned(RuntimeError):
    """The pruner stopped this trial after an intermediate evaluation."""


Status = Literal["complete", "pruned", "failed"]


class TrialRecord(BaseModel):
    """The fields every consumer relies on. Tasks add their own metrics (exact_match, rouge_l, bleu,
    perplexity, ...) and train.py its setup/provenance blocks: those are kept as extra fields."""
    model_config = ConfigDict(extra="allow")

    status: Status
    reason: str | None = None
    study: str | None = None
    trial: int | None = None
    # quality (on the fixed test split)
    accuracy: float | None = None
    eval_loss: float | None = None
    best_intermediate_accuracy: float | None = None
    train_loss: float | None = None
    baseline_accuracy: float | None = None
    majority_accuracy: float | None = None
    # cost
    flops: float | None = None
    train_flops: float | None = None
    eval_flops: float | None = None
    tokens: int | None = None
    device_seconds: float | None = None
    wall_seconds: float | None = None
    peak_memory_bytes: int | None = None
    trainable_params: int | None = None
    cost_usd: float | None = None
    steps: int | None = None
    evals: list[dict] = []
    # eval.benchmarks (harness/tasks/benchmarks.py), on the same seeded items for the base and the tuned
    # model: their scores, retention = tuned / base, and forgetting = the mean of base - tuned in score
    # points (an objective to minimize). benchmark_flops is inside flops; the base's is the study's.
    forgetting: float | None = None
    benchmark_flops: float | None = None
    benchmark_tokens: int | None = None
    benchmark_seconds: float | None = None
    benchmark_baseline_flops: float | None = None
    benchmarks: dict[str, float] = {}
    baseline_benchmarks: dict[str, float] = {}
    retention: dict[str, float | None] = {}
    benchmark_items: dict[str, int] = {}
    benchmark_baseline_cached: list[str] = []
    benchmark_pairs: dict[str, dict] = {}     # per benchmark: items, base, tuned, lost, gained


# What a sweep can optimise: every numeric field above (and for tasks that record them, their metrics).
_NUMERIC = ("float | None", "int | None")
TASK_METRICS = ("exact_match", "rouge_l", "bleu", "perplexity")  # task=sft adds these
METRICS = tuple(k for k, f in TrialRecord.model_fields.items()
                if str(f.annotation) in _NUMERIC and k not in ("trial", "steps", "baseline_accuracy",
                                                                  "majority_accuracy", "benchmark_baseline_flops")) + TASK_METRICS
INTERMEDIATE = {"accuracy": "accuracy", "eval_loss": "loss"}      # objective -> key of an intermediate eval
# copied into the Optuna trial's user_attrs (the dashboard and the driver's table show them)
ATTR_METRICS = ("accuracy", "eval_loss", "flops", "device_seconds", "tokens", "peak_memory_bytes",
                "trainable_params", "cost_usd", "forgetting", "retention", "benchmarks")


def read_record(path: Path) -> TrialRecord | None:
    """The record at path; None when there is none or it is unreadable (a process killed mid-write)."""
    try:
        return TrialRecord.model_validate(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, ValidationError):
        return None


def trial_dir(out_dir: str | Path, study: str, trial: int) -> Path:
    """Where trial n of a study keeps its files (config.yaml, log.txt, result.json, ...)."""
    return Path(out_dir) / study / "trials" / str(trial)


# ---------------------------------------------------------------------------- a trial's files

ADAPTER = "adapter"                 # trials/<n>/adapter/ (harness/trial/adapters.py writes it)
META = "harness_adapter.json"       # what `python -m harness.export` needs, inside the adapter folder
CHECKPOINT = "checkpoint"           # trials/<n>/checkpoint/ (harness/trial/checkpoint.py)
NAME = CHECKPOINT


def adapter_policy(cfg) -> str:
    """train.save_adapter, its null resolved: best in a study, all for a single run."""
    return cfg.train.save_adapter or ("best" if cfg.get("sweep") else "all")


def resume_dir(run_root: Path, system_attrs: Mapping | None) -> Path | None:
    """The newest checkpoint among the attempts a retried trial repeats, or None to start from step 0.

    run_root is <out_dir>/<study>; system_attrs are the retry's Optuna system attrs. Optuna's retry
    callbacks keep "failed_trial" = the FIRST attempt's number across a chain of retries and list
    every earlier attempt in "retry_history" (oldest first), so the newest attempt with a checkpoint
    is searched from the end: each attempt resumed from the one before, so it is the furthest."""
    attrs = system_attrs or {}
    attempts = list(attrs.get("retry_history") or ([attrs["failed_trial"]] if "failed_trial" in attrs else []))
    for m in reversed(attempts):
        for name in (NAME, f"{NAME}.old"):  # .old: killed between the two renames of a save
            d = Path(run_root) / "trials" / str(m) / name
            if is_checkpoint(d):
                return d.resolve()  # the trial process may not share the driver's working directory
    return None


def is_checkpoint(d: Path) -> bool:
    return (Path(d) / "custom_checkpoint_1.pkl").is_file() and (Path(d) / "model.safetensors").is_file()


# ---------------------------------------------------------------------------- provenance

@cache  # once per process: the driver stamps every trial's config.yaml with it (two git calls each)
def git_sha() -> str | None:
    """The checkout's commit (-dirty with uncommitted changes); None for an installed package, whose
    version is in `versions` (its site-packages may sit inside some other git repository)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "conf" / "config.yaml").is_file():  # an installed package ships conf/ inside harness/
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None
