"""Has a trial finished learning, and did it learn anything: the convergence verdict, early stopping at
the plateau and degenerate trials, computed once for the trial (harness/trial/loop.py, harness/train.py),
the console summary (harness/study/summary.py) and the analysis. Torch-free and scipy-free.

Convergence. A trial's eval curve is its record's `evals` (intermediate evals every train.eval_every
steps on a fixed subset, the last one the final eval on the whole test split). Its gain over the last
quarter is the metric at the end minus the metric at 75% of the trial's own steps (linearly
interpolated between the two evals around it), in the metric's good direction, read on the intermediate
evals' own items when they reach the last step (the final eval on the whole split is another item set). "converged" when that
gain is at most TOL (0.5 point of accuracy); else "still improving (+x points over the last 25% of
steps)". The gain's standard error is binomial for a 0/1-per-item metric (accuracy, exact match):
sqrt(p(1-p)/n) of each end, added in quadrature (the two evals are scored on different item sets when
eval.intermediate_examples draws a subset); for a configuration it is the Student-t interval over seeds.

Early stopping. transformers' EarlyStoppingCallback semantics: after each eval, the patience counter
resets when the metric beats the best so far by more than min_delta, else it grows by one; training
stops when it reaches patience. The best so far is updated on any strict improvement (as the Trainer's
_determine_best_metric does, after the callback has looked). Computed from the evals list alone, so a
resumed trial replays it from its checkpointed evals.

Degenerate. "diverged": a non-finite train loss; "collapsed": one class predicted for at least
COLLAPSE_SHARE (98%) of the test items (the head learned the prior: on balanced rt_polarity a collapsed
trial scores exactly 0.500); "diverged" too: a final train loss (mean of the last 10% of the steps, at
most 10) above the first (mean of the first 10%): the run ended worse than it started. 98% rather than
100%: a head pushed to one class by a large lr may still flip a handful of outlier items. On a test
split whose majority class is above 98% this flags good trials too: read it with majority_accuracy.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

TOL = 0.005              # a gain of at most 0.5 point over the last quarter counts as converged
QUARTER = 0.25
COLLAPSE_SHARE = 0.98    # >= 98% of the items predicted as one class: collapsed
MINIMIZE = ("loss", "eval_loss", "perplexity")  # every other metric is better higher
BINOMIAL = ("accuracy", "exact_match")          # a 0/1 score per item: binomial standard error
# record / objective name -> key of an eval entry (record.INTERMEDIATE has accuracy and eval_loss)
EVAL_KEY = {"eval_loss": "loss"}


def maximize(metric: str) -> bool:
    return metric not in MINIMIZE


def _value(e: Mapping, metric: str) -> float | None:
    v = e.get(EVAL_KEY.get(metric, metric))
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _at(evals: list[tuple[int, float, int | None]], step: float) -> tuple[float, int | None] | None:
    """The metric at `step`, interpolated between the evals around it, and the item count of the nearer one."""
    for (s0, v0, n0), (s1, v1, n1) in zip(evals, evals[1:]):
        if s0 <= step <= s1:
            w = (step - s0) / (s1 - s0) if s1 > s0 else 1.0
            return v0 + w * (v1 - v0), (n0 if w < 0.5 else n1)
    if evals and evals[0][0] == step:
        return evals[0][1], evals[0][2]
    return None


def last_quarter_gain(evals: Sequence[Mapping], metric: str = "accuracy", steps: int | None = None,
                      ) -> tuple[float | None, float | None]:
    """(gain, standard error) of the metric over the last 25% of the trial's steps, in its good
    direction (a falling loss is a positive gain); (None, None) when no eval lies at or before 75% of
    the steps. steps: the trial's length (default: the last eval's step). The SE is None for a metric
    that is not a per-item 0/1 score, or when an eval does not say how many items it scored (`n`)."""
    # sorted by step only (stable): at the last step the record's order holds, the final eval last
    pts = sorted(((int(e["step"]), v, e.get("n")) for e in evals if (v := _value(e, metric)) is not None),
                 key=lambda p: p[0])
    if len(pts) < 2:
        return None, None
    end_step = steps or pts[-1][0]
    ns = [n for _, _, n in pts]
    subset_n = max(set(ns), key=ns.count)  # the intermediate evals' item count (the most common)
    same = [p for p in pts if p[2] == subset_n]
    if len(same) >= 2 and same[-1][0] == pts[-1][0]:
        # like with like: the subset's own curve reaches the end, so the gain is read on one item set
        # (a fixed 400 of 1,000 test items scored 2.5 points above all 1,000 on one model: an offset, not a gain)
        pts = same
    start = _at(pts, (1 - QUARTER) * end_step)
    if start is None:
        return None, None
    (v0, n0), v1, n1 = start, pts[-1][1], pts[-1][2]
    sign = 1.0 if maximize(metric) else -1.0
    gain = sign * (v1 - v0)
    se = None
    if metric in BINOMIAL and n0 and n1:
        se = math.sqrt(v0 * (1 - v0) / n0 + v1 * (1 - v1) / n1)
    return gain, se


def is_binomial(metric: str) -> bool:
    return metric in BINOMIAL


def verdict(gain: float | None, half_width: float | None = None, tol: float = TOL, points: bool = True) -> str:
    """'converged (+0.20 ± 1.10 points over the last 25% of steps; tolerance 0.5)' or 'still improving
    (+3.10 ...)'; 'not measured (...)' without a gain. half_width: the gain's 95% interval half-width
    (1.96 SE for one trial, the t interval over seeds for a configuration). points: the metric is a
    fraction shown in points (x100)."""
    if gain is None or (isinstance(gain, float) and math.isnan(gain)):
        return "not measured (no eval before the last 25% of steps: set train.eval_every)"
    k, unit = (100.0, " points") if points else (1.0, "")
    ci = "" if half_width is None or math.isnan(half_width) else f" ± {k * half_width:.2f}"
    what = f"{k * gain:+.2f}{ci}{unit} over the last 25% of steps"
    if gain <= tol:
        return f"converged ({what}; tolerance {k * tol:g})"
    return f"still improving ({what})"


def converged(gain: float | None, tol: float = TOL) -> bool | None:
    return None if gain is None or (isinstance(gain, float) and math.isnan(gain)) else gain <= tol


# ---------------------------------------------------------------------------- early stopping


def early_stop(evals: Sequence[Mapping], metric: str, patience: int, min_delta: float = 0.0
               ) -> tuple[bool, int | None, float | None]:
    """(stop now?, best step, best value) after the last of these evals, EarlyStoppingCallback's way
    (module docstring). patience 0: never stops."""
    better = (lambda a, b: a > b) if maximize(metric) else (lambda a, b: a < b)
    best = best_step = None
    counter = 0
    for e in evals:
        v = _value(e, metric)
        if v is None:
            continue
        if best is None or (better(v, best) and abs(v - best) > min_delta):
            counter = 0
        else:
            counter += 1
        if best is None or better(v, best):  # the Trainer's best_metric: any strict improvement
            best, best_step = v, int(e["step"])
    return bool(patience) and counter >= patience, best_step, best


# ---------------------------------------------------------------------------- degenerate trials


def degenerate(pred_counts: Mapping[str, int] | None, losses: Sequence[float] | None,
               share: float = COLLAPSE_SHARE) -> str | None:
    """'diverged', 'collapsed' or None (module docstring). A non-finite loss is checked first (there is
    no model to judge); then the collapse, which names what a finite run ended as (a run pushed to one
    class usually also ends with a loss above its start); then the loss that ended above its start."""
    losses = list(losses or [])
    if any(not math.isfinite(x) for x in losses):
        return "diverged"
    total = sum((pred_counts or {}).values())
    if total and max(pred_counts.values()) / total >= share:
        return "collapsed"
    if len(losses) >= 2:
        k = max(1, min(10, len(losses) // 10))
        if sum(losses[-k:]) / k > sum(losses[:k]) / k:
            return "diverged"
    return None
