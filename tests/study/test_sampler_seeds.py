"""The sampler's seed is drawn per trial from (sweep.sampler_seed, trial number): workers on one storage,
and a killed worker's restart, never replay one another's configurations, and one driver from scratch
proposes the same sequence every time (harness/optuna_parts.seeded_per_trial)."""
from __future__ import annotations

import time

import pytest

from harness.study.session import Session
from conftest import LORA_RANK_TINY

SPACE = "sweep.space={train.lr: {low: 1.0e-5, high: 1.0e-2, log: true}, lora.r: {choices: [1, 2, 4, 8]}}"


def _session(tiny_cfg, study: str, sampler: str) -> Session:
    over = [*LORA_RANK_TINY, f"sweep.sampler={sampler}", SPACE, "sweep.n_trials=12", "tracking.mode=disabled"]
    s = Session(tiny_cfg(*over, study=study), over)
    s.open()
    return s


def _draws(session: Session, n: int) -> list[tuple]:
    out = []
    for _ in range(n):
        trial, params, _ = session.next_trial(time.time())
        out.append((trial.number, params["train.lr"], params["lora.r"]))
    return out


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_two_workers_on_one_storage_propose_different_configurations(tiny_cfg, sampler):
    a, b = _session(tiny_cfg, "shared", sampler), _session(tiny_cfg, "shared", sampler)
    draws = [d for _ in range(3) for d in (*_draws(a, 1), *_draws(b, 1))]
    assert len({d[0] for d in draws}) == 6  # six trials, numbered apart
    assert len({d[1] for d in draws}) == 6  # with one seed per worker, a and b drew the same lr each time


def test_a_restarted_worker_does_not_replay_the_configurations_it_ran(tiny_cfg):
    first = _draws(_session(tiny_cfg, "restart", "random"), 3)
    again = _draws(_session(tiny_cfg, "restart", "random"), 3)  # the same command after a kill
    assert {d[1] for d in first}.isdisjoint({d[1] for d in again})


def test_one_driver_from_scratch_proposes_the_same_sequence(tiny_cfg):
    one = _draws(_session(tiny_cfg, "run1", "random"), 4)
    two = _draws(_session(tiny_cfg, "run2", "random"), 4)
    assert one == two
    over = [*LORA_RANK_TINY, "sweep.sampler=random", SPACE, "sweep.n_trials=12", "sweep.sampler_seed=7"]
    other = Session(tiny_cfg(*over, study="run3"), over)
    other.open()
    assert _draws(other, 4) != one  # and the seed is the sweep's to choose
