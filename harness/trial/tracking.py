"""The results record (result.json) and the W&B run of a trial; both carry the provenance.

One W&B run per trial: group = study, name = "<study>-<n>", config = the resolved config,
history = train loss / lr / eval curves, summary = the record's metrics and cost.
"""
from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from pathlib import Path

from harness.config.devices import usable_cpus
from harness.record import git_sha

LIBS = ("harness", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "optuna", "hydra-core", "wandb")


def provenance(device) -> dict:
    import torch

    versions = {}
    for lib in LIBS:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            pass
    hw = {"device": str(device), "platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "usable_cpus": usable_cpus(), "torch_threads": torch.get_num_threads()}
    if getattr(device, "type", "") == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return {"git_sha": git_sha(), "python": platform.python_version(), "versions": versions, "hardware": hw}


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)  # readers never see half a record


class Run:
    """A W&B run, or a no-op when tracking.mode=disabled or on ranks other than 0."""

    def __init__(self, cfg, config: dict, run_dir: Path, enabled: bool):
        self.run = None
        if not enabled or cfg.tracking.mode == "disabled":
            return
        # Quiet, local-only defaults; a user's own WANDB_* settings win.
        for k, v in {"WANDB_SILENT": "true", "WANDB_CONSOLE": "off", "WANDB__DISABLE_STATS": "true"}.items():
            os.environ.setdefault(k, v)
        import wandb

        # No value tags: the searched values are in the run's config (filter and group on them there);
        # a tag per value floods W&B's tag list. The sweep tag says which sweep file made the run, and
        # WANDB_TAGS (comma-separated) adds the user's own, as wandb.init would without `tags=`.
        tags = [t.strip() for t in os.environ.get("WANDB_TAGS", "").split(",") if t.strip()]
        if cfg.get("sweep") and cfg.sweep.name:
            tags.append(f"sweep:{cfg.sweep.name}")
        self.run = wandb.init(
            project=cfg.tracking.project, entity=cfg.tracking.entity, mode=cfg.tracking.mode,
            group=cfg.study, job_type="trial", name=f"{cfg.study}-{cfg.trial}", tags=tags or None,
            config=config, dir=str(run_dir), reinit="finish_previous",
        )

    def log(self, data: dict, step: int) -> None:
        if self.run is not None:
            self.run.log(data, step=step)

    def table(self, key: str, rows: list[dict]) -> None:
        """Log rows of equal keys (e.g. prompt/generation/target samples) as a W&B Table."""
        if self.run is None or not rows:
            return
        import wandb

        cols = list(rows[0])
        self.run.log({key: wandb.Table(columns=cols, data=[[r[c] for c in cols] for r in rows])})

    def info(self) -> dict:
        if self.run is None:
            return {}
        return {"id": self.run.id, "dir": self.run.dir, "url": self.run.url, "mode": self.run.settings.mode}

    def finish(self, summary: dict, exit_code: int = 0) -> None:
        if self.run is None:
            return
        import wandb

        self.run.summary.update(summary)
        self.run.finish(exit_code=exit_code)
        # finish() can return before the offline file is flushed; teardown waits for it.
        wandb.teardown()
