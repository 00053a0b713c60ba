"""The end-of-sweep console summary, seed-aware: configuration means over seeds, best = the best
configuration mean (ties: lower FLOPs), never a lucky seed. The seed statistics are harness/study/seeds.py's,
the ones the analysis uses.

Takes Optuna FrozenTrials as the driver has them (params hold the searched axes, user_attrs the
seed and the record's metrics). Runs in the driver: no torch, no analysis/ import; scipy for t.
"""
from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

from omegaconf import OmegaConf

from harness.metrics import convergence
from harness.study import seeds, space
from harness.config.schema import complete, load_with_choices



def _num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and (abs(v) >= 1e5 or (v and abs(v) < 1e-3)):
        return f"{v:.3g}"
    return f"{v:.4g}" if isinstance(v, float) else f"{v:,}"


def _metric(v) -> str:
    """An objective's mean or interval as the report prints it (analysis/tables.py: 4 decimals for a
    fraction such as accuracy), so the console and report.md show the same numbers."""
    return f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) and abs(v) < 10 else _num(v)


def _value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def t_half_width(values: list[float], level: float = 0.95) -> float:
    """Half-width of the Student-t interval of the mean (NaN below 2 values)."""
    return seeds.t_interval(values, level)[1]


def _seed_means(trials, metric: str) -> list[float]:
    """metric once per seed, the mean of that seed's trials (harness/study/seeds.py, as analysis does)."""
    return seeds.seed_means((t.user_attrs.get("seed", f"trial {t.number}"), t.user_attrs.get(metric)) for t in trials)


def configurations(trials, objectives: dict[str, str]) -> list[dict]:
    """Complete trials grouped by their searched values (seed excluded): per configuration the
    trials, the seeds its means use, and mean / 95% half-width of each objective, mean flops and
    device-seconds, over the non-degenerate trials (harness/metrics/convergence.py: collapsed or
    diverged ones are set aside and counted in `set_aside`); `unstable` when half or more of its trials
    degenerated (then it is no mean and never the best); `gain` / `gain_ci`: the mean gain over the last
    25% of steps over seeds and its 95% half-width, `learning` the convergence verdict it gives."""
    groups: dict[str, list] = {}
    for t in trials:
        if t.state.name != "COMPLETE" or t.user_attrs.get("reference"):
            continue  # reference arms (sweep.references) are beside the search, never its best
        groups.setdefault(json.dumps(t.params, sort_keys=True, default=str), []).append(t)
    out = []
    for key, ts in groups.items():
        good = [t for t in ts if not t.user_attrs.get("degenerate")]
        aside = Counter(t.user_attrs["degenerate"] for t in ts if t.user_attrs.get("degenerate"))
        row = {"params": json.loads(key), "trials": [t.number for t in good] + [t.number for t in ts if t not in good],
               "seeds": [t.user_attrs.get("seed") for t in good], "set_aside": dict(aside),
               "unstable": 2 * sum(aside.values()) >= len(ts)}
        for metric in {*objectives, "accuracy", "flops", "device_seconds"}:
            vals = _seed_means(good, metric)
            row[metric] = sum(vals) / len(vals) if vals else None
            row[f"{metric}_ci"] = t_half_width(vals)
        gains = _seed_means(good, "last_quarter_gain")
        row["gain"], row["gain_ci"], _ = seeds.t_interval(gains)
        row["learning"] = convergence.verdict(row["gain"] if gains else None, row["gain_ci"])
        out.append(row)
    return out


def set_aside_text(row: dict) -> str:
    """'2 collapsed, 1 diverged' (or '' when none was set aside)."""
    return ", ".join(f"{n} {kind}" for kind, n in sorted(row["set_aside"].items()))


