"""python -m analysis sweep=NAME [overrides ...] [--report] [--plan] [--margin M] [--epsilon E] [--cost C] [--tune AXIS]
python -m analysis --wandb ENTITY/PROJECT --group STUDY [--storage URL] [--publish]

Loads every trial of a study (its result.json records joined with the Optuna study) into one frame,
cached as runs/<study>/trials.parquet, and writes paper figures to runs/<study>/figures/, tables
to runs/<study>/tables/ and, with --report, the findings report runs/<study>/report.{md,tex} (or
under --out). --plan instead prints (and writes plan.md) what it would take to decide every
comparison within ±margin: seeds, test items, wall time. The overrides are the ones the study ran
with (Hydra syntax, e.g. `sweep=lora_rank out_dir=/scratch/runs`, and `--config-dir DIR` as for
`python -m harness`): they give the study name, out_dir and the Optuna storage URL. Trials whose
record says `degenerate` are set aside (counted, left out of every test). Missing inputs end with
a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _args(argv):
    p = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. sweep=lora_rank out_dir=runs")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs online from this W&B project")
    p.add_argument("--group", metavar="STUDY", help="W&B group (= study name) of the runs; sets study=")
    p.add_argument("--wandb-offline", action="store_true",
                   help="read the offline W&B run files (wandb leet) instead of result.json, as a cross-check")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: the config's storage.url)")
    p.add_argument("--out", type=Path, help="write figures/, tables/ and the report here instead of runs/<study>/")
    p.add_argument("--refresh", action="store_true", help="re-read the runs even if the cached frame is fresh")
    p.add_argument("--report", action="store_true", help="also write the findings report (report.md, report.tex)")
    p.add_argument("--epsilon", type=float, default=1.0,
                   help="recommend the cheapest configuration within this many accuracy points of the best (1)")
    p.add_argument("--cost", choices=("flops", "device_hours", "usd"), default="flops", help="what 'cheapest' means")
    p.add_argument("--tune", metavar="AXIS", help="compare arms each at its own best value of AXIS (e.g. train.lr)")
    p.add_argument("--publish", action="store_true", help="also build a W&B Report (online studies)")
    p.add_argument("--plan", action="store_true",
                   help="print (and write plan.md) the seeds and test items needed to decide ±margin, and the wall time")
    p.add_argument("--margin", type=float, default=None,
                   help="equivalence margin as a fraction of accuracy (0.01 = 1 point, the default; or sweep.margin)")
    p.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                   help="also read groups and sweeps from DIR, as `python -m harness --config-dir DIR`")
    return p.parse_intermixed_args(argv)  # overrides before and after the flags, as python -m harness takes them


def _searchpath(overrides: list[str], dirs: list[str]) -> list[str]:
    """--config-dir DIR as hydra.searchpath=[file://DIR], merged with one already given, by the harness
    CLI's own rule (harness/cli/args.py); raises ValueError for a DIR that is not a directory."""
    from harness.cli.args import _merge_searchpath

    if not dirs:
        return overrides
    for d in dirs:
        if not Path(d).is_dir():
            raise ValueError(f"--config-dir {d}: not a directory")
    out = list(overrides)
    merged = _merge_searchpath(out, [f"file://{Path(d).resolve()}" for d in dirs])  # takes the given one out of out
    return [*out, merged]


def _margin(args, cfg) -> float:
    """--margin, else the sweep file's sweep.margin, else 1 point."""
    if args.margin is not None:
        return args.margin
    sweep = cfg.get("sweep") if cfg is not None else None
    value = sweep.get("margin") if sweep is not None and hasattr(sweep, "get") else None
    return float(value) if value is not None else 0.01


def _claims(cfg) -> list[dict]:
    """The sweep file's sweep.claims, validated against its space (harness/config/sweep.py ClaimCfg), as dicts;
    raises ConfigError for a claim that names no searched axis or value."""
    from harness.config.schema import validate

    sweep = cfg.get("sweep") if cfg is not None else None
    if not (sweep is not None and hasattr(sweep, "get") and sweep.get("claims")):
        return []
    return [c.model_dump() for c in validate(cfg).sweep.claims]


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = _args(sys.argv[1:] if argv is None else argv)
    from analysis import figures, plotting, runs, tables
    from harness.config.schema import ConfigError, load

    try:
        overrides = _searchpath(list(args.overrides), args.config_dir)
    except ValueError as e:
        return _err(str(e))
    if args.group:
        overrides.append(f"study={args.group}")
    if args.wandb and args.wandb.count("/") != 1:
        return _err(f"--wandb wants ENTITY/PROJECT, got {args.wandb!r}")
    if args.wandb and not args.group:
        return _err("--wandb needs --group STUDY (the W&B group the study's runs were logged under)")
    if not 0 <= args.epsilon < 100:
        return _err(f"--epsilon is in accuracy points, 0 to 100; got {args.epsilon}")
    if args.margin is not None and not 0 < args.margin < 1:
        return _err(f"--margin is a fraction of accuracy (0.01 = 1 point), above 0 and below 1; got {args.margin}")
    try:
        cfg = load(overrides)
        study = runs.Study(name=cfg.study, dir=Path(cfg.out_dir) / cfg.study,
                           storage_url=args.storage or cfg.storage.url, wandb_path=args.wandb)
        if not cfg.get("sweep") and cfg.study == "single" and not args.group:
            raise runs.AnalysisError("which study? pass sweep=NAME (or study=NAME, or --group NAME)")
        loaded = runs.load(study, refresh=args.refresh, wandb_offline=args.wandb_offline)
        if args.tune and args.tune not in loaded.axes:
            raise runs.AnalysisError(f"--tune {args.tune}: not a searched axis of this study "
                                     f"({', '.join(loaded.axes) or 'none'})")
    except ConfigError as e:
        return _err(" ".join(str(e).split()))  # Hydra's hint, on one line
    except runs.AnalysisError as e:
        return _err(str(e))

    margin = _margin(args, cfg)
    try:
        claim_list = _claims(cfg)
    except ConfigError as e:
        return _err(" ".join(str(e).split()))
    if not 0 < margin < 1:
        return _err(f"sweep.margin is a fraction of accuracy (0.01 = 1 point), above 0 and below 1; got {margin}")
    from analysis import items, verdicts

    loaded, aside = items.set_aside(loaded)
    df = loaded.trials
    for note in loaded.notes:
        print(f"note: {note}")
    counts = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())
    print(f"study {study.name}: {len(df)} trials ({counts}); sources: {', '.join(df['source'].unique())}")
    if aside:
        print(f"note: set aside {sum(aside.values())} degenerate trial(s) ({', '.join(f'{k}: {v}' for k, v in aside.items())})"
              ": left out of every figure, table and test")
    from analysis import race

    for line in race.console_lines(loaded.optuna_study):  # racing's stops and the study's own stop
        print(f"note: {line.removeprefix('- ')}")
    root = args.out or study.dir
    alpha = race.level(loaded.optuna_study)[0]  # a study that could stop early: what its looks left
    if args.plan:
        from analysis import planner

        lines = planner.plan(loaded, margin, tune=args.tune)
        root.mkdir(parents=True, exist_ok=True)
        (root / "plan.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines[2:]) + f"\nwrote    {root / 'plan.md'}")
        return 0
    print(f"frame    {runs.cache_paths(study)[0]}")
    written = figures.write_all(loaded, root / "figures", say=lambda m: print(f"note: {m}"))
    written += tables.write_all(loaded, root / "tables", say=lambda m: print(f"note: {m}"), margin=margin)
    best = tables.best_configs(loaded)
    rec, cmp, found = [], None, None
    if args.report or not best.empty:
        from analysis import report

        if args.report:
            paths, rec, cmp, found = report.write(loaded, overrides, root, epsilon=args.epsilon / 100, cost=args.cost,
                                           tune=args.tune, margin=margin, claim_list=claim_list)
            written += paths
        else:
            lora, _, axes = plotting.split(loaded)
            rec = report.recommendation(lora, axes, args.epsilon / 100, args.cost)
            cmp = verdicts.compare(lora, axes, margin, alpha) if axes and not lora.empty else None
    for path in written:
        print(f"wrote    {path}")
    if not best.empty:
        from analysis.stats import configurations

        lora, _, axes = plotting.split(loaded)
        one = not lora.empty and configurations(lora, axes)["n"].max() <= 1
        head = "1 seed each: no interval over seeds" if one else "mean ± 95% CI over seeds"
        print(f"\nconfigurations ({head}), best first:\n" + best.head(8).to_markdown(index=False))
        if cmp is not None and not cmp.empty:
            print(f"\ncomparisons (better / worse / {verdicts.equivalent_word(margin)} / undecided; Holm across the "
                  f"study; how: the report's Comparisons section):\n"
                  + "\n".join(f"- {verdicts.sentence(r, margin)}" for _, r in cmp.iterrows()))
        if args.tune and axes != [args.tune] and not lora.empty:
            from analysis import tuned

            carried = [x for x in tuned.report_lines(lora, axes, args.tune, margin, alpha) if x.startswith("- conclusion")]
            print(f"\ndoes the best {args.tune} carry over between arms? (the report's section of that name)\n"
                  + "\n".join(carried))
        if claim_list and not lora.empty:
            from analysis import claims

            if found is None:  # no report: the claims on the arms as the report would compare them
                found = claims.for_study(lora, axes, args.tune, claim_list, margin, alpha)
            print("\nclaims (sweep.claims; the report's Claims section):\n" + "\n".join(claims.console_lines(found)))
        print("\nrecommendation:\n" + "\n".join(rec))
    if args.publish:
        from analysis.publish import publish

        print(publish(study.name, args.wandb, best.to_markdown(index=False) if not best.empty else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
