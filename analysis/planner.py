"""`python -m analysis sweep=NAME --plan [--margin 0.01]`: what it would take to decide ±δ.

Read from a pilot study (or the study so far), per comparison the sweep implies: the seed SD of the
paired differences, the item discordance (the fraction of test items one configuration gets right
and the other wrong), the minimum detectable effect (MDE) of the current design, the seeds (and
test items) needed to decide ±δ at 80% power, and the wall time that would take at the measured
trial times.

"Decide ±δ" = both: a true difference of δ is found by the paired t (two-sided, α) and a true
difference of 0 is found equivalent by TOST (each side at α), each with 80% power. The t's power is
the noncentral t (analysis/stats.py); TOST's is the usual approximation with the sd taken as known,
2·T_{n-1}(δ√n/σ − t_{1-α,n-1}) − 1 (Chow & Liu), from scipy's t. Both ignore Holm (plan for the
comparison you care most about, or divide α yourself). More test items shrink the seed SD of the
differences only through its item-level part: var_seed(b − a) = σ²_g + σ²_w/m, with σ²_w the mean
over items of the across-seed variance of an item's difference (needs ≥ 2 seeds) and σ²_g the rest
(a seed's run being better or worse as a whole), which no number of items removes. Torch-free.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import stats

CAP = 10_000


def tost_power(sd: float, n: int, margin: float, alpha: float = stats.ALPHA, true_diff: float = 0.0) -> float:
    """Power of TOST at ±margin with n paired differences of this sd (sd taken as known)."""
    if n < 2:
        return 0.0
    if not sd > 0:
        return 1.0 if abs(true_diff) < margin else 0.0
    crit, se = sps.t.ppf(1 - alpha, n - 1), sd / math.sqrt(n)
    t = sps.t(n - 1)
    return float(max(0.0, t.cdf((margin - true_diff) / se - crit) + t.cdf((margin + true_diff) / se - crit) - 1))


def smallest_n(ok, cap: int = CAP) -> int | None:
    """The smallest n in [2, cap] with ok(n), for ok monotone in n (bisection); None above cap."""
    if not ok(cap):
        return None
    lo, hi = 2, cap
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return lo


def seeds_to_decide(sd: float, margin: float, alpha: float = stats.ALPHA, target: float = stats.POWER,
                    cap: int = CAP) -> int | None:
    """Shared seeds for 80% power both to find a difference of margin and to find 0 equivalent."""
    if not np.isfinite(sd):
        return None
    if sd == 0:
        return 2
    return smallest_n(lambda n: stats.power(margin, sd, n, alpha) >= target and
                     tost_power(sd, n, margin, alpha) >= target, cap)


def items_for_mcnemar(discordance: float, margin: float, alpha: float = stats.ALPHA,
                      target: float = stats.POWER) -> int | None:
    """Test items for McNemar (one seed) to detect a difference of margin: the normal approximation
    m = (z_{1-α/2} + z_{power})² · discordance / margin² (the sd of one item's difference is ≈ √discordance)."""
    if not np.isfinite(discordance) or discordance <= 0:
        return None
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(target)
    return int(math.ceil(z * z * discordance / margin ** 2))


def sd_at_items(sd: float, flip_var: float, items: int, new_items: int) -> float:
    """The seed SD of the differences with new_items test items instead of items (see the docstring)."""
    if not (np.isfinite(sd) and np.isfinite(flip_var)) or not items:
        return np.nan
    # With few seeds the item part estimated from σ²_w can exceed the observed variance by chance; it is
    # capped at it, so that more items never predict a larger SD than the one measured.
    item_var = min(sd * sd, flip_var / items)
    return math.sqrt(sd * sd - item_var + item_var * items / new_items)


def pooled_sd(cmp: pd.DataFrame) -> tuple[float, int]:
    """(root mean square of the seed SDs of the comparisons with ≥ 2 seeds, how many), for 1-seed pairs."""
    sds = cmp.loc[cmp["test"] == "paired t over seeds", "sd_diff"] if not cmp.empty else pd.Series(dtype=float)
    return (float(np.sqrt(np.mean(sds ** 2))), len(sds)) if len(sds) else (np.nan, 0)


def what_decides(r, margin: float, pooled: tuple[float, int], alpha: float = stats.ALPHA) -> str:
    """What would decide an undecided comparison, in words."""
    from analysis.verdicts import margin_words

    pts = margin_words(margin)
    if r["n"] == 0:
        return "no shared seeds: run both configurations on the same seeds"
    if r["test"] == "paired t over seeds":
        k = seeds_to_decide(r["sd_diff"], margin, alpha)
        sd = f"seed SD of the differences {100 * r['sd_diff']:.2f} points"
        if k is None:
            return f"more than {CAP:,} shared seeds would be needed to decide {pts} ({sd})"
        more = ""
        if np.isfinite(r["flip_var"]) and r["items"]:
            k2 = seeds_to_decide(sd_at_items(r["sd_diff"], r["flip_var"], r["items"], 4 * r["items"]), margin, alpha)
            more = f"; with 4× the test items, ~{k2:,}" if k2 and k2 < k else ""
        return f"~{k:,} shared seeds would decide {pts} at 80% power ({sd}){more}"
    if r["test"] == "none" and r["n"] >= 2:
        return ("the seed differences have no spread and the trials wrote no predictions.jsonl: nothing to test "
                "them against; rerun them with per-item predictions, or add seeds")
    if r["test"].startswith("seeds × items") and np.isfinite(r["mde"]) and r["mde"] > 0:
        return f"no spread over seeds; ~{math.ceil(r['items'] * (r['mde'] / margin) ** 2):,} test items would bring the MDE to {pts}"
    parts = []
    sd, k = pooled
    if k:
        need = seeds_to_decide(sd, margin, alpha)
        parts.append(f"~{need:,} shared seeds would decide {pts} at the seed SD pooled over {k} comparison"
                     f"{'s' if k != 1 else ''} ({100 * sd:.2f} points)" if need else
                     f"more than {CAP:,} seeds at the pooled seed SD ({100 * sd:.2f} points)")
    else:
        parts.append("a second seed would measure the seed SD that sizes the study (`--plan`)")
    m = items_for_mcnemar(r["discordance"], margin, alpha) if r["items"] else None
    if m:
        parts.append(f"with one seed, ~{m:,} test items would detect {pts} by McNemar "
                     f"(discordance {r['discordance']:.3f})")
    return "; ".join(parts)


def wall_line(trials: pd.DataFrame, configs: int, seeds_now: int, seeds: int | None) -> str:
    ok = trials[(trials["status"] == "complete") & trials["wall_seconds"].notna()] if "wall_seconds" in trials else trials[:0]
    if ok.empty:
        return "- wall time: not measured (no complete trial records `wall_seconds`)"
    med = float(ok["wall_seconds"].median())
    if not seeds:
        return f"- measured trial wall time: {med:.0f} s median over {len(ok)} complete trials"
    extra = configs * max(0, seeds - seeds_now)
    return (f"- {configs} configuration{'s' if configs != 1 else ''} × {seeds:,} seeds = {configs * seeds:,} trials "
            f"({extra:,} more than now); at the measured median trial wall time ({med:.0f} s over {len(ok)} complete "
            f"trials on this machine), run one at a time: {extra * med / 3600:,.1f} h more")


def seeds_needed_for(r, cmp: pd.DataFrame, margin: float, alpha: float = stats.ALPHA) -> int | None:
    """Shared seeds to decide ±margin at this comparison's seed SD (1 seed: the pooled one); None where
    seeds do not help (no spread over seeds: test items do) or the SD is unknown."""
    if r["test"] == "paired t over seeds":
        return seeds_to_decide(r["sd_diff"], margin, alpha)
    if r["n"] <= 1 and pooled_sd(cmp)[1]:
        return seeds_to_decide(pooled_sd(cmp)[0], margin, alpha)
    return None


def plan_table(cmp: pd.DataFrame, margin: float, alpha: float = stats.ALPHA) -> pd.DataFrame:
    from analysis.verdicts import points

    pooled = pooled_sd(cmp)
    rows = []
    for _, r in cmp.iterrows():
        sd = r["sd_diff"] if r["test"] == "paired t over seeds" else np.nan
        k = seeds_needed_for(r, cmp, margin, alpha)
        k4 = seeds_to_decide(sd_at_items(sd, r["flip_var"], r["items"], 4 * r["items"]), margin, alpha) \
            if np.isfinite(sd) and np.isfinite(r["flip_var"]) else None
        m1 = items_for_mcnemar(r["discordance"], margin, alpha) if r["items"] else None
        rows.append({"comparison": f"{r['b_name']} vs {r['a_name']}" + (f" (at {r['held']})" if r["held"] else ""),
                     "seeds": r["n"], "items": r["items"] or "—",
                     "seed SD of b − a (points)": points(sd, False) if np.isfinite(sd) else
                     ("0 (no spread)" if r["n"] >= 2 else "pooled " + points(pooled[0], False) if pooled[1] else "—"),
                     "item discordance": f"{r['discordance']:.3f}" if np.isfinite(r["discordance"]) else "—",
                     "MDE now (points)": points(r["mde"], False), "verdict now": r["verdict"],
                     f"seeds for ±{100 * margin:g}": f"{k:,}" if k else "—",
                     "… with 4× items": f"{k4:,}" if k4 else "—",
                     "items, 1 seed (McNemar)": f"{m1:,}" if m1 else "—"})
    return pd.DataFrame(rows)


def plan(loaded, margin: float, alpha: float = stats.ALPHA, tune: str | None = None) -> list[str]:
    """The plan as Markdown lines (printed by --plan and written to plan.md). With `tune` (an axis),
    the comparisons are the report's: each setting of the other axes at its own best value of it."""
    from analysis.plotting import split
    from analysis.verdicts import compare, margin_words

    lora, _, axes = split(loaded)
    study = loaded.trials["study"].iloc[0]
    out = [f"# Plan: study `{study}`, margin {margin_words(margin)}, 80% power, α = {alpha}", ""]
    if tune and tune in axes and not lora.empty:
        lora, axes, picked = stats.tune(lora, axes, tune)
        out += [f"Each arm at its own best {tune} (`--tune`): " + "; ".join(picked["label"]), ""]
    cmp = compare(lora, axes, margin, alpha) if axes and not lora.empty else pd.DataFrame()
    configs = stats.configurations(lora, axes) if not lora.empty else pd.DataFrame()
    if cmp.empty:
        out += ["- no two configurations differ in exactly one searched axis: nothing to plan "
                f"({len(configs)} configuration{'s' if len(configs) != 1 else ''} with complete trials)",
                wall_line(loaded.trials, len(configs), 0, None)]
        return out
    table = plan_table(cmp, margin, alpha)
    out += [table.to_markdown(index=False), ""]
    sized = [r for _, r in cmp.iterrows() if r["verdict"] == "undecided" and (
        r["test"] == "paired t over seeds" or (r["n"] <= 1 and pooled_sd(cmp)[1]))]  # a seed SD to size them by
    need = [seeds_needed_for(r, cmp, margin, alpha) for r in sized]
    known = [k for k in need if k]
    seeds_now = int(configs["n"].min())
    if known:
        worst, median = max(known), int(np.median(known))
        out += [f"- to decide {margin_words(margin)} on every undecided comparison that more seeds can decide: {worst:,} "
                f"seeds per configuration (the median one needs {median:,})",
                wall_line(loaded.trials, len(configs), seeds_now, worst)]
    elif not (cmp["verdict"] == "undecided").any():
        out += ["- every comparison is decided at this design", wall_line(loaded.trials, len(configs), seeds_now, None)]
    elif not (cmp["n"] >= 2).any():
        out += ["- the seed SD is unknown (every comparison has < 2 shared seeds): run a second seed of each "
                "configuration, then plan again", wall_line(loaded.trials, len(configs), seeds_now, None)]
    elif not need:
        out += ["- no undecided comparison is limited by seeds (no spread over seeds): more test items decide them "
                "(column `items, 1 seed (McNemar)` and the report)", wall_line(loaded.trials, len(configs), seeds_now, None)]
    else:
        out += [f"- every undecided comparison would need more than {CAP:,} seeds at its seed SD: a larger margin, "
                "or a design with less seed noise", wall_line(loaded.trials, len(configs), seeds_now, None)]
    if known and len(known) < len(need):
        out.append(f"- {len(need) - len(known)} comparison(s) would need more than {CAP:,} seeds at their seed SD")
    return out
