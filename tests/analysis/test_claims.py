"""sweep.claims (analysis/claims.py): each claim tested as worded. The one-sided tests against scipy, the
design's reach against simulation, the intersection-union verdict and the words through the real CLI on a
synthetic study (real trial records, tests/analysis/test_verdicts_study.py's writer), and bad claims as one
clear line with exit code 2."""
from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import stats as sps

from analysis import claims
from harness.study.claims import sides
from tests.analysis.test_verdicts_study import write_study


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_one_sided_tests_are_scipys(seed):
    d = np.random.default_rng(seed).normal(0.004, 0.01, size=5)
    mean, se, n, m = d.mean(), d.std(ddof=1) / np.sqrt(5), 5, 0.01
    p, opp = sides("not_worse", mean, se, n, m)
    assert p == pytest.approx(sps.ttest_1samp(d + m, 0, alternative="greater").pvalue, rel=1e-9)
    assert opp == pytest.approx(sps.ttest_1samp(d + m, 0, alternative="less").pvalue, rel=1e-9)
    p, opp = sides("better", mean, se, n, m)
    assert p == pytest.approx(sps.ttest_1samp(d, 0, alternative="greater").pvalue, rel=1e-9)
    p, _ = sides("equivalent", mean, se, n, m)
    assert p == pytest.approx(max(sps.ttest_1samp(d + m, 0, alternative="greater").pvalue,
                                  sps.ttest_1samp(d - m, 0, alternative="less").pvalue), rel=1e-9)


def _rejections(test, true_diff, margin, sd, n, sims=20000, seed=0):
    d = np.random.default_rng(seed).normal(true_diff, sd, size=(sims, n))
    mean, se = d.mean(axis=1), d.std(axis=1, ddof=1) / np.sqrt(n)
    return float(np.mean(sides(test, mean, se, n, margin)[0] < 0.05))


@pytest.mark.parametrize("test", ["not_worse", "equivalent"])
def test_the_reach_is_the_margin_shown_with_80_percent_power_and_the_boundary_keeps_alpha(test):
    """Simulated paired differences (normal, 20,000 studies): at a true difference of 0 and a margin equal to the
    reach, the claim holds in ~80% of studies (Chow's t-quantile formula: within 5 points of the exact power);
    at the margin itself (the null's boundary) in at most α."""
    sd, n = 0.01, 5
    r = claims.reach(sd, n, test)
    assert 0.75 <= _rejections(test, 0.0, r, sd, n) <= 0.85
    assert _rejections(test, -r, r, sd, n, seed=1) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 20000)
    assert claims.seeds_to_reach(sd, r, test) == n  # the inverse: n seeds are the fewest that reach r


# --------------------------------------------------------------------------- through the CLI

SPACE = {"lora.targets": {"choices": ["attn_qv", "peft_default"]}, "lora.r": {"choices": [2, 8]}}
NOISE, R8 = [0, 1, 0, 2, 1], [1, 0, 0, 1, 0]


def _acc(cfg, s):  # items right of 60: peft_default ~4 items (6.7 points) above attn_qv; r=8 within an item of r=2
    rank = R8[s] if cfg["lora.r"] == 8 else 0
    return (44 + NOISE[(s + 2) % 5] if cfg["lora.targets"] == "peft_default" else 40 + NOISE[s]) + rank


SWEEP = """# @package _global_
study: claimed
sweep:
  space:
    lora.targets: {choices: [attn_qv, peft_default]}
    lora.r: {choices: [2, 8]}
  sampler: grid
  seeds: [0, 1, 2, 3, 4]
  margin: 0.05
  claims:
"""
GOOD = """    - {says: peft_default matches attn_qv, axis: lora.targets, test: not_worse, b: peft_default, a: attn_qv}
    - {says: attn_qv beats peft_default, axis: lora.targets, test: better, b: attn_qv, a: peft_default}
    - {says: the rank does not matter, axis: lora.r, test: equivalent, at: {lora.targets: attn_qv}, stated: before}
"""


def _study(tmp_path, claims_yaml):
    spec = [({"lora.targets": t, "lora.r": r}, [0, 1, 2, 3, 4]) for t in ("attn_qv", "peft_default") for r in (2, 8)]
    write_study(tmp_path / "runs", "claimed", spec, SPACE, _acc)
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "claimed.yaml").write_text(SWEEP + claims_yaml)
    return ["sweep=claimed", "--config-dir", str(tmp_path / "conf"), f"out_dir={tmp_path / 'runs'}", "--out",
            str(tmp_path / "out")]


