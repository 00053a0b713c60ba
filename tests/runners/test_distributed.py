"""A trial on two real CPU processes (gloo DDP under `accelerate launch`) against the same trial in
process: same record up to float tolerance, identical adapters on both ranks, world size asserted;
and a launch that starts the wrong number of processes is caught."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from omegaconf import open_dict

from harness import train
from harness.record import read_record
from harness.runners.process import (
    accelerate_command,
    accelerate_config,
    allocate_trial,
    run_subprocess,
    write_config,
)
from conftest import LORA_RANK_TINY

# Dropout off everywhere, so one process and two see the same function of the same batches.
EXACT = ["lora.dropout=0", "+model.tiny.hidden_dropout_prob=0.0", "+model.tiny.attention_probs_dropout_prob=0.0",
         "train.max_steps=8", "train.eval_every=4", "train.batch_size=16"]


def _launch(cfg):
    run_dir = allocate_trial(cfg)
    rc = run_subprocess(cfg, write_config(cfg, run_dir), run_dir / "log.txt")
    result = run_dir / "result.json"
    return rc, (json.loads(result.read_text()) if result.is_file() else None), run_dir


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same trial in process (1 rank) and under accelerate launch (2 ranks)."""
    from conftest import TINY

    from harness.config.schema import complete, load

    out = tmp_path_factory.mktemp("dist")
    base = [*TINY, f"out_dir={out}", *EXACT]
    one = complete(load([*base, "study=one", "tracking.mode=disabled"]))
    one_dir = allocate_trial(one)
    train.run(one)
    single = json.loads((one_dir / "result.json").read_text())  # with its history
    two = complete(load([*base, "study=two", "hardware=cpu2", "hardware.threads=1"]))
    rc, multi, run_dir = _launch(two)
    assert rc == 0 and multi, (run_dir / "log.txt").read_text()[-3000:]
    return single, multi, run_dir