def learning_cell(row: dict) -> str:
    """The convergence verdict in a table cell: 'converged +0.2 ± 0.9', 'improving +3.1 ± 1.2', '-'."""
    if row["unstable"] or row["gain"] is None or math.isnan(row["gain"]):
        return "-"
    ci = "" if math.isnan(row["gain_ci"]) else f" ± {100 * row['gain_ci']:.1f}"
    word = "converged" if convergence.converged(row["gain"]) else "improving"
    return f"{word} {100 * row['gain']:+.1f}{ci}"


def _sort_key(row: dict, objectives: dict[str, str]):
    ranked = seeds.rank_key([row[m] for m in objectives], objectives.values(), row["flops"])
    return (row.get("unstable", False), *ranked)  # an unstable configuration sorts last


def best_configuration(trials, objectives: dict[str, str]) -> dict | None:
    """The configuration with the best mean of the first objective (then the others), ties to the
    lower mean FLOPs; never an unstable one; None without a complete, stable configuration."""
    rows = [r for r in configurations(trials, objectives) if not r["unstable"]]
    return min(rows, key=lambda r: _sort_key(r, objectives)) if rows else None


def summary_table(trials, axes: list[str], objectives: dict[str, str], top: int = 10) -> str:
    """Configurations, best mean first: axes, seeds, objective means ± 95% CI, mean FLOPs and device-s,
    the trials set aside as degenerate and the convergence verdict (gain over the last 25% of steps,
    points); an unstable configuration (half or more degenerate) shows no mean."""
    rows = sorted(configurations(trials, objectives), key=lambda r: _sort_key(r, objectives))[:top]
    metrics = list(dict.fromkeys([*objectives, "accuracy"]))
    cols = [*axes, "seeds", *(f"{m} (mean ± 95% CI)" for m in metrics), "flops", "device-s", "trials", "set aside",
            "last 25% of steps (points)"]
    body = []
    for r in rows:
        cells = [_value(r["params"].get(a)) for a in axes] + [str(len(r["seeds"]))]
        for m in metrics:
            ci = r[f"{m}_ci"]
            cells.append("unstable at this setting" if r["unstable"] else
                         _metric(r[m]) + ("" if math.isnan(ci) else f" ± {_metric(ci)}"))
        cells += [_num(r["flops"]), _num(r["device_seconds"]), ",".join(map(str, r["trials"])),
                  set_aside_text(r) or "-", learning_cell(r)]
        body.append(cells)
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, body)])


def best_line(trials, axes: list[str], objectives: dict[str, str]) -> str:
    """'best = <configuration> (mean of n seeds)': the sentence under the table."""
    b = best_configuration(trials, objectives)
    if b is None:
        return ("best = none (every configuration is unstable: half or more of its seeds collapsed or diverged)"
                if configurations(trials, objectives) else "best = none (no complete trial)")
    what = " ".join(f"{a}={_value(b['params'].get(a))}" for a in axes) or "the one configuration"
    (m, _), = list(objectives.items())[:1]
    ci = b[f"{m}_ci"]
    return (f"best = {what}: {m} {_metric(b[m])}" + ("" if math.isnan(ci) else f" ± {_metric(ci)}")
            + f" (mean of {len(b['seeds'])} seed{'s' if len(b['seeds']) != 1 else ''}"
            + (f", {set_aside_text(b)} set aside" if b["set_aside"] else "") + "; trials "
            + ",".join(map(str, b["trials"])) + f"); {b['learning']}")


def learning_lines(trials, axes: list[str], objectives: dict[str, str]) -> list[str]:
    """One line per configuration that is unstable, had trials set aside, or has not converged: what the
    table's means rest on (the converged, clean ones need no line)."""
    out, rows = [], sorted(configurations(trials, objectives), key=lambda r: _sort_key(r, objectives))
    if not any(r["gain"] is not None and not math.isnan(r["gain"]) for r in rows):
        out.append("  convergence: not measured (no intermediate evals: set train.eval_every)")
    for r in rows:
        what = " ".join(f"{a}={_value(r['params'].get(a))}" for a in axes) or "the configuration"
        if r["unstable"]:
            out.append(f"  {what}: unstable at this setting ({set_aside_text(r)} of {len(r['trials'])} trials)")
        elif r["set_aside"] or convergence.converged(r["gain"] if not math.isnan(r["gain"]) else None) is False:
            aside = f"{set_aside_text(r)} set aside, mean of the other {len(r['seeds'])}; " if r["set_aside"] else ""
            out.append(f"  {what}: {aside}{r['learning']}")
    return out


