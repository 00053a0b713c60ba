"""The study session: open the study (create it, or load it and check the experiment is the same), queue
the grid points, reference arms and seeds, reap trials whose driver died, claim the next trial, and tell the
study how a trial ended. The loop that runs trials through a runner is harness/study/driver.py (the split of
optuna's study.py / _optimize.py / _tell.py).

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
import socket
import threading
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.config.schema import ConfigError
from harness.optuna_parts import (directions, make_pruner, make_sampler, make_storage, mask_url, pop_waiting_trial,
                                  quiet_optuna, retry_callback, tally, trial_handle, where)
from harness.record import ATTR_METRICS
from harness.study import keep
from harness.study import space as space_mod
from harness.study.checks import config_changes, experiment_config, reference_key, reference_overrides
from harness.study.outcome import Outcome


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mask_override(o: str) -> str:
    key, eq, value = o.partition("=")
    return f"{key}={mask_url(value)}" if eq and key.lstrip("+~") == "storage.url" else o


def base_overrides(overrides: list[str]) -> list[str]:
    """The command line every trial starts from (the driver adds params, seed and trial number)."""
    return [o for o in overrides if o.split("=", 1)[0] not in ("trial", "--cfg")]


class Session:
    """One driver's view of the study in its storage: open(), then next_trial() / tell() per trial."""

    def __init__(self, cfg: DictConfig, overrides: list[str]):
        quiet_optuna()
        self.cfg, self.sw = cfg, cfg.sweep
        self.base = base_overrides(overrides)
        self.root = Path(cfg.out_dir) / cfg.study
        self.me = f"{socket.gethostname()}:{os.getpid()}"
        self.lock = threading.Lock()  # the loop's threads share one storage connection
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
        self.experiment = experiment_config(cfg)  # every trial's config must agree (the loop checks)

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
        """Claim the next trial within the budget and the timeout: (trial, params, seed), or None."""
        with self.lock:
            return self._next_trial(t0)

    def _next_trial(self, t0: float):
        if self.sw.timeout and time.time() - t0 > self.sw.timeout:
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

    def beat(self, number: int):
        """The heartbeat of trial `number` (a no-op for storages without one), for the runner to call."""
        trial_id = self._tid(number)
        return (lambda: self.storage.record_heartbeat(trial_id)) if self.heartbeat else (lambda: None)

    def tell(self, trial, out: Outcome, attrs: dict, interrupted: bool) -> None:
        """Record how the trial ended: its attributes (the record's metrics, the reasons), its artifacts,
        its state and values; an interrupted trial is queued again (retried)."""
        from optuna.trial import TrialState

        if out.record:
            attrs.update({k: getattr(out.record, k, None) for k in (*ATTR_METRICS, *self.sw.objectives)})
        # always both keys: a retry inherits the user_attrs of the attempt it repeats
        attrs["fail_reason"] = out.reason if out.state == "FAIL" else None
        attrs["prune_reason"] = out.reason if out.state == "PRUNED" else None
        with self.lock:
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            keep.attach_trial(trial, Path(attrs["run_dir"]), self.cfg)  # config.yaml + result.json as artifacts
            if out.state == "COMPLETE":
                self.study.tell(trial, out.values)
            else:
                self.study.tell(trial, state=TrialState[out.state])
            if interrupted:
                retry_callback(self.sw)(self.study, self._frozen(trial.number))
