"""Chaos soak: a study of >= 200 tiny trials, 3 workers on one PostgreSQL database, a random worker
killed (kill -9 or SIGTERM) in the middle of a trial every 5-15 s (--kill-every) and restarted with the
same command.

    nice -n 10 python -m bench.soak --pg-url postgresql+psycopg://user:pw@host/db   # <= 10 min
    python -m bench.soak --quick                                                   # 20 trials, smoke test

Workers are real `python -m harness sweep=...` processes (each with its warm trial worker), as a user
starts them on several machines; the trials are tiny (model=tiny_bert data=tiny, 2 steps,
hardware.threads=1). A kill hits the worker's driver process: SIGTERM is what SLURM or Kubernetes send
before a kill (the driver stops its trial and records it as interrupted), kill -9 gives it no say
(its trial stays RUNNING until the restarted worker sees the dead pid, or the heartbeat goes stale).
The killed worker is restarted at once with the same command (the resume path).

At the end (after the last kill the workers finish the study undisturbed) it checks, from the storage
and the trial directories: >= n_trials configurations COMPLETE, each exactly once (lost: a
configuration whose every attempt failed; duplicated: one COMPLETE twice; several workers sampling at
once can overshoot n_trials by a trial or two, reported as overshoot), no trial RUNNING or WAITING, the study's trial count equal to the trial directories on disk and
every COMPLETE trial's result.json present, and the storage opening in optuna-dashboard (its WSGI app,
called in process: /api/studies and the study's detail). Results: bench/results/soak.json.

sweep.max_retry is raised to 20 for the soak: a trial killed more than max_retry times in a row is
failed for good by design (it would count as lost here), and this kill rate is far above a cluster's.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from bench.common import ONE_SLOT, QUIET_ENV, save



def study_args(url: str, out_dir: Path, study: str, n: int) -> list[str]:
    # random sampler over one range axis, not a 200-point grid: the driver checks every value of a
    # choices/grid axis by composing a config for it (~0.2 CPU-s each) at every start, and on this
    # shared box each restarted worker would spend minutes on that before its first trial
    space = "sweep.space={lora.r: {choices: [1, 2, 4, 8]}, train.lr: {low: 1.0e-3, high: 1.0e-2, log: true}}"
    return ["sweep=lora_rank", *ONE_SLOT, space, "sweep.sampler=random", "model=tiny_bert", "data=tiny", "train.max_steps=2",
            "train.eval_every=0", "eval.batch_size=64", "hardware.threads=1", "tracking.mode=disabled",
            "eval.baseline=false", "sweep.heartbeat_interval=2", "sweep.grace_period=10", "sweep.max_retry=20",
            f"sweep.n_trials={n}", f"study={study}", "storage=postgres", f"storage.url={url}", f"out_dir={out_dir}"]


class Worker:
    def __init__(self, i: int, args: list[str], logs: Path):
        self.i, self.args, self.logs, self.proc, self.lives = i, args, logs, None, 0

    def start(self):
        self.lives += 1
        self.busy_since = None  # when this life may be killed: a few seconds after it started a trial
        log = open(self.logs / f"worker{self.i}.{self.lives}.log", "w")
        env = {**os.environ, **QUIET_ENV, "PYTHONUNBUFFERED": "1"}  # a killed worker's log keeps its last lines
        # (run the soak itself under nice: the workers inherit it)
        # the same command every life: the sampler's seed is drawn per trial number (optuna_parts.seeded_per_trial),
        # so neither another worker nor a restart replays a configuration
        self.proc = subprocess.Popen([sys.executable, "-m", "harness", *self.args],
                                     stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _trials(url: str, study: str):
    import optuna

    try:
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    except KeyError:  # not created yet
        return []


def _complete_points(trials) -> Counter:
    from optuna.trial import TrialState

    return Counter(t.user_attrs.get("point") for t in trials if t.state == TrialState.COMPLETE)


def dashboard_check(url: str, study: str) -> dict:
    """Open the storage in optuna-dashboard's WSGI app (in process) and read the study back through its API."""
    import optuna
    from optuna_dashboard import wsgi

    storage = optuna.storages.RDBStorage(url)
    app = wsgi(storage)

    def get(path: str, query: str = "") -> tuple[str, dict]:
        status = {}
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "localhost",
                   "SERVER_PORT": "80", "wsgi.input": io.BytesIO(b""), "wsgi.errors": sys.stderr,
                   "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1"}
        body = b"".join(app(environ, lambda s, h, exc=None: status.setdefault("s", s)))
        return status["s"], json.loads(body)

    s1, studies = get("/api/studies")
    mine = [x for x in studies.get("study_summaries", []) if x["study_name"] == study]
    s2, detail = get(f"/api/studies/{mine[0]['study_id']}", "after=0") if mine else ("-", {})
    return {"studies_status": s1, "detail_status": s2, "found": bool(mine),
            "n_trials": len(detail.get("trials", [])), "best_trials": len(detail.get("best_trials", []))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pg-url", default=os.environ.get("HARNESS_TEST_PG_URL"))
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--kill-every", type=float, nargs=2, default=[5.0, 15.0], metavar=("MIN_S", "MAX_S"))
    ap.add_argument("--into-trial", type=float, nargs=2, default=[0.5, 4.0], metavar=("MIN_S", "MAX_S"),
                    help="how far into its trial a worker is killed")
    ap.add_argument("--chaos-s", type=float, default=480, help="kill for at most this long, then let the study finish")
    ap.add_argument("--budget-s", type=float, default=600, help="hard bound on the whole soak")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.trials, args.chaos_s, args.budget_s = 20, 40, 180
    if not args.pg_url:
        ap.error("--pg-url (or HARNESS_TEST_PG_URL) is needed")
    import psycopg
    from optuna.trial import TrialState
    from sqlalchemy.engine import make_url

    rng = random.Random(args.seed)
    admin = make_url(args.pg_url)
    conn_args = dict(host=admin.host, port=admin.port, user=admin.username, password=admin.password, autocommit=True)
    db = f"soak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dbname=admin.database, **conn_args) as c:
        c.execute(f"create database {db}")
    url = admin.set(database=db).render_as_string(hide_password=False)
    out_dir = Path(tempfile.mkdtemp(prefix="soak-"))
    study = "soak"
    logs = out_dir / "logs"
    logs.mkdir()
    wargs = study_args(url, out_dir, study, args.trials)
    workers = [Worker(i, wargs, logs) for i in range(args.workers)]
    kills: list[dict] = []
    t0 = time.time()
    for w in workers:
        w.start()
    next_kill = t0 + rng.uniform(*args.kill_every)
    done_at = None
    while time.time() - t0 < args.budget_s:
        time.sleep(0.5)
        trials = _trials(url, study)
        finished = len(_complete_points(trials)) >= args.trials
        if finished and done_at is None:
            done_at = time.time()
        if not any(w.alive() for w in workers) and (finished or time.time() - t0 > args.chaos_s):
            break
        chaos = not finished and time.time() - t0 < args.chaos_s
        for w in workers:  # a worker that ended by itself (the study looked done to it) is restarted while work is left
            if not w.alive() and not finished:
                w.start()
        # a kill is aimed at a worker in the middle of a trial (its driver holds a RUNNING trial), a few
        # seconds into it: on this shared box a worker needs a minute to start, and a kill during start-up
        # only tests Python's import
        running_pids = {int(t.user_attrs.get("driver", "x:0").rpartition(":")[2] or 0)
                        for t in trials if t.state == TrialState.RUNNING}
        for w in workers:
            if w.alive() and w.proc.pid in running_pids and w.busy_since is None:
                w.busy_since = time.time() + rng.uniform(*args.into_trial)
        if chaos and time.time() >= next_kill:
            live = [w for w in workers if w.alive() and w.busy_since is not None and time.time() >= w.busy_since]
            if live:
                w = rng.choice(live)
                sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
                running = sum(t.state == TrialState.RUNNING for t in trials)
                w.proc.send_signal(sig)
                try:
                    rc = w.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    rc = w.proc.wait()
                kills.append({"t": round(time.time() - t0, 1), "worker": w.i, "life": w.lives,
                              "signal": signal.Signals(sig).name, "rc": rc, "running_trials": running,
                              "complete_before": sum(_complete_points(trials).values())})
                print(f"[{time.time() - t0:6.1f} s] {signal.Signals(sig).name} worker {w.i} (life {w.lives}, "
                      f"rc {rc}); {kills[-1]['complete_before']}/{args.trials} complete", flush=True)
                w.start()
                next_kill = time.time() + rng.uniform(*args.kill_every)
    for w in workers:  # bounded: whatever still runs at the budget's end is stopped and counted below
        if w.alive():
            w.proc.terminate()
            try:
                w.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
    wall = time.time() - t0

    trials = _trials(url, study)
    states = Counter(t.state.name for t in trials)
    points = _complete_points(trials)
    # every configuration a trial was started for (a retry carries its attempt's `point`): planned work
    planned = {t.user_attrs.get("point") for t in trials if t.user_attrs.get("point")}
    lost = sorted(p for p in planned if points.get(p, 0) == 0)
    duplicated = sorted(p for p, c in points.items() if c > 1)
    dirs = sorted(int(p.name) for p in (out_dir / study / "trials").iterdir()) if (out_dir / study / "trials").is_dir() else []
    numbers = sorted(t.number for t in trials)
    records = {}
    for t in trials:
        f = out_dir / study / "trials" / str(t.number) / "result.json"
        records[t.number] = json.loads(f.read_text()).get("status") if f.is_file() else None
    complete_without_record = [t.number for t in trials if t.state == TrialState.COMPLETE
                               and records.get(t.number) != "complete"]
    dash = dashboard_check(url, study)
    result = {
        "settings": {k: v for k, v in vars(args).items() if k != "pg_url"}, "worker_args": [
            a if not a.startswith("storage.url=") else "storage.url=<fresh database>" for a in wargs],
        "wall_seconds": round(wall, 1), "study_done_at_s": round(done_at - t0, 1) if done_at else None,
        "planned_trials": args.trials, "planned_points_seen": len(planned),
        "kills": len(kills), "kills_sigkill": sum(k["signal"] == "SIGKILL" for k in kills),
        "kills_sigterm": sum(k["signal"] == "SIGTERM" for k in kills),
        "kills_with_a_running_trial": sum(k["running_trials"] > 0 for k in kills),
        "trials_lost": len(lost), "trials_duplicated": len(duplicated), "lost": lost[:20], "duplicated": duplicated[:20],
        "complete_points": len(points), "overshoot": max(0, len(points) - args.trials), "states": dict(states),
        "left_running": states.get("RUNNING", 0), "left_waiting": states.get("WAITING", 0),
        "study_trials": len(trials), "trial_dirs": len(dirs), "dirs_equal_trials": dirs == numbers,
        "trials_without_dir": sorted(set(numbers) - set(dirs))[:20], "dirs_without_trial": sorted(set(dirs) - set(numbers)),
        "complete_without_record": complete_without_record[:20], "dashboard": dash,
        "worker_lives": [w.lives for w in workers], "kill_log": kills, "out_dir": str(out_dir),
    }
    ok = (not lost and not duplicated and len(points) >= args.trials and not states.get("RUNNING")
          and not states.get("WAITING") and dirs == numbers and not complete_without_record
          and dash["found"] and dash["n_trials"] == len(trials))
    result["ok"] = ok
    path = save("soak", result, args.quick)
    print(f"{len(kills)} kills ({result['kills_sigkill']} SIGKILL, {result['kills_sigterm']} SIGTERM; "
          f"{result['kills_with_a_running_trial']} with a trial running) in {wall:.0f} s; "
          f"{len(points)}/{args.trials} points complete; lost {len(lost)}, duplicated {len(duplicated)}; "
          f"states {dict(states)}; {len(trials)} trials in the study, {len(dirs)} trial dirs; dashboard {dash}")
    print(f"{'OK' if ok else 'FAILED'}; wrote {path}")
    with psycopg.connect(dbname=admin.database, **conn_args) as c:
        c.execute(f"drop database if exists {db} with (force)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
