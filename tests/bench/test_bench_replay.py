"""The search benchmark's replay (bench/replay.py) on a small synthetic cached grid: real Optuna
samplers and pruners, no training. Checks the cost accounting of pruned trials and that the grid
strategy finds the best point for at most the whole grid's device-seconds."""
from __future__ import annotations

import optuna
import pytest

from bench.replay import charge, key, phase_costs, replay, simulate, strategies_for

SPACE = {"train.lr": [1e-3, 1e-2], "lora.targets": ["attn_qv", "all_linear"]}
STEPS = 8  # evals at steps 2, 4, 6 (intermediate) and 8 (final): 4 evals


def rec(lr, targets, curve, train_s, eval_s):
    """A cached grid record: intermediate accuracies `curve` at steps 2, 4, 6, final = curve[-1]."""
    evals = [{"step": 2 * (i + 1), "accuracy": a} for i, a in enumerate(curve)]
    return {"params": {"train.lr": lr, "lora.targets": targets}, "accuracy": curve[-1], "evals": evals,
            "steps": STEPS, "max_steps": STEPS, "n_evals": 4,
            "phase_seconds": {"train": train_s, "eval": eval_s, "baseline": 99.0}}


def synthetic_grid() -> dict:
    rows = [rec(1e-3, "attn_qv", [0.50, 0.52, 0.55, 0.60], 8.0, 4.0),
            rec(1e-2, "attn_qv", [0.55, 0.65, 0.70, 0.72], 10.0, 4.0),
            rec(1e-3, "all_linear", [0.50, 0.50, 0.51, 0.53], 12.0, 4.0),
            rec(1e-2, "all_linear", [0.60, 0.70, 0.75, 0.80], 14.0, 4.0)]
    return {key(r["params"]): r for r in rows}


def test_charge_full_and_pruned():
    grid = synthetic_grid()
    r = grid[key({"train.lr": 1e-3, "lora.targets": "attn_qv"})]
    cost = {"train": 8.0, "eval": 4.0}
    assert charge(r, cost, None) == pytest.approx(12.0)  # train + all 4 evals; the cached baseline is not charged
    # stopped after the step-4 eval: half the steps and 2 of the 4 evals
    assert charge(r, cost, 4) == pytest.approx(8.0 * 4 / 8 + 4.0 * 2 / 4)
    failed = {**r, "accuracy": None, "steps": 6, "evals": r["evals"][:3]}  # diverged after step 6
    assert charge(failed, cost, None) == pytest.approx(8.0 * 6 / 8 + 4.0 * 3 / 4)


def test_group_cost_ignores_lr_only():
    costs = phase_costs(synthetic_grid(), "group")
    qv = [c for k, c in costs.items() if "attn_qv" in k]
    al = [c for k, c in costs.items() if "all_linear" in k]
    assert qv[0] == qv[1] == {"train": 9.0, "eval": 4.0}  # median of 8 and 10: lr costs no compute
    assert al[0] == al[1] == {"train": 13.0, "eval": 4.0}
    measured = phase_costs(synthetic_grid(), "measured")
    assert sorted(c["train"] for c in measured.values()) == [8.0, 10.0, 12.0, 14.0]


def test_pruned_trial_is_charged_what_it_spent():
    """A real ThresholdPruner prunes every point whose step-4 accuracy is below 0.6: the two lr=1e-3
    points stop there; the grid then costs 2 full runs + 2 half runs (measured seconds)."""
    grid = synthetic_grid()
    costs = phase_costs(grid, "measured")
    pruner = optuna.pruners.ThresholdPruner(lower=0.6, n_warmup_steps=3)
    sampler = optuna.samplers.GridSampler({"train.lr[i]": [0, 1], "lora.targets": ["attn_qv", "all_linear"]}, seed=0)
    out = simulate(sampler, pruner, SPACE, grid, costs, target=2.0, max_trials=4, stop_when_done=True)
    assert out == {"reached": False, "trials": 4, "pruned": 2, "distinct": 4,
                   "device_seconds": pytest.approx((10 + 4) + (14 + 4) + (8 * 0.5 + 2) + (12 * 0.5 + 2))}


@pytest.mark.parametrize("cost_mode", ["group", "measured"])
def test_grid_strategy_reaches_best_within_the_grid_cost(cost_mode):
    grid = synthetic_grid()
    out = replay(SPACE, grid, ["grid"], seeds=6, tolerance=0.01, cost_mode=cost_mode, n_startup=2)
    row = out["rows"][0]
    assert out["grid_best"] == 0.80 and out["within_target"] == [key({"train.lr": 1e-2, "lora.targets": "all_linear"})]
    assert row["reached"] == "6/6"
    assert 0 < row["median share"] <= 1.0 and row["p80 share"] <= 1.0
    # each seed's cost is the charges of the points it visited, in its own order: all different
    # orders over 6 seeds would not all cost the full grid
    shares = [r["device_seconds"] / out["grid_device_seconds"] for r in out["runs"]]
    assert max(shares) <= 1.0 + 1e-9 and min(shares) < 1.0


def test_every_strategy_runs_and_unreached_seeds_count_as_infinite():
    grid = synthetic_grid()
    names = list(strategies_for(grid, 2))
    assert any("hyperband" in n for n in names) and any("SH" in n for n in names) and any("median" in n for n in names)
    out = replay(SPACE, grid, names, seeds=2, n_startup=2)
    assert [r["strategy"] for r in out["rows"]] == names
    # a target above every point: nothing reaches it, and the median share is infinite, never "met"
    none = replay(SPACE, grid, ["random"], seeds=3, tolerance=-0.5)
    assert none["rows"][0]["reached"] == "0/3" and none["rows"][0]["median share"] == float("inf")
    assert none["rows"][0]["met"] is False


def test_free_repeats_charge_a_configuration_once():
    """Random sampling over 4 points repeats some; with free_repeats each distinct point is paid once."""
    grid = synthetic_grid()
    costs = phase_costs(grid, "measured")
    out = simulate(optuna.samplers.RandomSampler(seed=3), optuna.pruners.NopPruner(), SPACE, grid, costs,
                   target=2.0, max_trials=12, free_repeats=True)
    assert out["trials"] == 12 and out["distinct"] == 4  # 12 draws of 4 points: repeats happened
    assert out["device_seconds"] == pytest.approx(sum(c["train"] + c["eval"] for c in costs.values()))
    charged = simulate(optuna.samplers.RandomSampler(seed=3), optuna.pruners.NopPruner(), SPACE, grid, costs,
                       target=2.0, max_trials=12)
    assert charged["device_seconds"] > out["device_seconds"]


def test_search_grid_order_and_partial_cache():
    """bench.search runs coarse learning rates first, so a partial cache replays as a complete
    smaller product; without --partial a missing point is refused with the command to run."""
    from bench.search import SPACE, cached_subgrid, points

    order = points(SPACE)
    assert len(order) == 24 and len({key(p) for p in order}) == 24
    assert {p["train.lr"] for p in order[:12]} == {5e-4, 2e-3, 1e-2}
    cache = {key(p): {"params": p} for p in order[:14]}  # 3 learning rates complete, a 4th begun
    sub, grid = cached_subgrid(SPACE, cache, partial=True)
    assert sub["train.lr"] == [5e-4, 2e-3, 1e-2] and len(grid) == 12
    with pytest.raises(SystemExit, match="bench.search --grid-only"):
        cached_subgrid(SPACE, cache, partial=False)
