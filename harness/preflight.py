"""What a valid config points at, checked before any compute and before anything is written.

The schema (config.py) checks values; this checks the world they name: the data (read and checked
in full: a bad file stops here, not after a model has loaded), out_dir, a hub model id, the W&B
login. Each failure is one line (`python -m harness` exits 2) and leaves nothing behind. Importing
this module does not import torch, so a bad input costs seconds.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness.config import ConfigError
from harness.data import DataError, check_sizes, load_pool

EMBEDDED = "or use an embedded model (model=minilm, model=smollm2_135m)"


def check(cfg: DictConfig) -> None:
    check_device(cfg)
    check_out_dir(cfg)
    check_tracking(cfg)
    check_hub_model(cfg.model)
    check_data(cfg)


@lru_cache(maxsize=1)
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


def check_device(cfg: DictConfig) -> None:
    """hardware.device=cuda needs CUDA and a GPU per process (per trial x sweep.parallel): stop here, not
    inside transformers after the data and model have loaded. A SLURM submit host need not have GPUs."""
    hw = cfg.hardware
    if hw.device != "cuda" or cfg.launcher.name == "slurm":
        return
    n = cuda_devices()
    parallel = cfg.sweep.parallel if cfg.get("sweep") else 1
    if not n:
        raise ConfigError(f"hardware.device=cuda but no CUDA device is visible (torch.cuda.is_available() is False; "
                          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}): use "
                          "hardware=cpu, or hardware=auto to pick whatever is there")
    if hw.processes * parallel > n:
        raise ConfigError(f"hardware.processes={hw.processes}" + (f" x sweep.parallel={parallel}" if parallel > 1 else "")
                          + f" needs {hw.processes * parallel} CUDA devices; {n} visible: lower it (hardware=gpu1, "
                          f"hardware.processes={n})")


def check_out_dir(cfg: DictConfig) -> None:
    """<out_dir>/<study> must be (or become) a writable directory."""
    p = Path(cfg.out_dir) / cfg.study
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir():
        raise ConfigError(f"out_dir={cfg.out_dir}: {p} is a file, not a directory; point out_dir at a directory "
                          "(runs go to <out_dir>/<study>/trials/<n>/)")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"out_dir={cfg.out_dir}: {p} is not writable; point out_dir at a directory you can write")


def _sizes(cfg: DictConfig, key: str) -> list[tuple[int, str]]:
    """(data.<key> value, where it comes from) for the base config and every value a sweep can set."""
    from harness.space import values_of

    sw = cfg.get("sweep")
    p = sw.space.get(f"data.{key}") if sw else None
    if p is None:
        return [(cfg.data[key], "")]
    vals = values_of(p) if (p.choices is not None or sw.sampler == "grid") else [p.low, p.high]
    return [(v, f"{sw.file or 'the sweep'}: sweep.space.data.{key} value {v}: ") for v in vals]


def check_data(cfg: DictConfig) -> None:
    """Read the dataset the way the trial will (every row, label and encoding checked) and check that
    each train/test size the run can ask for fits."""
    examples, _, _ = load_pool(cfg.data, cfg.task.type)
    for train, where_train in _sizes(cfg, "train_size"):
        for test, where_test in _sizes(cfg, "test_size"):
            d = OmegaConf.merge(cfg.data, {"train_size": train, "test_size": test})
            try:
                check_sizes(d, len(examples))
            except DataError as e:
                raise DataError(f"{where_train or where_test}{e}") from None


def hub_hint(path: str, offline: bool) -> str:
    """Why a hub id cannot be loaded without the network, and the ways out."""
    from huggingface_hub.constants import HF_HUB_CACHE

    if offline:
        return (f"model.path={path} is not in the local hub cache ({HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids "
                f"downloading it: download it once with network access (unset HF_HUB_OFFLINE), set model.path to "
                f"a local model directory, {EMBEDDED}")
    return (f"model.path={path}: the Hugging Face hub cannot be reached and the model is not in the local cache "
            f"({HF_HUB_CACHE}): connect to the internet, set model.path to a local model directory, {EMBEDDED}")


def check_hub_model(m: DictConfig) -> None:
    """model=hub: a local directory with config.json, or a hub id whose config.json can be fetched (from
    the cache when offline): a typo or a missing download stops here, not in every trial."""
    if m.source != "hub":
        return
    local = Path(m.path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ConfigError(f"model.path={m.path} is a directory without config.json: not a saved transformers "
                              "model (save one with model.save_pretrained(DIR))")
        return
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HFValidationError, HfHubHTTPError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError)

    try:
        hf_hub_download(m.path, "config.json", revision=m.revision)  # a few KB, cached as from_pretrained would
    except HFValidationError:
        raise ConfigError(f"model.path={m.path} is neither a local directory nor a hub id (ORG/NAME)") from None
    except LocalEntryNotFoundError:  # offline, or no network, and not in the cache
        raise ConfigError(hub_hint(m.path, constants.HF_HUB_OFFLINE)) from None
    except GatedRepoError:
        raise ConfigError(f"model.path={m.path} is gated on the hub: accept its licence on its page, then log in "
                          "(`hf auth login` or HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"model.path={m.path}: no such model on the hub (or it is private: log in with "
                          "`hf auth login` or HF_TOKEN)") from None
    except RevisionNotFoundError:
        raise ConfigError(f"model.revision={m.revision}: no such revision of {m.path} on the hub") from None
    except EntryNotFoundError:
        raise ConfigError(f"model.path={m.path} has no config.json on the hub: not a transformers model") from None
    except HfHubHTTPError as e:
        raise ConfigError(f"model.path={m.path}: the hub answered {str(e).splitlines()[0]}") from None


def check_tracking(cfg: DictConfig) -> None:
    from harness.tracking import wandb_key_configured

    if cfg.tracking.mode == "online" and not wandb_key_configured():
        raise ConfigError("tracking=online needs a W&B API key and none is set: export WANDB_API_KEY=... or run "
                          "`wandb login` once, or use tracking=offline (sync later with `wandb sync`) or "
                          "tracking=disabled")
