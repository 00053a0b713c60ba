"""The trial record (trials/<n>/result.json) as a type, and where a trial's files live.

train.py writes the record; the driver reads its `status` as the trial's one outcome and tells Optuna
its objectives; `python -m harness` prints it; analysis reads it back. The objective names a sweep
may use and the metrics copied into the Optuna trial's attributes are derived from the fields here,
so a new metric is added in one place. Torch-free: the driver and analysis import it.
"""
from __future__ import annotations

import json
import subprocess
import types
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator



class TrialFailed(RuntimeError):
    """A trial that cannot produce a valid result (NaN loss, wrong world size, ...)."""


class TrialPruned(RuntimeError):
    """The pruner stopped this trial after an intermediate evaluation."""


Status = Literal["complete", "pruned", "failed"]


class _Section(BaseModel):
    """A nested block of the record: its keys are declared; unknown ones are refused on write."""
    model_config = ConfigDict(extra="forbid")


class DataInfo(BaseModel):
    """Where the trial's data came from (each loader adds what identifies its source: the file's sha256,
    the hub revision, the package it was fetched from); checksums of the train split it drew."""
    model_config = ConfigDict(extra="allow")  # per-source keys (harness/data/load.py LOADERS), all provenance
    source: str | None = None
    n_total: int | None = None
    train_sha: str | None = None


class Provenance(_Section):
    git_sha: str | None = None
    python: str | None = None
    versions: dict[str, str] = {}
    hardware: dict[str, object] = {}


class WandbInfo(_Section):
    id: str | None = None
    dir: str | None = None
    url: str | None = None
    mode: str | None = None


class Resumed(_Section):
    dir: str | None = None
    step: int | None = None


class TrialRecord(BaseModel):
    """trials/<n>/result.json, every section declared. One extra kind stays open: the values of
    eval.metrics, whose names are the user's (any `evaluate` metric, e.g. `f1`, `accuracy`, or
    `<name>_<key>` for one returning several numbers); they must be numbers (checked below)."""
    model_config = ConfigDict(extra="allow")

    status: Status
    reason: str | None = None
    study: str | None = None
    trial: int | None = None
    method: str | None = None
    # quality (on the fixed test split)
    accuracy: float | None = None
    eval_loss: float | None = None
    best_intermediate_accuracy: float | None = None
    train_loss: float | None = None
    baseline_accuracy: float | None = None
    majority_accuracy: float | None = None
    # task=sft's generation metrics, final and zero-shot, and how they were computed
    exact_match: float | None = None
    rouge_l: float | None = None
    bleu: float | None = None
    perplexity: float | None = None
    baseline_exact_match: float | None = None
    baseline_rouge_l: float | None = None
    baseline_bleu: float | None = None
    baseline_perplexity: float | None = None
    bleu_signature: str | None = None
    exact_match_normalisation: str | None = None
    samples: dict[str, list[dict]] | None = None        # {"baseline"|"final": [(prompt, generation, target)]}
    # the zero-shot baseline: a study-level cost, never inside the trial's own
    baseline_cached: bool | None = None
    baseline_flops: float | None = None
    baseline_seconds: float | None = None
    # cost
    flops: float | None = None
    train_flops: float | None = None
    eval_flops: float | None = None
    tokens: int | None = None
    padded_tokens: int | None = None
    eval_tokens: int | None = None
    tokens_per_second: float | None = None
    device_seconds: float | None = None
    wall_seconds: float | None = None
    phase_seconds: dict[str, float] = {}
    peak_memory_bytes: int | None = None
    cost_usd: float | None = None
    # eval.benchmarks (harness/tasks/benchmarks.py), on the same seeded items for the base and the tuned
    # model: their scores, retention = tuned / base (None where the base scored 0), and forgetting = the
    # mean of base - tuned in score points (an objective to minimize). benchmark_flops is inside flops;
    # the base's (benchmark_baseline_flops) is the study's, like baseline_flops.
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
    # parameters (harness/trial/cost.py param_counts)
    trainable_params: int | None = None
    total_params: int | None = None
    non_embedding_params: int | None = None
    matmul_params: int | None = None
    trainable_matmul_params: int | None = None
    backward_matmul_params: int | None = None
    dora_rerun_params: int | None = None
    lora_modules: int | None = None
    # setup
    steps: int | None = None
    examples_seen: int | None = None
    world_size: int | None = None
    per_device_batch_size: int | None = None
    grad_accum: int | None = None
    effective_batch_size: int | None = None
    adapter_checksums: list[str] = []                   # one per rank: equal when DDP kept the replicas in sync
    resumed_from: Resumed | None = None
    # data
    train_size: int | None = None
    test_size: int | None = None
    labels: list[str] | None = None
    data: DataInfo | None = None
    intermediate_eval_examples: int | None = None        # eval.intermediate_examples drew a subset
    evals: list[dict] = []                              # {step, accuracy, loss, n, + eval.metrics} per eval
    # did it finish learning, and learn anything (harness/metrics/convergence.py)
    last_quarter_gain: float | None = None              # metric gain over the last 25% of steps (good direction)
    last_quarter_gain_se: float | None = None           # its binomial standard error (0/1-per-item metrics)
    convergence: str | None = None                      # "converged (...)" | "still improving (+x points ...)"
    pred_histogram: dict[str, int] | None = None        # classification: predicted label -> test items
    degenerate: Literal["collapsed", "diverged"] | None = None
    # early stopping (train.early_stopping); steps = the step it stopped at
    stopped_early: bool | None = None
    best_step: int | None = None                        # the intermediate eval with the best early-stopping metric
    steps_saved: int | None = None                      # train.max_steps - steps
    flops_saved: float | None = None                    # steps_saved x this trial's measured train FLOPs per step
    # provenance and where the rest lives
    provenance: Provenance | dict = {}
    wandb: WandbInfo | None = None
    config: dict | None = None                          # the resolved config the trial ran
    history: list[dict] = []                            # per-step train/loss, lr, grad norm, tokens

    @model_validator(mode="after")
    def _extras_are_metric_values(self):
        bad = {k: v for k, v in (self.model_extra or {}).items()
               if not (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)))}
        if bad:
            raise ValueError(f"undeclared record keys must be eval.metrics values (numbers): {sorted(bad)}")
        return self


