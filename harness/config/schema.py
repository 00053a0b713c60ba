"""Compose the Hydra config and validate it against a typed schema before any compute.

The resolved config is the contract of a run: the trial worker reads it, W&B and result.json store
it, and it reproduces a figure. Everything a trial needs is in it; nothing is read from globals.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from pydantic import Field, ValidationError, field_validator, model_validator

# The sweep/launcher schema and the error wording live in their own modules; their names stay
# importable from here (`from harness.config.schema import SweepCfg, ConfigError, one_line`).
from harness.config.errors import ConfigError, check_missing, format_validation_error, one_line
from harness.config.sweep import MAX_SEED, LauncherCfg, ParamCfg, Scalar, SweepCfg, _Strict  # noqa: F401
from harness.config.lora import ALIASES, HARNESS_SET, LoraCfg, harness_set_error, is_field

PKG = Path(__file__).resolve().parent.parent   # harness/
ROOT = PKG.parent
# An installed package (`pip install .`) ships conf/ (with the sweeps as conf/sweep/) inside it as
# harness/conf/; a checkout or editable install reads the repository's conf/.
INSTALLED = (PKG / "conf" / "config.yaml").is_file()
CONF_DIR = PKG / "conf" if INSTALLED else ROOT / "conf"


# transformers.SchedulerType values get_scheduler builds from (warmup, total steps) alone; the others
# need arguments the config does not carry (reduce_lr_on_plateau a metric per step, cosine_with_min_lr
# a floor, warmup_stable_decay decay steps). tests/trial/test_optim.py checks each is a SchedulerType.
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt")


class OptimError(ValueError):
    """An optimizer the device cannot run; one line, raised before any training step."""


def device_error(optim: str, device: str) -> str | None:
    """Why optim cannot run on device (None: it can). Measured with bitsandbytes 0.50.2: AdamW8bit
    steps on CPU with uint8 states; PagedAdamW8bit on CPU warns "Paged optimizers are not supported on
    CPU" and silently runs unpaged, so it is refused there rather than recorded as something it is not."""
    if optim == "paged_adamw_8bit" and device != "cuda":
        return (f"train.optim=paged_adamw_8bit pages optimizer states between GPU and CPU memory, which bitsandbytes "
                f"does not do on {device}; use train.optim=adamw_8bit (8-bit states) or adamw_torch")
    return None


def _wandb_mode() -> str:
    """tracking=default's mode, as W&B reads it: WANDB_MODE; else online under a W&B Sweeps agent (it
    sets WANDB_SWEEP_ID, and only an online run reports back to it); else offline."""
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_SWEEP_ID") else "offline")


OmegaConf.register_new_resolver("wandb_mode", _wandb_mode, replace=True)


class ClassificationTask(_Strict):
    type: Literal["classification"]


class SftTask(_Strict):
    """Supervised fine-tuning on prompt -> target pairs (harness/tasks/sft.py)."""
    type: Literal["sft"]
    chat_template: bool = True          # use the tokenizer's chat template when it has one
    template: str = "{prompt}"          # plain template otherwise; fields {prompt} and {system}
    max_target_tokens: int = Field(default=24, ge=1)
    prompt_truncation: Literal["left", "right"] = "left"
    max_new_tokens: int = Field(default=5, ge=1)
    samples: int = Field(default=8, ge=0)

    @field_validator("template")
    @classmethod
    def _has_prompt(cls, v):
        if "{prompt}" not in v:
            raise ValueError("task.template must contain {prompt} (and may contain {system})")
        try:
            v.format(prompt="", system="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"task.template may only use the fields {{prompt}} and {{system}} ({e!r}); "
                             "write a literal brace as {{ or }}") from None
        return v


TaskCfg = Annotated[ClassificationTask | SftTask, Field(discriminator="type")]


class ModelCfg(_Strict):
    name: str
    family: str    # bert, llama (our presets) or any model_type PEFT knows (harness/config/presets.py)
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
        positions = (self.tiny or {}).get("max_position_embeddings")
        if isinstance(positions, int) and self.max_length > positions:
            raise ValueError(f"model.max_length={self.max_length} is beyond the model's {positions} positions "
                             f"(model.tiny.max_position_embeddings): lower model.max_length")
        return self


class DataCfg(_Strict):
    name: str
    path: str | None = None
    split: str | None = None
    text_field: str | None = None
    label_field: str | None = None
    # sft: column names of prompt / optional input appended to it / target / per-row system message
    prompt_field: str | None = None
    input_field: str | None = None
    target_field: str | None = None
    system_field: str | None = None
    system: str | None = None          # sft: system message for rows without their own
    encoding: str = "utf-8"            # of a local text file (data.path); e.g. latin-1, cp1252, utf-16
    train_size: int = Field(ge=1)
    test_size: int = Field(ge=1)
    split_seed: int = 0
    subset_seed: int = 0


