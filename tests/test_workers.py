"""Several machines on one study: independent `python -m harness sweep=...` workers sharing a real
PostgreSQL storage split a grid between them, every point done exactly once; `launcher=slurm`
submits such workers through submitit (run here with its local executor, as SLURM is absent)."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter

import pytest

from harness.config import ConfigError
from harness.slurm import worker_command

PG_URL = os.environ.get("HARNESS_TEST_PG_URL")
GRID = [1, 2, 4, 8]
# a 4-point grid of tiny trials; one seed each
TINY_STUDY = ["sweep=lora_rank", f"sweep.space={{lora.r: {{choices: {GRID}}}, lora.alpha_over_r: {{choices: [2]}}}}",
              "model=tiny_bert",
              "data=tiny", "train.max_steps=3", "train.eval_every=0", "eval.batch_size=64", "hardware.threads=1",
              "tracking.mode=disabled", "eval.baseline=false"]


def _trials(url: str, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


@pytest.mark.skipif(not PG_URL, reason="HARNESS_TEST_PG_URL is unset: start PostgreSQL with "
                                       "`HARNESS_TEST_PG_URL=$(sudo bash .ci/postgres)` (.ci/run does this in CI)")
def test_two_workers_on_postgres_split_a_grid_each_point_once(tmp_path):
    import optuna
    from optuna.trial import TrialState

    study = f"workers_{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", "harness", *TINY_STUDY, f"study={study}", "storage=postgres",
            f"storage.url={PG_URL}", f"out_dir={tmp_path}"]
    env = {**os.environ, "HARNESS_CONCURRENT_PROCS": "2"}
    workers = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    try:
        outs = [w.communicate(timeout=600)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), "\n---\n".join(o[-3000:] for o in outs)
        trials = _trials(PG_URL, study)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * len(GRID), \
            [(t.number, t.state.name, t.params, t.user_attrs.get("fail_reason")) for t in trials]
        done = Counter(t.params["lora.r"] for t in trials)
        assert done == Counter(GRID)  # every point once: none skipped, none run twice
        # the two workers shared the work (each records itself as the trial's driver)
        assert len({t.user_attrs["driver"] for t in trials}) == 2, [t.user_attrs["driver"] for t in trials]
        assert sorted(int(p.name) for p in (tmp_path / study / "trials").iterdir()) == sorted(t.number for t in trials)
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        try:
            optuna.delete_study(study_name=study, storage=PG_URL)
        except KeyError:
            pass


def test_slurm_launcher_needs_shared_storage_for_several_workers(tiny_cfg):
    with pytest.raises(ConfigError, match="storage=postgres"):
        tiny_cfg("launcher=slurm", "launcher.workers=2")  # default storage is a local SQLite file
    assert tiny_cfg("launcher=slurm", "launcher.workers=2", "storage=journal").launcher.workers == 2


def test_slurm_job_runs_the_users_command_as_a_local_worker():
    cmd = worker_command(["sweep=lora_rank", "storage=postgres", "launcher=slurm", "launcher.workers=4",
                          "launcher.partition=gpu", "hardware=gpu4"])
    assert cmd[1:] == ["-m", "harness", "sweep=lora_rank", "storage=postgres", "hardware=gpu4", "launcher=local"]


def test_slurm_job_script_asks_for_the_trials_gpus(tiny_cfg, monkeypatch):
    """The sbatch script submitit would submit (rendered, not submitted: no SLURM here)."""
    import submitit

    from harness.slurm import executor

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))  # pretend srun exists

    cfg = tiny_cfg("hardware=gpu4", "launcher=slurm", "launcher.cluster=slurm", "launcher.partition=a100",
                   "launcher.workers=3", "storage=journal", "+launcher.additional.constraint=80gb")
    ex = executor(cfg)._executor
    script = ex._make_submission_file_text("python -m harness", "uid")
    for line in ("--gpus-per-node=4", "--partition=a100", "--constraint=80gb", "--ntasks-per-node=1",
                 "--cpus-per-task=8", "--time=240"):
        assert line in script, script


@pytest.mark.slow  # ~40 s on a busy 2-core box; the sbatch rendering above is the fast check
def test_slurm_launcher_runs_workers_through_submitit(tmp_path):
    """submitit's local executor runs the job body the way SLURM would; the job runs a tiny trial."""
    out = subprocess.run([sys.executable, "-m", "harness", "model=tiny_bert", "data=tiny", "train.max_steps=2",
                          "tracking.mode=disabled", "eval.baseline=false", f"out_dir={tmp_path}", "study=sl",
                          "launcher=slurm", "launcher.cluster=local", "launcher.workers=1", "launcher.wait=true"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "submitted 1 worker job(s) to local" in out.stdout
    assert (tmp_path / "sl" / "trials" / "0" / "result.json").is_file()
    logs = list((tmp_path / "sl" / "slurm").glob("*_log.out"))
    assert logs and "accuracy" in logs[0].read_text()


def test_two_workers_asking_at_the_same_moment_do_not_share_a_grid_point(tmp_path):
    """Deterministic interleaving of two drivers' next_trial on one storage: B asks while A is between
    'which point is missing?' and 'enqueue it'. No trial runs, so this is fast."""
    from harness.config import complete, load
    from harness.study import Driver

    overrides = [*TINY_STUDY, "study=race", f"out_dir={tmp_path}", "storage=journal"]
    cfg = complete(load(overrides))
    a, b = Driver(cfg, overrides), Driver(cfg, overrides)
    a.open(), b.open()
    jobs = {}

    def b_first(real):  # B runs its whole next_trial inside A's window between looking and claiming
        def call(*args, **kw):
            if "b" not in jobs:
                jobs["b"] = b.next_trial(0)
            return real(*args, **kw)
        return call

    for name in ("enqueue_trial", "ask", "_pop_waiting_trial_id"):  # wherever A looks, then claims
        setattr(a.study, name, b_first(getattr(a.study, name)))
    jobs["a"] = a.next_trial(0)
    assert jobs["a"] and jobs["b"]
    assert jobs["a"][1] != jobs["b"][1], f"both workers got grid point {jobs['a'][1]}"
    assert all(j[0].user_attrs.get("point") for j in jobs.values()), "a trial outside the grid"
