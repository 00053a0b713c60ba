"""What a task gives the trial (the Task protocol, TASKS): classification and SFT. Trial side: never
imports study/, runners/ or cli/.
"""
from __future__ import annotations

from typing import Protocol

from harness.data.load import Splits
from harness.tasks import classify, sft


class Task(Protocol):
    """What a task module gives the trial (harness/tasks/classify.py and harness/tasks/sft.py document theirs)."""
    def load_splits(self, data_cfg) -> Splits: ...
    def items(self, tokenizer, examples, cfg) -> list[dict]: ...
    def collate(self, items: list[dict], pad_id: int, device) -> dict: ...
    def evaluate(self, model, items, cfg, tokenizer, accelerator) -> dict: ...
    def reference_accuracy(self, items: list[dict]) -> float | None: ...


TASKS: dict[str, Task] = {"classification": classify, "sft": sft}
