"""The FLOPs formula of harness/trial/cost.py against torch's own count (FlopCounterMode), and compute as a
property of the configuration: the same config and seed cost the same with a cold or a warm cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from harness import train
from harness.trial.cost import eval_flops, param_counts, train_flops

# Wider than the stock tiny models so attention scores, which the formula leaves out (4 L d per
# token and layer), stay a few per cent as in real models: at d=32 and L=16 they would be ~15%.
WIDE = ["model.tiny.hidden_size=128", "model.tiny.intermediate_size=512"]
LENGTH, BATCH = 16, 4


def _model(tiny_cfg, *overrides):
    import transformers

    from harness.trial.models import load_base, load_tokenizer, prepare

    cfg = tiny_cfg("quant=none", *WIDE, *overrides)
    tok = load_tokenizer(cfg)
    transformers.set_seed(0)
    model = load_base(cfg, 2, "cpu", tok)
    model, _ = prepare(model, cfg)
    return cfg, model


def _batch(cfg, model):
    g = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size if hasattr(model, "config") else 100
    ids = torch.randint(4, vocab, (BATCH, LENGTH), generator=g)  # no padding: every token counts
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    batch["labels"] = ids.clone() if cfg.task.type == "sft" else torch.randint(0, 2, (BATCH,), generator=g)
    return batch


def _measured(model, batch, train_step: bool) -> int:
    with FlopCounterMode(display=False) as fc:
        if train_step:
            model(**batch).loss.backward()
        else:
            with torch.no_grad():
                model(**batch)
    return fc.get_total_flops()


@pytest.mark.parametrize("overrides", [
    ["lora.targets=attn_qv"], ["lora.targets=all_linear", "lora.r=16"], ["method=head_only"], ["method=full"],
    ["model=tiny_llama", "lora.targets=all_linear"],
    # a causal LM whose output layer is tied to its input embedding: the d x V multiply must count
    ["model=tiny_llama", "data=tiny_sft", "task=sft", "+model.tiny.tie_word_embeddings=true"],
], ids=["lora_qv", "lora_all", "head_only", "full", "llama_cls", "llama_sft_tied"])
def test_formula_within_10_percent_of_torch_flop_counter(tiny_cfg, overrides):
    cfg, model = _model(tiny_cfg, *overrides)
    counts = param_counts(model)
    batch = _batch(cfg, model)
    tokens = BATCH * LENGTH
    model.train()
    got_train = _measured(model, batch, train_step=True)
    model.eval()
    got_eval = _measured(model, batch, train_step=False)
    assert train_flops(counts, tokens, checkpointing=False) == pytest.approx(got_train, rel=0.10)
    assert eval_flops(counts, tokens) == pytest.approx(got_eval, rel=0.10)


def test_tied_output_layer_is_counted(tiny_cfg):
    _, model = _model(tiny_cfg, "model=tiny_llama", "data=tiny_sft", "task=sft", "+model.tiny.tie_word_embeddings=true")
    head = model.get_output_embeddings()
    assert head.weight is model.get_input_embeddings().weight  # tied: one tensor, still a multiply per token
    assert param_counts(model)["matmul_params"] > head.in_features * head.out_features > 0


def test_the_formula_as_stated():
    """Restates the docstring (it cannot catch a wrong formula; the test above can)."""
    c = {"matmul_params": 100, "trainable_matmul_params": 10, "backward_matmul_params": 100}
    assert train_flops(c, 3, False) == (4 * 90 + 6 * 10) * 3  # 4 N_frozen + 6 N_train per token
    assert train_flops(c, 3, True) == (6 * 90 + 8 * 10) * 3   # + a re-run forward
    assert eval_flops(c, 3) == 2 * 100 * 3


def test_cold_and_warm_baseline_cache_give_the_same_compute(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))  # cold for the first trial
    recs = []
    for trial in (0, 1):
        cfg = tiny_cfg(f"trial={trial}", "tracking.mode=disabled", "train.max_steps=4")
        recs.append(train.run(cfg))
    cold, warm = recs
    assert (cold["baseline_cached"], warm["baseline_cached"]) == (False, True)
    for key in ("flops", "train_flops", "eval_flops", "tokens", "eval_tokens", "baseline_flops"):
        assert cold[key] == warm[key], key
    assert cold["flops"] == cold["train_flops"] + cold["eval_flops"]  # the baseline is the study's cost
    assert cold["baseline_flops"] > 0
    # predictions.jsonl: one line per test item, agreeing with the accuracy
    lines = [json.loads(x) for x in (Path(tmp_path) / "t" / "trials" / "0" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == cold["test_size"] and {"id", "prediction", "reference", "correct"} <= lines[0].keys()
    assert sum(x["correct"] for x in lines) / len(lines) == pytest.approx(cold["accuracy"])
    assert [x["id"] for x in lines] == list(range(len(lines)))
