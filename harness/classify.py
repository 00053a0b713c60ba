"""The classification task: text -> label id through a linear head; accuracy on a held-out split.

A task module gives train.py its task-specific parts (see harness/train.py TASKS):
  load_splits(data_cfg) -> Splits            the labelled pool cut into train/test
  items(tokenizer, examples, cfg) -> [dict]  tokenized examples, each with "input_ids"
  collate(items, pad_id, device) -> batch    model(**batch).loss is the training loss
  evaluate(model, items, cfg, tokenizer, accelerator) -> {"accuracy", "loss", "tokens", "n", ...}
  reference_accuracy(items) -> float | None  what a trivial predictor scores (majority class)
"""
from __future__ import annotations

import torch

from harness.data import load_splits  # noqa: F401  (part of the task interface)


def items(tokenizer, examples, cfg) -> list[dict]:
    enc = tokenizer([e.text for e in examples], truncation=True, max_length=cfg.model.max_length)
    return [{"input_ids": ids, "label": e.label} for ids, e in zip(enc["input_ids"], examples)]


def collate(items: list[dict], pad_id: int, device) -> dict:
    width = max(len(x["input_ids"]) for x in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, x in enumerate(items):
        n = len(x["input_ids"])
        ids[row, :n] = torch.tensor(x["input_ids"])
        mask[row, :n] = 1
    labels = torch.tensor([x["label"] for x in items])
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


@torch.no_grad()
def evaluate(model, items, cfg, tokenizer, accelerator) -> dict:
    """Accuracy and loss on this rank's shard of the held-out split, summed over ranks."""
    model.eval()
    batch_size, pad_id = cfg.eval.batch_size, tokenizer.pad_token_id
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))  # less padding
    shard = order[accelerator.process_index::accelerator.num_processes]
    correct = loss_sum = tokens = 0.0
    for b in range(0, len(shard), batch_size):
        batch = collate([items[i] for i in shard[b:b + batch_size]], pad_id, accelerator.device)
        with accelerator.autocast():
            out = model(**batch)
        correct += (out.logits.argmax(-1) == batch["labels"]).sum().item()
        loss_sum += out.loss.float().item() * len(batch["labels"])
        tokens += batch["attention_mask"].sum().item()
    totals = accelerator.reduce(torch.tensor([correct, loss_sum, tokens, len(shard)], dtype=torch.float64,
                                             device=accelerator.device), reduction="sum").tolist()
    model.train()
    n = totals[3]
    return {"accuracy": totals[0] / n, "loss": totals[1] / n, "tokens": int(totals[2]), "n": int(n)}


def reference_accuracy(items: list[dict]) -> float:
    """Majority-class accuracy on the held-out items."""
    labels = [x["label"] for x in items]
    return max(labels.count(y) for y in set(labels)) / len(labels)
