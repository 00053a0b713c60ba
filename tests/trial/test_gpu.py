"""The GPU path on a real CUDA device (`pytest -m gpu`; CI deselects the marker, bench/gpu_check.sh runs it).

(a) LoRA gradients through bitsandbytes' CUDA kernels (NF4, int8) against a model holding the dequantized
    weights under the same bf16 autocast; (b) a 4-bit tiny_llama's adapters train on hardware=gpu1;
    (c) a trial run in a warm worker equals the same trial run cold, on CUDA; (d) hardware=gpu1 end to end
    through the study driver (2-trial grid, SQLite).

HARNESS_GPU_TEST_HW=hardware=cpu runs the same code on the CPU (a dry run of the tests themselves before a
lent GPU's minutes are spent; the numbers it checks are then the CPU kernels')."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

HW = os.environ.get("HARNESS_GPU_TEST_HW", "hardware=gpu1")
ON_GPU = HW == "hardware=gpu1"
DEVICE = "cuda" if ON_GPU else "cpu"
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="needs a CUDA device")]

# Tolerances, as the largest ||g - g_ref|| / ||g_ref|| over the LoRA tensors. fp32 compute: the reference
# holds exactly the weights the kernels dequantize and runs the same fp32 matmuls, so only summation order
# may differ. bf16 compute (the gpu1 setting, autocast): the 4-bit layer returns its bf16 product cast back
# to the input's fp32 and adds the LoRA term in fp32, while a plain Linear under autocast returns bf16, so
# the residual stream is rounded differently: bf16 rounding (2^-8) compounded over 2 layers; a wrong
# kernel (transposed, mis-scaled or missing gradient) is off by order 1. int8: bitsandbytes also quantizes
# the activations row-wise to int8 in the forward (LLM.int8()), an error of order 1/127 per element.
TOL = {("nf4", "float32"): 1e-4, ("nf4", "bfloat16"): 1e-1, ("int8", "float32"): 1e-1, ("int8", "bfloat16"): 1.5e-1}


def _grads(model, batch, autocast: bool):
    model.train()
    model.zero_grad()
    with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=autocast):
        model(**batch).loss.backward()
    return {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if "lora_" in n}


def _dequantized(mod, mode: str) -> torch.Tensor:
    import bitsandbytes as bnb

    if mode == "nf4":
        return bnb.functional.dequantize_4bit(mod.weight.data, mod.weight.quant_state).float()
    w = mod.weight  # Int8Params: int8 rows and their absmax scales (SCB)
    cb = w.CB if getattr(w, "CB", None) is not None else w.data
    return cb.float() * w.SCB.float().unsqueeze(1) / 127


@pytest.mark.parametrize("mode,compute", sorted(TOL))
def test_qlora_gradients_through_the_cuda_kernels_match_a_model_holding_the_dequantized_weights(tiny_cfg, mode,
                                                                                                compute):
    import bitsandbytes as bnb

    from harness.trial.models import add_adapters, load_base, load_tokenizer

    common = ("model=tiny_llama", HW, "lora.targets=all_linear", "lora.dropout=0", "lora.r=4")
    cfg_q = tiny_cfg(*common, f"quant={mode}", f"quant.compute_dtype={compute}")
    # the reference loads in fp32 like the quantized model's unquantized parts (embeddings, norms, head): on
    # gpu1 quant=none would load them in bf16 and round the embeddings (a 1e-2 gradient difference on the H200)
    cfg_ref = tiny_cfg(*common, "quant=none", "quant.compute_dtype=float32")
    dev = 0 if ON_GPU else "cpu"
    tok = load_tokenizer(cfg_q)
    q, _ = add_adapters(load_base(cfg_q, 2, dev, tok), cfg_q)
    ref, _ = add_adapters(load_base(cfg_ref, 2, dev, tok), cfg_ref)
    cls = bnb.nn.Linear4bit if mode == "nf4" else bnb.nn.Linear8bitLt
    ref_mods = dict(ref.named_modules())
    quantized = [(n, m) for n, m in q.named_modules() if isinstance(m, cls)]
    assert len(quantized) == 7 * cfg_q.model.tiny.num_hidden_layers
    assert all(m.weight.device.type == DEVICE for _, m in quantized)
    for name, mod in quantized:
        ref_mods[name].weight.data.copy_(_dequantized(mod, mode))
    torch.manual_seed(1)  # same adapters and head, B != 0 so that A gets a gradient too
    ref_params = dict(ref.named_parameters())
    for name, p in q.named_parameters():
        if p.requires_grad:
            if "lora_B" in name:
                p.data.normal_(0, 0.1)
            ref_params[name].data.copy_(p.data)
    batch = tok(["the film was good", "a dull boring plot with weak acting"], return_tensors="pt", padding=True)
    batch = {k: v.to(DEVICE) for k, v in batch.items()} | {"labels": torch.tensor([1, 0], device=DEVICE)}
    with torch.no_grad():
        q.eval()(**batch)  # an eval-mode forward first (it once corrupted later gradients on CPU)
    bf16 = compute == "bfloat16"
    gq, gref = _grads(q, batch, bf16), _grads(ref, batch, bf16)
    assert gq.keys() == gref.keys() and len(gq) == 2 * 7 * cfg_q.model.tiny.num_hidden_layers
    rel = {n: float((gq[n] - gref[n]).norm() / gref[n].norm().clamp_min(1e-30)) for n in gq}
    worst = max(rel, key=rel.get)
    print(f"\n[gpu] {mode} {compute} on {DEVICE}: max relative gradient error {rel[worst]:.2e} ({worst}); "
          f"median {sorted(rel.values())[len(rel) // 2]:.2e}")
    assert rel[worst] <= TOL[mode, compute], (worst, rel[worst])
    assert all(g.abs().sum() > 0 for g in gq.values())


def test_a_4bit_tiny_llama_trains_its_adapters_on_hardware_gpu1(tiny_cfg):
    from harness.record import trial_dir
    from harness.train import run

    cfg = tiny_cfg("model=tiny_llama", HW, "quant=nf4", "train.max_steps=40", "train.lr=1e-2",
                   "tracking.mode=disabled", "eval.baseline=false")
    rec = run(cfg)
    losses = [h["train/loss"] for h in json.loads((trial_dir(cfg.out_dir, cfg.study, cfg.trial) / "result.json")
                                                   .read_text())["history"]]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"\n[gpu] tiny_llama nf4 loss {first:.3f} -> {last:.3f}, accuracy {rec['accuracy']}, "
          f"peak {rec['peak_memory_bytes'] / 2**20:.1f} MiB, device {rec['provenance']['hardware']}")
    assert rec["status"] == "complete" and last < 0.8 * first
    if ON_GPU:
        assert rec["provenance"]["hardware"]["device"].startswith("cuda") and rec["peak_memory_bytes"] > 0


def _submit(runner, cfg):
    from harness.record import trial_dir
    from harness.study.outcome import classify

    d = trial_dir(cfg.out_dir, cfg.study, cfg.trial)
    d.mkdir(parents=True, exist_ok=True)
    out = classify(runner.run(cfg, d, 0, lambda pid: None, lambda: None, 0.2), ["accuracy"])
    return out, json.loads((d / "result.json").read_text())


def _adapter_weights(rec_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(next((rec_dir / "adapter").glob("*.safetensors")))


@pytest.mark.process
def test_a_trial_run_warm_equals_the_same_trial_run_cold_on_cuda(tiny_cfg):
    """Cold: a fresh `python -m harness.train`. Warm: another trial first, then the same trial, in one worker.
    Expected bitwise (cuBLAS picks the same kernels for the same shapes on one device, and the frozen embedding
    gets no scattered gradient); if the checksums differ the adapters must still agree within 1e-5, and the
    test says so."""
    from harness.record import trial_dir
    from harness.runners.process import ProcessRunner
    from harness.runners.warm import WarmRunner

    base = ("model=tiny_llama", HW, "quant=nf4", "train.max_steps=12", "train.eval_every=4", "tracking.mode=disabled")
    trial = ("seed=0", "lora.r=4")
    _, cold = _submit(ProcessRunner(1), tiny_cfg(*base, *trial, "trial=0"))
    warm = WarmRunner(1)
    try:
        _submit(warm, tiny_cfg(*base, "seed=1", "lora.r=2", "trial=1"))
        out, hot = _submit(warm, tiny_cfg(*base, *trial, "trial=2"))
    finally:
        warm.close()
    assert out.state == "COMPLETE" and hot["phase_seconds"].get("data") is None  # the worker reused its base
    assert hot["accuracy"] == cold["accuracy"]
    losses = [abs(c["train/loss"] - w["train/loss"]) for c, w in zip(cold["history"], hot["history"], strict=True)]
    same = hot["adapter_checksums"] == cold["adapter_checksums"]
    print(f"\n[gpu] warm vs cold on {DEVICE}: max loss diff {max(losses):.2e}, adapter checksums equal: {same}, "
          f"load cold {cold['phase_seconds'].get('load')} s, warm {hot['phase_seconds'].get('load')} s")
    assert max(losses) <= 1e-5
    if not same:
        d = cold["config"]["out_dir"]
        a, b = _adapter_weights(trial_dir(d, "t", 0)), _adapter_weights(trial_dir(d, "t", 2))
        diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        print(f"[gpu] adapters not bitwise equal; max abs weight diff {diff:.2e}")
        assert diff <= 1e-5


def test_hardware_gpu1_end_to_end_through_the_study_driver(tmp_path):
    import optuna

    from harness.__main__ import main

    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "gpu_grid.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /model: tiny_llama\n  - override /data: tiny\n  - override /quant: nf4\n"
        "study: gpu_grid\ntrain: {max_steps: 8, lr: 1.0e-2}\neval: {batch_size: 64, baseline: false}\n"
        "tracking: {mode: disabled}\n"
        "sweep:\n  space:\n    lora.r: {choices: [2, 4]}\n  objectives: {accuracy: maximize}\n"
        "  sampler: grid\n  pruner: none\n  seeds: [0]\n  parallel: 1\n  workers: warm\n")
    rc = main(["sweep=gpu_grid", f"hydra.searchpath=[file://{tmp_path}]", f"out_dir={tmp_path}/runs", HW,
               *([] if ON_GPU else ["hardware.threads=1"])])
    assert rc == 0
    study = optuna.load_study(study_name="gpu_grid", storage=f"sqlite:///{tmp_path}/runs/gpu_grid/study.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(t.params["lora.r"] for t in study.trials) == [2, 4]
    for t in study.trials:
        rec = json.loads((tmp_path / "runs" / "gpu_grid" / "trials" / str(t.number) / "result.json").read_text())
        assert rec["provenance"]["hardware"]["device"].startswith(DEVICE)
        assert rec["config"]["hardware"]["device"] == DEVICE
