"""`launcher=slurm`: submit K study workers as SLURM jobs through submitit.

    python -m harness sweep=lora_rank storage=postgres launcher=slurm launcher.workers=4

Each job runs the very command the user typed, with launcher=local: an ordinary worker that asks the
shared Optuna storage for trials until the study's budget is spent. The storage, not this module,
makes sure no trial runs twice, so a job that dies costs only its running trial.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def worker_command(overrides: list[str]) -> list[str]:
    """The command each job runs: the user's overrides, with this launcher swapped for local."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith("launcher")]
    return [sys.executable, "-m", "harness", *kept, "launcher=local"]


def without_password(command: list[str]) -> tuple[list[str], str | None]:
    """The command with the storage URL's password taken out, and that password: the job gets it in
    its environment (PASSWORD_ENV, which sbatch copies from the submitter's), so it is neither printed
    nor pickled into the job folder, which often sits on a shared file system."""
    from harness.optuna_parts import strip_password

    out, password = [], None
    for o in command:
        key, eq, value = o.partition("=")
        if eq and key.lstrip("+~") == "storage.url":
            value, pw = strip_password(value)
            password = pw or password
            o = f"{key}={value}"
        out.append(o)
    return out, password


def run_worker(command: list[str], cwd: str) -> int:
    """Job body (pickled by submitit): stream the worker's output into the job log; fail the job
    when the worker fails."""
    rc = subprocess.run(command, cwd=cwd).returncode
    if rc != 0:
        raise RuntimeError(f"worker exited {rc}: {' '.join(command)}")
    return rc


def executor(cfg):
    import submitit

    lc = cfg.launcher
    folder = Path(lc.folder or Path(cfg.out_dir) / cfg.study / "slurm")
    ex = submitit.AutoExecutor(folder=folder, cluster=lc.cluster)
    gpus = lc.gpus_per_node if lc.gpus_per_node is not None else (
        cfg.hardware.processes if cfg.hardware.device == "cuda" else 0)
    params = {"name": f"harness-{cfg.study}", "timeout_min": lc.timeout_min, "cpus_per_task": lc.cpus_per_task,
              "mem_gb": lc.mem_gb, "tasks_per_node": 1, "nodes": 1}
    if gpus:  # none on a CPU job: `--gpus-per-node=0` is a GRES request that a cluster without GPUs may refuse
        params["gpus_per_node"] = gpus
    if ex.cluster == "slurm":  # accelerate launch starts the trial's N processes inside the one task
        params.update({"slurm_partition": lc.partition, "slurm_account": lc.account,
                       "slurm_additional_parameters": dict(lc.additional) or None})
    ex.update_parameters(**params)
    return ex


def submit(cfg, overrides: list[str]) -> int:
    """Submit cfg.launcher.workers jobs; with launcher.wait, block and report failures."""
    from harness.optuna_parts import PASSWORD_ENV

    ex = executor(cfg)
    cmd, password = without_password(worker_command(overrides))
    if password:
        os.environ[PASSWORD_ENV] = password  # read by the job's driver (optuna_parts.with_password)
    if cfg.get("sweep"):  # create the study (and queue its grid) once, here, before K workers race to
        from harness.study.session import Session, base_overrides
        from harness.study.checks import check

        check(cfg, base_overrides(overrides))
        new = Session(cfg, cmd[3:]).open()
        print(f"[harness] study {cfg.study} {'created' if new else 'exists'} in the storage; submitting workers")
    with ex.batch():  # one job array
        jobs = [ex.submit(run_worker, cmd, os.getcwd()) for _ in range(cfg.launcher.workers)]
    print(f"[harness] submitted {len(jobs)} worker job(s) to {ex.cluster}: {' '.join(j.job_id for j in jobs)}")
    print(f"[harness] each runs: {' '.join(cmd)}")
    print(f"[harness] logs: {jobs[0].paths.stdout}")
    if not cfg.launcher.wait:
        return 0
    failed = 0
    for j in jobs:
        try:
            j.result()
        except Exception as e:  # a failed job must not hide the others' outcome
            failed += 1
            print(f"[harness] job {j.job_id} failed: {str(e).strip().splitlines()[-1]}", file=sys.stderr)
    return 1 if failed else 0
