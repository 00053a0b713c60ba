"""How much data (analysis/data_size.py), on frames with a planted saturating curve: the tested plateau from the
study's TOST verdicts, and the fitted curve's size within ±δ of its asymptote against the closed form."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import data_size, verdicts

SIZES = (200, 400, 800, 1600, 3200)
NOISE = (0.0, 0.004, -0.003, 0.002, -0.001, 0.003)  # per seed, shared by every size


def frame(curve, seeds=range(6), jitter=0.001):
    rng = np.random.default_rng(1)
    rows = [{"data.train_size": n, "seed": s, "accuracy": curve(n) + NOISE[s] + rng.normal(0, jitter), "trial": i,
             "flops": 1e9 * n, "run_dir": None} for i, (n, s) in enumerate((n, s) for n in SIZES for s in seeds)]
    return pd.DataFrame(rows)


def plateau_at_800(n):
    return {200: 0.70, 400: 0.76, 800: 0.795, 1600: 0.798, 3200: 0.799}[n]


def test_the_tested_plateau_is_the_smallest_size_every_larger_one_matches():
    df = frame(plateau_at_800)
    cmp = verdicts.compare(df, ["data.train_size"], margin=0.01)
    line = data_size.tested_plateau(cmp, "", 0.01)
    assert line.startswith("**from n = 800 on, more data is equivalent within ±1 point**"), line
    assert "1,600, 3,200" in line


def test_a_curve_still_rising_is_undecided_and_names_the_top_pair():
    df = frame(lambda n: 0.9 - 3.0 * n ** -0.5)  # +1.6 points from 1,600 to 3,200: not equivalent within 1
    cmp = verdicts.compare(df, ["data.train_size"], margin=0.01)
    line = data_size.tested_plateau(cmp, "", 0.01)
    assert line.startswith("**undecided**") and "n = 3,200 vs 1,600: **better**" in line, line


def test_the_fitted_plateau_matches_the_closed_form():
    a, b, c = 0.9, 3.0, 0.5
    df = frame(lambda n: a - b * n ** -c, jitter=0.0)
    line = data_size.fitted_plateau(df["data.train_size"], df["accuracy"], 0.01)
    # (b/δ)^(1/c) = (3/0.01)^2 = 90,000: beyond the sizes tried, and said so; the seed noise moves the fit a little
    got = float(line.split("from n ≈ ")[1].split(" ")[0].replace(",", ""))
    assert abs(got - 90_000) / 90_000 < 0.25, line
    assert "an extrapolation" in line
    lo, hi = (float(x.replace(",", "")) for x in line.split("[95% ")[1].split(";")[0].split(", "))
    assert "bootstrap refits over trials within each size" in line  # 6 seeds a size: the seeds are resampled
    assert lo < got < hi


def test_the_report_section_names_both_lines_of_evidence():
    df = frame(plateau_at_800)
    cmp = verdicts.compare(df, ["data.train_size"], margin=0.01)
    lines = data_size.report_lines(df, ["data.train_size"], cmp, 0.01)
    assert lines[0].startswith("## How much data") and any(x.startswith("- tested:") for x in lines)
    assert any(x.startswith("- fitted:") and "inside the sizes tried" in x for x in lines), lines
    assert data_size.report_lines(df, ["lora.r"], cmp, 0.01) == []
