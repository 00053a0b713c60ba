"""Compose the Hydra config and validate it against a typed schema before any compute.

The resolved config is the contract of a run: the trial worker reads it, W&B and result.json store
it, and it reproduces a figure. Everything a trial needs is in it; nothing is read from globals.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"


class ConfigError(ValueError):
    """A config that cannot run; the message names the key and the fix."""


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: reject them.
    model_config = ConfigDict(extra="forbid")


class TaskCfg(_Strict):
    type: Literal["classification"]


class ModelCfg(_Strict):
    name: str
    family: Literal["bert", "llama"]
    source: Literal["package", "gguf_package", "hub", "tiny"]
    path: str | None
    revision: str | None = None
    max_length: int = Field(ge=8)
    trust_remote_code: bool = False
    tiny: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _source_needs(self):
        if self.source == "tiny" and not self.tiny:
            raise ValueError("model.source=tiny needs a model.tiny block of transformers config kwargs")
        if self.source != "tiny" and not self.path:
            raise ValueError(f"model.source={self.source} needs model.path")
        return self


class DataCfg(_Strict):
    name: str
    path: str | None = None
    split: str | None = None
    text_field: str | None = None
    label_field: str | None = None
    train_size: int = Field(ge=1)
    test_size: int = Field(ge=1)
    split_seed: int = 0
    subset_seed: int = 0


class LoraCfg(_Strict):
    r: int = Field(ge=1, description="LoRA rank")
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    targets: str | list[str]
    bias: Literal["none", "all", "lora_only"] = "none"

    @field_validator("targets")
    @classmethod
    def _non_empty(cls, v):
        if not v:
            raise ValueError("lora.targets is empty: name a preset (attn_qv, attn, mlp, all_linear) or modules")
        return v


class QuantCfg(_Strict):
    mode: Literal["nf4", "fp4", "int8", "none"]
    double_quant: bool = True
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"


class TrainCfg(_Strict):
    lr: float = Field(gt=0)
    max_steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    grad_accum: int = Field(ge=1)
    warmup_ratio: float = Field(ge=0, le=1)
    weight_decay: float = Field(ge=0)
    max_grad_norm: float = Field(gt=0)
    eval_every: int = Field(ge=0)
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    keep_effective_batch: bool = True


class EvalCfg(_Strict):
    batch_size: int = Field(ge=1)
    baseline: bool = True
    max_examples: int | None = Field(default=None, ge=1)


class HardwareCfg(_Strict):
    device: Literal["cpu", "cuda"]
    processes: int = Field(ge=1)
    threads: int | None = Field(default=None, ge=1)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    strategy: Literal["ddp", "fsdp"] = "ddp"
    price_per_device_hour: float = Field(ge=0)


class TrackingCfg(_Strict):
    mode: Literal["online", "offline", "disabled"]
    project: str
    entity: str | None = None


class StorageCfg(_Strict):
    url: str


class LauncherCfg(_Strict):
    name: Literal["local", "slurm"] = "local"
    workers: int = Field(default=1, ge=1)
    cluster: Literal["slurm", "local", "debug"] | None = None
    partition: str | None = None
    account: str | None = None
    timeout_min: int = Field(default=240, ge=1)
    gpus_per_node: int | None = Field(default=None, ge=0)
    cpus_per_task: int = Field(default=8, ge=1)
    mem_gb: int = Field(default=64, ge=1)
    folder: str | None = None
    wait: bool = False
    additional: dict[str, Any] = {}


class ExperimentCfg(_Strict):
    task: TaskCfg
    model: ModelCfg
    data: DataCfg
    lora: LoraCfg
    quant: QuantCfg
    train: TrainCfg
    eval: EvalCfg
    hardware: HardwareCfg
    tracking: TrackingCfg
    storage: StorageCfg
    launcher: LauncherCfg = LauncherCfg()
    sweep: dict[str, Any] | None = None
    seed: int
    study: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    out_dir: str
    trial: int | None = None      # set by the driver / launcher, names trials/<n>/

    @model_validator(mode="after")
    def _cross_checks(self):
        from harness.models import check_targets  # static preset table; no model is loaded

        check_targets(self.model.family, self.lora.targets)
        if self.quant.mode != "none" and self.hardware.device == "cpu" and self.quant.compute_dtype == "float16":
            raise ValueError("quant.compute_dtype=float16 is not supported on CPU; use bfloat16 or float32")
        hw = self.hardware
        if self.train.keep_effective_batch and self.train.batch_size % hw.processes:
            raise ValueError(f"train.batch_size={self.train.batch_size} does not split over {hw.processes} processes "
                             "(it is the global batch, kept across process counts): make it a multiple, or set "
                             "train.keep_effective_batch=false to use it per process")
        if hw.strategy == "fsdp" and (hw.device != "cuda" or hw.processes < 2):
            raise ValueError(f"hardware.strategy=fsdp shards over CUDA devices: it needs hardware.device=cuda and "
                             f"hardware.processes>=2 (got {hw.device}, {hw.processes}); use strategy=ddp")
        if self.launcher.name == "slurm" and self.launcher.workers > 1 and self.storage.url.startswith("sqlite"):
            raise ValueError("launcher=slurm with several workers needs a storage every node reaches: "
                             "storage=postgres (storage.url=postgresql+psycopg://...) or storage=journal on a shared "
                             "file system; SQLite locking breaks on network file systems")
        return self


def _format_validation_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        got = e.get("input")
        got = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {key or '<config>'}: {e['msg']}{got}")
    return "invalid config:\n" + "\n".join(lines)


def validate(cfg: DictConfig | dict) -> ExperimentCfg:
    """Resolve and check a config; raise ConfigError naming every bad key."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    except OmegaConfBaseException as e:
        raise ConfigError(f"config does not resolve: {e}") from None
    try:
        return ExperimentCfg.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None


def complete(cfg: DictConfig | dict) -> DictConfig:
    """Validated config with every schema default filled in: what a trial reads and records."""
    return OmegaConf.create(validate(cfg).model_dump(mode="json"))


def load(overrides: list[str] | tuple[str, ...] = (), conf_dir: Path = CONF_DIR) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides (`model=smollm2_135m lora.r=16 ...`)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_hydra_hint(str(e))) from None
    finally:
        GlobalHydra.instance().clear()
    return cfg


def _hydra_hint(msg: str) -> str:
    if "Could not find" in msg and "Available options" in msg:
        return msg.replace("\n", "\n  ")  # Hydra already lists the choices
    return msg


def to_yaml(cfg: DictConfig | dict) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg, resolve=True)


def read(path: str | Path) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return OmegaConf.load(path)
