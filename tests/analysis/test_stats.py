"""analysis/stats.py against hand-computed values; best and Pareto on configuration means."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import stats


def _frame(rows):
    """rows: (targets, seed, accuracy, flops)"""
    df = pd.DataFrame(rows, columns=["lora.targets", "seed", "accuracy", "flops"])
    return df.assign(trial=range(len(df)))


def test_t_interval_matches_student_t():
    mean, half, n = stats.t_interval([0.70, 0.72, 0.74])
    # sd = 0.02, t(0.975, 2) = 4.3027 -> 4.3027 * 0.02 / sqrt(3) = 0.04968
    assert (n, round(mean, 6), round(half, 4)) == (3, 0.72, 0.0497)
    assert np.isnan(stats.t_interval([0.7])[1])


def test_paired_t_on_fixed_numbers():
    a = pd.Series([0.70, 0.72, 0.74, 0.71], index=[0, 1, 2, 3])
    b = pd.Series([0.73, 0.74, 0.78, 0.72, 0.99], index=[0, 1, 2, 3, 4])  # seed 4 has no partner: left out
    r = stats.paired(a, b)
    # d = .03 .02 .04 .01: mean .025, sd = sqrt(.0005/3) = .012910, se = .006455, t = 3.873 on 3 df;
    # t(0.975, 3) = 3.1824 -> CI .025 +- .020543; two-sided p = 2 * P(T3 > 3.873) = 0.03047
    assert r["n"] == 4 and r["diff"] == pytest.approx(0.025)
    assert (r["lo"], r["hi"]) == (pytest.approx(0.025 - 0.020543, abs=1e-5), pytest.approx(0.025 + 0.020543, abs=1e-5))
    assert r["p_t"] == pytest.approx(0.03047, abs=5e-5)
    # exact sign-flip test: all four differences positive -> 2 of 2^4 sign patterns as extreme
    assert r["p_perm"] == pytest.approx(2 / 16)


def test_holm_on_fixed_p_values():
    # sorted .005 .01 .03 .04 times 4 3 2 1 = .02 .03 .06 .04, then the running max: .02 .03 .06 .06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, np.nan]).tolist()[0] == 0.5  # an untested pair does not count in m


def test_power_mde_and_seeds_needed():
    # normal approximation: (z.975 + z.8) sd / sqrt(n) = 2.8016 / 10 for n=100, sd=1; t is a bit wider
    mde = stats.min_detectable_effect(1.0, 100)
    assert 0.2816 < mde < 0.2816 * 1.01 and stats.power(mde, 1.0, 100) == pytest.approx(0.8)
    n = stats.seeds_needed(0.02, effect=0.01)  # normal approx (2.8016 * 2)^2 = 31.4
    assert 32 <= n <= 36 and stats.power(0.01, 0.02, n) >= 0.8 > stats.power(0.01, 0.02, n - 1)


def test_best_is_a_configuration_mean_not_a_lucky_seed():
    df = _frame([("qv", 0, 0.90, 1.0), ("qv", 1, 0.50, 1.0), ("qv", 2, 0.52, 1.0),  # one lucky seed
                 ("all", 0, 0.70, 2.0), ("all", 1, 0.71, 2.0), ("all", 2, 0.72, 2.0),
                 ("mlp", 0, 0.69, 1.5), ("mlp", 1, 0.71, 1.5), ("mlp", 2, 0.73, 1.5)])  # ties `all`, cheaper
    configs = stats.configurations(df, ["lora.targets"])
    top = stats.best(configs)
    assert top["lora.targets"] == "mlp" and top["mean"] == pytest.approx(0.71) and top["n"] == 3
    assert df.loc[df["accuracy"].idxmax(), "lora.targets"] == "qv"  # what the old per-trial "best" picked


def test_pareto_is_computed_on_means():
    df = _frame([("qv", 0, 0.90, 1.0), ("qv", 1, 0.50, 1.0), ("all", 0, 0.70, 2.0), ("all", 1, 0.72, 2.0)])
    configs = stats.configurations(df, ["lora.targets"])
    front = configs[stats.pareto_mask(configs["cost"], configs["mean"])]
    assert set(front["lora.targets"]) == {"qv", "all"}  # qv: cheapest; all: mean .71 > .70
    on_trials = df[stats.pareto_mask(df["flops"], df["accuracy"])]
    assert set(on_trials["lora.targets"]) == {"qv"}  # per trial, the lucky .90 hid `all`


def test_comparisons_verdicts_and_holm():
    rng = np.random.default_rng(0)
    seeds = range(8)
    noise = rng.normal(0, 0.01, 8)  # shared by both arms: pairing removes it
    rows = [("qv", s, 0.70 + noise[s], 1.0) for s in seeds] + [("all", s, 0.75 + noise[s] + 0.002 * (-1) ** s, 2.0)
                                                             for s in seeds] + \
           [("mlp", s, 0.70 + noise[s] + 0.003 * (-1) ** s, 1.5) for s in seeds]
    cmp = stats.comparisons(_frame(rows), ["lora.targets"]).set_index(["a", "b"])
    assert len(cmp) == 3 and (cmp["axis"] == "lora.targets").all()
    assert cmp.loc[("targets=all", "targets=qv"), "verdict"] == "worse"
    assert cmp.loc[("targets=all", "targets=mlp"), "verdict"] == "worse"
    assert cmp.loc[("targets=mlp", "targets=qv"), "verdict"] == "not distinguishable with 8 seeds"
    assert (cmp["p_holm"] >= cmp["p_t"]).all()


def test_recommend_picks_the_cheapest_within_epsilon():
    df = _frame([(t, s, acc + 0.001 * s, cost) for s in range(5)
                 for t, acc, cost in (("qv", 0.700, 1.0), ("all", 0.705, 3.0), ("mlp", 0.650, 0.5))])
    rec = stats.recommend(df, ["lora.targets"], epsilon=0.01)
    assert rec["best"]["lora.targets"] == "all" and rec["pick"]["lora.targets"] == "qv"
    assert rec["probability"] == 1.0  # seeds shift every arm alike: qv is always within .01 of the best
    assert stats.recommend(df, ["lora.targets"], epsilon=0.001)["pick"]["lora.targets"] == "all"


def test_saturating_fit_recovers_a_power_law():
    sizes = np.repeat([100, 200, 400, 800], 3)
    acc = 0.9 - 2.0 * sizes ** -0.5 + np.tile([-0.002, 0.0, 0.002], 4)
    fit = stats.saturating_fit(sizes, acc)
    assert fit["at"] == 1600 and fit["prediction"] == pytest.approx(0.9 - 2.0 / 40, abs=0.005)
    lo, hi = fit["interval"]
    assert lo < fit["prediction"] < hi and hi - lo < 0.05
    assert stats.saturating_fit([100, 200], [0.5, 0.6]) is None  # fewer than 3 sizes: no curve


def test_saturating_fit_band_follows_the_seeds_not_the_parameter_covariance():
    # the dataset_size finding's shape (a 0.81, b 7.6, c 0.76; 5 seeds, ±1.2 points): the normal draws from the
    # covariance gave a band 0.60..1.06 at n = 200 over points 0.66..0.69; refits over the seeds stay near them
    rng = np.random.default_rng(3)
    sizes = np.repeat([200, 400, 800, 1600, 3000], 5)
    truth = lambda n: 0.81 - 7.6 * n ** -0.76  # noqa: E731
    fit = stats.saturating_fit(sizes, truth(sizes) + rng.normal(0, 0.012, len(sizes)))
    assert fit["resampled"] == "trials within each size" and len(fit["draws"]) > 450
    lo, hi = fit["band"][:, 0]
    assert hi - lo < 0.04 and lo < truth(200) < hi
    assert fit["interval"][0] < truth(6000) < fit["interval"][1] and fit["interval"][1] < 1
    one = stats.saturating_fit(sizes[::5], truth(sizes[::5]) + rng.normal(0, 0.012, 5))  # one seed a size
    assert one["resampled"] == "residuals" and len(one["draws"]) > 0


def _frozen(number, targets, seed, acc, flops):
    import optuna

    return optuna.trial.create_trial(
        params={"lora.targets": targets}, distributions={"lora.targets": optuna.distributions.CategoricalDistribution(
            ["qv", "all", "mlp"])}, value=acc,
        user_attrs={"seed": seed, "accuracy": acc, "flops": flops, "device_seconds": 1.0}) if acc is not None else \
        optuna.trial.create_trial(params={"lora.targets": targets}, distributions={
            "lora.targets": optuna.distributions.CategoricalDistribution(["qv", "all", "mlp"])},
            state=optuna.trial.TrialState.FAIL, user_attrs={"seed": seed})


def test_driver_summary_aggregates_seeds_and_names_the_best_configuration():
    from harness.study import summary as report

    spec = [("qv", 0, 0.90, 1.0), ("qv", 1, 0.50, 1.0), ("qv", 2, 0.52, 1.0), ("all", 0, 0.70, 2.0),
            ("all", 1, 0.71, 2.0), ("all", 2, 0.72, 2.0), ("mlp", 0, 0.69, 1.5), ("mlp", 1, 0.71, 1.5),
            ("mlp", 2, 0.73, 1.5), ("mlp", 3, None, None)]
    trials = [_frozen(i, *s) for i, s in enumerate(spec)]
    for i, t in enumerate(trials):
        t.number = i
    obj = {"accuracy": "maximize"}
    best = report.best_configuration(trials, obj)
    assert best["params"] == {"lora.targets": "mlp"} and best["trials"] == [6, 7, 8]  # ties `all`, cheaper
    assert best["accuracy"] == pytest.approx(0.71) and best["accuracy_ci"] == pytest.approx(0.04968, abs=1e-4)
    table = report.summary_table(trials, ["lora.targets"], obj)
    lines = table.splitlines()
    assert len(lines) == 2 + 3 and lines[2].split()[0] == "mlp" and lines[-1].split()[0] == "qv"
    assert "0.7100 ± 0.0497" in lines[2] and " 3 " in lines[2]  # the report's 4 decimals
    assert report.best_line(trials, ["lora.targets"], obj).startswith("best = lora.targets=mlp: accuracy 0.7100 ± 0.0497")


@pytest.mark.process
def test_driver_summary_imports_neither_torch_nor_analysis():
    import subprocess
    import sys

    code = "import sys, harness.study.summary; print(sorted(m for m in ('torch', 'analysis') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_a_seed_run_twice_counts_once():
    """TPE may propose a configuration again, rerunning its seeds: the rerun is the same observation."""
    df = _frame([("qv", 0, 0.70, 1.0), ("qv", 0, 0.70, 1.0), ("qv", 1, 0.74, 1.0), ("qv", 1, 0.74, 1.0)])
    (row,) = stats.configurations(df, ["lora.targets"]).to_dict("records")
    mean, half, n = stats.t_interval([0.70, 0.74])
    assert (row["n"], row["mean"], row["ci"]) == (2, pytest.approx(mean), pytest.approx(half))
    assert row["trials"] == [0, 1, 2, 3]


def test_the_console_summary_counts_a_rerun_seed_once():
    from types import SimpleNamespace

    from harness.study.summary import configurations, t_half_width

    def trial(n, seed, acc):
        return SimpleNamespace(number=n, state=SimpleNamespace(name="COMPLETE"), params={"lora.r": 4},
                               user_attrs={"seed": seed, "accuracy": acc, "flops": 1.0, "device_seconds": 1.0})

    (row,) = configurations([trial(0, 0, 0.70), trial(1, 0, 0.70), trial(2, 1, 0.74)], {"accuracy": "maximize"})
    assert row["accuracy"] == pytest.approx(0.72) and row["accuracy_ci"] == pytest.approx(t_half_width([0.70, 0.74]))
