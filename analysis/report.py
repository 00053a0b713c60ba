"""`python -m analysis sweep=NAME [overrides] --report`: runs/<study>/report.md and report.tex.

What was run (commands, sweep file, budget, model, data, seeds, git SHA, versions, wall time, the
trials set aside as degenerate), the figures, the aggregated table with the reference arms and the
zero-shot baseline, one sentence per comparison with its numbers, its verdict ("better", "worse",
"equivalent within ±δ", "undecided": analysis/verdicts.py) and the design's minimum detectable
effect, where accuracy and the gold log-probability disagree, what would decide the undecided
comparisons (analysis/planner.py), the expected best against the search budget
(analysis/budget.py), the recommendation, and the test items most configurations get wrong.
The console, the tables and this report print the same sentences from the same numbers.
"""
from __future__ import annotations

import json
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import forgetting
from harness.record import read_record
from analysis import budget, claims, curves, data_size, planner, race, stats, tuned, verdicts
from analysis.items import test_items
from analysis.plotting import reference_name, split
from analysis.tables import best_configs, comparison_table, to_latex

COSTS = {"flops": ("flops", "FLOPs"), "device_hours": ("device_hours", "device-hours"), "usd": ("cost_usd", "USD")}


def _record(df: pd.DataFrame) -> dict:
    """The result.json of one complete trial: the study's shared config and provenance."""
    for d in df.sort_values("trial")["run_dir"].dropna():
        path = Path(d) / "result.json" if not str(d).startswith("http") else None
        for p in (path, Path(d).parent.parent / "result.json") if path else ():
            if (rec := read_record(p)) is not None:
                return rec.model_dump(exclude_unset=True)
    return {}


def _lr_words(axes: list[str], follow: dict, train: dict) -> str:
    """The budget line's lr: one record's lr only where every trial has it."""
    if "train.lr" in axes:
        return "searched (below)"
    return "per configuration (below)" if "train.lr" in follow else str(train.get("lr"))


def what_was_run(loaded, overrides: list[str], flags: str = "") -> list[str]:
    df = loaded.trials
    lora = df[df["method"].fillna("lora") == "lora"] if "method" in df else df
    rec = _record(lora[lora["status"] == "complete"]) or _record(df)  # a LoRA trial's budget, not a reference arm's
    cfg, prov = rec.get("config") or {}, rec.get("provenance") or {}
    sweep, train, data, model = (cfg.get(k) or {} for k in ("sweep", "train", "data", "model"))
    follow = sweep.get("follow") or {}
    ov = " ".join(shlex.quote(o) for o in overrides)
    counts = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())
    shas = sorted(set(df["git_sha"].dropna())) if "git_sha" in df else []
    versions = ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items())
    wall = df["wall_seconds"].sum()
    return [
        f"- study: `python -m harness {ov}` then `python -m analysis {ov} --report{flags}`",
        f"- sweep file: `{sweep.get('file')}`; searched: {', '.join(loaded.axes) or '—'}; sampler {sweep.get('sampler')}; "
        f"seeds {sweep.get('seeds')}",
        f"- trials: {len(df)} ({counts}); trial wall time {wall / 60:.1f} min in total "
        f"({df['wall_seconds'].median():.0f} s median)",
        f"- budget: {train.get('max_steps')} steps × batch {train.get('batch_size')} × accum {train.get('grad_accum')}, "
        f"lr {_lr_words(loaded.axes, follow, train)}, eval every "
        f"{train.get('eval_every') or '— (final only)'}",
        *([f"- set per configuration, not searched (`sweep.follow`): " + "; ".join(
            f"{key} by {f.get('axis')}: " + ", ".join(f"{k} → {v}" for k, v in (f.get("values") or {}).items())
            for key, f in follow.items())] if follow else []),
        f"- model: {model.get('name')} ({model.get('source')}), quant {(cfg.get('quant') or {}).get('mode')}; data: "
        f"{data.get('name')}, train {data.get('train_size')}, test {data.get('test_size')}",
        *(["- reference arms (`sweep.references`, run by the study command): "
           + "; ".join(" ".join(f"{k}={v}" for k, v in r.items()) for r in sweep["references"])]
          if sweep.get("references") else []),
        *(f"- reference arm: `python -m harness study={cfg.get('study')} method={m} train.lr={g['train.lr'].iloc[0]:g}"
          f"{' quant=none' if set(g['quant.mode']) == {'none'} and m == 'full' else ''} seed=S"
          f"{''.join(' ' + o for o in overrides if o.startswith('out_dir='))}` for seeds "
          f"{sorted(int(x) for x in g['seed'])}" for m, g in df[df["method"].fillna("lora") != "lora"].groupby("method")
          if not sweep.get("references")),
        f"- git SHA: {', '.join(dict.fromkeys(s[:12] for s in shas)) or 'unknown'}; {versions}",
    ]


