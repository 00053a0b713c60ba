"""Verdicts on the study's comparisons: "better", "worse", "equivalent within ±δ" or "undecided".

A comparison is two configurations that differ in one searched axis, read from the side of the
first-named one (b): `r=8 vs r=2` is r=8 − r=2. The evidence, per comparison:

- Seeds (the unit the study replicates). With ≥ 2 shared seeds the verdict uses the paired t over
  the per-seed accuracy differences: exact for normal seed noise at any n ≥ 2, while a bootstrap
  over 2-5 seeds has too few distinct resamples (3 seeds: 10) for calibrated tails. The difference
  test is two-sided; the equivalence test is TOST (two one-sided t tests against -δ and +δ, each at
  α; p = the larger). Seed differences with no spread at all leave t undefined: the verdict then
  uses the two-level bootstrap below.
- Seeds × items, the two-level bootstrap: every resample draws the seeds with replacement, then the
  test items with replacement (one draw of items per resample, shared by both configurations and
  all seeds: every seed is evaluated on the same items, so items are crossed with seeds, not nested
  in them); N_BOOT resamples from numpy's generator seeded BOOT_SEED; percentile interval. It treats
  the test items as a sample of the task too, so it is printed beside the t interval, and a verdict
  it does not support is marked "(this test set only)".
- One shared seed: McNemar's exact test on the items (scipy's binomtest on the discordant pairs),
  two-sided. One seed says nothing about seed-to-seed variation: it can give "better" or "worse"
  (for that seed), never "equivalent".
- Continuous per-item scores (gold-label log-probability, items.py), where the trials wrote them:
  the per-item mean over shared seeds, paired over items, Wilcoxon signed-rank: a second line of
  evidence beside accuracy, never the verdict.

Familywise control: Holm's step-down (analysis/stats.py) across the study's comparisons, once over
the difference tests and once over the equivalence tests (and once over the log-probability
tests). Each family's error rate is at most α; since a pair's two nulls (no difference; a
difference of at least δ) cannot both be true, a pair gets at most one false claim, and the chance
of any false claim of either kind is at most 2α. A pair significant in both families (a real
difference smaller than δ) is "equivalent within ±δ", the difference stated beside it.
Torch-free.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis import items as item_data
from analysis import stats
from harness.study import verdict as seeds_verdict
from harness.study.stopping import FINAL_ALPHA  # the level a stop_when study's last look is tested at
from harness.study.verdict import margin_words  # '±1 point': the driver's words too

N_BOOT = 2000
BOOT_SEED = 0
MARGIN = 0.01  # one accuracy point
WORDS = ("better", "worse", "undecided")  # + equivalent_word(margin)


def equivalent_word(margin: float) -> str:
    return f"equivalent within {margin_words(margin)}"


def points(v, signed: bool = True) -> str:
    return "—" if v is None or not np.isfinite(v) else (f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}")


# ---------------------------------------------------------------------------- the tests


def tost(d, margin: float) -> tuple[float, float, float]:
    """(p against -δ, p against +δ, TOST p = the larger) from paired differences d (one-sided t): the
    driver's test (harness/study/verdict.py), so stop_when: decided and the report agree."""
    d = [float(x) for x in np.asarray(d, float)]
    lower, upper = seeds_verdict.tost_sides(d, margin)
    return lower, upper, seeds_verdict.p_tost(d, margin)