def test_two_processes_really_ran_and_kept_identical_adapters(pair):
    _, multi, run_dir = pair
    assert multi["status"] == "complete" and multi["world_size"] == 2
    sums = multi["adapter_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    conf = yaml.safe_load((run_dir / "accelerate.yaml").read_text())
    assert conf["num_processes"] == 2 and conf["distributed_type"] == "MULTI_GPU"
    # rank 0 alone logged to W&B: one run directory
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1


def test_two_processes_give_the_in_process_record(pair):
    single, multi, _ = pair
    assert single["world_size"] == 1 and len(single["adapter_checksums"]) == 1
    # the effective batch is kept: 16 = 16 x 1 = 8 x 2
    assert single["effective_batch_size"] == multi["effective_batch_size"] == 16
    assert (single["per_device_batch_size"], multi["per_device_batch_size"]) == (16, 8)
    for key in ("examples_seen", "tokens", "train_size", "test_size", "steps"):
        assert single[key] == multi[key], key
    losses = lambda r: [h["train/loss"] for h in r["history"]]  # noqa: E731
    assert losses(multi) == pytest.approx(losses(single), rel=1e-4, abs=1e-5)
    for key in ("accuracy", "eval_loss", "baseline_accuracy", "train_loss"):
        assert multi[key] == pytest.approx(single[key], rel=1e-4, abs=1e-5), key
    assert [e["accuracy"] for e in multi["evals"]] == pytest.approx([e["accuracy"] for e in single["evals"]])
    # the training moved the weights, so equal records are not equal by standing still
    assert losses(single)[-1] != losses(single)[0]


@pytest.mark.process
def test_a_launch_that_starts_one_process_for_two_fails_loudly(tiny_cfg):
    """The verified trap: a MULTI_CPU accelerate config starts ONE process for num_processes=2."""
    cfg = tiny_cfg("hardware=cpu2", "tracking.mode=disabled")
    run_dir = allocate_trial(cfg)
    path = write_config(cfg, run_dir)
    cmd, env = accelerate_command(cfg, path)
    bad = run_dir / "multi_cpu.yaml"
    bad.write_text(yaml.safe_dump({**accelerate_config(cfg), "distributed_type": "MULTI_CPU"}))
    cmd[cmd.index("--config_file") + 1] = str(bad)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "world size is 1 but hardware.processes=2" in out.stderr
    saved = json.loads((run_dir / "result.json").read_text())
    assert saved["status"] == "failed" and "world size is 1" in saved["reason"]


def test_fsdp_trains_on_two_cpu_processes_and_follows_ddps_loss_curve(pair):
    """hardware.strategy=fsdp on CPU (FSDP1 over gloo, the 4-bit NF4 base of TINY included): world size 2,
    the same adapter on both ranks, and the same loss curve and accuracy as DDP on the same seed."""
    from conftest import TINY

    from harness.config.schema import complete, load

    _, ddp, ddp_dir = pair
    out = ddp_dir.parent.parent.parent
    cfg = complete(load([*TINY, f"out_dir={out}", *EXACT, "study=fsdp", "hardware=cpu2", "hardware.threads=1",
                         "hardware.strategy=fsdp"]))
    rc, fsdp, run_dir = _launch(cfg)
    assert rc == 0 and fsdp, (run_dir / "log.txt").read_text()[-3000:]
    conf = yaml.safe_load((run_dir / "accelerate.yaml").read_text())
    assert conf["distributed_type"] == "FSDP" and conf["fsdp_config"]["fsdp_sync_module_states"] is False
    assert fsdp["status"] == "complete" and fsdp["world_size"] == 2 and fsdp["config"]["quant"]["mode"] == "nf4"
    sums = fsdp["adapter_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
    losses = lambda r: [h["train/loss"] for h in r["history"]]  # noqa: E731
    assert losses(fsdp) == pytest.approx(losses(ddp), rel=1e-4, abs=1e-5)
    assert fsdp["accuracy"] == pytest.approx(ddp["accuracy"], abs=1e-6)


def test_fsdp_needs_two_processes(tiny_cfg):
    from harness.config.schema import ConfigError

    with pytest.raises(ConfigError, match="strategy=fsdp"):
        tiny_cfg("hardware=cpu", "hardware.strategy=fsdp")


def test_fsdp_accelerate_config_follows_the_qlora_recipe(tiny_cfg):
    """Written, not run: no CUDA here. The fields the FSDP + QLoRA recipe needs are set."""
    from conftest import TINY

    from harness.config.schema import complete, load

    cfg = complete(load([*TINY, "hardware=gpu4", "hardware.strategy=fsdp"]))
    conf = accelerate_config(cfg)
    assert conf["distributed_type"] == "FSDP" and conf["num_processes"] == 4 and conf["use_cpu"] is False
    assert conf["fsdp_config"]["fsdp_use_orig_params"] is False
    assert conf["mixed_precision"] == "bf16"


def test_a_batch_that_does_not_split_over_the_processes_is_refused_before_compute(tiny_cfg):
    from harness.config.schema import ConfigError

    with pytest.raises(ConfigError, match="train.batch_size=16 does not split over 3"):
        tiny_cfg("hardware.processes=3")
    assert tiny_cfg("hardware.processes=3", "train.keep_effective_batch=false").hardware.processes == 3


@pytest.mark.process
@pytest.mark.timeout(600)  # a rank that does not follow hangs in its next collective
def test_every_rank_follows_rank_0s_prune_decision(tiny_cfg):
    """Rank 0 alone reports to the Optuna study; its 'prune' must stop rank 1 too (else rank 1 waits
    in the next collective forever) and the launch must end with the pruned exit code."""
    import optuna

    from harness.runners import Ended
    from harness.study.outcome import classify

    cfg = tiny_cfg("hardware=cpu2", "tracking.mode=disabled", *LORA_RANK_TINY, "sweep.pruner=median",
                   "+sweep.pruner_args.n_startup_trials=0", "train.max_steps=8", "train.eval_every=2",
                   "eval.baseline=false", study="prune")
    (Path(cfg.out_dir) / "prune").mkdir()
    study = optuna.create_study(study_name="prune", storage=cfg.storage.url, direction="maximize")
    # an earlier trial that was perfect at every step: the median pruner stops anything below it
    study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={s: 1.0 for s in range(2, 9, 2)}))
    with open_dict(cfg):
        cfg.trial = study.ask().number
    rc, rec, run_dir = _launch(cfg)
    # the record's status is the outcome (torchrun turns rank 0's exit code 3 into 1)
    assert classify(Ended(rc, read_record(run_dir / "result.json"), run_dir / "log.txt"), ["accuracy"]).state == "PRUNED", (run_dir / "log.txt").read_text()[-3000:]
    assert rec["status"] == "pruned" and rec["steps"] == 2 and rec["world_size"] == 2
    assert study.trials[cfg.trial].intermediate_values.keys() == {2}  # reported once, by one rank


def test_cpu_ranks_of_one_machine_meet_on_loopback(tiny_cfg, monkeypatch):
    """gloo binds the hostname's address unless told otherwise; where a sandbox blocks a process from
    reaching its own non-loopback address (seen: CI hung here until its limit) the ranks wait in
    connect() for 30 minutes. The launch names loopback, and a user's own choice is kept."""
    cfg = tiny_cfg("hardware=cpu2", "tracking.mode=disabled")
    path = write_config(cfg, allocate_trial(cfg))
    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    assert accelerate_command(cfg, path)[1]["GLOO_SOCKET_IFNAME"] == "lo"
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "eth1")
    assert accelerate_command(cfg, path)[1]["GLOO_SOCKET_IFNAME"] == "eth1"