# ---------------------------------------------------------------------------- the driver's console


_RERUN: dict[tuple, str] = {}  # the study's end prints it and writes it to best.yaml: three Hydra composes each


def rerun_command(tcfg, overrides: list[str]) -> str:
    """`python -m harness ...` that reproduces this trial's config as a single run (study <study>-rerun):
    the trial's group choices (model=..., data=... from the command line or the sweep file), then
    every value that differs from what those groups give."""
    key = (tuple(overrides), json.dumps(OmegaConf.to_container(tcfg), sort_keys=True, default=str))
    if key not in _RERUN:
        _RERUN[key] = _rerun_command(tcfg, overrides)
    return _RERUN[key]


def _rerun_command(tcfg, overrides: list[str]) -> str:
    _, choices = load_with_choices(overrides)
    default, defaults = load_with_choices([])
    groups = [f"{g}={c}" for g, c in choices.items() if g != "sweep" and c != defaults.get(g)]
    where = [f"out_dir={space.format_value(tcfg.out_dir)}"] if tcfg.out_dir != default.out_dir else []
    # same study and out_dir as the trial, so interpolated paths (storage.url) compare equal
    base = complete(load_with_choices([*groups, f"study={tcfg.study}", f"out_dir={tcfg.out_dir}"])[0])
    diff = space.diff_overrides(tcfg, base, skip=("sweep", "study", "trial", "out_dir"))
    return " ".join(["python -m harness", *groups, *diff, *where, f"study={tcfg.study}-rerun"])


def header(cfg, new: bool, c: dict, budget: str, url: str, dashboard: str) -> None:
    """The first lines of `python -m harness sweep=...` (stderr; the password in url is masked)."""
    sw = cfg.sweep
    if new:
        print(f"new study {cfg.study}: {budget} ({sw.sampler}, "
              f"{', '.join(f'{k} {d}' for k, d in sw.objectives.items())}); storage {url}", file=sys.stderr)
    else:
        print(f"resuming study {cfg.study}: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} "
              f"failed, {budget}", file=sys.stderr)
    print(f"  watch: {dashboard}", file=sys.stderr)


def postfix(bar, study, sw) -> None:
    """The progress bar's counts and the best configuration mean so far (not a lucky seed)."""
    from harness.optuna_parts import tally

    trials = study.get_trials(deepcopy=False)
    c = tally(trials)
    post = {"ok": c["complete"], "pruned": c["pruned"], "failed": c["failed"]}
    if len(sw.objectives) == 1:
        best = best_configuration(trials, dict(sw.objectives))
        metric = next(iter(sw.objectives))
        if best is not None and best[metric] is not None:
            post["best mean"] = f"{best[metric]:.4g}"
    bar.set_postfix(post, refresh=True)


def reference_lines(trials, objectives: dict[str, str]) -> list[str]:
    """'reference method=head_only train.lr=0.01: accuracy 0.59 ± 0.07 (3 seeds)', one per arm."""
    arms: dict[str, list[float]] = {}
    m = next(iter(objectives))
    for t in trials:
        if t.state.name == "COMPLETE" and t.user_attrs.get("reference") and t.user_attrs.get(m) is not None:
            arms.setdefault(" ".join(t.user_attrs["reference"]), []).append(float(t.user_attrs[m]))
    out = []
    for arm, vals in arms.items():
        ci = t_half_width(vals)
        out.append(f"reference {arm}: {m} {_metric(sum(vals) / len(vals))}" + ("" if math.isnan(ci) else f" ± {_metric(ci)}")
                   + f" ({len(vals)} seed{'s' if len(vals) != 1 else ''})")
    return out