class QuantCfg(_Strict):
    mode: Literal["nf4", "fp4", "int8", "none"]
    double_quant: bool = True
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"


class EarlyStoppingCfg(_Strict):
    """Stop a trial at its plateau (harness/metrics/convergence.py early_stop: transformers'
    EarlyStoppingCallback semantics); train.max_steps is then a cap."""
    patience: int = Field(default=0, ge=0)      # intermediate evals without an improvement > min_delta; 0 = off
    min_delta: float = Field(default=0.0, ge=0)  # in the metric's units (accuracy 0.005 = half a point)
    metric: str = "accuracy"                     # accuracy | eval_loss | an eval.metrics name (sft: exact_match, ...)


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
    log_every: int = Field(default=10, ge=0)  # a progress line every k steps (trial log); 0 = off
    checkpoint_every: int = Field(default=0, ge=0)  # harness/trial/checkpoint.py; 0 = off
    resume_from: str | None = None  # a checkpoint folder to continue from
    # trials/<n>/adapter/: all (every trial), best (a study keeps the best configuration's seeds), none;
    # null = all for a single run, best in a study (harness/trial/adapters.py)
    save_adapter: Literal["best", "all", "none"] | None = None
    optim: Literal["adamw_torch", "adamw_8bit", "paged_adamw_8bit"] = "adamw_torch"  # harness/trial/optim.py
    # transformers.get_scheduler: linear, cosine, constant_with_warmup, ...; null = linear planned over
    # max_steps, with or without early stopping: the measured choice (BENCHMARKS.md "Learning curves and
    # default budgets": an early-stopped run is the capped linear run cut at its stop, patience 4 / min_delta
    # 0.01 cost 0.42 points on average for 29% of the steps); side by side on 3 seeds, constant_with_warmup
    # under early stopping ended 1.0 points below it (bench/es_schedule.py, "Schedule under early stopping")
    lr_scheduler_type: str | None = None
    early_stopping: EarlyStoppingCfg = EarlyStoppingCfg()

    @field_validator("lr_scheduler_type")
    @classmethod
    def _scheduler(cls, v):
        if v is not None and v not in SCHEDULERS:
            raise ValueError(f"train.lr_scheduler_type={v!r}: choose from {', '.join(SCHEDULERS)}")
        return v

    @model_validator(mode="after")
    def _early_stopping_needs(self):
        if self.early_stopping.patience and not self.eval_every:
            raise ValueError(f"train.early_stopping.patience={self.early_stopping.patience} counts intermediate evals, "
                             "and train.eval_every=0 runs none: set train.eval_every (e.g. 20)")
        if self.lr_scheduler_type is None:  # resolved here, so config.yaml and result.json name the schedule run
            self.lr_scheduler_type = "linear"
        return self



class EvalCfg(_Strict):
    batch_size: int = Field(ge=1)
    baseline: bool = True
    max_examples: int | None = Field(default=None, ge=1)
    # intermediate evals (train.eval_every: pruning decisions, eval curves) on a fixed random subset of the
    # held-out examples, the final eval on all of them; the record's intermediate_eval_examples says so
    intermediate_examples: int | None = Field(default=None, ge=1)
    # extra metrics through `evaluate` (harness/metrics/extra.py): exact_match, rouge_l, bleu, accuracy,
    # f1 (local modules) or any evaluate name (hub/cache; checked here, before compute)
    metrics: list[str] = []
    # standard benchmarks through lm-eval on the base and the tuned model (task=sft: a causal LM), for
    # retention.<b> and forgetting (harness/tasks/benchmarks.py); names in harness/data/benchmarks.py.
    # benchmark_items: a seeded random subset per benchmark (stratified over MMLU's subjects), the same
    # for every trial and the base model; null = every item
    benchmarks: list[str] = []
    benchmark_items: int | None = Field(default=None, ge=1)
    benchmark_seed: int = Field(default=0, ge=0)
    benchmark_batch_size: int = Field(default=8, ge=1)

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, v):
        from harness.data.benchmarks import check_names  # a static table: no lm-eval, no data read

        return check_names(v)

    @field_validator("metrics")
    @classmethod
    def _resolvable(cls, v):
        if v:
            from harness.metrics.extra import MetricError, check

            try:
                check(v)
            except MetricError as e:
                raise ValueError(str(e)) from None
        return v


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

    @field_validator("mode", mode="before")
    @classmethod
    def _wandb_aliases(cls, v):
        # WANDB_MODE feeds the default (conf/tracking/default.yaml); wandb also accepts these two
        v = {"dryrun": "offline", "run": "online"}.get(v, v)
        if v not in ("online", "offline", "disabled") and os.environ.get("WANDB_MODE") == v:
            raise ValueError(f"WANDB_MODE={v} is not a W&B mode: set it to online, offline or disabled")
        return v

    @field_validator("entity", mode="before")
    @classmethod
    def _unset(cls, v):
        return v or None  # ${oc.env:WANDB_ENTITY,null} gives "" when the variable is set but empty


