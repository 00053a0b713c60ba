"""What a valid config points at, checked before any compute and before anything is written.

The schema (config.py) checks values; this checks the world they name: the data (read and checked
in full: a bad file stops here, not after a model has loaded), out_dir, a hub model id, the W&B
login. Each failure is one line (`python -m harness` exits 2) and leaves nothing behind. Importing
this module does not import torch, so a bad input costs seconds.
"""
from __future__ import annotations

import netrc
import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf

from harness.record import is_checkpoint
from harness.config.schema import ConfigError
from harness.config.devices import cuda_devices
from harness.data.load import DataError, check_sizes, load_pool, training_indices
from harness.data.sources import hub_hint



def check(cfg: DictConfig) -> None:
    check_device(cfg)
    check_out_dir(cfg)
    check_tracking(cfg)
    check_hub_model(cfg.model)
    check_max_length(cfg.model)
    check_data(cfg)
    if cfg.train.resume_from and not is_checkpoint(Path(cfg.train.resume_from)):
        raise ConfigError(f"train.resume_from={cfg.train.resume_from} is not a checkpoint folder (model.safetensors + "
                          "custom_checkpoint_1.pkl, written by train.checkpoint_every)")
    if (cfg.train.checkpoint_every or cfg.train.resume_from) and cfg.hardware.strategy == "fsdp":
        # FSDP saves sharded weights: harness/trial/checkpoint.py keeps only the trained parameters of a whole model
        raise ConfigError("train.checkpoint_every/resume_from: not supported with hardware.strategy=fsdp; use ddp")


@lru_cache(maxsize=1)
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
    from harness.study.space import values_of

    sw = cfg.get("sweep")
    p = sw.space.get(f"data.{key}") if sw else None
    if p is None:
        return [(cfg.data[key], "")]
    vals = values_of(p) if (p.choices is not None or sw.sampler == "grid") else [p.low, p.high]
    return [(v, f"{sw.file or 'the sweep'}: sweep.space.data.{key} value {v}: ") for v in vals]


def check_data(cfg: DictConfig) -> None:
    """Read the dataset the way the trial will (every row, label and encoding checked) and check that
    each train/test size the run can ask for fits."""
    if cfg.eval.benchmarks:  # fetched separately (python -m harness.data fetch benchmarks): say so before any model
        from harness.data.benchmarks import require

        require(list(cfg.eval.benchmarks))
    examples, _, _ = load_pool(cfg.data, cfg.task.type)
    for train, where_train in _sizes(cfg, "train_size"):
        for test, where_test in _sizes(cfg, "test_size"):
            d = OmegaConf.merge(cfg.data, {"train_size": train, "test_size": test})
            try:
                check_sizes(d, len(examples))
                check_training_split(cfg, d, examples)
            except DataError as e:
                raise DataError(f"{where_train or where_test}{e}") from None


def check_training_split(cfg: DictConfig, data: DictConfig, examples: list) -> None:
    """The training split the trial will draw must fill one batch, and (classification) hold two classes."""
    if data.train_size < cfg.train.batch_size:  # every step would reuse the same few examples
        raise DataError(f"data.train_size={data.train_size} is smaller than one batch (train.batch_size="
                        f"{cfg.train.batch_size}): raise data.train_size or lower train.batch_size")
    if cfg.task.type == "sft":
        return
    train_labels = {examples[i].label for i in training_indices(data, [e.label for e in examples])}
    if len(train_labels) < 2:
        raise DataError(f"data.train_size={data.train_size}: the training split holds one class only; raise "
                        "data.train_size (the split is stratified by label)")


def check_max_length(m: DictConfig) -> None:
    """model.max_length within the model's positions (its config.json; a tiny model's is checked by the
    schema): past them the embedding lookup fails in the first forward pass, after the model has loaded."""
    cfg_json = None
    if m.source == "package":
        from harness.data.sources import package_dir

        pkg, _, rel = m.path.partition("/")
        cfg_json = package_dir(pkg) / rel / "config.json"
    elif m.source == "hub":
        local = Path(m.path).expanduser()
        if local.is_dir():
            cfg_json = local / "config.json"
        else:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(m.path, "config.json", revision=m.revision)
            cfg_json = Path(found) if isinstance(found, str) else None
    if cfg_json is None or not cfg_json.is_file():
        return
    import json

    conf = json.loads(cfg_json.read_text())
    positions = conf.get("max_position_embeddings") or conf.get("n_positions")
    if isinstance(positions, int) and m.max_length > positions:
        raise ConfigError(f"model.max_length={m.max_length} is beyond the {positions} positions of {m.path} "
                          f"({cfg_json.name}: max_position_embeddings): lower model.max_length")


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
    if cfg.tracking.mode == "online" and not wandb_key_configured():
        raise ConfigError("tracking=online needs a W&B API key and none is set: export WANDB_API_KEY=... or run "
                          "`wandb login` once, or use tracking=offline (sync later with `wandb sync`) or "
                          "tracking=disabled")


def wandb_key_configured() -> bool:
    """Where wandb.init looks for credentials (wandb 0.31, wbauth): WANDB_API_KEY or
    WANDB_IDENTITY_TOKEN_FILE, the .netrc entry `wandb login` writes, or api_key in its settings file."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).netloc
    home = Path.home()
    files = [Path(os.environ["NETRC"]).expanduser()] if os.environ.get("NETRC") else [home / ".netrc", home / "_netrc"]
    for f in files:
        try:
            if f.is_file() and netrc.netrc(f).authenticators(host):
                return True
        except (netrc.NetrcParseError, OSError):
            pass  # wandb warns and ignores an unreadable netrc too
    settings = Path(os.environ.get("WANDB_CONFIG_DIR", home / ".config" / "wandb")) / "settings"
    try:
        return "api_key" in settings.read_text()
    except OSError:
        return False