def comparison_sentences(cmp: pd.DataFrame, margin: float) -> list[str]:
    return [f"- {verdicts.sentence(r, margin)}" for _, r in cmp.iterrows()]


def set_aside_lines(df: pd.DataFrame) -> list[str]:
    aside = df[df["status"].astype(str).str.startswith("set aside")]
    if aside.empty:
        return []
    kinds = ", ".join(f"{k.removeprefix('set aside (').rstrip(')')}: {n}" for k, n in aside["status"].value_counts().items())
    return [f"- set aside as degenerate: {len(aside)} trial{'s' if len(aside) != 1 else ''} ({kinds}; trial"
            f"{'s' if len(aside) != 1 else ''} {', '.join(str(int(t)) for t in aside['trial'])}): left out of every "
            "figure, table and test"]


def recommendation(lora: pd.DataFrame, axes: list[str], epsilon: float, cost: str) -> list[str]:
    col, unit = COSTS[cost]
    if lora.empty or col not in lora or lora[col].isna().all():
        return ["- no complete trial with this cost: nothing to recommend."]
    axes = verdicts.shown_axes(stats.configurations(lora, axes), axes)  # a name omits the axes that do not vary
    items = test_items(lora)
    rec = stats.recommend(lora, axes, epsilon=epsilon, cost=col)
    b, p = rec["best"], rec["pick"]
    lines = [f"- best configuration mean: **{b['label']}**, {verdicts.accuracy_text(b['mean'], b['ci'], b['n'], items)}, "
             f"{b['cost']:.3g} {unit}"]
    if p["label"] == b["label"]:
        lines.append(f"- no cheaper configuration is within ε = {100 * epsilon:g} points of it: use **{b['label']}**.")
    else:
        lines.append(f"- cheapest within ε = {100 * epsilon:g} points of the best mean: **{p['label']}**, "
                     f"{verdicts.accuracy_text(p['mean'], p['ci'], p['n'], items)}, {p['cost']:.3g} {unit} "
                     f"({p['cost'] / b['cost']:.2f}× the best's cost); probability it is really within ε (bootstrap "
                     f"over seeds, {rec['n_boot']} resamples): {rec['probability']:.2f}")
    if "data.train_size" in axes:
        best_rest = {k: b[k] for k in axes if k != "data.train_size"}
        sub = lora[np.logical_and.reduce([lora[k].astype(str) == str(v) for k, v in best_rest.items()])] \
            if best_rest else lora
        fit = stats.saturating_fit(sub["data.train_size"], sub["accuracy"])
        if fit:
            lo, hi = fit["interval"]
            lines.append(f"- data: the fitted curve a − b·n^−c predicts {fit['prediction']:.4f} [95% {lo:.4f}, "
                         f"{hi:.4f}; {len(fit['draws'])} bootstrap refits over {fit['resampled']}] at n = {fit['at']:,.0f} "
                         "(2× the largest size: an extrapolation)")
        else:
            lines.append("- data: fewer than 3 training-set sizes (or no convergent fit): no prediction beyond them")
    return lines


def hard_items(lora: pd.DataFrame, axes: list[str], k: int = 10) -> list[str]:
    """Test items that most configurations get wrong (a configuration is wrong on an item when most
    of its seeds are)."""
    wrong, text, configs = Counter(), {}, 0
    groups = lora.groupby(axes, dropna=False) if axes else [((), lora)]
    for _, g in groups:
        votes = Counter()
        n = 0
        for d in g["run_dir"].dropna():
            path = Path(d) / "predictions.jsonl"
            if not path.is_file():
                path = Path(d).parent.parent / "predictions.jsonl"
            if not path.is_file():
                continue
            n += 1
            for line in path.read_text().splitlines():
                p = json.loads(line)
                votes[p["id"]] += not p["correct"]
                text[p["id"]] = (p.get("text", ""), p["reference"])
        if n:
            configs += 1
            wrong.update(i for i, v in votes.items() if v > n / 2)
    if not configs:
        return ["- no predictions.jsonl in the trial directories (trials from before they were written)"]
    top = [(i, c) for i, c in wrong.most_common(k) if c > configs / 2]
    if not top:
        return [f"- no test item is wrong in most of the {configs} configurations"]
    return [f"- item {i} (label {text[i][1]}): wrong in {c}/{configs} configurations — \"{text[i][0][:90]}\""
            for i, c in top]


def score_lines(cmp: pd.DataFrame) -> list[str]:
    has = cmp[cmp["score_items"] > 0] if not cmp.empty else cmp
    if has.empty:
        return ["- the trials wrote no per-item gold log-probability (`gold_logprob`, or `nll` for SFT) in "
                "predictions.jsonl: this line of evidence is skipped."]
    out = [f"Per-item gold-label log-probability, mean over the shared seeds, b − a paired over items (Wilcoxon "
           f"signed-rank, Holm across the {len(has)} comparisons with scores)."]
    odd = has[~has["agreement"].isin(["agree", ""])]
    out += [f"- {verdicts.score_sentence(r)}." for _, r in odd.iterrows()] or \
        [f"- accuracy and log-probability agree on all {len(has)} comparisons with scores."]
    return out


