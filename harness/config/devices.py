"""Which devices this machine has, asked only where a config needs the answer (torch is imported then)."""
from __future__ import annotations

import os


def cuda_devices() -> int:
    import torch  # only for hardware=auto or hardware.device=cuda: the one reliable way to ask

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def pick_hardware(overrides: list[str]) -> tuple[list[str], str | None]:
    """`hardware=auto` -> hardware=gpu1 when a CUDA device is visible, else hardware=cpu; the note says
    which. Replaced before composing, so config.yaml and every trial of a study record the option."""
    if not any(o == "hardware=auto" for o in overrides):
        return list(overrides), None
    n = cuda_devices()
    pick = "gpu1" if n else "cpu"
    note = f"hardware=auto: {n} CUDA device(s) visible, using hardware={pick}"
    return [f"hardware={pick}" if o == "hardware=auto" else o for o in overrides], note


def usable_cpus() -> int:
    """The CPUs this process may run on: SLURM, cgroups (cpusets) and taskset restrict them, and
    os.cpu_count() (every CPU of the machine) would oversubscribe. macOS has no sched_getaffinity."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1
