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

Racing and stop_when: decided (harness/study/racing.py): the grid is queued the same way, round-major;
at each claim the race is recomputed from the storage and decides which queued trial this worker takes
(a later round waits for its look), and a stopped configuration's queued seeds are claimed and told
PRUNED without running (user_attr racing=skipped).
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.config.schema import ConfigError
from harness.optuna_parts import (claim_trial, directions, make_pruner, make_sampler, make_storage, mask_url, pop_waiting_trial,
                                  quiet_optuna, retry_callback, tally, trial_handle, where)
from harness.record import ATTR_METRICS, trial_dir
from harness.study import keep, racing
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
        self.rules = racing.Rules.of(self.sw)
        self.notes: list[str] = []   # racing's decisions, for the driver to print
        self.skipped = 0             # trials racing told PRUNED without running them, not yet on the bar
        if self.sw.sampler == "grid":
            grid = space_mod.grid(self.sw.space)
            # racing gives seeds round by round: a budget below the grid cuts the last rounds, not configurations
            self.points = [(p, s) for s in self.sw.seeds for p in grid] if self.rules.on else \
                [(p, s) for p in grid for s in self.sw.seeds]
        n = self.sw.n_trials
        self.budget = n if self.points is None else min(n or len(self.points), len(self.points))
        self.references = [(dict(r), s) for r in (self.sw.get("references") or []) for s in self.sw.seeds]
        if self.budget is not None:
            self.budget += len(self.references)  # reference arms run beside the search budget
        self.experiment = experiment_config(cfg)  # every trial's config must agree (the loop checks)

    def open(self):
        import optuna

        space = OmegaConf.to_container(self.sw.space)
        follow = OmegaConf.to_container(self.sw.follow) if self.sw.get("follow") else None
        # the followed keys are part of where the study searches (a study without them keeps its old spec)
        space_spec = json.dumps({"space": space, "follow": follow} if follow else space, sort_keys=True, default=str)
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
            self.study.set_user_attr("racing_rules", self.rules.record())
            self._note_whole_grid_race(space)
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
            self._check_rules()
            if self.points is not None:
                for _ in range(600):  # the creating worker may still be queueing the grid
                    if (self.storage.get_study_user_attrs(self.study_id).get("grid_queued")
                            or any(t.state.is_finished() for t in self.study.get_trials(deepcopy=False))):
                        break  # queued, or a study that has been running for a while
                    time.sleep(0.1)
                self._queue_grid()  # points a raised budget adds (resume); not atomic across workers
            self._queue_references()  # arms added to the sweep file since (resume)
        return new

    def _check_rules(self) -> None:
        """A study races (or stops when decided) by the rules it was created with: the decisions already
        made, and the error rate they state, hold for those rules only."""
        old = self.study.user_attrs.get("racing_rules")
        new = self.rules.record()
        if old is None:  # a study from before racing: it ran by the budget
            old = {**new, "racing": None, "stop_when": "budget"}
        old = {"futility": 0.0, "compare": "arms", **old}  # before these rules: no futility, the arms compared
        if old["stop_when"] == "decided" and "interim_alpha" not in old and "interim_alpha" in new:
            # created when every look spent all of alpha: the interim budget is stricter, so a study that has not
            # stopped made every decision the budget would have, and goes on under it; a stopped one keeps its
            # record (the analysis says what its looks cost) and has nothing left to decide
            old = {**old, "interim_alpha": new["interim_alpha"]}
            if self.study.user_attrs.get("stopped") is None:
                self.study.set_user_attr("racing_rules", new)
                self.notes.append(f"racing rules: the interim looks now spend {new['interim_alpha']} of alpha "
                                  "(harness/study/stopping.py); this study had not stopped, so no decision changes")
        if old != new and (self.rules.on or old["racing"] is not None or old["stop_when"] != "budget"):
            raise ConfigError(f"study {self.cfg.study} was created with racing/stop_when {old}; the sweep asks for "
                              f"{new}: resuming would change decisions already made. Set study=<new name>")

    def _note_whole_grid_race(self, space: dict) -> None:
        """Racing without `tune` over several searched axes is one race over the whole grid: a configuration that
        trails on one axis stops even where the comparison one axis apart is the question (qlora_r32_lr lost
        attn_qv's lr comparison that way). Said once, when the study is created."""
        varied = [k for k, v in space.items() if len((v or {}).get("choices") or ()) > 1]
        if self.rules.min_seeds is not None and not self.rules.tune and len(varied) > 1:
            self.notes.append(f"racing without sweep.tune: one race over the whole grid ({', '.join(varied)}): a "
                              "configuration that trails the grid's leader on any axis gets no more seeds; to race "
                              "within each arm, set sweep.tune=<the axis your comparison is about> (README: Racing)")

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
                # a driver killed between its claim and the folder (Optuna's ask does reads after it commits)
                trial_dir(self.cfg.out_dir, self.cfg.study, t.number).mkdir(parents=True, exist_ok=True)
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
        if self.points is not None and self.rules.on:
            trial = self._race_claim(trials)  # racing / stop_when: the race picks which queued trial
            if trial is None:
                return None
        elif self.points is not None:
            # grid: claim a queued point (WAITING -> RUNNING, compare-and-set in the storage); never
            # ask(), which would sample a point outside the grid when another worker took the last one
            tid = pop_waiting_trial(self.study)
            if tid is None:
                return None
            trial = trial_handle(self.study, tid)
        else:
            trial = self.study.ask()
        # its folder first: a worker killed in the next second (composing the config takes that) still leaves
        # one folder per trial in the storage, the invariant the soak checks
        trial_dir(self.cfg.out_dir, self.cfg.study, trial.number).mkdir(parents=True, exist_ok=True)
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

    # -- racing (harness/study/racing.py): every decision recomputed from the storage at each claim
    def race_state(self, trials=None) -> racing.State:
        """The race as the storage has it; stops and the study's end not yet recorded are written as
        study user attrs (the same values whichever worker writes them) and noted for the console."""
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        configs, cells = racing.cells_of(trials, list(self.sw.seeds), self.sw.max_retry, self.sw.grace_period)
        st = racing.race(configs, cells, self.rules)
        attrs = self.storage.get_study_user_attrs(self.study_id)
        for c, stop in st.stopped.items():
            if racing.attr_name(c) not in attrs:
                rec = racing.stop_record(c, stop, st)
                self.study.set_user_attr(racing.attr_name(c), rec)
                self.notes.append(f"racing: {rec['label']} gets no more seeds: {rec['why']}")
        if st.decided is not None and "stopped" not in attrs:
            running = sum(t.state == TrialState.RUNNING for t in trials)
            self.study.set_user_attr("stopped", st.decided)
            self.notes.append(f"study stopped: {st.decided['why']}" + (f"; the {running} running trial(s) finish"
                                                                        if running else ""))
        return st

    def _race_claim(self, trials):
        """Claim the first eligible queued trial in the race's order; a stopped configuration's queued
        seeds met on the way are claimed and told PRUNED without running."""
        from optuna.trial import TrialState

        st = self.race_state(trials)
        for action, t in racing.plan([t for t in trials if t.state == TrialState.WAITING], st, self.rules):
            tid = self._tid(t.number)
            if not claim_trial(self.study, tid):
                continue  # another worker took it
            handle = trial_handle(self.study, tid)
            handle.set_user_attr("driver", self.me)
            if action == "run":
                return handle
            self._skip(handle, st)
        return None

    def _skip(self, trial, st: racing.State) -> None:
        from optuna.trial import TrialState

        space_mod.suggest(trial, self.sw.space)  # its params, as the trials that ran have them
        params = json.loads(trial.user_attrs["point"])
        params.pop("seed", None)
        stop = st.stopped[racing.vd.config_key(params)]
        for k, v in {racing.SKIP_ATTR: "skipped", "fail_reason": None, "settled": True,
                     "prune_reason": f"racing: not run: the configuration stopped after {stop.n} seeds, "
                                     f"{stop.why(st.configs)}"}.items():
            trial.set_user_attr(k, v)
        self.study.tell(trial, state=TrialState.PRUNED)
        self.skipped += 1

    def drain(self) -> tuple[list[str], int]:
        """(racing's new console lines, trials it skipped) since the last call."""
        with self.lock:
            notes, skipped, self.notes, self.skipped = self.notes, self.skipped, [], 0
        return notes, skipped

    def beat(self, number: int):
        """The heartbeat of trial `number` (a no-op for storages without one), for the runner to call."""
        trial_id = self._tid(number)
        return (lambda: self.storage.record_heartbeat(trial_id)) if self.heartbeat else (lambda: None)

    def tell(self, trial, out: Outcome, attrs: dict, interrupted: bool) -> None:
        """Record how the trial ended: its attributes (the record's metrics, the reasons), its artifacts,
        its state and values; an interrupted trial is queued again (retried)."""
        import optuna
        from optuna.trial import TrialState

        if out.record:
            attrs.update({k: getattr(out.record, k, None) for k in (*ATTR_METRICS, *self.sw.objectives)})
        # always both keys: a retry inherits the user_attrs of the attempt it repeats
        attrs["fail_reason"] = out.reason if out.state == "FAIL" else None
        attrs["prune_reason"] = out.reason if out.state == "PRUNED" else None
        attrs["settled"] = not interrupted  # racing: this outcome is final (an interrupted trial is retried)
        with self.lock:
            try:
                for k, v in attrs.items():
                    trial.set_user_attr(k, v)
                keep.attach_trial(trial, Path(attrs["run_dir"]), self.cfg)  # config.yaml + result.json as artifacts
                if out.state == "COMPLETE":
                    self.study.tell(trial, out.values)
                else:
                    self.study.tell(trial, state=TrialState[out.state])
            except optuna.exceptions.UpdateFinishedTrialError:
                # another worker failed it as stale (no heartbeat within sweep.grace_period) and queued its
                # retry: that retry is now the configuration's run; this driver goes on with the next trial
                print(f"[harness] trial {trial.number} was already failed as stale by another worker; its retry "
                      "stands", file=sys.stderr)
                return
            if interrupted:
                retry_callback(self.sw)(self.study, self._frozen(trial.number))
