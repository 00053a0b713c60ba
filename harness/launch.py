"""Run one trial from its resolved config file: in this process, in a child process, or under
`accelerate launch` for N processes. The trial number (never a timestamp) names its directory, so
ranks and workers cannot collide.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

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
    path = run_dir / "config.yaml"
    path.write_text(to_yaml(cfg))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(cfg: DictConfig, config_path: Path) -> tuple[list[str], dict]:
    """The command line and environment that run this trial in child process(es)."""
    env = dict(os.environ)
    n = cfg.hardware.processes
    if n == 1:
        return [sys.executable, "-m", "harness.train", str(config_path)], env
    if cfg.hardware.device == "cpu":
        # `--cpu --num_processes N` and MULTI_CPU configs silently start ONE process; this starts N
        # gloo ranks. The trial asserts the world size either way.
        env["ACCELERATE_USE_CPU"] = "1"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
           "--num_machines", "1", "--mixed_precision", cfg.hardware.mixed_precision,
           "--main_process_port", str(_free_port()), "--dynamo_backend", "no",
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
    import json

    return json.loads(result.read_text())