class StorageCfg(_Strict):
    url: str


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
    sweep: SweepCfg | None = None
    seed: int = Field(ge=0, le=MAX_SEED)
    study: str
    out_dir: str
    trial: int | None = None      # set by the driver / launcher, names trials/<n>/
    # what trains: lora (PEFT adapters), head_only (frozen base + trained head: the linear probe) or
    # full (every weight); the last two are reference arms for a LoRA study (harness/models.prepare)
    method: Literal["lora", "head_only", "full"] = "lora"

    @model_validator(mode="after")
    def _method_needs(self):
        if self.method == "full" and self.quant.mode != "none":
            raise ValueError(f"method=full trains every weight, which quant.mode={self.quant.mode} stores frozen in "
                             "low precision: add quant=none")
        if self.method == "head_only" and self.task.type != "classification":
            raise ValueError("method=head_only trains a classification head: it needs task=classification")
        return self

    @field_validator("study")
    @classmethod
    def _study_name(cls, v):
        # it names the directory out_dir/<study>/: `study=dd/..` must not write outside it
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", v):
            raise ValueError(f"{v!r} is not a study name: use letters, digits, _ . - (not starting with '.'), "
                             "e.g. study=rank_sweep_v2")
        return v

    @model_validator(mode="after")
    def _cross_checks(self):
        from harness.config.presets import (  # static preset table; no torch, no model
            ENCODERS,
            check_targets,
        )

        check_targets(self.model.family, self.lora.targets)
        if self.task.type == "sft":
            if self.model.family in ENCODERS:
                raise ValueError(f"task=sft needs a decoder model; model={self.model.name} is "
                                 f"{self.model.family}: use model=smollm2_135m, tiny_llama or a hub decoder")
            if self.task.max_target_tokens >= self.model.max_length:
                raise ValueError(f"task.max_target_tokens={self.task.max_target_tokens} leaves no room for the prompt "
                                 f"in model.max_length={self.model.max_length}; lower it or raise model.max_length")
        if self.eval.benchmarks and self.task.type != "sft":
            raise ValueError(f"eval.benchmarks={self.eval.benchmarks} scores a causal LM (lm-eval loglikelihoods): "
                             "it needs task=sft with a decoder model")
        init = self.lora.init_lora_weights
        if isinstance(init, str) and init.startswith("pissa") and self.quant.mode != "none" and self.method == "lora":
            raise ValueError(f"lora.init_lora_weights={init} rewrites the base weights (W - BA), which peft refuses on a "
                             f"quant.mode={self.quant.mode} base: add quant=none")
        if self.quant.mode != "none" and self.hardware.device == "cpu" and self.quant.compute_dtype == "float16":
            raise ValueError("quant.compute_dtype=float16 is not supported on CPU; use bfloat16 or float32")
        hw = self.hardware

        es = self.train.early_stopping.metric
        known = ("accuracy", "eval_loss", *self.eval.metrics,
                 *(("exact_match", "rouge_l", "bleu", "perplexity") if self.task.type == "sft" else ()))
        if self.train.early_stopping.patience and es not in known:
            raise ValueError(f"train.early_stopping.metric={es!r} is not measured by the intermediate evals of this "
                             f"task: choose from {', '.join(dict.fromkeys(known))}")
        if device_error(self.train.optim, hw.device):
            raise ValueError(device_error(self.train.optim, hw.device))
        if self.train.keep_effective_batch and self.train.batch_size % hw.processes:
            raise ValueError(f"train.batch_size={self.train.batch_size} does not split over {hw.processes} processes "
                             "(it is the global batch, kept across process counts): make it a multiple, or set "
                             "train.keep_effective_batch=false to use it per process")
        if hw.strategy == "fsdp" and hw.processes < 2:
            raise ValueError(f"hardware.strategy=fsdp shards over processes: it needs hardware.processes>=2 "
                             f"(got {hw.processes}); use strategy=ddp, or hardware=cpu2 / gpu4 / ...")
        if self.launcher.name == "slurm" and self.launcher.workers > 1 and self.storage.url.startswith("sqlite"):
            raise ValueError("launcher=slurm with several workers needs a storage every node reaches: "
                             "storage=postgres (storage.url=postgresql+psycopg://...) or storage=journal on a shared "
                             "file system; SQLite locking breaks on network file systems")
        return self


