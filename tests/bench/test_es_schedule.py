"""bench/es_schedule's paired comparison by seed, against hand-computed numbers."""
import pytest
from scipy import stats

from bench.es_schedule import paired


def test_paired_difference_by_seed_with_its_t_interval():
    found = {("es_linear", 0): {"accuracy": 0.80}, ("es_linear", 1): {"accuracy": 0.79}, ("es_linear", 2): {"accuracy": 0.81},
             ("es_constant", 0): {"accuracy": 0.78}, ("es_constant", 1): {"accuracy": 0.79},
             ("es_constant", 2): {"accuracy": 0.80}}
    out = paired(found, "es_linear", "es_constant")
    assert out["diffs_points"] == pytest.approx([2.0, 0.0, 1.0])
    assert out["mean_points"] == pytest.approx(1.0)
    # by hand: sd 1, se 1/sqrt(3), t = sqrt(3) on 2 df
    assert out["p_paired_t"] == pytest.approx(2 * stats.t.sf(3 ** 0.5, 2))
    half = stats.t.ppf(0.975, 2) / 3 ** 0.5
    assert out["ci95_points"] == pytest.approx([1 - half, 1 + half])


def test_a_seed_missing_from_one_arm_is_not_paired():
    found = {("es_linear", 0): {"accuracy": 0.8}, ("full_linear", 1): {"accuracy": 0.8}}
    out = paired(found, "es_linear", "full_linear")
    assert out["n_seeds"] == 0 and out["mean_points"] is None and "p_paired_t" not in out
