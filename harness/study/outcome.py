"""How a trial ended, in the study's words: the runner reports the exit code and the record
(harness/runners Ended), and the driver classifies them here and computes the objective values.
"""
from __future__ import annotations

import math
import signal
from dataclasses import dataclass
from pathlib import Path

from harness.record import TrialRecord, optuna_state
from harness.runners import Ended


@dataclass
class Outcome:
    """How a trial ended, read from its record (status is the one outcome; the exit code only
    explains a trial that left no record)."""
    state: str                       # "COMPLETE" | "PRUNED" | "FAIL" (Optuna's TrialState names)
    values: list[float] | None = None
    reason: str | None = None
    record: TrialRecord | None = None


def classify(ended: Ended, objectives) -> Outcome:
    """The trial's outcome: the record's status when it wrote one (harness/record.py maps it to Optuna's
    state), else what the exit code says; a complete trial without finite objective values failed."""
    rc, rec, log = ended.rc, ended.record, ended.log
    status = rec.status if rec else None
    if status == "pruned":
        return Outcome(optuna_state(status), None, rec.reason or "pruned", rec)
    if status == "failed":
        return Outcome(optuna_state(status), None, rec.reason or f"failed (exit code {rc})", rec)
    if rc < 0:
        sig = signal.Signals(-rc).name
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if sig == "SIGKILL" else ""
        return Outcome("FAIL", None, f"trial process killed by {sig}{hint}; log: {_tail(log)}", rec)
    if rc != 0:
        return Outcome("FAIL", None, f"exit code {rc}: {_tail(log, 1)} (full log: {log})", rec)
    if status != "complete":
        return Outcome("FAIL", None, f"exit code 0 but no complete result.json; log: {_tail(log)}", rec)
    values = [getattr(rec, k, None) for k in objectives]
    bad = [k for k, v in zip(objectives, values) if not isinstance(v, (int, float)) or not math.isfinite(v)]
    if bad:
        return Outcome("FAIL", None, f"objective {', '.join(bad)} is {getattr(rec, bad[0], None)}", rec)
    return Outcome("COMPLETE", values, None, rec)


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(ln.strip()[:300] for ln in lines[-n:])