# What a sweep can optimise: the quality and cost fields above (task=sft adds its generation metrics).
TASK_METRICS = ("exact_match", "rouge_l", "bleu", "perplexity")
METRICS = ("accuracy", "eval_loss", "best_intermediate_accuracy", "train_loss", "flops", "train_flops", "eval_flops",
           "tokens", "device_seconds", "wall_seconds", "peak_memory_bytes", "trainable_params", "cost_usd", "forgetting",
           "benchmark_flops", *TASK_METRICS)
INTERMEDIATE = {"accuracy": "accuracy", "eval_loss": "loss"}      # objective -> key of an intermediate eval
# copied into the Optuna trial's user_attrs (the dashboard and the driver's table show them)
ATTR_METRICS = ("accuracy", "eval_loss", "flops", "device_seconds", "tokens", "peak_memory_bytes",
                "trainable_params", "cost_usd", "forgetting", "retention", "benchmarks", "degenerate",
                "last_quarter_gain", "last_quarter_gain_se", "steps", "stopped_early", "steps_saved", "flops_saved")


def _scalar(annotation) -> bool:
    """float | None, str, Literal[...] and the like: one value, not a list or a mapping."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(_scalar(a) for a in typing.get_args(annotation))
    return annotation in (str, int, float, bool, type(None))


# The record's scalar fields (a column each in the analysis's frame, a key each in the W&B summary)
SCALARS = tuple(k for k, f in TrialRecord.model_fields.items() if _scalar(f.annotation))


def read_record(path: Path) -> TrialRecord | None:
    """The record at path; None when there is none or it is unreadable (a process killed mid-write)."""
    try:
        return TrialRecord.model_validate(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError, ValidationError):
        return None


def trial_dir(out_dir: str | Path, study: str, trial: int) -> Path:
    """Where trial n of a study keeps its files (config.yaml, log.txt, result.json, ...)."""
    return Path(out_dir) / study / "trials" / str(trial)


def trial_dirs(study_dir: str | Path) -> list[tuple[int, Path]]:
    """(n, trials/<n>/) of every trial folder of the study at <out_dir>/<study>, by trial number."""
    root = Path(study_dir) / "trials"
    found = [(int(d.name), d) for d in root.iterdir() if d.name.isdigit() and d.is_dir()] if root.is_dir() else []
    return sorted(found)


# ---------------------------------------------------------------------------- a trial's outcome, in every vocabulary

# The record's status is the one outcome; Optuna's state and the W&B run's exit code are its translations
# (a pruned trial finished as asked: it is not a failed W&B run; its summary says status "pruned").
_OUTCOMES = {"complete": ("COMPLETE", 0), "pruned": ("PRUNED", 0), "failed": ("FAIL", 1)}


def optuna_state(status: str) -> str:
    """The Optuna TrialState name of a record status."""
    return _OUTCOMES[status][0]


def wandb_exit_code(status: str) -> int:
    """The exit code a trial's W&B run finishes with."""
    return _OUTCOMES[status][1]


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
