"""analysis/forgetting.py on records written here in the trial's own format (result.json with the
benchmark fields, benchmarks.jsonl): the columns, the paired per-item test against hand-computed
values, configuration means and the Pareto front, forgetting comparisons and the figure."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis import forgetting as fg
from analysis.runs import Loaded

# (lora.r, seed) -> (exact match, base score, tuned score) on one benchmark "arc_easy"
TRIALS = {(2, 0): (0.50, 0.60, 0.58), (2, 1): (0.52, 0.60, 0.59), (2, 2): (0.48, 0.60, 0.57),
          (16, 0): (0.60, 0.60, 0.50), (16, 1): (0.62, 0.60, 0.52), (16, 2): (0.61, 0.60, 0.49),
          (8, 0): (0.45, 0.60, 0.50), (8, 1): (0.44, 0.60, 0.51), (8, 2): (0.46, 0.60, 0.49)}


@pytest.fixture
def frame(tmp_path):
    rows = []
    for n, ((r, seed), (em, base, tuned)) in enumerate(TRIALS.items()):
        d = tmp_path / "trials" / str(n)
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({
            "status": "complete", "forgetting": base - tuned, "benchmarks": {"arc_easy": tuned}, "baseline_benchmarks": {"arc_easy": base},
            "retention": {"arc_easy": tuned / base}, "benchmark_flops": 1e9}))
        rows.append({"trial": n, "seed": seed, "lora.r": r, "method": "lora", "status": "complete", "accuracy": em,
                     "flops": 1e12, "run_dir": str(d), "sweep_axes": json.dumps(["lora.r"])})
    return pd.DataFrame(rows)


def test_benchmark_columns_come_from_the_records(frame):
    df = fg.benchmark_columns(frame)
    assert fg.benchmark_names(df) == ["arc_easy"]
    assert df["forgetting"].tolist() == pytest.approx([b - t for _, b, t in TRIALS.values()])
    assert df["retention.arc_easy"].iloc[3] == pytest.approx(0.50 / 0.60) and (df["base.arc_easy"] == 0.6).all()


def test_base_vs_tuned_is_the_exact_mcnemar_test_on_the_flipped_items(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    # 10 items: 5 lost (1 -> 0), 1 gained (0 -> 1), 4 unchanged
    pairs = [(1, 0)] * 5 + [(0, 1)] + [(1, 1)] * 2 + [(0, 0)] * 2
    (d / "benchmarks.jsonl").write_text("".join(json.dumps({"benchmark": "arc_easy", "id": f"arc_easy/{i}",
                                                            "metric": "acc_norm", "base": b, "tuned": t}) + "\n"
                                                for i, (b, t) in enumerate(pairs)))
    items = fg.item_pairs(pd.DataFrame([{"trial": 0, "run_dir": str(d)}]))
    row = fg.base_vs_tuned(items).iloc[0]
    assert (row["items"], row["lost"], row["gained"]) == (10, 5, 1)
    assert (row["base"], row["tuned"]) == pytest.approx((0.7, 0.3))
    assert row["p_mcnemar"] == pytest.approx(2 * (1 + 6) / 2**6)  # two-sided: 2 * P(X <= 1), X ~ Bin(6, 1/2)


def test_learning_forgetting_means_intervals_and_the_pareto_front(frame):
    cfgs = fg.learning_forgetting(fg.benchmark_columns(frame), ["lora.r"]).set_index("lora.r")
    assert cfgs.loc[16, "mean"] == pytest.approx(0.61) and cfgs.loc[16, "forgetting"] == pytest.approx(0.0967, abs=1e-4)
    f2 = np.array([0.02, 0.01, 0.03])  # r=2's forgetting per seed; t(0.975, 2) = 4.303
    assert cfgs.loc[2, "forgetting_ci"] == pytest.approx(4.302653 * f2.std(ddof=1) / np.sqrt(3), rel=1e-5)
    # r=2 forgets least, r=16 learns most: both on the front; r=8 learns less AND forgets more than r=16
    assert cfgs["pareto"].to_dict() == {2: True, 8: False, 16: True}


def test_forgetting_comparisons_say_which_forgets_less(frame):
    cmp = fg.forgetting_comparisons(fg.benchmark_columns(frame), ["lora.r"]).set_index(["a", "b"])
    r2_16 = cmp.loc[("r=2", "r=16")]
    assert r2_16["diff"] == pytest.approx(np.mean([0.10 - 0.02, 0.08 - 0.01, 0.11 - 0.03]))
    assert r2_16["verdict"] == "forgets more" and r2_16["p_holm"] < 0.05  # r=16 loses ~8 points more


def test_the_figure_draws_the_front_and_skips_without_benchmarks(frame, tmp_path):
    fig = fg.learning_forgetting_figure(Loaded(trials=frame, history=pd.DataFrame()), "1col")
    ax = fig.axes[0]
    front = [c for c in ax.collections if c.get_gid() == "pareto"][0]
    assert sorted(map(tuple, np.round(front.get_offsets(), 4))) == [(0.02, 0.5), (0.0967, 0.61)]
    fig.savefig(tmp_path / "lf.pdf")
    bare = frame.assign(run_dir=str(tmp_path / "none"))
    with pytest.raises(fg.Skip):
        fg.learning_forgetting_figure(Loaded(trials=bare, history=pd.DataFrame()), "1col")


def test_the_report_section_names_each_configurations_forgetting_and_the_verdict(frame):
    lines = fg.report_lines(frame, ["lora.r"])
    assert lines[0] == "## What fine-tuning cost the benchmarks"
    r16 = next(ln for ln in lines if ln.startswith("- r=16:"))
    assert "forgetting +0.0967" in r16 and "(3 seeds)" in r16 and "Pareto front" in r16
    assert any("r=2 vs r=16: forgets more" in ln for ln in lines)
    assert fg.report_lines(frame.assign(run_dir=None), ["lora.r"]) == []  # no benchmarks: no section


def _full_arm(tmp_path, forgets=(0.20, 0.18, 0.19), em=(0.70, 0.72, 0.71)):
    rows = []
    for seed, (f, e) in enumerate(zip(forgets, em)):
        d = tmp_path / "trials" / f"full{seed}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"status": "complete", "forgetting": f, "benchmarks": {"arc_easy": 0.6 - f},
                                                   "baseline_benchmarks": {"arc_easy": 0.6}}))
        rows.append({"trial": 100 + seed, "seed": seed, "lora.r": np.nan, "method": "full", "status": "complete",
                     "accuracy": e, "flops": 1e12, "run_dir": str(d), "train.lr": 5e-5})
    return pd.DataFrame(rows)


def test_each_lora_arm_against_full_fine_tuning_paired_over_seeds_with_holm(frame, tmp_path):
    from scipy import stats as st
    refs = fg.benchmark_columns(_full_arm(tmp_path))
    out = fg.reference_comparisons(fg.benchmark_columns(frame), refs, ["lora.r"])
    assert len(out) == 6 and set(out["quantity"]) == {"forgetting", "accuracy"}
    r2 = out[(out["lora"] == "r=2") & (out["quantity"] == "forgetting")].iloc[0]
    lora_f, full_f = np.array([0.02, 0.01, 0.03]), np.array([0.20, 0.18, 0.19])
    assert r2["diff"] == pytest.approx((lora_f - full_f).mean())  # LoRA − reference
    p = st.ttest_rel(lora_f, full_f).pvalue
    assert r2["p_t"] == pytest.approx(p, rel=1e-6)
    fam = out[out["quantity"] == "forgetting"].sort_values("p_t")
    holm = np.minimum(1, np.maximum.accumulate([(3 - i) * q for i, q in enumerate(fam["p_t"])]))  # by hand
    assert fam["p_holm"].to_numpy() == pytest.approx(holm)
    assert r2["verdict"] == "forgets less"
    acc8 = out[(out["lora"] == "r=8") & (out["quantity"] == "accuracy")].iloc[0]
    assert acc8["verdict"] == "learns less" and acc8["diff"] == pytest.approx(0.45 - 0.71)
    same = fg.reference_comparisons(fg.benchmark_columns(frame), fg.benchmark_columns(
        _full_arm(tmp_path / "same", forgets=(0.02, 0.01, 0.03), em=(0.50, 0.52, 0.48))), ["lora.r"])
    row = same[(same["lora"] == "r=2") & (same["quantity"] == "forgetting")].iloc[0]
    assert row["diff"] == pytest.approx(0, abs=1e-12) and row["verdict"].startswith("undecided")  # no difference: no claim either way
    lines = fg.report_lines(frame, ["lora.r"], _full_arm(tmp_path / "again"))
    assert any(ln.startswith("- r=2 vs full fine-tune") and "forgetting" in ln and "**forgets less**" in ln for ln in lines)
    assert any("(reference arm): forgetting +0.1900" in ln for ln in lines)
