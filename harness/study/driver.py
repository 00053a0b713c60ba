"""The study driver: `python -m harness sweep=NAME` runs (or resumes) an Optuna study.

It reads as: open the study (create it, or load it and check the experiment is the same) -> while
there is a next trial within the budget: compose its config (base overrides + params + seed),
submit it to a runner -> record the outcome in the study. The runner is injected: warm trial workers
by default (harness/runners/warm.py: one long-lived process per slot that keeps the base model loaded),
fresh `python -m harness.train` processes with `sweep.workers=cold` (harness/runners/process.py), an
in-process fake in tests. A trial's result.json `status` is its outcome (COMPLETE, PRUNED, FAIL with
`fail_reason`); one failed trial never stops the study. What is validated before the study exists
is in harness/study/checks.py; the console output in harness/study/summary.py.

Resume is the same command: the study is loaded by name from `storage.url`. A trial left RUNNING by a
dead driver is failed and retried (same params, same seed): at once when that driver ran on this
host and its pid is gone, otherwise after `sweep.grace_period` seconds without a heartbeat (RDB
storages; Optuna's heartbeat + RetryHeartbeatStaleTrialCallback). The worker that creates the study
queues every grid point (identified by a `point` user_attr) and each reference arm; workers claim
queued trials, so none is lost or run twice across restarts and workers.

Seeds: each configuration runs once per `sweep.seeds` entry, one trial per seed (user_attr `seed`,
also in the config). A grid enumerates (point, seed); other samplers enqueue the other seeds of a
freshly sampled configuration right after it. `n_trials` counts trials, seed repeats included;
reference arms come on top.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.study import keep
from harness.study import summary as report
from harness.study import space as space_mod
from harness.config.schema import ConfigError, complete, load_with_choices
from harness.runners.process import Outcome
from harness.optuna_parts import (dashboard_command, directions, make_pruner, make_sampler, make_storage, mask_url,
                                  pop_waiting_trial, quiet_optuna, retry_callback, storage_error, tally,
                                  trial_handle, where)
from harness.record import ATTR_METRICS, resume_dir, trial_dir
from harness.study.checks import check, config_changes, experiment_config, reference_key, reference_overrides
from harness.runners.warm import make_runner

# ---------------------------------------------------------------------------- bookkeeping


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------- the driver


def mask_override(o: str) -> str:
    key, eq, value = o.partition("=")
    return f"{key}={mask_url(value)}" if eq and key.lstrip("+~") == "storage.url" else o


def base_overrides(overrides: list[str]) -> list[str]:
    """The command line every trial starts from (the driver adds params, seed and trial number)."""
    return [o for o in overrides if o.split("=", 1)[0] not in ("trial", "--cfg")]


class Driver:
    """open() the study, then while there is a next trial within the budget: submit it to the runner
    (warm workers by default, warm.make_runner; tests inject an in-process one) and record its outcome."""

    def __init__(self, cfg: DictConfig, overrides: list[str], runner=None):

        quiet_optuna()
        self.cfg, self.sw = cfg, cfg.sweep
        self.base = base_overrides(overrides)
        self.root = Path(cfg.out_dir) / cfg.study
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.signal = 0  # the signal that stopped the driver, if any
        self.url = mask_url(cfg.storage.url)  # what is printed and recorded: never the password
        self.storage = make_storage(cfg, heartbeat=True)
        self.heartbeat = hasattr(self.storage, "record_heartbeat")
        self.points = None
        if self.sw.sampler == "grid":
            self.points = [(p, s) for p in space_mod.grid(self.sw.space) for s in self.sw.seeds]
        n = self.sw.n_trials
        self.budget = n if self.points is None else min(n or len(self.points), len(self.points))
        self.references = [(dict(r), s) for r in (self.sw.get("references") or []) for s in self.sw.seeds]
        if self.budget is not None:
            self.budget += len(self.references)  # reference arms run beside the search budget
        self.slots = list(range(self._parallel()))
        self.experiment = experiment_config(cfg)  # every trial's config must agree (run_trial)
        self.changed: list[str] = []
        self.runner = runner or make_runner(cfg, len(self.slots))

    def _parallel(self) -> int:
        p = self.sw.parallel
        if self.cfg.hardware.device == "cuda":
            from harness.config.devices import cuda_devices

            gpus = cuda_devices()
            if p * self.cfg.hardware.processes > gpus:
                raise ConfigError(f"{where(self.cfg)}: sweep.parallel={p} x hardware.processes="
                                  f"{self.cfg.hardware.processes} needs {p * self.cfg.hardware.processes} GPUs; "
                                  f"{gpus} visible")
        return p

    # -- study
    def open(self):
        import optuna

        space_spec = json.dumps(OmegaConf.to_container(self.sw.space), sort_keys=True)
        trials_dir = self.root / "trials"  # looked at before the names: another worker may be creating both
        if (trials_dir.is_dir() and any(trials_dir.iterdir())
                and self.cfg.study not in optuna.get_all_study_names(self.storage)):
            raise ConfigError(f"{trials_dir} holds trials of an earlier study that {self.url} does not "
                              f"know; delete {self.root} or set study=<new name>")
        try:  # atomic in the storage: of several workers starting together, exactly one creates the study
            self.study = optuna.create_study(study_name=self.cfg.study, storage=self.storage, load_if_exists=False,
                                             directions=directions(self.sw), sampler=make_sampler(self.cfg),
                                             pruner=make_pruner(self.cfg))
            new = True
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(study_name=self.cfg.study, storage=self.storage,
                                           sampler=make_sampler(self.cfg), pruner=make_pruner(self.cfg))
            new = False
        self.study_id = self.storage.get_study_id_from_name(self.cfg.study)
        if new:
            self.study.set_user_attr("space", space_spec)
            self.study.set_user_attr("sweep_file", self.sw.file)
            self.study.set_user_attr("overrides", [mask_override(o) for o in self.base])
            self.study.set_user_attr("objectives", list(self.sw.objectives))
            self.study.set_metric_names(list(self.sw.objectives))  # optuna-dashboard's axis names
            self.study.set_user_attr("config", experiment_config(self.cfg))
            for ref in self.sw.enqueue:
                for s in self.sw.seeds:
                    self.study.enqueue_trial(dict(ref), user_attrs={"seed": s, "point": space_mod.point_key(dict(ref), s)},
                                             skip_if_exists=True)
            self._queue_references()
            self._queue_grid()
            self.study.set_user_attr("grid_queued", True)
        else:
            old = self.study.user_attrs.get("space")
            if [d.name.lower() for d in self.study.directions] != directions(self.sw):
                raise ConfigError(f"study {self.cfg.study} exists with directions "
                                  f"{[d.name.lower() for d in self.study.directions]}, the sweep asks for "
                                  f"{directions(self.sw)}; set study=<new name>")
            if old is not None and old != space_spec:
                raise ConfigError(f"study {self.cfg.study} exists with another search space ({old}); resuming it with "
                                  f"{where(self.cfg)}'s space would mix two studies: set study=<new name>")
            old_cfg = self.study.user_attrs.get("config")
            changes = config_changes(old_cfg, experiment_config(self.cfg), list(self.sw.allow_changes)) \
                if old_cfg is not None else []
            if changes:
                keys = ",".join(c.split(":")[0] for c in changes)
                raise ConfigError(f"study {self.cfg.study} was created with another config ({'; '.join(changes[:6])}"
                                  f"{'; ...' if len(changes) > 6 else ''}): resuming would mix two experiments. Set "
                                  f"study=<new name>, or if these cannot affect results, '+sweep.allow_changes=[{keys}]'")
            if self.points is not None:
                for _ in range(600):  # the creating worker may still be queueing the grid
                    if (self.storage.get_study_user_attrs(self.study_id).get("grid_queued")
                            or any(t.state.is_finished() for t in self.study.get_trials(deepcopy=False))):
                        break  # queued, or a study that has been running for a while
                    time.sleep(0.1)
                self._queue_grid()  # points a raised budget adds (resume); not atomic across workers
            self._queue_references()  # arms added to the sweep file since (resume)
        return new

    def _queue_references(self) -> None:
        """Queue each reference arm once per seed, unless a trial holds it already (so a resume adds
        only new ones). The trial carries its overrides in user_attrs; its params stay empty."""
        claimed = {t.user_attrs.get("point") for t in self.study.get_trials(deepcopy=False)}
        for ref, s in self.references:
            if reference_key(ref, s) not in claimed:
                self.study.enqueue_trial({}, user_attrs={"seed": s, "point": reference_key(ref, s),
                                                         "reference": reference_overrides(ref)})

    def _queue_grid(self) -> None:
        """Queue every (point, seed) within the budget that no trial holds yet. Workers then only pop
        queued trials, which the storage hands to exactly one of them."""
        if self.points is None:
            return
        claimed = {t.user_attrs.get("point") for t in self.study.get_trials(deepcopy=False)}
        for p, s in self.points[: self.budget]:
            if space_mod.point_key(p, s) not in claimed:
                self.study.enqueue_trial(p, user_attrs={"seed": s, "point": space_mod.point_key(p, s)})

    def reap_stale(self) -> None:
        """Fail (and retry) RUNNING trials whose driver is dead: same host + gone pid, or a stale heartbeat."""
        import optuna
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            host, _, pid = str(t.user_attrs.get("driver", "")).rpartition(":")
            if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                try:
                    self.storage.set_trial_user_attr(self._tid(t.number), "fail_reason", f"driver {pid} died")
                    self.study.tell(t.number, state=TrialState.FAIL)
                except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
                    continue
                retry_callback(self.sw)(self.study, self._frozen(t.number))
        optuna.storages.fail_stale_trials(self.study)

    def _tid(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _frozen(self, number: int):
        return next(t for t in self.study.get_trials(deepcopy=True) if t.number == number)

    def next_trial(self, t0: float):
        """Ask for the next trial within the budget, or None. Called under the lock."""

        if self.stopping.is_set() or (self.sw.timeout and time.time() - t0 > self.sw.timeout):
            return None
        self.reap_stale()
        trials = self.study.get_trials(deepcopy=False)
        c = tally(trials)
        if self.budget is not None and c["done"] + c["running"] >= self.budget:
            return None
        if self.points is not None:
            # grid: claim a queued point (WAITING -> RUNNING, compare-and-set in the storage); never
            # ask(), which would sample a point outside the grid when another worker took the last one
            tid = pop_waiting_trial(self.study)
            if tid is None:
                return None
            trial = trial_handle(self.study, tid)
        else:
            trial = self.study.ask()
        trial.set_user_attr("driver", self.me)  # lets a later driver on this host see it died
        if self.heartbeat:
            self.storage.record_heartbeat(self._tid(trial.number))
        if trial.user_attrs.get("reference"):  # a reference arm: its overrides, not the space's axes
            return trial, {}, trial.user_attrs["seed"]
        params = space_mod.suggest(trial, self.sw.space)
        fresh = "seed" not in trial.user_attrs
        seed = trial.user_attrs.get("seed", self.sw.seeds[0])
        if fresh:
            trial.set_user_attr("seed", seed)
            trial.set_user_attr("point", space_mod.point_key(params, seed))
            for s in self.sw.seeds[1:]:  # the same configuration, once per further seed
                self.study.enqueue_trial(params, user_attrs={"seed": s, "point": space_mod.point_key(params, s)})
        return trial, params, seed

    # -- one trial
    def run_trial(self, trial, params: dict, seed: int, slot: int) -> tuple[str, dict]:
        """Compose the trial's config, hand it to the runner, record how it ended in the study."""
        from optuna.trial import TrialState

        n = trial.number
        run_dir = trial_dir(self.cfg.out_dir, self.cfg.study, n)
        overrides = [*self.base, *space_mod.to_overrides(params, self.cfg), *trial.user_attrs.get("reference", []),
                     f"seed={seed}", f"trial={n}"]
        resume = resume_dir(self.root, self.storage.get_trial_system_attrs(self._tid(n)))
        if resume is not None:  # the retry of an interrupted attempt continues from its last checkpoint
            overrides.append(f"train.resume_from={resume}")
        attrs = {"overrides": [mask_override(o) for o in overrides], "run_dir": str(run_dir), "seed": seed,
                 "params": params}
        trial_id = self._tid(n)
        beat = (lambda: self.storage.record_heartbeat(trial_id)) if self.heartbeat else (lambda: None)
        try:
            tcfg = complete(load_with_choices(overrides)[0])
            # trials are composed from the files on disk: an edit to the sweep or config files mid-study would
            # silently make later trials another experiment, so stop (the trial is queued again) instead
            changed = [] if trial.user_attrs.get("reference") else \
                config_changes(self.experiment, experiment_config(tcfg), list(self.sw.allow_changes))
            if changed:
                self.changed = changed
                self.stopping.set()
                out = Outcome("FAIL", reason="the experiment changed on disk")
            else:
                run_dir.mkdir(parents=True, exist_ok=True)
                out = self.runner.run(tcfg, run_dir, slot, lambda pid: self.storage.set_trial_user_attr(trial_id, "pid",
                                                                                                         pid),
                                      beat, self.sw.heartbeat_interval, list(self.sw.objectives))
        except ConfigError as e:
            out = Outcome("FAIL", reason=f"config: {e}")
        except Exception as e:  # noqa: BLE001 - one broken trial never stops the study
            out = Outcome("FAIL", reason=f"driver: {type(e).__name__}: {e}")
        interrupted = self.stopping.is_set() and out.state == "FAIL"
        if interrupted:
            out.reason = "interrupted: the driver was stopped; rerun the command to retry this configuration"
        if out.record:
            attrs.update({k: getattr(out.record, k, None) for k in (*ATTR_METRICS, *self.sw.objectives)})
        # always both keys: a retry inherits the user_attrs of the attempt it repeats
        attrs["fail_reason"] = out.reason if out.state == "FAIL" else None
        attrs["prune_reason"] = out.reason if out.state == "PRUNED" else None
        with self.lock:
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            keep.attach_trial(trial, run_dir, self.cfg)  # config.yaml + result.json as Optuna artifacts
            if out.state == "COMPLETE":
                self.study.tell(trial, out.values)
            else:
                self.study.tell(trial, state=TrialState[out.state])
            if interrupted:
                retry_callback(self.sw)(self.study, self._frozen(n))
        return out.state, {**attrs, "number": n, "values": out.values, "reference": trial.user_attrs.get("reference")}

    # -- the loop
    def run(self) -> int:
        from tqdm.auto import tqdm

        new = self.open()
        c = tally(self.study.get_trials(deepcopy=False))
        budget = "until the timeout" if self.budget is None else f"{max(self.budget - c['done'], 0)} to go"
        report.header(self.cfg, new, c, budget, self.url, dashboard_command(self.cfg.storage.url))
        bar = tqdm(total=self.budget, initial=min(c["done"], self.budget or c["done"]), unit="trial",
                   desc=self.cfg.study, dynamic_ncols=True, file=sys.stderr)
        report.postfix(bar, self.study, self.sw)
        t0 = time.time()
        free = list(self.slots)
        running = {}
        pool = ThreadPoolExecutor(max_workers=len(self.slots))
        restore = self._catch_signals()
        try:
            while True:
                while free and not self.stopping.is_set():
                    with self.lock:
                        job = self.next_trial(t0)
                    if job is None:
                        break
                    slot = free.pop(0)
                    running[pool.submit(self.run_trial, *job, slot)] = slot
                if not running:
                    if self.stopping.is_set() or (self.sw.timeout and time.time() - t0 > self.sw.timeout):
                        break
                    c = tally(self.study.get_trials(deepcopy=False))
                    if c["running"] and (self.budget is None or c["done"] < self.budget):
                        # trials of another (or a dead) driver: wait for them to finish or go stale
                        bar.set_description(f"{self.cfg.study} (waiting on {c['running']} running elsewhere)")
                        self.stopping.wait(min(self.sw.heartbeat_interval, 5))
                        continue
                    break
                finished, _ = wait(running, timeout=self.sw.heartbeat_interval, return_when=FIRST_COMPLETED)
                for f in finished:
                    free.append(running.pop(f))
                    state, info = f.result()
                    bar.write(report.trial_line(state, info))
                    if state != "FAIL" or "interrupted" not in (info.get("fail_reason") or ""):
                        bar.update(1)
                report.postfix(bar, self.study, self.sw)
        except BaseException:  # the storage failed (or worse): end the running trials, do not wait an hour
            self.stopping.set()
            self.runner.stop(signal.SIGTERM)
            raise
        finally:
            restore()
            bar.close()
            pool.shutdown()
            getattr(self.runner, "close", lambda: None)()  # warm workers exit; a fresh process per trial has none
        keep.keep_best(self.study, self.cfg, report.rerun_command)  # best.yaml; save_adapter=best: prune the others
        code = self.summary()
        if self.changed:
            print(f"error: the experiment changed while study {self.cfg.study} ran ({'; '.join(self.changed[:4])}): "
                  f"{self.sw.file or 'the sweep file'} or a config file was edited. Restore it and rerun the command "
                  "(the stopped trial runs again), or start a new study with study=<new name>", file=sys.stderr)
            return 2
        return 128 + self.signal if self.signal else code

    def _catch_signals(self):
        """SIGINT (Ctrl-C) and SIGTERM (what SLURM and Kubernetes send before a kill): stop asking,
        SIGTERM the running trials' process groups and let the loop record them as interrupted (FAIL,
        retried on the next run). The handler only sets flags and signals children: the storage is
        never left half-written by an exception raised mid-call. A second signal exits at once; the
        trials it leaves RUNNING are failed and retried by the next driver on this host (dead pid)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def handle(signum, frame):
            if self.stopping.is_set():
                self.runner.stop(signal.SIGKILL)
                print("\ninterrupted again: exiting now", file=sys.stderr)
                os._exit(128 + signum)
            self.signal = signum
            self.stopping.set()
            print(f"\n{signal.Signals(signum).name}: stopping the running trials (they are retried when you rerun "
                  f"the command; press Ctrl-C again to exit at once)...", file=sys.stderr)
            self.runner.stop(signal.SIGTERM)

        old = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(s, h) for s, h in old.items()]

    def summary(self) -> int:
        trials = self.study.get_trials(deepcopy=False)
        return report.summary(self.cfg, trials, tally(trials), self.study.best_trials if len(self.sw.objectives) > 1
                              else None, self.url, dashboard_command(self.cfg.storage.url))


def run_study(cfg: DictConfig, overrides: list[str], runner=None) -> int:
    """`python -m harness sweep=NAME ...`: validate everything, then run or resume the study."""
    import optuna
    import sqlalchemy.exc

    if runner is None:
        runner = make_runner(cfg, cfg.sweep.parallel)
        # warm workers start importing now, beside the checks: that import is most of the first trial's wait
        getattr(runner, "prestart", lambda c: None)(cfg)
    try:
        check(cfg, base_overrides(overrides))  # before the storage exists: a bad sweep leaves nothing behind
        return Driver(cfg, overrides, runner).run()
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError) as e:
        raise ConfigError(storage_error(cfg.storage.url, e)) from None
    finally:
        if getattr(runner, "workers", None):  # a sweep refused before it ran: its prestarted workers go at once
            runner.stop(signal.SIGKILL)
            runner.close()
