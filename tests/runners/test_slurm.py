"""`launcher=slurm` on a real SLURM cluster: sbatch through submitit's SLURM executor, jobs that are
cancelled and requeued, a shared PostgreSQL study.

The cluster is the one-node test cluster of .ci/slurm (slurmctld + slurmd + munge on loopback, one
CPU-only node); .ci/run starts it and exports HARNESS_TEST_SLURM=<partition>, and .ci/postgres gives
HARNESS_TEST_PG_URL. Without them every test here is skipped with one line. Trials are tiny
(model=tiny_bert data=tiny, hardware.threads=1); the time goes into process start-up and waiting.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from conftest import LORA_RANK_TINY

PARTITION = os.environ.get("HARNESS_TEST_SLURM")
PG_URL = os.environ.get("HARNESS_TEST_PG_URL")
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.process,
    pytest.mark.skipif(not (PARTITION and shutil.which("sbatch")),
                       reason="no test SLURM cluster: run `export HARNESS_TEST_SLURM=$(sudo bash .ci/slurm)` "
                              "(.ci/run does this in CI)"),
]

GRID = [1, 2, 4, 8]
SLURM = ["launcher=slurm", "launcher.cpus_per_task=1", "launcher.mem_gb=1", "launcher.timeout_min=10",
         f"launcher.partition={PARTITION}"]


def _study_args(tmp_path: Path, url: str, study: str, grid: list[int], steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness", *LORA_RANK_TINY,
            f"sweep.space={{lora.r: {{choices: {grid}}}, lora.alpha_over_r: {{choices: [2]}}}}",
            "model=tiny_bert", "data=tiny", f"train.max_steps={steps}", "train.eval_every=0", "eval.batch_size=64",
            "hardware.threads=1", "tracking.mode=disabled", "eval.baseline=false", "sweep.heartbeat_interval=1",
            "sweep.grace_period=5", f"study={study}", "storage=postgres", f"storage.url={url}",
            f"out_dir={tmp_path}", f"launcher.folder={tmp_path}/slurm", *SLURM, *extra]


def _submit(args: list[str]) -> list[str]:
    """Run the user's command (it returns once the jobs are queued); the SLURM job ids it printed."""
    out = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    m = re.search(r"submitted (\d+) worker job\(s\) to slurm: (.+)", out.stdout)
    assert m, out.stdout  # to slurm, not to submitit's local executor
    url = next(a.split("=", 1)[1] for a in args if a.startswith("storage.url="))
    assert _secret(url) not in out.stdout + out.stderr, "the storage password was printed"
    return m.group(2).split()


def _secret(url: str) -> str:
    from sqlalchemy.engine import make_url

    return f":{make_url(url).password}@"


def _trials(url: str, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


def _queued(array_ids: set[str]) -> list[str]:
    """Lines of squeue for the jobs of these arrays still pending or running."""
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T", "-j", ",".join(sorted(array_ids))],
                         capture_output=True, text=True)
    return [ln for ln in out.stdout.splitlines() if ln.strip()]


def _wait_until(what: str, cond, timeout: float, poll: float = 0.5):
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = cond()
        if got:
            return got
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _job_of(pid: int) -> str:
    """The SLURM job array element (<array>_<task>) a worker process runs in: its environment says.
    Not SLURM_JOB_ID: the first element's id is the array's, and scancel of that ends them all."""
    env = dict(kv.split("=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in kv)
    return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"


def _end(jobs: list[str]) -> None:
    subprocess.run(["scancel", *{j.split("_")[0] for j in jobs}], capture_output=True)


@pytest.fixture
def pg_url(fresh_pg):
    if not PG_URL:
        pytest.skip("HARNESS_TEST_PG_URL is unset: start PostgreSQL with `HARNESS_TEST_PG_URL=$(sudo bash .ci/postgres)`")
    return fresh_pg(1)[0]


def test_cancelled_worker_loses_only_its_trial_retried_by_another_worker(tmp_path, pg_url):
    """3 worker jobs (one job array) on a 4-point grid. One worker is killed mid-trial (`scancel
    --signal=KILL --full`: no handler runs, as when a node is lost): its trial is failed and retried by
    another worker; at the end every grid point is COMPLETE exactly once and nothing is left RUNNING
    or queued. On this one-node cluster the dead worker is found by its pid (same host, the fast
    path); on several nodes the heartbeat finds it after sweep.grace_period."""
    from optuna.trial import TrialState

    study = f"slurm_{uuid.uuid4().hex[:8]}"
    jobs = _submit(_study_args(tmp_path, pg_url, study, GRID, 300, "launcher.workers=3"))
    assert len(jobs) == 3
    arrays = {j.split("_")[0] for j in jobs}
    try:
        def running_with_progress():  # a trial some worker has been training for a moment
            for t in _trials(pg_url, study):
                log = tmp_path / study / "trials" / str(t.number) / "log.txt"
                if t.state == TrialState.RUNNING and log.is_file() and "] step " in log.read_text(errors="replace"):
                    return t
            return None

        victim = _wait_until("a running trial", running_with_progress, 120)
        pid = int(victim.user_attrs["driver"].rpartition(":")[2])
        job = _job_of(pid)
        subprocess.run(["scancel", "--signal=KILL", "--full", job], check=True)
        _wait_until(f"worker {pid} to die", lambda: not Path(f"/proc/{pid}").exists(), 30)
        _wait_until("the jobs to end", lambda: not _queued(arrays), 150, poll=1)

        trials = _trials(pg_url, study)
        states = {t.number: t.state.name for t in trials}
        assert states[victim.number] == "FAIL", states
        retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE, states
        assert retry[0].user_attrs["driver"] != victim.user_attrs["driver"]  # another worker took it
        assert retry[0].params == victim.params
        done = Counter(t.params["lora.r"] for t in trials if t.state == TrialState.COMPLETE)
        assert done == Counter(GRID), states  # every point once: none lost, none run twice
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)], states
        # every trial the storage knows has its directory, and no directory is unknown to the storage
        assert sorted(int(p.name) for p in (tmp_path / study / "trials").iterdir()) == sorted(states)
        # the jobs got the password in their environment: not in the job folder (pickles, scripts, logs)
        leaked = [p for p in tmp_path.rglob("*") if p.is_file() and _secret(pg_url).encode() in p.read_bytes()]
        assert not leaked, f"the storage password was written to {leaked}"
    finally:
        _end(jobs)


