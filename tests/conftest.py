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
# sweeps/lora_rank.yaml as the tests' tiny study: one seed, one slot, no early stopping (its users get two
# seeds on two slots with early stopping; a test that wants more says so after these)
LORA_RANK_TINY = ["sweep=lora_rank", "sweep.seeds=[0]", "sweep.parallel=1", "train.early_stopping.patience=0"]


@pytest.fixture
def tiny_cfg(tmp_path):
    """Compose the tiny config (plus overrides) with outputs under tmp_path."""
    from harness.config.schema import complete, load

    def make(*overrides: str, study: str = "t"):
        return complete(load([*TINY, f"out_dir={tmp_path}", f"study={study}", *overrides]))

    return make


PG_URL = os.environ.get("HARNESS_TEST_PG_URL")  # set by .ci/run (bash .ci/postgres); None without a server


@pytest.fixture
def fresh_pg():
    """fresh_pg(n) -> n URLs of new, empty PostgreSQL databases (random names), dropped afterwards: the
    first-run path of a new machine, which a database that already holds Optuna's schema hides."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL or "postgresql://absent/absent")
    admin = dict(host=url.host, port=url.port, user=url.username, password=url.password, dbname=url.database,
                 autocommit=True)
    made: list[str] = []

    def make(n: int = 1) -> list[str]:
        if not PG_URL:
            pytest.skip("HARNESS_TEST_PG_URL is unset: start PostgreSQL with "
                        "`HARNESS_TEST_PG_URL=$(sudo bash .ci/postgres)` (.ci/run does this in CI)")
        names = [f"harness_test_{uuid.uuid4().hex[:10]}" for _ in range(n)]
        with psycopg.connect(**admin) as conn:
            for name in names:
                conn.execute(f"create database {name}")
                made.append(name)
        return [url.set(database=name).render_as_string(hide_password=False) for name in names]

    yield make
    if not made:
        return
    with psycopg.connect(**admin) as conn:
        for name in made:
            conn.execute(f"drop database if exists {name} with (force)")


if os.environ.get("PYTEST_XDIST_WORKER"):
    # one torch thread per worker: two workers with a thread per core each spin-wait on each other (OpenMP,
    # 8-80x slower); trials set their own threads (hardware.threads), subprocesses inherit nothing from this
    import torch

    torch.set_num_threads(1)


from harness.runners import InProcess as NoProcessRunner  # noqa: E402,F401 (the in-process test runners' base)
