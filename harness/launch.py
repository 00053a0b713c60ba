"""Run one trial from its resolved config file: in this process, in a child process, or under
`accelerate launch` for N processes. The trial number (never a timestamp) names its directory, so
ranks and workers cannot collide.
"""
from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict

from harness.config import to_yaml


def allocate_trial(cfg: DictConfig) -> Path:
    """Give a config without a trial number the next free one under runs/<study>/trials/."""
    root = Path(cfg.out_dir) / cfg.study / "trials"
    root.mkdir(parents=True, exist_ok=True)
    if cfg.get("trial") is not None:
        d = root / str(cfg.trial)
        d.mkdir(exist_ok=True)
        return d
    n = max((int(p.name) for p in root.iterdir() if p.name.isdigit()), default=-1) + 1
    while True:
        try:
            (root / str(n)).mkdir()  # atomic: two processes cannot both get n
            break
        except FileExistsError:
            n += 1
    with open_dict(cfg):
        cfg.trial = n
    return root / str(n)


def write_config(cfg: DictConfig, run_dir: Path) -> Path:
    """config.yaml, the trial's contract, without the storage password (command() passes it in the
    trial's environment), so neither the file, the record nor the W&B config holds a secret."""
    from harness.optuna_parts import strip_password

    url, _ = strip_password(cfg.storage.url)
    if url != cfg.storage.url:
        cfg = copy.deepcopy(cfg)
        cfg.storage.url = url
    path = run_dir / "config.yaml"
    path.write_text(to_yaml(cfg))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accelerate_config(cfg: DictConfig) -> dict:
    """The `accelerate launch --config_file` contents for an N-process trial (N > 1).

    Always MULTI_GPU or FSDP, also on CPU: a MULTI_CPU config (like `--cpu`) starts ONE process.
    On CPU the launcher's environment adds ACCELERATE_USE_CPU=1, so the ranks use gloo.
    """
    hw = cfg.hardware
    on_cpu = hw.device == "cpu"
    conf = {
        "compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU",
        "num_processes": hw.processes, "num_machines": 1, "machine_rank": 0, "gpu_ids": "all",
        "main_process_port": _free_port(), "rdzv_backend": "static", "same_network": True,
        "mixed_precision": hw.mixed_precision, "use_cpu": on_cpu, "debug": False,
        "dynamo_config": {},
    }
    if hw.strategy == "fsdp":  # (the schema rejects fsdp on CPU)
        # The FSDP + QLoRA recipe of the peft/bitsandbytes docs (FSDP1): shard whole decoder layers,
        # keep flat params (LoRA + frozen 4-bit weights mixed in one unit need use_orig_params=false),
        # load on rank 0 and broadcast. The 4-bit storage dtype must match (models.py sets
        # bnb_4bit_quant_storage to the compute dtype under fsdp) or FSDP cannot flatten the weights.
        conf["distributed_type"] = "FSDP"
        conf["fsdp_config"] = {
            "fsdp_version": 1, "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_backward_prefetch": "BACKWARD_PRE", "fsdp_forward_prefetch": False,
            "fsdp_cpu_ram_efficient_loading": True, "fsdp_sync_module_states": True,
            "fsdp_offload_params": False, "fsdp_sharding_strategy": "FULL_SHARD",
            "fsdp_state_dict_type": "SHARDED_STATE_DICT", "fsdp_use_orig_params": False,
        }
    return conf


def command(cfg: DictConfig, config_path: Path) -> tuple[list[str], dict]:
    """The command line and environment that run this trial in child process(es); its exit code is
    the trial's: 0 complete, 3 pruned, other failed. N > 1 processes go through `python -m
    harness.launch`, which runs `accelerate launch` and keeps that contract (torchrun turns any
    rank's non-zero exit into 1)."""
    from harness.optuna_parts import PASSWORD_ENV, strip_password

    module = "harness.train" if cfg.hardware.processes == 1 else "harness.launch"
    env = dict(os.environ)
    _, password = strip_password(cfg.storage.url)
    if password:
        env[PASSWORD_ENV] = password
    return [sys.executable, "-m", module, str(config_path)], env


def accelerate_command(cfg: DictConfig, config_path: Path) -> tuple[list[str], dict]:
    """`accelerate launch` through accelerate.yaml, written next to the trial's config.yaml."""
    env = dict(os.environ)
    if cfg.hardware.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"  # gloo ranks; see accelerate_config for why not MULTI_CPU
    acc = config_path.parent / "accelerate.yaml"
    acc.write_text(yaml.safe_dump(accelerate_config(cfg), sort_keys=False))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(acc),
           "-m", "harness.train", str(config_path)]
    return cmd, env


def run_subprocess(cfg: DictConfig, config_path: Path, log_path: Path | None = None) -> int:
    cmd, env = command(cfg, config_path)
    if log_path is None:
        return subprocess.run(cmd, env=env).returncode
    with open(log_path, "ab") as log:
        return subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def run_single(cfg: DictConfig) -> dict:
    """`python -m harness` without a sweep: one trial, in-process for 1 process."""
    from harness import train

    run_dir = allocate_trial(cfg)
    path = write_config(cfg, run_dir)
    if cfg.hardware.processes == 1:
        return train.run(OmegaConf.load(path))
    rc = run_subprocess(cfg, path)
    result = run_dir / "result.json"
    if rc != 0 or not result.is_file():
        raise SystemExit(f"trial failed (exit {rc}); see the output above and {run_dir}")
    return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> int:
    """python -m harness.launch trials/<n>/config.yaml: an N-process trial, exit code 0/3/other."""
    from harness.config import read
    from harness.optuna_parts import PRUNED_EXIT

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m harness.launch runs/<study>/trials/<n>/config.yaml", file=sys.stderr)
        return 2
    path = Path(argv[0])
    cmd, env = accelerate_command(read(path), path)
    rc = subprocess.run(cmd, env=env).returncode
    result = path.parent / "result.json"
    if rc != 0 and result.is_file() and json.loads(result.read_text()).get("status") == "pruned":
        return PRUNED_EXIT  # rank 0 wrote the pruned record; the launcher only saw "a rank exited non-zero"
    return rc


if __name__ == "__main__":
    sys.exit(main())
