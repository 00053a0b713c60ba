"""The classification task: text -> label id through a linear head; accuracy on a held-out split.

A task module gives train.py its task-specific parts (see harness/train.py TASKS):
  load_splits(data_cfg) -> Splits            the labelled pool cut into train/test
  items(tokenizer, examples, cfg) -> [dict]  tokenized examples, each with "input_ids"
  collate(items, pad_id, device) -> batch    model(**batch).loss is the training loss
  evaluate(model, items, cfg, tokenizer, accelerator) -> {"accuracy", "loss", "tokens", "n", ...}
                                             (+ "predictions": [{id, prediction, reference, correct,
                                                gold_logprob, pred_logprob}])
  reference_accuracy(items) -> float | None  what a trivial predictor scores (majority class)
"""
from __future__ import annotations

import torch

from harness.metrics import extra as eval_metrics
from harness.data.load import load_splits  # noqa: F401  (part of the task interface)


def items(tokenizer, examples, cfg) -> list[dict]:
    enc = tokenizer([e.text for e in examples], truncation=True, max_length=cfg.model.max_length)
    # id: the example's place in its split (fixed by data.split_seed), so trials can be paired per item
    return [{"input_ids": ids, "label": e.label, "id": i, "text": e.text}
            for i, (ids, e) in enumerate(zip(enc["input_ids"], examples))]


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
    preds = []
    for b in range(0, len(shard), batch_size):
        batch_items = [items[i] for i in shard[b:b + batch_size]]
        batch = collate(batch_items, pad_id, accelerator.device)
        with accelerator.autocast():
            out = model(**batch)
        pred = out.logits.argmax(-1)
        hit = pred == batch["labels"]
        correct += hit.sum().item()
        # per item, continuous: the log-softmax of the head's logits at the gold and the predicted label
        # (a paired test on items can use them where 0/1 correctness is too coarse)
        logp = torch.log_softmax(out.logits.float(), dim=-1)
        gold = logp.gather(-1, batch["labels"][:, None])[:, 0].tolist()
        top = logp.gather(-1, pred[:, None])[:, 0].tolist()
        preds += [{"id": x.get("id"), "prediction": int(p), "reference": x["label"], "correct": bool(h),
                   "gold_logprob": g, "pred_logprob": t}
                  for x, p, h, g, t in zip(batch_items, pred.tolist(), hit.tolist(), gold, top)]
        loss_sum += out.loss.float().item() * len(batch["labels"])
        tokens += batch["attention_mask"].sum().item()
    totals = accelerator.reduce(torch.tensor([correct, loss_sum, tokens, len(shard)], dtype=torch.float64,
                                             device=accelerator.device), reduction="sum").tolist()
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        preds = gather_object(preds)
    model.train()
    n = totals[3]
    return {"accuracy": totals[0] / n, "loss": totals[1] / n, "tokens": int(totals[2]), "n": int(n),
            "predictions": sorted(preds, key=lambda p: p["id"]),  # eval.metrics: {} and no import when none
            "metrics": eval_metrics.compute(cfg.eval.metrics, [p["prediction"] for p in preds],
                                            [p["reference"] for p in preds])}


def reference_accuracy(items: list[dict]) -> float:
    """Majority-class accuracy on the held-out items."""
    labels = [x["label"] for x in items]
    return max(labels.count(y) for y in set(labels)) / len(labels)
