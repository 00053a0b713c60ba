"""How a trial process runs for the driver: a fresh process per trial, warm workers (the driver's end of
the worker protocol), SLURM jobs. Driver side: never imports trial/ or tasks/.
"""
from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from omegaconf import DictConfig

from harness.record import TrialRecord


@dataclass
class Ended:
    """How a trial's process ended, as the runner saw it; the driver classifies it (harness/study/outcome.py)."""
    rc: int                           # its exit code; negative: killed by that signal
    record: TrialRecord | None        # its result.json, if it wrote one
    log: Path                         # its log.txt, which explains a trial that left no record


class Runner(Protocol):
    """What the driver asks of a runner. run() blocks until the trial ends, calling started(pid) once and
    beat() every `every` seconds (the study's heartbeat); stop() ends the running trials (from a signal
    handler: it only signals processes); close() ends idle workers at the end of a study; prestart()
    starts them early; discard() kills whatever a study that never ran had started."""

    def prestart(self, cfg: DictConfig) -> None: ...
    def run(self, tcfg: DictConfig, run_dir: Path, slot: int, started: Callable[[int], None],
            beat: Callable[[], None], every: float) -> Ended: ...
    def stop(self, sig: int = signal.SIGTERM) -> None: ...
    def close(self) -> None: ...
    def discard(self) -> None: ...


class InProcess:
    """The Runner lifecycle of a runner that starts no process (the storage simulation's, the tests'):
    subclasses give run(); there is nothing to prestart, stop, close or discard."""

    def prestart(self, cfg: DictConfig) -> None:
        pass

    def stop(self, sig: int = signal.SIGTERM) -> None:
        pass

    def close(self) -> None:
        pass

    def discard(self) -> None:
        pass