def _best_vs_reference(work: pd.DataFrame, configs: pd.DataFrame, ref: pd.DataFrame) -> list[str]:
    """The best configuration against a reference arm, paired over their shared seeds (stats.paired): how far
    LoRA is from full fine-tuning or the probe. One line, not a test family: the best is chosen on these seeds."""
    if configs.empty or "seed" not in ref:
        return []
    top = stats.best(configs)
    d = stats.paired(ref.groupby("seed")["accuracy"].mean(),
                     work[work["trial"].isin(top["trials"])].groupby("seed")["accuracy"].mean())
    if d["n"] < 2:
        return []
    return [f"  - {top['label']} (the best configuration) − this arm: {verdicts.points(d['diff'])} points [95% CI "
            f"{verdicts.points(d['lo'])}, {verdicts.points(d['hi'])}] over {d['n']} shared seeds, paired t p = "
            f"{d['p_t']:.4f} (the best is picked on these seeds, so the difference leans its way)"]


def build(loaded, overrides: list[str], figures_dir: Path, epsilon: float = 0.01, cost: str = "flops",
          tune: str | None = None, margin: float = verdicts.MARGIN,
          claim_list: list[dict] = ()) -> tuple[str, list[str], pd.DataFrame, list[dict]]:
    """The report as Markdown, the recommendation lines, the comparisons and the claims (all but the first also
    printed on the console)."""
    lora, refs, axes = split(loaded)
    study = loaded.trials["study"].iloc[0]
    alpha = race.level(loaded.optuna_study)[0]  # a study that could stop early: what its looks left
    flags = "".join([f" --tune {tune}" if tune else "", f" --epsilon {100 * epsilon:g}" if epsilon != 0.01 else "",
                     f" --cost {cost}" if cost != "flops" else "", f" --margin {margin:g}" if margin != 0.01 else ""])
    md = [f"# Findings: study `{study}`", "", "## What was run", *what_was_run(loaded, overrides, flags),
          *set_aside_lines(loaded.trials),
          curves.standard_error_line(loaded), ""]
    figs = sorted(figures_dir.glob("*_2col.png"))
    if figs:
        md += ["## Figures", "Configuration means with 95% Student-t intervals over seeds (a configuration with one "
               "seed: its single point, no interval); single seeds faint.", ""]
        md += [f"![{f.stem}]({f.relative_to(figures_dir.parent)})" for f in figs] + [""]
    table = best_configs(loaded)
    if not table.empty:
        md += ["## Configurations", "Best mean first (ties: lower compute); mean ± 95% CI over seeds, or one seed "
               "with the test items' 95% interval; reference arms and the zero-shot baseline below.", "",
               table.to_markdown(index=False), ""]
    md += race.report_lines(loaded.optuna_study)  # a raced study's unequal seeds, said before its numbers
    md += ["## Convergence and degenerate trials", "Per configuration: the gain over the last 25% of steps "
           "(harness/metrics/convergence.py), and the collapsed / diverged trials set aside from every mean.",
           "", *curves.report_lines(loaded), ""]
    work, work_axes = lora, axes
    if tune and tune in axes:
        work, work_axes, picked = stats.tune(lora, axes, tune)
        md += [f"## Each arm at its own best {tune}",
               f"Comparisons and the recommendation below use, for each setting of the other axes, the {tune} with the "
               f"best mean: " + "; ".join(f"{r['label']}" for _, r in picked.iterrows()), ""]
        md += tuned.report_lines(lora, axes, tune, margin, alpha)  # the claim about the argmax itself
    cmp = verdicts.compare(work, work_axes, margin, alpha) if work_axes and not work.empty else pd.DataFrame()
    found = claims.evaluate(cmp, work, work_axes, list(claim_list), margin, alpha) if claim_list and not work.empty \
        else []
    md += claims.report_lines(found, margin, tune if tune in axes else None,  # before the pairs they are tested over
                              claims.climbing_labels(loaded, work, work_axes) if found else set(), alpha)
    md += ["## Comparisons", "Pairs of configurations that differ in one searched axis, read from the first-named "
           "one (b − a).", *verdicts.method_lines(margin, alpha)]
    md += [""] + (comparison_sentences(cmp, margin) if not cmp.empty else ["- no two configurations differ in exactly "
                                                                           "one searched axis."]) + [""]
    climbing = sorted(curves.not_converged(loaded))  # issue 23: a comparison of arms still climbing says so
    if climbing and not cmp.empty:
        md[-1:-1] = [f"Not converged (still improving over the last 25% of steps): {'; '.join(climbing)}; the "
                     "comparisons involving them compare arms still climbing, not what they can learn."]
    md += data_size.report_lines(work, work_axes, cmp, margin)  # a train-size study: where more data stops paying
    md += ["## Accuracy and gold log-probability", *score_lines(cmp), ""]
    if not cmp.empty and (cmp["verdict"] == "undecided").any():
        plan = [x for x in planner.plan(loaded, margin, tune=tune) if x.startswith("- ")]
        md += ["## What would decide the undecided", f"From `python -m analysis {' '.join(overrides)} --plan{f' --tune {tune}' if tune else ''}"
               f"{f' --margin {margin:g}' if margin != 0.01 else ''}` (per comparison: tables in plan.md).", *plan, ""]
    configs = stats.configurations(work, work_axes) if not work.empty else pd.DataFrame()
    sampler = ((_record(lora).get("config") or {}).get("sweep") or {}).get("sampler") if not lora.empty else None
    md += ["## Expected best vs search budget", "Dodge et al. (2019), \"Show Your Work\": the expected best "
           "configuration mean of n configurations drawn at random from this study's (figure "
           "`expected_best_vs_budget`).", *budget.lines(configs, sampler), ""]
    rec = recommendation(work, axes, epsilon, cost)  # tuned or not, a configuration names every axis
    md += ["## Recommendation", *rec, ""]
    if not refs.empty:
        md += ["## Reference arms"]
        for method, g in refs.groupby("method"):
            m, h, n = stats.t_interval(g["accuracy"])
            md.append(f"- {reference_name(method, g)}: {verdicts.accuracy_text(m, h, n, test_items(g))}, "
                      f"{g['flops'].mean():.3g} FLOPs, {g['trainable_params'].mean():,.0f} trainable parameters")
            md += _best_vs_reference(work, configs, g)
        md.append("")
    md += forgetting.report_lines(lora, axes, refs)  # eval.benchmarks: base vs tuned, forgetting, LoRA vs full
    md += ["## Test items most configurations get wrong", *hard_items(lora, axes), ""]
    return "\n".join(md), rec, cmp, found


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"), ("_", r"\_"),
                 ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        s = s.replace(a, b)
    for a, b in (("±", r"$\pm$"), ("α", r"$\alpha$"), ("ε", r"$\varepsilon$"), ("×", r"$\times$"), ("−", "-"),
                 ("—", "---"), ("·", r"$\cdot$")):
        s = s.replace(a, b)
    return s


