"""How far one study database carries: K simulated workers on one storage (a simulation; no cluster here).

    python -m bench.storage_sim --pg-url postgresql+psycopg://user:pw@host:5433/db   # K = 4, 16, 64, both storages
    python -m bench.storage_sim --quick                                               # smoke test

Each simulated worker is the real study driver (harness/study/driver.py's Driver and its Session from
harness/study/session.py: open, next_trial, run_trial, tell, heartbeats, the retry callback, the summary)
with its own storage object, i.e. its own connection pool, as a worker on its own machine has. Only
the trial is simulated: an in-process runner (the Runner protocol of harness/runners/__init__.py, as
the tests' in-process runners implement it) sleeps a drawn duration (lognormal, median --median-s), heartbeats every
sweep.heartbeat_interval seconds meanwhile, and reports a drawn accuracy. Workers are THREADS in one
process, not processes: 64 driver processes (each ~1 s of CPU to import, ~150 MB) do not fit a shared
2-core box. The consequence, reported per run as `client_cpu`: all K drivers share one Python
interpreter (one core at most, the GIL), so a run whose client_cpu is near 1.0 is limited by the
simulation's own driver code, not by the storage.

Three simplifications, all outside the storage path: each trial's config is the base composed and
validated once with the trial's params, seed and number merged in, instead of a fresh Hydra compose
and validation (~0.2 CPU-s a trial, spent on each worker's own machine in a real cluster; and Hydra's
global state is not thread-safe); the config.yaml a trial leaves (attached as an artifact, like its
result.json) is the base's text; the end-of-study best-adapter bookkeeping (harness/study/keep.py) is skipped.

Measured per (storage, K): trials/hour sustained (completed trials / wall time from the first ask to
the last tell), the ideal rate K / mean trial duration, their ratio (efficiency), p50/p99 latency of
ask (Session.next_trial: reap stale trials, count, claim/ask, set attributes), tell (everything the
driver writes after the trial returns: user attributes, artifacts, study.tell) and heartbeat
(storage.record_heartbeat), the peak number of PostgreSQL connections, and CPU seconds of this
process and of the PostgreSQL server.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import random
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from bench.common import ONE_SLOT, save, table
from harness.runners import InProcess

SPACE = "sweep.space={train.lr: {low: 1e-5, high: 1e-2, log: true}}"
BASE = ["model=tiny_bert", "data=tiny", "tracking.mode=disabled", "hardware.threads=1", "sweep=lora_rank", *ONE_SLOT,
        "sweep.sampler=random", SPACE, "sweep.heartbeat_interval=1", "sweep.grace_period=30", "eval.baseline=false"]
PER_TRIAL = ("train.lr", "seed", "trial", "train.resume_from")


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, math.ceil(q * len(xs)) - 1)]


class Latencies:
    def __init__(self):
        self.lock = threading.Lock()
        self.ms: dict[str, list[float]] = defaultdict(list)
        self.events: list[tuple[float, str]] = []

    def add(self, op: str, seconds: float) -> None:
        with self.lock:
            self.ms[op].append(seconds * 1000)
            self.events.append((time.time(), op))


class SimRunner(InProcess):
    """A Runner (harness/runners/__init__.py) that starts no process: sleep a drawn duration, beat
    meanwhile, report a drawn accuracy."""

    def __init__(self, lat: Latencies, median_s: float, sigma: float, seed: int):
        self.lat, self.median_s, self.sigma, self.seed = lat, median_s, sigma, seed
        self.local = threading.local()
        self.durations: list[float] = []
        self.yaml = None

    def run(self, tcfg, run_dir, slot, started, beat, every):
        from harness.record import TrialRecord
        from harness.runners import Ended

        rng = random.Random(f"{self.seed}:{tcfg.trial}")
        started(os.getpid())
        dur = self.median_s * rng.lognormvariate(0, self.sigma)
        self.durations.append(dur)
        end = time.time() + dur
        t = time.perf_counter()
        beat()  # a first beat, then one per interval, as a real runner's wait loop beats
        self.lat.add("heartbeat", time.perf_counter() - t)
        while (left := end - time.time()) > 0:
            time.sleep(min(every, left))
            if time.time() < end:
                t = time.perf_counter()
                beat()
                self.lat.add("heartbeat", time.perf_counter() - t)
        rec = {"status": "complete", "accuracy": rng.betavariate(8, 3), "flops": 1e9, "device_seconds": dur,
               "tokens": 1000}
        # what a trial leaves for the driver to attach as artifacts: its config.yaml and result.json
        (Path(run_dir) / "config.yaml").write_text(self.config_text(tcfg))
        (Path(run_dir) / "result.json").write_text(json.dumps(rec))
        self.local.returned = time.perf_counter()
        return Ended(0, TrialRecord.model_validate(rec), Path(run_dir) / "log.txt")

    def config_text(self, tcfg) -> str:
        if self.yaml is None:
            from harness.config.schema import to_yaml

            self.yaml = to_yaml(tcfg)
        return self.yaml


def _patch_compose():
    """Compose and validate the base once (under a lock: Hydra's global state), then merge each trial's
    keys (params, seed, number) into a copy: the config the driver would compose, without ~0.2 CPU-s of
    Hydra + validation per trial that a real worker spends on its own machine."""
    import harness.study.driver as study_mod
    import harness.study.keep as keep_mod
    from omegaconf import OmegaConf

    cache, lock, real_load, real_complete = {}, threading.Lock(), study_mod.load_with_choices, study_mod.complete

    def cached(overrides):
        base = tuple(o for o in overrides if o.split("=", 1)[0] not in PER_TRIAL)
        with lock:
            if base not in cache:
                cfg, choices = real_load(list(base))
                cache[base] = (real_complete(cfg), choices)
        cfg, choices = cache[base]
        mine = [o for o in overrides if o.split("=", 1)[0] in PER_TRIAL]
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(mine)), choices

    study_mod.load_with_choices = cached
    study_mod.complete = lambda cfg: cfg  # cached() returns the completed config
    keep_mod.keep_best = lambda *a, **k: None


def _timed_driver(lat: Latencies):
    from harness.study.driver import Driver

    class TimedDriver(Driver):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            ask = self.session.next_trial

            def next_trial(t0):
                t = time.perf_counter()
                job = ask(t0)
                if job is not None:
                    lat.add("ask", time.perf_counter() - t)
                return job
            self.session.next_trial = next_trial

        def run_trial(self, trial, params, seed, slot):
            res = super().run_trial(trial, params, seed, slot)
            returned = getattr(self.runner.local, "returned", None)
            if returned is not None:
                lat.add("tell", time.perf_counter() - returned)
                self.runner.local.returned = None
            return res

    return TimedDriver


def _pg_server_cpu(port: int | None) -> float:
    """CPU seconds (user+system) of the PostgreSQL server processes listening on this port's cluster."""
    if port is None:
        return 0.0
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            if b"postgres" not in (p / "comm").read_bytes():
                continue
            fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError):
            continue
    return total


