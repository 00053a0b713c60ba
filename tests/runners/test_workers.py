"""Several machines on one study: independent `python -m harness sweep=...` workers sharing a real
PostgreSQL storage split a grid between them, every point done exactly once; `launcher=slurm`
submits such workers through submitit (run here with its local executor, as SLURM is absent)."""
from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter

import pytest

from harness.config.schema import ConfigError
from conftest import LORA_RANK_TINY
from harness.runners.slurm import worker_command

GRID = [1, 2, 4, 8]
# a 4-point grid of tiny trials; one seed each
TINY_STUDY = [*LORA_RANK_TINY, f"sweep.space={{lora.r: {{choices: {GRID}}}, lora.alpha_over_r: {{choices: [2]}}}}",
              "model=tiny_bert",
              "data=tiny", "train.max_steps=3", "train.eval_every=0", "eval.batch_size=64", "hardware.threads=1",
              "tracking.mode=disabled", "eval.baseline=false"]


def _trials(url: str, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)


@pytest.mark.process
def test_three_workers_on_a_fresh_postgres_database_split_a_grid_each_point_once(tmp_path, fresh_pg):
    """A new machine's first run: 3 workers started at once on an EMPTY database (Optuna's schema is
    created by whichever gets the lock first) split the grid, every point done exactly once."""
    import optuna
    from optuna.trial import TrialState
    from sqlalchemy.engine import make_url

    url, = fresh_pg(1)
    study = f"workers_{uuid.uuid4().hex[:8]}"
    args = [sys.executable, "-m", "harness", *TINY_STUDY, f"study={study}", "storage=postgres",
            f"storage.url={url}", f"out_dir={tmp_path}"]
    workers = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(3)]
    try:
        outs = [w.communicate(timeout=600)[0] for w in workers]
        assert all(w.returncode == 0 for w in workers), "\n---\n".join(o[-3000:] for o in outs)
        trials = _trials(url, study)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * len(GRID), \
            [(t.number, t.state.name, t.params, t.user_attrs.get("fail_reason")) for t in trials]
        done = Counter(t.params["lora.r"] for t in trials)
        assert done == Counter(GRID)  # every point once: none skipped, none run twice
        # the workers shared the work (each records itself as the trial's driver); which of the three
        # start first is up to the scheduler, so at least two of them ran trials
        assert len({t.user_attrs["driver"] for t in trials}) >= 2, [t.user_attrs["driver"] for t in trials]
        assert sorted(int(p.name) for p in (tmp_path / study / "trials").iterdir()) == sorted(t.number for t in trials)
        secret = f":{make_url(url).password}@"
        assert secret not in "".join(outs), "the storage password was printed"
        leaked = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        assert not leaked, f"the storage password was written to {leaked}"  # config.yaml, result.json, logs
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        optuna.delete_study(study_name=study, storage=url)


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

    from harness.runners.slurm import executor

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))  # pretend srun exists

    cfg = tiny_cfg("hardware=gpu4", "launcher=slurm", "launcher.cluster=slurm", "launcher.partition=a100",
                   "launcher.workers=3", "storage=journal", "+launcher.additional.constraint=80gb")
    ex = executor(cfg)._executor
    script = ex._make_submission_file_text("python -m harness", "uid")
    for line in ("--gpus-per-node=4", "--partition=a100", "--constraint=80gb", "--ntasks-per-node=1",
                 "--cpus-per-task=8", "--time=240"):
        assert line in script, script


@pytest.mark.process
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
    from harness.config.schema import complete, load
    from harness.study.session import Session

    overrides = [*TINY_STUDY, "study=race", f"out_dir={tmp_path}", "storage=journal"]
    cfg = complete(load(overrides))
    a, b = Session(cfg, overrides), Session(cfg, overrides)
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