def to_tex(md: str, loaded, figures_dir: Path, cmp: pd.DataFrame | None = None,
           margin: float = verdicts.MARGIN) -> str:
    """The same report as a LaTeX document: sections, the figures' PDFs, booktabs tables."""
    out = [r"\documentclass{article}", r"\usepackage{booktabs,graphicx,caption}", r"\usepackage[margin=2cm]{geometry}",
           r"\begin{document}"]
    for line in md.splitlines():
        if line.startswith("# "):
            out.append(r"\section*{" + _tex_escape(line[2:].replace("`", "")) + "}")
        elif line.startswith("## "):
            out.append(r"\subsection*{" + _tex_escape(line[3:]) + "}")
        elif line.startswith("!["):
            pdf = line[line.index("(") + 1:-1].replace(".png", ".pdf")
            out.append(r"\begin{figure}[h]\centering\includegraphics[width=\linewidth]{" + pdf + r"}\end{figure}")
        elif line.startswith("|"):
            continue  # Markdown tables: the booktabs versions follow
        elif line.startswith("- "):
            text = _tex_escape(line[2:].replace("**", "").replace("`", ""))
            out.append(r"\noindent$\bullet$ " + text + r"\\")
        elif line.strip():
            out.append(_tex_escape(line.replace("`", "")))
        if line.startswith("## Configurations"):
            table = best_configs(loaded)
            out.append(to_latex(table, "Configurations (mean ± 95\\% CI over seeds; one seed: the test items' "
                                "interval).", "tab:configs"))
        if line.startswith("## Comparisons"):
            table = comparison_table(loaded, margin, cmp)
            if not table.empty:
                out.append(r"\begin{small}" + to_latex(table, "Paired comparisons.", "tab:cmp") + r"\end{small}")
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"


def write(loaded, overrides: list[str], root: Path, **kw) -> tuple[list[Path], list[str], pd.DataFrame, list[dict]]:
    md, rec, cmp, found = build(loaded, overrides, root / "figures", **kw)
    (root / "report.md").write_text(md + "\n")
    (root / "report.tex").write_text(to_tex(md, loaded, root / "figures", cmp, kw.get("margin", verdicts.MARGIN)))
    return [root / "report.md", root / "report.tex"], rec, cmp, found
