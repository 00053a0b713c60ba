"""The sft task: supervised fine-tuning of a causal LM on prompt -> target pairs, scored by greedy
generation. Same interface as harness/tasks/classify.py, so train.py runs it unchanged.

Formatting. A pair (prompt, target, optional system message) is rendered with the tokenizer's chat
template when it has one and task.chat_template is true (system + user turn, then the assistant
turn holding the target, ended by the template's end-of-turn token); otherwise with the plain
task.template ("{prompt}", may use {system}) followed by " " + target + EOS.
Loss. Only completion tokens (target + end of turn) carry labels; prompt and padding are -100.
Truncation. The target keeps its first task.max_target_tokens tokens; the prompt then gets the rest
of model.max_length and is cut from the left (task.prompt_truncation=left keeps the end of the
prompt, next to the answer) or from the right.
Padding. Training and perplexity batches pad on the right to the longest item of the batch;
generation batches pad on the left, so every prompt ends where decoding starts.
Evaluation. Greedy decoding of at most task.max_new_tokens tokens on the held-out split, batched;
exact match (harness/metrics/scores.py NORMALISATION), ROUGE-L, BLEU (with its sacrebleu signature) and the
perplexity of the targets under teacher forcing. `accuracy` in the record is the exact match, so
sweeps and analysis that optimise `accuracy` work on sft studies unchanged.
"""
from __future__ import annotations

from collections import Counter

import torch

from harness.data import load as data
from harness.metrics import extra as eval_metrics
from harness.metrics import scores as metrics
from harness.data.load import Pair, Splits
from harness.trial.models import ModelError


def load_splits(cfg) -> Splits:
    """A fixed random test split (data.split_seed) and a training set that is a prefix of one seeded
    order of the rest (data.subset_seed): smaller training sets are inside larger ones. The
    datasets (data=analogies, chatterbot, jsonl, hub, tiny_sft) live in harness/data/load.py."""
    return data.load_splits(cfg, "sft")


# ---------------------------------------------------------------------------- formatting


def _eos(tokenizer) -> str:
    eos = tokenizer.eos_token or tokenizer.sep_token  # word-level test tokenizers end with [SEP]
    if eos is None:
        raise ModelError("the tokenizer has no eos_token (nor sep_token): the model could not learn to stop")
    return eos


def uses_chat_template(tokenizer, cfg) -> bool:
    return bool(cfg.task.chat_template and tokenizer.chat_template)


def render(tokenizer, pair: Pair, cfg) -> tuple[str, str]:
    """(prompt text, completion text) of one pair; see the module docstring."""
    system = pair.system if pair.system is not None else cfg.data.system
    if uses_chat_template(tokenizer, cfg):
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": pair.prompt}]
        prompt = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": pair.target}], tokenize=False)
        if not full.startswith(prompt):
            raise ModelError("the chat template renders the conversation with the answer differently from the "
                             "prompt alone, so the completion cannot be cut out; set task.chat_template=false")
        return prompt, full[len(prompt):].rstrip()  # the template's trailing newline is not part of the answer
    return cfg.task.template.format(prompt=pair.prompt, system=system or ""), f" {pair.target}{_eos(tokenizer)}"


def items(tokenizer, pairs: list[Pair], cfg) -> list[dict]:
    """Tokenized pairs: input_ids = prompt + completion, n_prompt = where the completion starts."""
    t = cfg.task
    bos = [] if uses_chat_template(tokenizer, cfg) or tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    out = []
    for p in pairs:
        prompt, completion = render(tokenizer, p, cfg)
        prompt_ids = bos + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(completion, add_special_tokens=False)["input_ids"][: t.max_target_tokens]
        room = cfg.model.max_length - len(target_ids)
        if len(prompt_ids) > room:
            prompt_ids = prompt_ids[-room:] if t.prompt_truncation == "left" else prompt_ids[:room]
        # id: the pair's place in its split (fixed by data.split_seed), so trials can be paired per item
        out.append({"input_ids": prompt_ids + target_ids, "n_prompt": len(prompt_ids),
                    "prompt": p.prompt, "target": p.target, "id": len(out)})
    return out


def _batch(items: list[dict], pad_id: int, device, align_prompts: bool) -> tuple[dict, int]:
    """Padded batch with labels = the completion tokens, -100 elsewhere. Right-padded rows, or with
    align_prompts every prompt ends at column `width` (left-padded prompt | right-padded completion),
    where decoding starts. Returns the batch and width (the longest prompt)."""
    width = max(x["n_prompt"] for x in items)
    offsets = [width - x["n_prompt"] if align_prompts else 0 for x in items]
    total = max(o + len(x["input_ids"]) for o, x in zip(offsets, items))
    ids = torch.full((len(items), total), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), total), dtype=torch.long)
    labels = torch.full((len(items), total), -100, dtype=torch.long)
    for row, (o, x) in enumerate(zip(offsets, items)):
        n, k = len(x["input_ids"]), x["n_prompt"]
        ids[row, o:o + n] = torch.tensor(x["input_ids"])
        mask[row, o:o + n] = 1
        labels[row, o + k:o + n] = ids[row, o + k:o + n]
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}, width


def collate(items: list[dict], pad_id: int, device) -> dict:
    """Right-padded training batch; labels are the completion tokens, -100 on prompt and padding."""
    return _batch(items, pad_id, device, align_prompts=False)[0]


