"""Learning curves of the embedded default: held-out accuracy vs optimizer step, per learning rate
and seed, long enough to see the plateau (issue 23, items 4 and 7).

    python -m bench.curve run curve_cls_s0 curve_cls_s1 ...   # train the named studies (resumable)
    python -m bench.curve                                      # analyse what is there: JSON, table, figure
    python -m bench.curve --quick                              # tiny model, a few steps (smoke test)

Every study is a grid study through the real CLI (`python -m harness -m train.lr=A,B seed=S ...`),
so rerunning the same command resumes it; one study per seed so that a partial run already holds
every learning rate. The records are read back with `harness.record.read_record` from
runs/bench_curve/<study>/trials/*/result.json; the record's `evals` list is the curve (intermediate
evals every train.eval_every steps, the last entry the final eval on the whole test split).
One torch process at a time, 1 thread, nice 10: the box is shared.

Plateau: a curve (a seed's, or the seed mean) has levelled off at the first eval step s from which
the gain to the end is < 0.5 point, i.e. max(curve after s) - curve(s) < tol; "converged" when the
gain over the last 25% of the steps (last eval minus the eval at 75% of max_steps) is < tol.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS, machine, table

OUT = Path("runs/bench_curve")
EVERY = ["train.eval_every=40", "eval.intermediate_examples=400", "hardware.threads=1",
         "tracking.mode=disabled", "train.save_adapter=none"]
CLS = ["train.max_steps=600", *EVERY]
SFT = ["task=sft", "train.max_steps=300", "train.eval_every=50", "eval.intermediate_examples=100",
       "hardware.threads=1", "tracking.mode=disabled", "train.save_adapter=none"]
# The train pool a 2,000/2,000 split leaves, on the default 400 test items (the same items as the main
# curves, so the comparison pairs by seed; a 2,000-item pool nested in the 3,600 is the same size of pool).
SPLIT = ["data.train_size=2000"]
STUDIES = {
    **{f"curve_cls_s{s}": ["train.lr=1e-3,2e-3", f"seed={s}", *CLS] for s in range(5)},
    # the collapse edge: short single-seed runs at higher learning rates
    "curve_edge": ["train.lr=5e-3,1e-2", "seed=0", "train.max_steps=160", *EVERY],
    "curve_edge_s1": ["train.lr=5e-3,7e-3", "seed=1", "train.max_steps=160", *EVERY],
    # item 7: does the 2,000-item train pool of a 2,000/2,000 split reach the same plateau?
    **{f"curve_split_s{s}": ["train.lr=choice(2e-3)", f"seed={s}", *CLS, *SPLIT] for s in range(3)},
    "curve_sft_time": ["train.lr=choice(1e-3)", "seed=0", *SFT, "train.max_steps=20", "train.eval_every=10"],
    **{f"curve_sft_s{s}": ["train.lr=5e-4,2e-3", f"seed={s}", *SFT] for s in range(3)},
    # longer SFT curves, to reach the plateau the 300-step ones did not (one study per lr, so two run side by side)
    **{f"curve_sft500_lr{lr}": [f"train.lr=choice({lr})", "seed=0,1,2", *SFT, "train.max_steps=500"]
       for lr in ("2e-3", "4e-3")},
}
QUICK_OUT = Path("runs/bench_curve_quick")
QUICK = {"curve_quick": ["model=tiny_bert", "data=tiny", "train.lr=1e-3,5e-2", "seed=0,1", "train.max_steps=12",
                         "train.eval_every=3", "hardware.threads=1", "tracking.mode=disabled",
                         "train.save_adapter=none"]}


def run_study(name: str, overrides: list[str], out: Path = OUT) -> int:
    """One grid study through the CLI in a niced child; its console output goes to <out>/<name>.log."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["nice", "-n", "10", sys.executable, "-m", "harness", "-m", *overrides, f"study={name}", f"out_dir={out}"]
    env = {**os.environ, "WANDB_MODE": "disabled", "HARNESS_QUIET": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(out / f"{name}.log", "a") as log:
        log.write(f"\n# {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        t0 = time.time()
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
        log.write(f"# exit {rc} after {time.time() - t0:.0f} s\n")
    return rc


def run(names: list[str], stop_at: float | None, studies: dict = STUDIES, out: Path = OUT) -> int:
    bad = [n for n in names if n not in studies]
    if bad:
        print(f"unknown study {bad[0]}; known: {', '.join(studies)}", file=sys.stderr)
        return 2
    for n in names:
        if stop_at and time.time() > stop_at:
            print(f"stop time reached: {n} and after not started; rerun to resume", flush=True)
            break
        print(f"{time.strftime('%H:%M:%S')} {n} ...", flush=True)
        rc = run_study(n, studies[n], out)
        print(f"{time.strftime('%H:%M:%S')} {n} exit {rc}", flush=True)
    return 0

# ---------------------------------------------------------------------------- analysis

CONVERGED_TOL = 0.005   # "converged": gain over the last 25% of the steps below half a point
PLATEAU_TOL = 0.01      # levelled off: within 1 point of the final level (a 3-seed mean on 400 items has ~1.2 points of eval noise)
FAMILY = re.compile(r"_(s\d+|lr[\d.e-]+)$")  # a study's family: its name less a seed or lr suffix


def binomial_se(p: float, n: int) -> float:
    """Standard error of one trial's accuracy on n held-out items at true accuracy p."""
    return math.sqrt(p * (1 - p) / n)


def level(steps: list[int], accs: list[float]) -> float:
    """The curve's final level: the mean of its evals in the last 25% of the steps."""
    last = [a for s, a in zip(steps, accs) if s >= 0.75 * steps[-1]]
    return sum(last) / len(last)


def plateau_step(steps: list[int], accs: list[float], tol: float = PLATEAU_TOL) -> int:
    """The first eval step from which the curve stays within tol below its final level (level())."""
    lv = level(steps, accs)
    for i, s in enumerate(steps):
        if all(a >= lv - tol for a in accs[i:]):
            return s
    return steps[-1]


def at_step(curve: dict[int, float], step: float) -> float:
    """The eval at the eval step nearest to `step` (ties: the later)."""
    return curve[min(curve, key=lambda s: (abs(s - step), -s))]


def gain_last_quarter(curve: dict[int, float]) -> float:
    """Last eval minus the eval at 75% of the trial's steps."""
    last = max(curve)
    return curve[last] - at_step(curve, 0.75 * last)


def load(out: Path) -> list[dict]:
    """One row per trial record under out/<study>/trials/*/result.json (through harness.record.read_record)."""
    from harness.record import read_record

    rows = []
    for path in sorted(out.glob("*/trials/*/result.json")):
        rec = read_record(path)
        if rec is None:
            continue
        extra = {**(rec.model_extra or {}), **{k: v for k, v in rec if v is not None}}  # declared or extra fields
        cfg = extra.get("config") or {}
        curve = {e["step"]: e["accuracy"] for e in rec.evals if e.get("accuracy") is not None}
        if rec.baseline_accuracy is not None:
            curve = {0: rec.baseline_accuracy, **curve}  # the base model (and untrained head) before step 1
        ph = extra.get("phase_seconds") or {}
        n_evals = len(rec.evals)
        test_n = extra.get("test_size") or cfg.get("data", {}).get("test_size")
        maj = rec.majority_accuracy
        rows.append({
            "study": rec.study, "family": FAMILY.sub("", rec.study or ""), "trial": rec.trial, "status": rec.status,
            "task": cfg.get("task", {}).get("type"), "model": cfg.get("model", {}).get("name"),
            "lr": cfg.get("train", {}).get("lr"), "seed": cfg.get("seed"), "max_steps": cfg.get("train", {}).get("max_steps"),
            "train_size": extra.get("train_size"), "test_size": test_n,
            "intermediate_examples": extra.get("intermediate_eval_examples"),
            "curve": curve, "accuracy": rec.accuracy, "majority": maj, "steps": rec.steps,
            # a trial that predicts one class for every item scores exactly the majority share
            "collapsed": bool(rec.accuracy is not None and maj is not None and test_n
                              and abs(rec.accuracy - maj) < 0.5 / test_n),
            "wall_seconds": rec.wall_seconds, "device_seconds": rec.device_seconds,
            "s_per_step": ph["train"] / rec.steps if ph.get("train") and rec.steps else None,
            "s_per_eval": ph["eval"] / n_evals if ph.get("eval") and n_evals else None,
        })
    return rows


def _ci(values) -> tuple[float, float, int]:
    from analysis.stats import t_interval

    return t_interval(values)


def summarise(rows: list[dict]) -> list[dict]:
    """One entry per (study family, lr): the seed-mean curve with 95% t intervals, its plateau step,
    accuracy and seed spread at step 80 and at the end, the gain over the last 25% of the steps."""
    out = []
    for (fam, lr), grp in itertools.groupby(sorted((r for r in rows if r["status"] == "complete"),
                                                   key=lambda r: (r["family"], r["lr"])),
                                            key=lambda r: (r["family"], r["lr"])):
        grp = list(grp)
        steps = sorted(set.intersection(*(set(r["curve"]) for r in grp)))
        mean = [_ci([r["curve"][s] for r in grp]) for s in steps]
        mcurve = [m for m, _, _ in mean]
        finals = [r["curve"][max(r["curve"])] for r in grp]
        at80 = [at_step(r["curve"], 80) for r in grp]
        gains = [gain_last_quarter(r["curve"]) for r in grp]
        g, g_hw, _ = _ci(gains)
        fm, fhw, n = _ci(finals)
        m80, hw80, _ = _ci(at80)
        out.append({
            "family": fam, "lr": lr, "seeds": sorted(r["seed"] for r in grp), "n": n, "task": grp[0]["task"],
            "max_steps": grp[0]["max_steps"], "train_size": grp[0]["train_size"], "test_size": grp[0]["test_size"],
            "steps": steps, "mean": mcurve, "ci": [hw for _, hw, _ in mean],
            "seed_curves": {r["seed"]: [r["curve"][s] for s in steps] for r in grp},
            "plateau_step": plateau_step(steps, mcurve), "level": level(steps, mcurve),
            "seed_plateau_steps": sorted(plateau_step(steps, [r["curve"][s] for s in steps]) for r in grp),
            "acc80": m80, "acc80_ci": hw80, "spread80": max(at80) - min(at80),
            "final": fm, "final_ci": fhw, "spread_final": max(finals) - min(finals),
            "gain_last25": g, "gain_last25_ci": g_hw,
            "converged": abs(g) < CONVERGED_TOL, "collapsed": sum(r["collapsed"] for r in grp),
            "s_per_step": _median([r["s_per_step"] for r in grp]), "s_per_eval": _median([r["s_per_eval"] for r in grp]),
            "wall_seconds": _median([r["wall_seconds"] for r in grp]),
            "wall_seconds_range": [min(r["wall_seconds"] for r in grp), max(r["wall_seconds"] for r in grp)],
        })
    return out


def early_stop(curve: dict[int, float], patience: int, min_delta: float) -> int:
    """The eval step at which transformers' EarlyStoppingCallback semantics stop a trial: after each
    eval (step 0, the baseline, excluded) the patience counter resets when the metric beats the best
    so far by more than min_delta, else grows by one; the trial stops when it reaches patience.
    A trial that never stops runs to its last eval. Exact on these curves: the lr schedule is planned
    over max_steps either way, so an early-stopped run is the same run cut at the stop."""
    best, waited = None, 0
    steps = sorted(s for s in curve if s > 0)
    for s in steps:
        if best is None or curve[s] - best > min_delta:
            best, waited = curve[s], 0
        else:
            waited += 1
            if waited >= patience:
                return s
    return steps[-1]


def replay_early_stopping(rows: list[dict], main: str = "curve_cls", patiences=(2, 3, 4, 5),
                          deltas=(0.0, 0.005, 0.01)) -> list[dict]:
    """Each (patience, min_delta) on every complete main-curve trial: where it stops, the share of the
    steps it saves, and the accuracy it ends with (last eval; best eval so far) against the full run's last eval."""
    trials = [r for r in rows if r["status"] == "complete" and r["family"] == main and not r["collapsed"]]
    out = []
    for p, d in itertools.product(patiences, deltas):
        stops, saved, loss_last, loss_best = [], [], [], []
        for r in trials:
            c, last = r["curve"], max(r["curve"])
            s = early_stop(c, p, d)
            stops.append(s)
            saved.append(1 - s / last)
            loss_last.append(c[last] - c[s])
            loss_best.append(c[last] - max(a for t, a in c.items() if 0 < t <= s))
        if not trials:
            continue
        n = len(trials)
        out.append({"patience": p, "min_delta": d, "trials": n, "median_stop": _median(stops),
                    "max_stop": max(stops), "mean_saved": sum(saved) / n,
                    "mean_loss_last": sum(loss_last) / n, "worst_loss_last": max(loss_last),
                    "mean_loss_best": sum(loss_best) / n, "worst_loss_best": max(loss_best)})
    return out


def plateau_noise(rows: list[dict], main: str = "curve_cls") -> dict:
    """Eval-to-eval jitter of single trials on their plateau (the last half of the steps): the SD of
    consecutive differences, what a min_delta must clear not to reset the patience on noise."""
    diffs = []
    for r in rows:
        if r["status"] != "complete" or r["family"] != main or r["collapsed"]:
            continue
        steps = sorted(s for s in r["curve"] if s >= r["max_steps"] / 2)
        diffs += [r["curve"][b] - r["curve"][a] for a, b in itertools.pairwise(steps)]
    if len(diffs) < 2:
        return {"n": len(diffs)}
    m = sum(diffs) / len(diffs)
    return {"n": len(diffs), "mean": m, "sd": math.sqrt(sum((x - m) ** 2 for x in diffs) / (len(diffs) - 1))}


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _pm(m, hw, digits=3):
    return "" if m is None else f"{m:.{digits}f}" + ("" if hw is None or math.isnan(hw) else f" ± {hw:.{digits}f}")


def markdown(groups: list[dict]) -> str:
    cols = ["curve", "lr", "seeds", "steps", "acc @80 (± 95% CI)", "range @80", "final (± 95% CI)", "range final",
            "plateau step", "level", "gain last 25%", "collapsed", "s/step", "s/trial"]
    rows = []
    for g in groups:
        rows.append({"curve": f"{g['family']} (train {g['train_size']}, test {g['test_size']})", "lr": f"{g['lr']:g}",
                     "seeds": g["n"], "steps": g["max_steps"], "acc @80 (± 95% CI)": _pm(g["acc80"], g["acc80_ci"]),
                     "range @80": f"{g['spread80']:.3f}", "final (± 95% CI)": _pm(g["final"], g["final_ci"]),
                     "range final": f"{g['spread_final']:.3f}", "plateau step": g["plateau_step"],
                     "level": f"{g['level']:.3f}",
                     "gain last 25%": _pm(g["gain_last25"], g["gain_last25_ci"]),
                     "collapsed": f"{g['collapsed']}/{g['n']}",
                     "s/step": f"{g['s_per_step']:.2f}" if g["s_per_step"] else "",
                     "s/trial": "-".join(f"{w:.0f}" for w in sorted(set(g["wall_seconds_range"])))})
    return table(rows, cols)


def se_table(ns=(400, 1000, 2000), ps=(0.75, 0.8)) -> list[dict]:
    return [{"n": n, "p": p, "se_points": 100 * binomial_se(p, n), "ci95_points": 196 * binomial_se(p, n),
             "se_diff_two_trials_points": 100 * math.sqrt(2) * binomial_se(p, n)} for n in ns for p in ps]


def figure(groups: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in ("classification", "sft") if any(g["task"] == t for g in groups)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.5 * len(tasks), 4.2), squeeze=False)
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3)
    for ax, task in zip(axes[0], tasks):
        for g in (g for g in groups if g["task"] == task):
            c = next(colors)
            lab = f"{g['family']} lr={g['lr']:g} (n={g['n']}, train {g['train_size']}/test {g['test_size']})"
            if g["n"] < 3:  # single-seed probes (the collapse edge): thin dashed lines, no band or plateau
                for i, sc in enumerate(g["seed_curves"].values()):
                    ax.plot(g["steps"], sc, color=c, lw=1, ls="--", marker="x", ms=3, label=None if i else lab)
                continue
            for sc in g["seed_curves"].values():
                ax.plot(g["steps"], sc, color=c, alpha=0.25, lw=0.8)
            ax.plot(g["steps"], g["mean"], color=c, lw=2, label=lab, marker="o", ms=3)
            lo = [max(0.0, m - (0 if math.isnan(h) else h)) for m, h in zip(g["mean"], g["ci"])]
            hi = [min(1.0, m + (0 if math.isnan(h) else h)) for m, h in zip(g["mean"], g["ci"])]
            ax.fill_between(g["steps"], lo, hi, color=c, alpha=0.15)
            ax.axvline(g["plateau_step"], color=c, ls=":", lw=1)
        default = 80 if task == "classification" else 30  # train.max_steps of conf/train, conf/task/sft.yaml
        if ax.get_xlim()[1] > default:
            ax.axvline(default, color="grey", ls="--", lw=1)
        if task == "classification":
            ax.axhline(0.5, color="black", lw=0.6, alpha=0.5)  # the majority share: a collapsed trial
            ax.set_ylim(0.4, 0.9)  # 2-seed t intervals reach far outside; the band is clipped, not the curves
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("held-out accuracy" if task == "classification" else "held-out exact match")
        ax.set_title(f"{task}: mean ± 95% CI over seeds (faint: single seeds; dotted: plateau; dashed: default budget)",
                     fontsize=8)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def analyse(out: Path, name: str = "curve", results: Path = RESULTS, main: str = "curve_cls",
            family: str | None = None) -> int:
    """Read the records under out/ (of one study family, if given), write results/<name>.{json,md,png}."""
    rows = [r for r in load(out) if family is None or r["family"] == family]
    if not rows:
        print(f"no trial records under {out}/: run `python -m bench.curve run ...` first", file=sys.stderr)
        return 2
    groups = summarise(rows)
    es = replay_early_stopping(rows, main)
    md = markdown(groups)
    if es:
        md += "\n\nEarly stopping replayed on the main curves (accuracy lost vs the full run's last eval):\n\n" + table(
            [{**e, "mean_saved": f"{e['mean_saved']:.0%}"} for e in es],
            ["patience", "min_delta", "trials", "median_stop", "max_stop", "mean_saved", "mean_loss_last",
             "worst_loss_last", "mean_loss_best", "worst_loss_best"])
    print(md)
    results.mkdir(parents=True, exist_ok=True)
    png, path = results / f"{name}.png", results / f"{name}.json"
    figure(groups, png)
    (results / f"{name}.md").write_text(md + "\n")
    path.write_text(json.dumps({"benchmark": "curve", "machine": machine(), "records": str(out),
                                "studies": STUDIES, "plateau_tol": PLATEAU_TOL, "converged_tol": CONVERGED_TOL,
                                "groups": groups, "trials": rows, "binomial_se": se_table(),
                                "early_stopping": es, "plateau_noise": plateau_noise(rows, main)}, indent=1, default=str))
    print(f"wrote {path}, {png}, {results / (name + '.md')}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", nargs="?", default="analyse", choices=["run", "analyse"])
    ap.add_argument("names", nargs="*", help="studies to run (run), in order")
    ap.add_argument("--stop-at", default=None, help="HH:MM: start no study after it")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", metavar="FAMILY", help="analyse: only this study family (e.g. curve_sft), into "
                    "bench/results/<FAMILY>.*; the records of the other families may be gone")
    args = ap.parse_args(argv)
    stop = None
    if args.stop_at:
        h, m = map(int, args.stop_at.split(":"))
        t = time.localtime()
        stop = time.mktime((t.tm_year, t.tm_mon, t.tm_mday, h, m, 0, 0, 0, -1))
    if args.action == "run":
        return run(args.names or (list(QUICK) if args.quick else []), stop, QUICK if args.quick else STUDIES,
                   QUICK_OUT if args.quick else OUT)
    if args.quick:  # smoke test: outputs next to the quick records, never over the committed ones
        return analyse(QUICK_OUT, "curve", QUICK_OUT, "curve_quick")
    if args.only:
        return analyse(OUT, args.only, main=args.only, family=args.only)
    return analyse(OUT)


if __name__ == "__main__":
    raise SystemExit(main())
