"""Shared fixtures: tiny models built from config, tiny generated data, everything under tmp_path.

Nothing here touches the network or the embedded downloads (MiniLM, rt_polarity): tests that need
those are marked `slow`.
"""
from __future__ import annotations

import os

import pytest

# Quiet, local-only W&B for every test; runs still write real offline run files.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("WANDB_CONSOLE", "off")
os.environ.setdefault("WANDB__DISABLE_STATS", "true")
os.environ.setdefault("HARNESS_QUIET", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = ["model=tiny_bert", "data=tiny", "train.max_steps=6", "train.eval_every=0", "train.lr=1e-2",
        "eval.batch_size=64", "hardware.threads=1"]


@pytest.fixture
def tiny_cfg(tmp_path):
    """Compose the tiny config (plus overrides) with outputs under tmp_path."""
    from harness.config import complete, load

    def make(*overrides: str, study: str = "t"):
        return complete(load([*TINY, f"out_dir={tmp_path}", f"study={study}", *overrides]))

    return make