# ---------------------------------------------------------------------------- evaluation


def stop_ids(tokenizer, model) -> list[int]:
    """End of generation: the tokenizer's EOS (or its stand-in) and any the model's generation
    config names (instruct models often end a turn with a token other than eos_token)."""
    ids = {tokenizer.convert_tokens_to_ids(_eos(tokenizer))}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None)
    ids.update(extra if isinstance(extra, list) else [extra] if extra is not None else [])
    return sorted(ids)


@torch.no_grad()
def score_and_generate(model, tokenizer, items: list[dict], max_new_tokens: int, device) -> dict:
    """One batch: the completions' summed NLL (teacher forcing) and greedy generations.

    A single forward over [prompt | completion] gives both the completion NLL and the prompts' KV
    cache; the cache is cut back to the prompts and greedy decoding continues from it, so prompts
    are encoded once (the eval is ~half the compute of a separate perplexity pass)."""
    from transformers import GenerationConfig

    batch, width = _batch(items, tokenizer.pad_token_id, device, align_prompts=True)
    mask, labels = batch["attention_mask"], batch["labels"]
    n_keep = labels.shape[1] - width + 1  # logits at width-1 .. end predict the completion tokens
    out = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True, logits_to_keep=n_keep)
    logits = out.logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, width:].reshape(-1),
                                            ignore_index=-100, reduction="sum").item()
    # per item: the answer's summed token NLL and its token count (predictions.jsonl; paired tests on items)
    tok = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, width:], ignore_index=-100,
                                            reduction="none")
    row_nll, row_n = tok.sum(-1).tolist(), (labels[:, width:] != -100).sum(-1).tolist()
    cache = out.past_key_values
    cache.crop(-(labels.shape[1] - width + 1))  # keep width-1 tokens: generation re-reads the last prompt token
    stops = stop_ids(tokenizer, model)
    gconf = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=stops,
                             pad_token_id=tokenizer.pad_token_id)
    gen = model.generate(input_ids=batch["input_ids"][:, :width], attention_mask=mask[:, :width],
                         past_key_values=cache, generation_config=gconf)
    kept = []
    for row in gen[:, width:].tolist():  # finished rows are padded after their stop token: cut there
        end = next((i for i, tok in enumerate(row) if tok in stops), None)
        kept.append(row if end is None else row[: end + 1])
    texts = [t.strip() for t in tokenizer.batch_decode(kept, skip_special_tokens=True)]
    return {"texts": texts, "nll": nll, "n_target": int((labels != -100).sum().item()), "row_nll": row_nll,
            "row_n": [int(n) for n in row_n],
            "tokens": int(mask.sum().item()) + sum(len(k) for k in kept)}


def evaluate(model, items, cfg, tokenizer, accelerator) -> dict:
    """Generation metrics on the held-out items; this rank's shard, gathered over ranks."""
    from accelerate.utils import gather_object

    model.eval()
    plain = accelerator.unwrap_model(model)  # no gradients here: DDP's wrapper is not needed
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))  # less padding
    shard = order[accelerator.process_index::accelerator.num_processes]
    mine, nll, n_target, tokens = [], 0.0, 0, 0
    for b in range(0, len(shard), cfg.eval.batch_size):
        idx = shard[b:b + cfg.eval.batch_size]
        with accelerator.autocast():
            res = score_and_generate(plain, tokenizer, [items[i] for i in idx], cfg.task.max_new_tokens,
                                     accelerator.device)
        nll, n_target, tokens = nll + res["nll"], n_target + res["n_target"], tokens + res["tokens"]
        mine.extend(zip(idx, zip(res["texts"], res["row_nll"], res["row_n"])))
    generated = dict(gather_object(mine))  # item -> (generation, its answer's summed NLL, answer tokens)
    nll, n_target, tokens = accelerator.reduce(
        torch.tensor([nll, n_target, tokens], dtype=torch.float64, device=accelerator.device), reduction="sum").tolist()
    model.train()
    preds = [generated[i][0] for i in range(len(items))]
    refs = [x["target"] for x in items]
    per_item = [{"id": x.get("id", i), "prediction": g, "reference": r,
                 "correct": metrics.normalize(g) == metrics.normalize(r), "nll": generated[i][1], "n_tokens": generated[i][2]}
                for i, (x, g, r) in enumerate(zip(items, preds, refs))]
    scores = metrics.generation_metrics(preds, refs)
    signature = scores.pop("bleu_signature")
    scores["perplexity"] = metrics.perplexity(nll, int(n_target))
    scores.update(eval_metrics.compute(cfg.eval.metrics, preds, refs))  # eval.metrics (evaluate); {} when none
    samples = [{"prompt": x["prompt"], "generation": g, "target": x["target"]}
               for x, g in list(zip(items, preds))[: cfg.task.samples]]
    return {"accuracy": scores["exact_match"], "loss": nll / max(n_target, 1), "tokens": int(tokens), "n": len(items),
            "metrics": scores, "samples": samples, "predictions": per_item,
            "notes": {"bleu_signature": signature, "exact_match_normalisation": metrics.NORMALISATION}}


def reference_accuracy(items: list[dict]) -> float:
    """Exact match of always answering the most common target (the analogue of majority class)."""
    counts = Counter(metrics.normalize(x["target"]) for x in items)
    return counts.most_common(1)[0][1] / len(items)
