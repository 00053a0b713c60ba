"""What every stage of a trial works with, passed as one object instead of eight positional parameters."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.trial.cost import Clock
from harness.trial.shared import Shared
from harness.trial.tracking import Run


@dataclass
class TrialContext:
    cfg: object            # the resolved trial config (DictConfig)
    task: object           # its Task module (harness/tasks TASKS)
    accelerator: object    # accelerate.Accelerator: this process's rank, device, collectives
    shared: Shared         # splits, tokenizer, tokenized items, base model (kept by a warm worker)
    tracker: Run           # the W&B run (rank 0; a no-op elsewhere)
    clock: Clock           # the phases' wall seconds
    run_dir: Path          # trials/<n>/
    resolved: dict         # the config as plain data (result.json, W&B, the checkpoint fingerprint)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process
