"""Run a real sweep (`python -m harness sweep=...`) as a subprocess and read back what it did:
the sweep's wall time, each trial's process time (from the Optuna storage) and result.json phases."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from harness.record import TrialRecord, read_record


def run_sweep(overrides: list[str], out_dir: Path, study: str, env: dict | None = None,
              timeout: float | None = None) -> dict:
    """env replaces the driver's environment (the trial processes inherit it); after `timeout`
    seconds the driver's process group is killed (its trials die with it: the harness sets their
    parent-death signal) and the result says timed_out with the trials finished by then."""
    cmd = [sys.executable, "-m", "harness", *overrides, f"out_dir={out_dir}", f"study={study}",
           f"storage.url=sqlite:///{out_dir}/{study}/study.db"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # this driver's own group only
        _, stderr = proc.communicate()
        timed_out = True
    wall = time.perf_counter() - t0
    if not timed_out and proc.returncode not in (0, 1):  # 1: some trials failed, still a sweep
        raise RuntimeError(f"sweep failed (exit {proc.returncode}): {' '.join(cmd)}\n{stderr[-3000:]}")
    trials = read_trials(out_dir / study, study) if (out_dir / study / "study.db").is_file() else []
    return {"wall_seconds": wall, "exit_code": proc.returncode, "timed_out": timed_out, "trials": trials}


def read_trials(study_dir: Path, study: str) -> list[dict]:
    """One row per finished trial: Optuna start/complete (the trial process) + its result.json."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        st = optuna.load_study(study_name=study, storage=f"sqlite:///{study_dir}/study.db")
    except KeyError:  # killed before the study was created
        return []
    rows = []
    for t in st.trials:
        if t.datetime_complete is None:
            continue
        res = study_dir / "trials" / str(t.number) / "result.json"
        rec = (read_record(res) or TrialRecord(status="failed")).model_dump(exclude_unset=True)
        rows.append({"number": t.number, "state": t.state.name,
                     "process_seconds": (t.datetime_complete - t.datetime_start).total_seconds(),
                     "start": t.datetime_start.timestamp(), "end": t.datetime_complete.timestamp(),
                     "trial_wall_seconds": rec.get("wall_seconds"), "phase_seconds": rec.get("phase_seconds", {}),
                     "steps": rec.get("steps"), "threads": (rec.get("config") or {}).get("hardware", {}).get("threads"),
                     "parallel": ((rec.get("config") or {}).get("sweep") or {}).get("parallel"),
                     "accuracy": rec.get("accuracy")})
    return rows