def validate(cfg: DictConfig | dict) -> ExperimentCfg:
    """Resolve and check a config; raise ConfigError naming every bad key."""
    try:
        if isinstance(cfg, DictConfig):
            check_missing(cfg)
        data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    except OmegaConfBaseException as e:
        raise ConfigError(f"config does not resolve: {one_line(e)}") from None
    try:
        return ExperimentCfg.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, ExperimentCfg, data)) from None


def complete(cfg: DictConfig | dict) -> DictConfig:
    """Validated config with every schema default filled in: what a trial reads and records."""
    return OmegaConf.create(validate(cfg).model_dump(mode="json"))


def load(overrides: list[str] | tuple[str, ...] = (), conf_dir: Path = CONF_DIR) -> DictConfig:
    """Compose conf/config.yaml with Hydra overrides (`model=smollm2_135m lora.r=16 ...`)."""
    return load_with_choices(overrides, conf_dir)[0]


_NO_OVERRIDE = re.compile(r"Could not override '([^']+)'")


def _compose(conf_dir: Path, overrides: list[str]) -> DictConfig:
    """Hydra's compose; a key the YAML lacks but the schema has (launcher.workers, model.revision)
    is added as Hydra's `+key=value` would; an unknown one gets "did you mean" instead of Hydra's
    "use +key", which only leads to the schema's "Extra inputs are not permitted"."""
    from harness.config.keys import did_you_mean, is_schema_key

    with _HYDRA:  # GlobalHydra is one per process: two slots composing at once would clear each other's
        return _compose_once(conf_dir, overrides, did_you_mean, is_schema_key)


_HYDRA = threading.Lock()


def _compose_once(conf_dir: Path, overrides: list[str], did_you_mean, is_schema_key) -> DictConfig:
    for _ in range(len(overrides) + 1):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
                return compose(config_name="config", overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException, yaml.YAMLError) as e:
            m = _NO_OVERRIDE.search(str(e))
            if m and (is_schema_key(m.group(1), ExperimentCfg) or is_field(m.group(1))):
                # a peft LoraConfig field (lora.rank_pattern) too; PEFT's spelling (lora.lora_alpha) as ours
                key = m.group(1)
                if key.startswith("lora.") and key[5:] in ALIASES:
                    overrides = [f"lora.{ALIASES[key[5:]]}={o.split('=', 1)[1]}" if o.split("=", 1)[0] == key else o
                                 for o in overrides]
                else:
                    overrides = [f"+{o}" if o.split("=", 1)[0] == key else o for o in overrides]
                continue
            if m and m.group(1).startswith("lora.") and m.group(1)[5:] in HARNESS_SET:
                raise ConfigError(harness_set_error(m.group(1)[5:])) from None
            if m:
                raise ConfigError(f"{m.group(1)}: no such config key; {did_you_mean(m.group(1), ExperimentCfg)}") from None
            msg = str(e).split("\nConfig search path:")[0]  # where Hydra looked: noise to a user
            where = "a command-line override: " if isinstance(e, OverrideParseException) else ""
            raise ConfigError(where + one_line(msg)) from None  # Hydra lists the choices one a line
        finally:
            GlobalHydra.instance().clear()
    raise AssertionError("unreachable: each retry adds a + to one more override")


def load_with_choices(overrides: list[str] | tuple[str, ...] = (), conf_dir: Path = CONF_DIR
                      ) -> tuple[DictConfig, dict[str, str | None]]:
    """load(), plus the option chosen in each config group ({"model": "minilm", "sweep": None, ...})."""
    overrides = list(overrides)
    if "hardware=auto" in overrides:
        from harness.config.devices import pick_hardware

        overrides = pick_hardware(overrides)[0]
    cfg = _compose(conf_dir, overrides)
    runtime = cfg.hydra.runtime
    choices = {g: c for g, c in runtime.choices.items() if not g.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
        name = choices.get("sweep")
        if name and isinstance(cfg.get("sweep"), DictConfig):
            # name the sweep's file in its errors; `hydra.searchpath=[file://DIR]` can add DIR/sweep/
            files = [Path(s.path) / "sweep" / f"{name}.yaml" for s in runtime.config_sources if s.schema == "file"]
            found = next((f.resolve() for f in files if f.is_file()), None)
            cfg.sweep.name = name
            cfg.sweep.file = str(found.relative_to(ROOT) if found and found.is_relative_to(ROOT) else found)
    return cfg, choices


def to_yaml(cfg: DictConfig | dict) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(cfg) if isinstance(cfg, dict) else cfg, resolve=True)


def read(path: str | Path) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    return OmegaConf.load(path)
