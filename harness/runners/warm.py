"""Warm trial workers, the driver's end: K long-lived `python -m harness.trial.worker` processes that import once and run trial after
trial for the driver, keeping what trials share (harness/trial/shared.py: tokenizer, tokenized splits, the
quantized base model). Per trial a worker builds a fresh head from the trial's seed, fresh adapters,
optimizer and scheduler, and reseeds every RNG, so a trial run warm gives the record it gives cold
(tests/runners/test_warm.py). The cold path, one `python -m harness.train` per trial, is launch.ProcessRunner.

Protocol: the runner writes one JSON line per trial to the worker's stdin ({"config": path, "log":
path}); the worker sends back one JSON line ({"rc": exit code as train.main would give, "rss": bytes})
on its original stdout, while the trial's own output goes to its trials/<n>/log.txt. The record's
`status` stays the one outcome (harness/study/outcome.py), exactly as for a cold trial.

Isolation: a trial that raises, diverges or is pruned ends as it would cold and the worker goes on; a
worker that dies (killed, out of memory) fails its trial with the signal and is replaced by a fresh
one for the next trial, as is a worker whose resident memory grew more than `max_rss_growth` bytes
past what it held after its first trial.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from omegaconf import DictConfig

from harness.runners import Ended
from harness.runners.process import ProcessRunner, cpu_threads, read_record, set_pdeathsig, trial_env, write_config

GiB = 2**30


# ---------------------------------------------------------------------------- the driver's side


class WorkerDied(Exception):
    def __init__(self, rc: int):
        self.rc = rc


class Worker:
    """One `python -m harness.trial.worker` process in its own process group, dying with the driver."""

    def __init__(self, env: dict, first_log: Path | None = None):
        # start-up errors (an import failing) land in the first trial's log; a worker started before its
        # first trial is known (prestart) keeps them in a temporary file until then (start_errors)
        self.env = env
        with (open(first_log, "ab") if first_log else tempfile.TemporaryFile()) as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "harness.trial.worker"], env=env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
                                         preexec_fn=set_pdeathsig)
            self.early_log = os.dup(log.fileno()) if first_log is None else None
        self.base_rss: int | None = None  # after the first trial

    def start_errors(self, log: Path) -> None:
        """A prestarted worker that died: what it wrote before its first trial, into that trial's log."""
        if self.early_log is None:
            return
        with os.fdopen(self.early_log, "rb") as f, open(log, "ab") as out:
            f.seek(0)
            out.write(f.read())
        self.early_log = None

    def submit(self, config: Path, log: Path) -> None:
        try:
            self.proc.stdin.write(json.dumps({"config": str(config), "log": str(log)}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerDied(self.proc.wait()) from None

    def reply(self, timeout: float) -> dict | None:
        """The trial's reply, None while it runs; WorkerDied when the process ended without one."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerDied(self.proc.wait())
        return json.loads(line)

    def close(self, timeout: float = 10) -> None:
        """End the worker: EOF on its stdin when idle; a kill when it does not go."""
        if self.early_log is not None:
            os.close(self.early_log)
            self.early_log = None
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            self.kill(signal.SIGKILL)
            self.proc.wait()

    def kill(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass


class WarmRunner:
    """The driver's runner with one warm worker per slot (sweep.parallel), started by prestart() or on the
    slot's first trial. The Runner protocol (harness/runners/__init__.py), as ProcessRunner."""

    def __init__(self, slots: int, max_rss_growth: int = 2 * GiB):
        self.slots, self.max_rss_growth = slots, max_rss_growth
        self.workers: dict[int, Worker] = {}
        self.lock = threading.Lock()
        self.stopping = False

    def prestart(self, cfg: DictConfig) -> None:
        """Start every slot's worker now, before the study opens: its imports (torch, transformers, peft:
        ~10 s here) then run beside the driver's checks instead of before the first trial."""
        with self.lock:
            for slot in range(self.slots):
                self.workers.setdefault(slot, Worker(trial_env(cfg, slot, self.slots)))

    def _worker(self, slot: int, tcfg: DictConfig, log: Path) -> Worker:
        env = trial_env(tcfg, slot, self.slots)
        with self.lock:
            w = self.workers.get(slot)
            if w is not None and w.env != env:  # a prestarted worker for other devices or settings
                w.kill(signal.SIGKILL)
                w.close()  # reaped, its start-up log closed
                w = None
            if w is None or w.proc.poll() is not None:
                w = self.workers[slot] = Worker(env, log)
            return w

    def run(self, tcfg: DictConfig, run_dir: Path, slot: int, started, beat, every: float) -> Ended:
        for stale in ("result.json", "log.txt"):
            (run_dir / stale).unlink(missing_ok=True)
        if tcfg.hardware.device == "cpu":
            tcfg = cpu_threads(tcfg, self.slots)
        path, log = write_config(tcfg, run_dir), run_dir / "log.txt"
        w = self._worker(slot, tcfg, log)
        if self.stopping:  # a stop came while this trial was starting
            w.kill(signal.SIGTERM)
        started(w.proc.pid)
        try:
            w.submit(path, log)
            while (reply := w.reply(every)) is None:
                beat()
        except WorkerDied as e:  # killed (or crashed): this trial fails, the next one gets a fresh worker
            w.start_errors(log)
            with self.lock:
                self.workers.pop(slot, None)
            return Ended(e.rc, read_record(run_dir / "result.json"), log)
        if w.base_rss is None:
            w.base_rss = reply["rss"]
        elif reply["rss"] - w.base_rss > self.max_rss_growth:
            with self.lock:
                self.workers.pop(slot, None)
            w.close()  # grown past the limit: replaced before the next trial
        return Ended(reply["rc"], read_record(run_dir / "result.json"), log)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End every worker's process group, running or idle (SIGTERM first; SIGKILL for a second interrupt)."""
        self.stopping = True
        for w in list(self.workers.values()):
            w.kill(sig)

    def discard(self) -> None:
        """Kill the workers now (a sweep refused before it ran)."""
        if self.workers:
            self.stop(signal.SIGKILL)
            self.close()

    def close(self) -> None:
        """The study is done: let the idle workers exit."""
        with self.lock:
            workers, self.workers = list(self.workers.values()), {}
        for w in workers:
            w.close()


def make_runner(cfg: DictConfig, slots: int):
    """The driver's default runner: warm workers (sweep.workers=warm), or a fresh process per trial
    (sweep.workers=cold, and multi-process trials, which `accelerate launch` starts cold)."""
    if cfg.sweep.get("workers", "warm") == "cold":
        return ProcessRunner(slots)
    if cfg.hardware.processes > 1:
        print(f"[harness] hardware.processes={cfg.hardware.processes}: each trial starts cold under `accelerate "
              "launch` (warm workers are single-process)", file=sys.stderr, flush=True)
        return ProcessRunner(slots)
    return WarmRunner(slots)