def test_requeued_job_resumes_its_trial_from_the_checkpoint(tmp_path, pg_url):
    """One worker job; once its trial has written a checkpoint, `scontrol requeue` (what preemption
    does): SLURM SIGTERMs the job, the worker records the trial as interrupted (FAIL, retried), and
    the job, started again by SLURM under the same id, continues the retry from that checkpoint."""

    from harness.record import is_checkpoint

    study = f"requeue_{uuid.uuid4().hex[:8]}"
    steps = 1200
    jobs = _submit(_study_args(tmp_path, pg_url, study, [4], steps, "launcher.workers=1",
                               "train.checkpoint_every=100"))
    job = jobs[0]
    try:
        first = tmp_path / study / "trials" / "0" / "checkpoint"
        _wait_until("the first checkpoint", lambda: is_checkpoint(first), 120, poll=0.2)
        subprocess.run(["scontrol", "requeue", job], check=True)
        # SLURM holds a requeued job for 120 s (its BeginTime); release it now rather than wait that out
        _wait_until("the requeued job to pend", lambda: "PENDING" in " ".join(_queued({job.split("_")[0]})), 60)
        subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], check=True)
        _wait_until("the job to end after its requeue", lambda: not _queued({job.split("_")[0]}), 150, poll=1)

        trials = _trials(pg_url, study)
        states = [(t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in trials]
        assert [s for _, s, _ in states] == ["FAIL", "COMPLETE"], states
        assert "interrupted" in trials[0].user_attrs["fail_reason"], states
        assert trials[1].system_attrs.get("failed_trial") == 0
        assert trials[0].user_attrs["driver"] != trials[1].user_attrs["driver"]  # the job's second run
        rec = json.loads((tmp_path / study / "trials" / "1" / "result.json").read_text())
        assert rec["status"] == "complete" and rec["steps"] == steps, rec
        resumed = rec["resumed_from"]
        assert resumed and Path(resumed["dir"]).resolve() == first.resolve(), resumed
        assert 0 < resumed["step"] < steps and resumed["step"] % 100 == 0, resumed
        # both runs of the job wrote to the same job log (SLURM keeps the id across a requeue)
        log = (tmp_path / "slurm" / f"{job}_0_log.out").read_text()
        assert log.count("Starting with JobEnvironment") == 2, log[-2000:]
    finally:
        _end(jobs)


def test_job_scripts_request_the_trials_cpus_and_gpus(tiny_cfg):
    """The sbatch script of a CPU study asks for launcher.cpus_per_task and no GPU, and the test
    cluster accepts it (`sbatch --test-only`); a 4-GPU trial's script asks for 4 GPUs (as text; SLURM reads it
    as a GPU GRES request and refuses it, since this cluster has no GPU GRES)."""
    from harness.runners.slurm import executor

    def script(cfg) -> str:
        ex = executor(cfg)._executor
        assert type(ex).__name__ == "SlurmExecutor"  # found sbatch: the real executor, not local
        return ex._make_submission_file_text("true", "uid")

    cpu = script(tiny_cfg("launcher=slurm", "launcher.workers=1", "launcher.cpus_per_task=2", "launcher.mem_gb=1",
                          f"launcher.partition={PARTITION}", "launcher.timeout_min=5"))
    assert "--cpus-per-task=2" in cpu and "--mem=1GB" in cpu and f"--partition={PARTITION}" in cpu, cpu
    assert "--gpus" not in cpu and "--gres" not in cpu, cpu
    ok = subprocess.run(["sbatch", "--test-only"], input=cpu, capture_output=True, text=True)
    assert ok.returncode == 0 and "to start at" in ok.stderr, ok.stderr

    gpu = script(tiny_cfg("hardware=gpu4", "launcher=slurm", "launcher.workers=2", "storage=journal",
                          f"launcher.partition={PARTITION}", "launcher.mem_gb=1"))
    assert "--gpus-per-node=4" in gpu and "--cpus-per-task=8" in gpu, gpu
    refused = subprocess.run(["sbatch", "--test-only"], input=gpu, capture_output=True, text=True)
    # SLURM parsed the request as GPU GRES, which this cluster has none of
    assert refused.returncode != 0 and "Invalid generic resource (gres)" in refused.stderr, refused.stderr
