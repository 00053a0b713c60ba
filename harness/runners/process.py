"""Run one trial from its resolved config file: in this process, in a child process, or under
`accelerate launch` for N processes. The trial number (never a timestamp) names its directory, so
ranks and workers cannot collide.
"""
from __future__ import annotations

import copy
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import yaml
from omegaconf import DictConfig, open_dict

from harness.config.schema import to_yaml
from harness.record import read_record
from harness.runners import Ended


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
    from harness.cli.args import version
    from harness.record import git_sha

    path = run_dir / "config.yaml"
    sha = git_sha()
    made_by = f"git {sha}" if sha else version()
    path.write_text(f"# python -m harness.train {path}   (trial {cfg.get('trial')} of study {cfg.study}; {made_by})\n"
                    + to_yaml(cfg))
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
    if hw.strategy == "fsdp":  # on CPU too: FSDP1 trains over gloo (tests/runners/test_distributed.py)
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
        if on_cpu:  # accelerate refuses sync_module_states on CPU; every rank loads the same weights itself
            conf["fsdp_config"].update(fsdp_cpu_ram_efficient_loading=False, fsdp_sync_module_states=False)
    return conf


def command(cfg: DictConfig, config_path: Path) -> tuple[list[str], dict]:
    """The command line and environment that run this trial in child process(es): `python -m
    harness.train` for one, `accelerate launch` for N. How it ended is the record's `status`
    (harness/study/outcome.py); the exit code only matters where no record was written (torchrun turns any rank's
    non-zero exit into 1, so it cannot carry "pruned")."""
    from harness.optuna_parts import PASSWORD_ENV, strip_password

    if cfg.hardware.processes > 1:
        cmd, env = accelerate_command(cfg, config_path)
    else:
        cmd, env = [sys.executable, "-m", "harness.train", str(config_path)], dict(os.environ)
    _, password = strip_password(cfg.storage.url)
    if password:
        env[PASSWORD_ENV] = password
    return cmd, env


def accelerate_command(cfg: DictConfig, config_path: Path) -> tuple[list[str], dict]:
    """`accelerate launch` through accelerate.yaml, written next to the trial's config.yaml."""
    env = dict(os.environ)
    if cfg.hardware.device == "cpu":
        env["ACCELERATE_USE_CPU"] = "1"  # gloo ranks; see accelerate_config for why not MULTI_CPU
        # One machine: the ranks meet on loopback. Left alone, gloo binds the address the hostname
        # resolves to, which a sandbox or firewall may not let a process reach from itself; the ranks
        # then wait in connect() until the 30-minute process-group timeout. A user's choice stands.
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
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


# ---------------------------------------------------------------------------- the trial process, for the driver


def set_pdeathsig() -> None:
    # Linux: the trial dies with its driver (kill -9 included), so no orphan keeps writing.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def cpu_threads(cfg: DictConfig, concurrent: int) -> DictConfig:
    """The config with hardware.threads resolved (when unset): this process's cores (its affinity,
    which SLURM and cgroups narrow) split over the `concurrent` trial processes, so processes x threads
    never exceeds the cores. Written into config.yaml: the trial reads it, no environment variable."""
    from harness.config.devices import usable_cpus

    if cfg.hardware.threads is not None:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.hardware.threads = max(1, usable_cpus() // max(1, concurrent))
    return cfg


def trial_env(tcfg: DictConfig, slot: int, slots: int, env: dict | None = None) -> dict:
    """The environment of the trial process(es) (or warm worker) in slot `slot` of `slots`: quiet progress,
    passive OpenMP waits where processes share cores, and on GPUs the slot's devices [slot*k, (slot+1)*k)."""
    from harness.optuna_parts import PASSWORD_ENV, strip_password

    env = dict(os.environ) if env is None else env
    _, password = strip_password(tcfg.storage.url)
    if password:
        env[PASSWORD_ENV] = password
    env["HARNESS_QUIET"] = "1"  # the driver's bar is the progress display; logs stay readable
    k = tcfg.hardware.processes
    if tcfg.hardware.device == "cpu":
        if slots * k > 1:  # spin-waiting OpenMP threads of processes sharing cores collapse (8-80x)
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = visible.split(",") if visible else [str(i) for i in range(slots * k)]
        env["CUDA_VISIBLE_DEVICES"] = ",".join(ids[slot * k:(slot + 1) * k])
    return env


class ProcessRunner:
    """Runs each trial in a fresh process group (`python -m harness.train`, or `accelerate launch`
    for N processes) that dies with the driver; slot i of `slots` owns devices [i*k, (i+1)*k) on
    GPUs, and on CPU the slots split the cores. The driver's heartbeat is called while it waits."""

    def __init__(self, slots: int):
        self.slots = slots
        self.procs: dict[int, subprocess.Popen] = {}
        self.stopping = False

    def prestart(self, cfg: DictConfig) -> None:
        """Nothing to start ahead: each trial is a fresh process."""

    def run(self, tcfg: DictConfig, run_dir: Path, slot: int, started, beat, every: float) -> Ended:
        for stale in ("result.json", "log.txt"):
            (run_dir / stale).unlink(missing_ok=True)
        k = tcfg.hardware.processes
        if tcfg.hardware.device == "cpu":
            tcfg = cpu_threads(tcfg, self.slots * k)
        path = write_config(tcfg, run_dir)
        cmd, env = command(tcfg, path)
        env = trial_env(tcfg, slot, self.slots, env)
        n = tcfg.trial
        with open(run_dir / "log.txt", "ab") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=set_pdeathsig)
            self.procs[n] = proc
            try:
                if self.stopping:  # a stop came while this trial was starting
                    os.killpg(proc.pid, signal.SIGTERM)
                started(proc.pid)
                while True:
                    try:
                        rc = proc.wait(timeout=every)
                        break
                    except subprocess.TimeoutExpired:
                        beat()
            finally:
                self.procs.pop(n, None)
        return Ended(rc, read_record(run_dir / "result.json"), run_dir / "log.txt")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End every running trial's process group (SIGTERM first; SIGKILL for a second interrupt)."""
        self.stopping = True
        for proc in list(self.procs.values()):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """No idle process is left between trials."""

    def discard(self) -> None:
        self.stop(signal.SIGKILL)
