"""The study driver: `python -m harness sweep=NAME` runs (or resumes) an Optuna study.

It reads as: open the study session (harness/study/session.py: create or load, queue, reap, claim) ->
while there is a next trial within the budget, in sweep.parallel slots: compose its config (base
overrides + params + seed), hand it to a runner -> classify how it ended (harness/study/outcome.py) ->
tell the study. The runner is injected (the Runner protocol, harness/runners/__init__.py): warm trial
workers by default (harness/runners/warm.py: one long-lived process per slot that keeps the base model
loaded), fresh `python -m harness.train` processes with `sweep.workers=cold` (harness/runners/process.py),
an in-process one in tests. A trial's result.json `status` is its outcome (COMPLETE, PRUNED, FAIL with
`fail_reason`); one failed trial never stops the study. What is validated before the study exists is
in harness/study/checks.py; the console output in harness/study/summary.py.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from omegaconf import DictConfig

from harness.config.schema import ConfigError, complete, load_with_choices
from harness.optuna_parts import dashboard_command, storage_error, tally, where
from harness.record import resume_dir, trial_dir
from harness.runners import Runner
from harness.runners.warm import make_runner
from harness.study import keep, racing
from harness.study import space as space_mod
from harness.study import summary as report
from harness.study.checks import check, config_changes, experiment_config
from harness.study.outcome import Outcome, classify
from harness.study.session import Session, base_overrides, mask_override  # noqa: F401 (slurm, tests)


class Driver:
    """The loop: sweep.parallel slots, a thread each, taking trials from the session until the budget,
    the timeout or a signal ends it; the runner (warm workers by default) runs them."""

    def __init__(self, cfg: DictConfig, overrides: list[str], runner: Runner | None = None):
        self.cfg, self.sw = cfg, cfg.sweep
        self.session = Session(cfg, overrides)
        self.stopping = threading.Event()
        self.signal = 0  # the signal that stopped the driver, if any
        self.slots = list(range(self._parallel()))
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

    # -- one trial
    def run_trial(self, trial, params: dict, seed: int, slot: int) -> tuple[str, dict]:
        """Compose the trial's config, hand it to the runner, record how it ended in the study."""
        s = self.session
        n = trial.number
        run_dir = trial_dir(self.cfg.out_dir, self.cfg.study, n)
        overrides = [*s.base, *space_mod.to_overrides(params, self.cfg), *trial.user_attrs.get("reference", []),
                     f"seed={seed}", f"trial={n}"]
        resume = resume_dir(s.root, s.storage.get_trial_system_attrs(s._tid(n)))
        if resume is not None:  # the retry of an interrupted attempt continues from its last checkpoint
            overrides.append(f"train.resume_from={resume}")
        attrs = {"overrides": [mask_override(o) for o in overrides], "run_dir": str(run_dir), "seed": seed,
                 "params": params}
        trial_id = s._tid(n)
        try:
            tcfg = complete(load_with_choices(overrides)[0])
            # trials are composed from the files on disk: an edit to the sweep or config files mid-study would
            # silently make later trials another experiment, so stop (the trial is queued again) instead
            changed = [] if trial.user_attrs.get("reference") else \
                config_changes(s.experiment, experiment_config(tcfg), list(self.sw.allow_changes))
            if changed:
                self.changed = changed
                self.stopping.set()
                out = Outcome("FAIL", reason="the experiment changed on disk")
            else:
                # run_dir exists: the claim made it (Session._next_trial)
                ended = self.runner.run(tcfg, run_dir, slot, lambda pid: s.storage.set_trial_user_attr(trial_id, "pid", pid),
                                        s.beat(n), self.sw.heartbeat_interval)
                out = classify(ended, list(self.sw.objectives))  # the driver, not the runner, knows the objectives
        except ConfigError as e:
            out = Outcome("FAIL", reason=f"config: {e}")
            if self._base_no_longer_loads():  # an edit on disk broke the files, not this trial's point: stop, and
                self.changed = [f"the files no longer load: {' '.join(str(e).split())[:300]}"]  # it runs again
                self.stopping.set()
        except Exception as e:  # noqa: BLE001 - one broken trial never stops the study
            out = Outcome("FAIL", reason=f"driver: {type(e).__name__}: {e}")
        interrupted = self.stopping.is_set() and out.state == "FAIL"
        if interrupted:
            out.reason = "interrupted: the driver was stopped; rerun the command to retry this configuration"
        s.tell(trial, out, attrs, interrupted)
        return out.state, {**attrs, "number": n, "values": out.values, "reference": trial.user_attrs.get("reference")}

    def _base_no_longer_loads(self) -> bool:
        """Whether the study's own config (without any trial's point) fails to load now: it loaded when the
        study opened, so the sweep or config files were edited since. A FAIL then would be settled, spend
        the trial's seed and feed racing and stop_when a hole that is no result of the experiment."""
        try:
            complete(load_with_choices(list(self.session.base))[0])
        except ConfigError:
            return True
        return False

    # -- the loop
    def run(self) -> int:
        from tqdm.auto import tqdm

        s = self.session
        new = s.open()
        c = tally(s.study.get_trials(deepcopy=False))
        budget = "until the timeout" if s.budget is None else f"{max(s.budget - c['done'], 0)} to go"
        report.header(self.cfg, new, c, budget, s.url, dashboard_command(self.cfg.storage.url))
        bar = tqdm(total=s.budget, initial=min(c["done"], s.budget or c["done"]), unit="trial",
                   desc=self.cfg.study, dynamic_ncols=True, file=sys.stderr)
        report.postfix(bar, s.study, self.sw)
        t0 = time.time()
        free = list(self.slots)
        running = {}
        pool = ThreadPoolExecutor(max_workers=len(self.slots))
        restore = self._catch_signals()
        try:
            while True:
                while free and not self.stopping.is_set():
                    job = None if self.stopping.is_set() else s.next_trial(t0)
                    if job is None:
                        break
                    slot = free.pop(0)
                    running[pool.submit(self.run_trial, *job, slot)] = slot
                self._racing_news(bar)
                if not running:
                    if self.stopping.is_set() or (self.sw.timeout and time.time() - t0 > self.sw.timeout):
                        break
                    c = tally(s.study.get_trials(deepcopy=False))
                    if c["running"] and (s.budget is None or c["done"] < s.budget):
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
                report.postfix(bar, s.study, self.sw)
        except BaseException:  # the storage failed (or worse): end the running trials, do not wait an hour
            self.stopping.set()
            self.runner.stop(signal.SIGTERM)
            raise
        finally:
            restore()
            bar.close()
            pool.shutdown()
            self.runner.close()  # warm workers exit; a fresh process per trial has none to end
        keep.keep_best(s.study, self.cfg, report.rerun_command)  # best.yaml; save_adapter=best: prune the others
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

    def _racing_news(self, bar) -> None:
        """Racing's decisions above the bar; the seeds it skipped count as done (they fill the budget)."""
        notes, skipped = self.session.drain()
        for line in notes:
            bar.write(line)
        if skipped:
            bar.update(skipped)

    def summary(self) -> int:
        s = self.session
        trials = s.study.get_trials(deepcopy=False)
        notes = racing.summary_lines(s.study.user_attrs, s.rules, trials) if s.rules.on else []
        return report.summary(self.cfg, trials, tally(trials), s.study.best_trials if len(self.sw.objectives) > 1
                              else None, s.url, dashboard_command(self.cfg.storage.url), notes=notes)


def run_study(cfg: DictConfig, overrides: list[str], runner=None) -> int:
    """`python -m harness sweep=NAME ...`: validate everything, then run or resume the study."""
    import optuna
    import sqlalchemy.exc

    if runner is None:
        runner = make_runner(cfg, cfg.sweep.parallel)
        # warm workers start importing now, beside the checks: that import is most of the first trial's wait
        runner.prestart(cfg)
    try:
        check(cfg, base_overrides(overrides))  # before the storage exists: a bad sweep leaves nothing behind
        return Driver(cfg, overrides, runner).run()
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError, OSError) as e:
        raise ConfigError(storage_error(cfg.storage.url, e)) from None
    finally:
        runner.discard()  # a sweep refused before it ran: its prestarted workers go at once (after a run: none left)