def trial_line(state: str, info: dict) -> str:
    """One line per finished trial, written above the progress bar."""
    params = " ".join(f"{k}={_value(v)}" for k, v in info["params"].items()) or " ".join(info.get("reference") or [])
    head = f"trial {info['number']:>3} {state:<8} {params} seed={info['seed']}"
    if state == "COMPLETE":
        return (f"{head}  accuracy={_num(info.get('accuracy'))} flops={_num(info.get('flops'))} "
                f"device-s={_num(info.get('device_seconds'))}"
                + (f" stopped at step {info.get('steps')}" if info.get("stopped_early") else "")
                + (f"  [{info['degenerate']}: set aside]" if info.get("degenerate") else ""))
    return f"{head}  {info.get('fail_reason') or info.get('prune_reason') or ''}"


def trial_table(trials, axes: list[str], objectives) -> str:
    """Single trials (one row per seed): the Pareto set of a multi-objective study."""
    cols = ["trial", *axes, "seed", "accuracy", "flops", "device-s", "state"]
    extra = [k for k in objectives if k not in ("accuracy", "flops")]
    cols[-1:-1] = extra
    rows = []
    for t in trials:
        u = t.user_attrs
        rows.append([str(t.number), *(_value(t.params.get(a)) for a in axes), str(u.get("seed", "-")),
                     _num(u.get("accuracy")), _num(u.get("flops")), _num(u.get("device_seconds")),
                     *(_num(u.get(k)) for k in extra), t.state.name])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(v.rjust(w) for v, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *map(line, rows)])


def summary(cfg, trials, c: dict, pareto, url: str, dashboard: str, notes=()) -> int:
    """The end of a sweep: counts, the configurations (seed means ± 95% CI, best mean first) or the
    Pareto set, the best configuration, and the command that reruns its first seed as a single run.
    Returns the driver's exit code (1 when nothing completed)."""
    from omegaconf import OmegaConf

    sw = cfg.sweep
    print(f"\nstudy {cfg.study}: {c['complete']} complete, {c['pruned']} pruned, {c['failed']} failed"
          + (f", {c['retried']} retried" if c["retried"] else "") + f"  (storage {url})")
    for line in notes:  # racing's stops and why the study stopped (harness/study/racing.py summary_lines)
        print(line)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    if not done:
        for t in [t for t in trials if t.state.name == "FAIL"][-3:]:
            print(f"  trial {t.number}: {t.user_attrs.get('fail_reason')}")
        return 1
    axes, objectives = list(sw.space), dict(sw.objectives)
    if pareto is None:
        n = len(configurations(done, objectives))
        print(f"configurations by mean {next(iter(objectives))} over seeds, best first"
              + (" (top 10)" if n > 10 else "") + ":")
        print(summary_table(done, axes, objectives))
        print(best_line(done, axes, objectives))
        for line in learning_lines(done, axes, objectives):
            print(line)
        for line in reference_lines(done, objectives):
            print(line)
        b = best_configuration(done, objectives)
        if b is None:  # only reference arms completed
            return 0
        best = next(t for t in done if t.number == b["trials"][0])
    else:
        rows = sorted(pareto, key=lambda t: t.values[1:] + t.values[:1])
        print(f"Pareto set ({len(rows)} trials):")
        print(trial_table(rows, axes, objectives))
        best = rows[0]
    try:
        tcfg = OmegaConf.load(Path(best.user_attrs["run_dir"]) / "config.yaml")
        print(f"\nrerun trial {best.number} as a single run:\n  {rerun_command(tcfg, best.user_attrs['overrides'])}")
    except (OSError, KeyError, ValueError) as e:
        print(f"(no rerun command for trial {best.number}: {e})")
    print(f"trials: {Path(cfg.out_dir) / cfg.study}/trials/<n>/{{config.yaml,log.txt,result.json}}; "
          f"dashboard: {dashboard}")
    return 0
