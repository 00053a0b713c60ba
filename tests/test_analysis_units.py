"""analysis helpers on fixed inputs: Pareto front, confidence intervals, LaTeX tables, --publish offline."""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.figures import ci95, pareto_mask


def test_pareto_mask_on_fixed_points():
    # (cost, accuracy): cheaper is better, more accurate is better
    pts = [(1, 0.60), (2, 0.70), (2, 0.65), (3, 0.70), (4, 0.80), (5, 0.75), (0.5, 0.50), (4, 0.80)]
    mask = pareto_mask([c for c, _ in pts], [a for _, a in pts])
    # (2, .65) loses to (2, .70); (3, .70) to (2, .70); (5, .75) to (4, .80); the two (4, .80) tie
    # and neither dominates the other, so both stay.
    assert mask.tolist() == [True, True, False, False, True, False, True, True]


def test_pareto_mask_single_point_and_all_equal():
    assert pareto_mask([3.0], [0.5]).tolist() == [True]
    assert pareto_mask([1, 2, 3], [0.5, 0.5, 0.5]).tolist() == [True, False, False]


def test_ci95_matches_student_t():
    mean, half, n = ci95([0.70, 0.72, 0.74])
    # sd = 0.02, t(0.975, 2) = 4.3027 -> 4.3027 * 0.02 / sqrt(3)
    assert (n, round(mean, 6), round(half, 4)) == (3, 0.72, 0.0497)
    assert np.isnan(ci95([0.7])[1]) and ci95([0.7])[2] == 1


def test_latex_table_is_booktabs_and_escaped():
    from analysis.tables import to_latex

    t = pd.DataFrame({"targets": ["all_linear"], "α": ["16"], "accuracy": ["0.7000 ± 0.0100"], "cost (USD)": ["—"]})
    tex = to_latex(t, "Best of study lora\\_rank.", "tab:x")
    for part in ("\\toprule", "\\midrule", "\\bottomrule", "all\\_linear", "$\\alpha$", "$\\pm$", "---", "{llrr}"):
        assert part in tex, part
    assert "±" not in tex and "α" not in tex


def test_publish_offline_says_why_it_is_skipped():
    from analysis.publish import publish

    msg = publish("lora_rank", None, None)
    assert msg.startswith("skipped --publish") and "wandb sync" in msg