def test_claims_hold_are_refuted_and_take_the_largest_component_p(tmp_path, capsys):
    from analysis.__main__ import main

    assert main([*_study(tmp_path, GOOD), "--report"]) == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "out" / "report.md").read_text()
    section = md.split("## Claims")[1].split("\n## ")[0]
    heads = [x for x in section.splitlines() if x.startswith("- *")]
    verdict = {re.search(r"\*(.+?)\*", x).group(1): re.search(r"\*\*(\w+)\*\*", x).group(1) for x in heads}
    assert verdict == {"peft_default matches attn_qv": "holds", "attn_qv beats peft_default": "refuted",
                       "the rank does not matter": "holds"}
    blocks = section.split("\n- *")[1:]
    for block in blocks:  # the intersection-union p is the largest of its components' p
        claim_p = float(re.search(r"intersection-union p = ([\d.]+)", block).group(1))
        parts = [float(x) for x in re.findall(r"paired t[^;]*? p = ([\d.]+)", block)]
        assert len(parts) >= 1 and claim_p == pytest.approx(max(parts), abs=1e-4)
    first = blocks[0]
    assert first.count("  - at r=") == 2  # one component per rank, read as worded (peft_default − attn_qv > 0)
    assert all(float(x) > 0 for x in re.findall(r"at r=\d+: \+?(-?[\d.]+) points", first))
    assert "stated before" in section and "peft_default matches attn_qv: holds (p =" in printed


def test_a_claim_no_comparison_covers_says_so(tmp_path, capsys):
    from analysis.__main__ import main

    args = _study(tmp_path, "    - {says: r=8 matches, axis: lora.r, test: not_worse, b: 8, a: 2, at: {lora.targets: "
                            "attn_qv}}\n")
    for t in (tmp_path / "runs" / "claimed" / "trials").iterdir():  # no attn_qv r=8 trial survives
        rec = (t / "result.json").read_text()
        if '"targets": "attn_qv"' in rec and '"r": 8,' in rec:
            (t / "result.json").write_text(rec.replace('"status": "complete"', '"status": "failed"'))
    assert main([*args, "--report"]) == 0
    assert "no comparison of this study covers it" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.parametrize("bad, needle", [
    ("    - {says: x, axis: lora.targets, test: not_worse, b: peft_default}\n", "needs both b and a"),
    ("    - {says: x, axis: lora.targets, test: better, b: peft, a: attn_qv}\n", "is not one of its choices"),
    ("    - {says: x, axis: lora.alpha, test: equivalent}\n", "is not a searched axis"),
    ("    - {says: x, axis: lora.r, test: equivalent, at: {lora.r: 2}}\n", "at.lora.r is not another searched axis"),
    ("    - {says: x, axis: lora.r, test: maybe}\n", "test"),
])
def test_a_bad_claim_is_one_line_and_exit_2(tmp_path, capsys, bad, needle):
    from analysis.__main__ import main

    assert main([*_study(tmp_path, bad), "--report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert not (tmp_path / "out" / "report.md").exists()


def test_the_intersection_union_test_keeps_alpha_when_one_component_sits_on_the_boundary():
    """Two components, one at the null's boundary (b − a = −δ) and one far inside the claim: the claim's p is
    the larger, so it holds in at most α of 20,000 simulated studies (Berger 1982), with no correction."""
    rng, n, sd, margin = np.random.default_rng(2), 5, 0.01, 0.01
    ps = []
    for true in (-margin, 0.03):
        d = rng.normal(true, sd, size=(20000, n))
        ps.append(sides("not_worse", d.mean(axis=1), d.std(axis=1, ddof=1) / np.sqrt(n), n, margin)[0])
    holds = np.maximum(*ps) < 0.05
    assert holds.mean() <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 20000) and holds.mean() > 0.03  # near α, not far below


def test_a_study_stopped_at_a_look_also_gets_its_reach_and_seeds_at_the_final_level():
    """A study stopped at an interim look is tested at that look's level; its reach at the final level (what the
    design was short of) is printed beside it, and the seeds a next study needs are counted at the final level.
    Hand-computed: reach = (t(1 − α, n − 1) + t(0.9, n − 1)) sd / √n for TOST at 80% power."""
    import pandas as pd

    from harness.study.stopping import FINAL_ALPHA

    a = pd.Series([0.80, 0.79, 0.81, 0.80, 0.78, 0.82])
    d = pd.Series([0.012, -0.020, 0.031, -0.005, 0.010, -0.018])
    row = pd.Series({"a": "A", "b": "B", "a_name": "A", "b_name": "B", "held": ""})
    data = {"A": (a, {}), "B": (a + d, {})}
    sd, n = float(d.std(ddof=1)), 6
    by_hand = (sps.t.ppf(1 - FINAL_ALPHA, n - 1) + sps.t.ppf(0.9, n - 1)) * sd / np.sqrt(n)
    stopped = {**claims.component(row, False, data, "equivalent", 0.01, alpha=0.005 / 15), "p_opp_holm": 1.0}
    assert stopped["reach_final"] == pytest.approx(by_hand, rel=1e-9) and stopped["reach"] > 2 * by_hand
    assert stopped["seeds"] == claims.seeds_to_reach(sd, 0.01, "equivalent", FINAL_ALPHA)
    assert "at the final α 0.045" in claims._part_line(stopped, {"test": "equivalent", "b": None}, 0.01, set(),  # noqa: SLF001
                                                       alpha=0.005 / 15)
    ran_on = {**claims.component(row, False, data, "equivalent", 0.01, alpha=FINAL_ALPHA), "p_opp_holm": 1.0}
    assert np.isnan(ran_on["reach_final"]) and ran_on["reach"] == pytest.approx(by_hand, rel=1e-9)
    assert "final α" not in claims._part_line(ran_on, {"test": "equivalent", "b": None}, 0.01, set(),  # noqa: SLF001
                                              alpha=FINAL_ALPHA)