def _pg_connections(url: str) -> int:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database) as c:
        return c.execute("select count(*) from pg_stat_activity where datname = %s", (u.database,)).fetchone()[0]


def _fresh_pg_db(url: str) -> str:
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    name = f"storage_sim_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database,
                         autocommit=True) as c:
        c.execute(f"create database {name}")
    return u.set(database=name).render_as_string(hide_password=False)


def run_one(storage: str, k: int, n: int, args, out_root: Path) -> dict:
    from harness.config.schema import complete, load

    lat = Latencies()
    runner_seed = 1000 * k + (1 if storage == "postgres" else 2)
    study = f"sim_{storage}_{k}"
    if storage == "postgres":
        url = _fresh_pg_db(args.pg_url)
        st = ["storage=postgres", f"storage.url={url}"]
        from sqlalchemy.engine import make_url
        port = make_url(url).port
    else:
        url, port = None, None
        st = ["storage=journal"]
    ov = [*BASE, *st, f"sweep.n_trials={n}", f"sweep.timeout={args.cap_s}", f"out_dir={out_root}",
          f"study={study}"]
    cfg = complete(load(ov))
    Timed = _timed_driver(lat)
    runners = [SimRunner(lat, args.median_s, args.sigma, runner_seed + i) for i in range(k)]
    first = Timed(cfg, ov, runner=runners[0])
    first.session.open()  # the study exists before K workers race (as launcher=slurm does before it submits)
    peak_conn, stop_watch = [0], threading.Event()

    def watch():
        while url and not stop_watch.wait(1.0):
            with contextlib.suppress(Exception):
                peak_conn[0] = max(peak_conn[0], _pg_connections(url))

    errors: list[str] = []

    def worker(i):
        try:
            d = first if i == 0 else Timed(cfg, ov, runner=runners[i])
            d.run()
        except Exception as e:  # noqa: BLE001 - a worker that fails is a finding, reported below
            errors.append(f"worker {i}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    load0 = os.getloadavg()[0]
    cpu0, srv0, t0 = time.process_time(), _pg_server_cpu(port), time.time()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(k)]
        for t in threads:
            t.start()
            time.sleep(args.stagger_s)  # workers start over a few seconds, as jobs do
        for t in threads:
            t.join()
    wall_all = time.time() - t0
    cpu, srv = time.process_time() - cpu0, _pg_server_cpu(port) - srv0
    stop_watch.set()

    import optuna
    from optuna.trial import TrialState

    trials = optuna.load_study(study_name=study, storage=first.session.storage).get_trials(deepcopy=False)
    complete_ = [t for t in trials if t.state == TrialState.COMPLETE]
    asks = [ts for ts, op in lat.events if op == "ask"]
    tells = [ts for ts, op in lat.events if op == "tell"]
    span = (max(tells) - min(asks)) if asks and tells else float("nan")
    durations = [d for r in runners for d in r.durations]
    mean_d = statistics.fmean(durations) if durations else float("nan")
    rate = len(complete_) / span * 3600 if span == span and span > 0 else 0.0
    ideal = k / mean_d * 3600
    row = {"storage": storage, "K": k, "trials": len(complete_), "states": dict(_count(t.state.name for t in trials)),
           "wall_s": round(span, 1), "wall_all_s": round(wall_all, 1), "trials_per_hour": round(rate),
           "ideal_per_hour": round(ideal), "efficiency": round(rate / ideal, 3), "mean_trial_s": round(mean_d, 3),
           "client_cpu": round(cpu / wall_all, 3), "server_cpu": round(srv / wall_all, 3) if port else None,
           "peak_connections": peak_conn[0] if url else None,
           "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)], "errors": errors[:5], "n_errors": len(errors)}
    # every ask reads the whole study (the driver's tally and progress line): its cost grows with the
    # study's size, so the first and last 100 asks of a run are reported apart
    asks_ms = lat.ms["ask"]
    row["ask_p50_first100_ms"] = round(_pct(asks_ms[:100], 0.5), 2) if asks_ms else None
    row["ask_p50_last100_ms"] = round(_pct(asks_ms[-100:], 0.5), 2) if asks_ms else None
    for op in ("ask", "tell", "heartbeat"):
        xs = lat.ms[op]
        row[f"{op}_n"] = len(xs)
        row[f"{op}_p50_ms"] = round(_pct(xs, 0.5), 2) if xs else None
        row[f"{op}_p99_ms"] = round(_pct(xs, 0.99), 2) if xs else None
    if url:
        _drop_pg_db(args.pg_url, url)
    return row


def _count(xs):
    out: dict[str, int] = defaultdict(int)
    for x in xs:
        out[x] += 1
    return out


def _drop_pg_db(admin_url: str, url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    a, u = make_url(admin_url), make_url(url)
    with psycopg.connect(host=a.host, port=a.port, user=a.username, password=a.password, dbname=a.database,
                         autocommit=True) as c:
        c.execute(f"drop database if exists {u.database} with (force)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pg-url", default=os.environ.get("HARNESS_TEST_PG_URL"),
                    help="a PostgreSQL database whose role may create databases (one fresh database per run)")
    ap.add_argument("--k", type=int, nargs="+", default=[4, 16, 64])
    ap.add_argument("--storages", nargs="+", default=["postgres", "journal"])
    ap.add_argument("--trials", type=int, default=1000)
    ap.add_argument("--median-s", type=float, default=0.2, help="median simulated trial seconds")
    ap.add_argument("--sigma", type=float, default=0.5, help="lognormal sigma of the trial duration")
    ap.add_argument("--cap-s", type=int, default=600, help="sweep.timeout of each worker: a run's wall-time cap")
    ap.add_argument("--stagger-s", type=float, default=0.05)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.k, args.trials, args.median_s = [2, 4], 20, 0.3
    if "postgres" in args.storages and not args.pg_url:
        ap.error("--pg-url (or HARNESS_TEST_PG_URL) is needed for the postgres runs")
    _patch_compose()
    name = "storage_sim" if len(args.storages) > 1 else f"storage_sim_{args.storages[0]}"
    rows = []
    with tempfile.TemporaryDirectory(prefix="storage-sim-") as tmp:
        for storage in args.storages:
            for k in args.k:
                row = run_one(storage, k, args.trials, args, Path(tmp) / f"{storage}_{k}")
                rows.append(row)
                save(name, {"settings": {k: v for k, v in vars(args).items() if k != "pg_url"},
                                     "base_overrides": BASE, "rows": rows, "partial": True}, args.quick)
                print(f"{storage:8s} K={k:3d}: {row['trials']} trials in {row['wall_s']} s = "
                      f"{row['trials_per_hour']}/h (ideal {row['ideal_per_hour']}/h, eff {row['efficiency']}), "
                      f"ask p50/p99 {row['ask_p50_ms']}/{row['ask_p99_ms']} ms, tell {row['tell_p50_ms']}/"
                      f"{row['tell_p99_ms']} ms, heartbeat {row['heartbeat_p50_ms']}/{row['heartbeat_p99_ms']} ms, "
                      f"client cpu {row['client_cpu']}, server cpu {row['server_cpu']}, conns {row['peak_connections']}"
                      f"{', errors ' + str(row['n_errors']) if row['n_errors'] else ''}", flush=True)
    cols = ["storage", "K", "trials", "trials_per_hour", "ideal_per_hour", "efficiency", "ask_p50_ms", "ask_p99_ms",
            "ask_p50_first100_ms", "ask_p50_last100_ms",
            "tell_p50_ms", "tell_p99_ms", "heartbeat_p50_ms", "heartbeat_p99_ms", "client_cpu", "server_cpu",
            "peak_connections"]
    print(table(rows, cols))
    settings = {k: v for k, v in vars(args).items() if k != "pg_url"}
    path = save(name, {"settings": settings, "base_overrides": BASE, "rows": rows}, args.quick)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