def mcnemar_exact(a_correct, b_correct) -> dict:
    """Exact McNemar test on paired 0/1 outcomes: of the discordant items, is b right as often as a?"""
    a, b = np.asarray(a_correct) > 0.5, np.asarray(b_correct) > 0.5
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = only_a + only_b
    p = 1.0 if n == 0 else float(sps.binomtest(only_b, n, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p": p, "diff": (only_b - only_a) / len(a) if len(a) else np.nan}


def bootstrap_draws(diffs: np.ndarray, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> np.ndarray:
    """Two-level bootstrap of the mean of diffs (seeds × items): seeds resampled, then items (crossed)."""
    n, m = diffs.shape
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n, np.full(n, 1 / n), size=n_boot) / n  # seed weights per resample
    v = rng.multinomial(m, np.full(m, 1 / m), size=n_boot) / m  # item weights per resample
    return np.einsum("bs,sm,bm->b", w, diffs, v)


def bootstrap_p(draws: np.ndarray, margin: float) -> tuple[float, float]:
    """(two-sided p of no difference, TOST p of a difference beyond ±margin), with the +1 correction."""
    b = len(draws)
    p_diff = min(1.0, 2 * min(1 + np.sum(draws <= 0), 1 + np.sum(draws >= 0)) / (b + 1))
    p_eq = max(1 + np.sum(draws <= -margin), 1 + np.sum(draws >= margin)) / (b + 1)
    return float(p_diff), float(p_eq)


def score_test(sa: dict, sb: dict, seeds) -> dict | None:
    """Per-item mean score over the shared seeds, b − a paired over items, Wilcoxon signed-rank."""
    cols = [(sa[s]["score"], sb[s]["score"]) for s in seeds if s in sa and s in sb]
    if not cols:
        return None
    a = pd.concat([c[0] for c in cols], axis=1).mean(axis=1)
    b = pd.concat([c[1] for c in cols], axis=1).mean(axis=1)
    x = (b - a).dropna()
    if x.empty:
        return None
    x = x.to_numpy(float)
    p = 1.0 if np.all(x == 0) else float(sps.wilcoxon(x).pvalue)
    return {"score_diff": float(x.mean()), "score_median": float(np.median(x)), "score_items": len(x), "score_p": p}


# ---------------------------------------------------------------------------- one comparison


def _items_matrix(ia: dict, ib: dict, seeds) -> tuple[np.ndarray, np.ndarray, list] | None:
    """(a, b) correctness as (seeds, items) arrays on the items every shared seed of both has."""
    have = [s for s in seeds if s in ia and s in ib]
    if not have:
        return None
    ids = set.intersection(*[set(ia[s].index) & set(ib[s].index) for s in have])
    if not ids:
        return None
    ids = sorted(ids, key=str)
    a = np.stack([ia[s].loc[ids, "correct"].to_numpy(float) for s in have])
    b = np.stack([ib[s].loc[ids, "correct"].to_numpy(float) for s in have])
    return a, b, have


def evidence(va: pd.Series, vb: pd.Series, ia: dict, ib: dict, margin: float, alpha: float = stats.ALPHA,
             n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> dict:
    """Everything one comparison's verdict rests on. va, vb: accuracy per seed; ia, ib: seed -> items."""
    with warnings.catch_warnings():  # seeds with (nearly) no spread: scipy warns, and _choose_test sets t aside
        warnings.simplefilter("ignore", RuntimeWarning)
        r = stats.paired(va, vb)
    shared = sorted(set(va.dropna().index) & set(vb.dropna().index))
    d = np.array([vb[s] - va[s] for s in shared], float)
    n = len(d)
    out = {**r, "level": alpha, "p_tost_t": np.nan, "items": 0, "boot_lo": np.nan, "boot_hi": np.nan, "boot_se": np.nan,
           "p_boot": np.nan, "p_tost_boot": np.nan, "only_a": np.nan, "only_b": np.nan, "p_mcnemar": np.nan,
           "discordance": np.nan, "flip_var": np.nan, "score_diff": np.nan, "score_median": np.nan, "score_items": 0,
           "score_p": np.nan}
    spread = n >= 2 and float(np.ptp(d)) > 1e-12  # accuracies are k/m: a smaller spread is float rounding
    if spread:
        out["p_tost_t"] = tost(d, margin)[2]
    else:  # paired() gives p 0/1 for a constant shift; with no spread, t is undefined: not ours to claim
        out["p_t"] = np.nan
    m = _items_matrix(ia, ib, shared)
    if m is not None:
        a, b, have = m
        diffs = b - a
        draws = bootstrap_draws(diffs, n_boot, seed)
        out.update(items=diffs.shape[1], boot_lo=float(np.percentile(draws, 100 * alpha / 2)),
                   boot_hi=float(np.percentile(draws, 100 * (1 - alpha / 2))), boot_se=float(draws.std()),
                   discordance=float(np.mean(diffs != 0)))
        out["p_boot"], out["p_tost_boot"] = bootstrap_p(draws, margin)
        if len(have) >= 2:
            out["flip_var"] = float(np.mean(diffs.var(axis=0, ddof=1)))
        if n == 1:
            mc = mcnemar_exact(a[0], b[0])
            out.update(only_a=mc["only_a"], only_b=mc["only_b"], p_mcnemar=mc["p"])
        out.update(score_test(ia, ib, have) or {})
    out.update(_choose_test(out, n, spread))
    return out


def _choose_test(e: dict, n: int, spread: bool) -> dict:
    """Which test the verdict uses (see the module docstring), its two p-values and its MDE basis."""
    if spread:
        return {"test": "paired t over seeds", "p_diff": e["p_t"], "p_eq": e["p_tost_t"]}
    if n >= 2 and e["items"]:
        return {"test": "seeds × items bootstrap (no spread over seeds)", "p_diff": e["p_boot"], "p_eq": e["p_tost_boot"]}
    if n == 1 and e["items"]:
        return {"test": "McNemar exact (1 seed)", "p_diff": e["p_mcnemar"], "p_eq": np.nan}
    return {"test": "none", "p_diff": np.nan, "p_eq": np.nan}


def mde(e: dict, alpha: float = stats.ALPHA, target: float = stats.POWER) -> float:
    """The difference the verdict's test detects with 80% power at α (before Holm)."""
    z = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(target)
    if e["test"] == "paired t over seeds":
        return stats.min_detectable_effect(e["sd_diff"], e["n"], alpha, target)
    # no variation at all (every item the same in both): nothing to scale an MDE by, and 0 would claim any
    # difference is detectable
    if e["test"].startswith("seeds × items"):
        return float(z * e["boot_se"]) if e["boot_se"] > 0 else np.nan
    if e["test"].startswith("McNemar"):  # normal approximation: sd of an item's difference ~ sqrt(discordance)
        return float(z * math.sqrt(e["discordance"] / e["items"])) if e["discordance"] > 0 else np.nan
    return np.nan


# ---------------------------------------------------------------------------- the study


def shown_axes(configs: pd.DataFrame, axes: list[str]) -> list[str]:
    """The axes that take more than one value among the configurations: the ones a name needs."""
    return [k for k in axes if configs[k].astype(str).nunique() > 1] if not configs.empty else []


def by_seed(df: pd.DataFrame, configs: pd.DataFrame, axes: list[str], metric: str = "accuracy"):
    """label -> (metric per seed, seed -> items) for every configuration."""
    out = {}
    for _, c in configs.iterrows():
        g = df[np.logical_and.reduce([df[k].astype(str) == str(c[k]) for k in axes])] if axes else df
        out[c["label"]] = (g.dropna(subset=["seed"]).groupby("seed")[metric].mean(), item_data.per_seed_items(g))
    return out


def compare(df: pd.DataFrame, axes: list[str], margin: float = MARGIN, alpha: float = stats.ALPHA,
            n_boot: int = N_BOOT, seed: int = BOOT_SEED, metric: str = "accuracy") -> pd.DataFrame:
    """One row per one-axis pair: the evidence, Holm per family, the verdict, its MDE and what would decide it."""
    configs = stats.configurations(df, axes, metric)
    if configs.empty or not axes:
        return pd.DataFrame()
    shown = shown_axes(configs, axes)
    data = by_seed(df, configs, axes, metric)
    rows = []
    for i, j, axis in stats.one_axis_pairs(configs, axes):
        a, b = configs.iloc[i], configs.iloc[j]
        held = [k for k in shown if k != axis]
        e = evidence(data[a["label"]][0], data[b["label"]][0], data[a["label"]][1], data[b["label"]][1], margin,
                     alpha, n_boot, seed)
        rows.append({"axis": axis, "b_name": stats.label(b, [axis]), "a_name": stats.label(a, [axis]),
                     "a": stats.label(a, axes), "b": stats.label(b, axes), "a_value": a[axis], "b_value": b[axis],
                     "held": stats.label(a, held) if held else "", "at": {k: a[k] for k in axes if k != axis}, **e})
    return judge(pd.DataFrame(rows), margin, alpha)


def judge(out: pd.DataFrame, margin: float, alpha: float = stats.ALPHA) -> pd.DataFrame:
    """A family of comparisons' evidence rows -> their MDE, Holm per test family, verdict and what would decide it."""
    from analysis import planner

    if out.empty:
        return out
    out["mde"] = [mde(r, alpha) for _, r in out.iterrows()]
    # a study stopped at a look is tested at that look's level; what its seeds reach at the level a study that
    # runs on is tested at is the number that says how far the design was from a verdict
    out["mde_final"] = [mde(r, FINAL_ALPHA) if alpha < FINAL_ALPHA else np.nan for _, r in out.iterrows()]
    for col in ("p_diff", "p_eq", "score_p", "p_boot", "p_tost_boot"):
        out[col + "_holm"] = stats.holm(out[col])
    out["verdict"] = [verdict(r, margin, alpha) for _, r in out.iterrows()]
    out["this_test_set_only"] = [_test_set_only(r, margin, alpha) for _, r in out.iterrows()]
    out["agreement"] = [agreement(r, alpha) for _, r in out.iterrows()]
    pooled = planner.pooled_sd(out)
    # the seeds a next study needs: it is tested at its last look's level, not at the level this one stopped at
    out["decide"] = [planner.what_decides(r, margin, pooled, max(alpha, FINAL_ALPHA)) if r["verdict"] == "undecided" else ""
                     for _, r in out.iterrows()]
    return out


def verdict(r, margin: float, alpha: float = stats.ALPHA) -> str:
    if r["p_eq_holm"] < alpha:
        return equivalent_word(margin)
    if r["p_diff_holm"] < alpha:
        return "better" if r["diff"] > 0 else "worse"
    return "undecided"


def _test_set_only(r, margin: float, alpha: float) -> bool:
    """The t over seeds supports the verdict but the seeds × items bootstrap (Holm) does not."""
    if r["test"] != "paired t over seeds" or not r["items"] or r["verdict"] == "undecided":
        return False
    key = "p_tost_boot_holm" if r["verdict"] == equivalent_word(margin) else "p_boot_holm"
    return not r[key] < alpha


def agreement(r, alpha: float = stats.ALPHA) -> str:
    """How the gold log-probability's verdict relates to accuracy's ('' without scores)."""
    if not r["score_items"] or pd.isna(r["score_p_holm"]):
        return ""
    lp = (1 if r["score_diff"] > 0 else -1) if r["score_p_holm"] < alpha else 0
    acc = {"better": 1, "worse": -1}.get(r["verdict"], 0)
    if lp == acc:
        return "agree"
    if lp and acc:
        return "disagree: opposite directions"
    return "only log-probability separates them" if lp else "only accuracy separates them"


# ---------------------------------------------------------------------------- words


def accuracy_text(mean: float, ci: float, n: int, items: int | None = None) -> str:
    """'0.7450 ± 0.0120 (3 seeds)'; one seed: no interval over seeds, the items' Clopper-Pearson one."""
    if n is None or not n or not np.isfinite(mean):
        return "no complete trial"
    if n > 1 and np.isfinite(ci):
        return f"{mean:.4f} ± {ci:.4f} (95% CI over {n} seeds)"
    text = f"{mean:.4f} (1 seed, no interval over seeds" if n == 1 else f"{mean:.4f} ({n} seeds, no spread"
    if items:
        lo, hi = sps.binomtest(int(round(mean * items)), items).proportion_ci(0.95)
        text += f"; 95% over {items} test items [{lo:.4f}, {hi:.4f}]"
    return text + ")"


def sentence(r, margin: float) -> str:
    """One comparison as the report, the table and the console say it."""
    held = f" (at {r['held']})" if r["held"] else ""
    head = f"{r['b_name']} vs {r['a_name']}{held}"
    ev = []
    if r["n"] >= 2:
        ci = f" [95% CI {points(r['lo'])}, {points(r['hi'])}]" if r["test"] == "paired t over seeds" else \
            " (no spread over seeds)"
        ev.append(f"{points(r['diff'])} points{ci} over {r['n']} shared seeds")
        if r["test"] == "paired t over seeds":
            ev.append(f"paired t p = {_p(r['p_diff'])} (Holm {_p(r['p_diff_holm'])}), TOST {margin_words(margin)} p = "
                      f"{_p(r['p_eq'])} (Holm {_p(r['p_eq_holm'])})")
    elif r["n"] == 1:
        ev.append(f"{points(r['diff'])} points (1 seed, no interval over seeds)")
        if r["items"]:
            ev.append(f"McNemar exact p = {_p(r['p_diff'])} (Holm {_p(r['p_diff_holm'])}; test items right only in "
                      f"{r['b_name']}: {int(r['only_b'])}, only in {r['a_name']}: {int(r['only_a'])})")
    else:
        ev.append("no shared seeds")
    if r["items"]:
        ev.append(f"seeds × items bootstrap {100 * (1 - r.get('level', stats.ALPHA)):g}% [{points(r['boot_lo'])}, "
                  f"{points(r['boot_hi'])}] over {r['items']} items")
        if r["test"].startswith("seeds × items"):
            ev.append(f"bootstrap p = {_p(r['p_diff'])} (Holm {_p(r['p_diff_holm'])}), TOST p = {_p(r['p_eq'])} "
                      f"(Holm {_p(r['p_eq_holm'])})")
    final = r.get("mde_final", np.nan)
    final = f" ({points(final, False)} at the final α {FINAL_ALPHA:g})" if final is not None and np.isfinite(final) else ""
    ev.append(f"MDE {points(r['mde'], False)} points{final}" if np.isfinite(r["mde"]) else
              "MDE not computable (no variation to scale it by)")
    tail = " (this test set only: the seeds × items bootstrap does not support it)" if r["this_test_set_only"] else ""
    if r["verdict"] == equivalent_word(margin) and r["p_diff_holm"] < r.get("level", stats.ALPHA):
        tail += f" (a real difference below the margin: {points(r['diff'])} points)"
    decide = f" — {r['decide']}" if r["decide"] else ""
    return f"{head}: {'; '.join(ev)}: **{r['verdict']}**{tail}{decide}."


def score_sentence(r) -> str:
    return (f"{r['b_name']} vs {r['a_name']}{' (at ' + r['held'] + ')' if r['held'] else ''}: accuracy "
            f"**{r['verdict']}**; gold log-probability {r['score_diff']:+.4f} nats per item (median "
            f"{r['score_median']:+.4f}, {r['score_items']} items, Wilcoxon p = {_p(r['score_p'])}, Holm "
            f"{_p(r['score_p_holm'])}): {r['agreement']}")


def method_lines(margin: float, alpha: float = stats.ALPHA) -> list[str]:
    """How the verdicts are made, for the report (the module docstring, short)."""
    return [f"Verdicts: **better** / **worse** (b − a differs from 0), **{equivalent_word(margin)}** (TOST: the "
            f"difference lies within {margin_words(margin)}), or **undecided**; α = {alpha:.3g}, Holm across the study's "
            "comparisons once for the difference tests and once for the equivalence tests (each family's error rate "
            f"≤ {alpha:.3g}; any false claim of either kind ≤ {2 * alpha:.3g}). With ≥ 2 shared seeds the test is the "
            "paired t over seeds; seed differences without spread use the seeds × items bootstrap; one shared "
            "seed uses McNemar's exact test on the test items (better/worse only: one seed cannot show equivalence). "
            f"The seeds × items bootstrap ({N_BOOT} resamples, numpy seed {BOOT_SEED}; seeds, then the test items, "
            "resampled) also treats the items as a sample of the task; where it does not support a verdict the "
            "sentence says \"this test set only\". MDE: the difference the verdict's test detects with 80% power at "
            "α before Holm" + (f" (where the study stopped at a look, also at the final α {FINAL_ALPHA:g} its last look "
                               "would have been tested at)." if alpha < FINAL_ALPHA else ".")]


def _p(v) -> str:
    return "—" if v is None or not np.isfinite(v) else ("<0.0001" if v < 1e-4 else f"{v:.4f}")
