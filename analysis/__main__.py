"""python -m analysis sweep=NAME [overrides ...] [--out DIR] [--refresh] [--publish]
python -m analysis --wandb ENTITY/PROJECT --group STUDY [--storage URL] [--publish]

Loads every trial of a study (W&B runs joined with the Optuna study) into one frame, cached as
runs/<study>/trials.parquet, and writes paper figures to runs/<study>/figures/ and tables to
runs/<study>/tables/ (or under --out). The overrides are the ones the study ran with (Hydra
syntax, e.g. `sweep=lora_rank out_dir=/scratch/runs`): they give the study name, out_dir and
the Optuna storage URL. Missing inputs end with a one-line message and exit code 2.
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
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default: the config's storage.url)")
    p.add_argument("--out", type=Path, help="write figures/ and tables/ here instead of runs/<study>/")
    p.add_argument("--refresh", action="store_true", help="re-read the runs even if the cached frame is fresh")
    p.add_argument("--publish", action="store_true", help="also build a W&B Report (online studies)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(sys.argv[1:] if argv is None else argv)
    from harness.config import ConfigError, load

    from analysis import figures, runs, tables

    overrides = list(args.overrides)
    if args.group:
        overrides.append(f"study={args.group}")
    if args.wandb and args.wandb.count("/") != 1:
        print(f"error: --wandb wants ENTITY/PROJECT, got {args.wandb!r}", file=sys.stderr)
        return 2
    if args.wandb and not args.group:
        print("error: --wandb needs --group STUDY (the W&B group the study's runs were logged under)", file=sys.stderr)
        return 2
    try:
        cfg = load(overrides)
        study = runs.Study(name=cfg.study, dir=Path(cfg.out_dir) / cfg.study,
                           storage_url=args.storage or cfg.storage.url, wandb_path=args.wandb)
        if not cfg.get("sweep") and cfg.study == "single" and not args.group:
            raise runs.AnalysisError("which study? pass sweep=NAME (or study=NAME, or --group NAME)")
        loaded = runs.load(study, refresh=args.refresh)
    except ConfigError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # Hydra's hint, on one line
        return 2
    except runs.AnalysisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    df = loaded.trials
    for note in loaded.notes:
        print(f"note: {note}")
    counts = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())
    print(f"study {study.name}: {len(df)} trials ({counts}); sources: {', '.join(df['source'].unique())}")
    print(f"frame    {runs.cache_paths(study)[0]}")
    root = args.out or study.dir
    written = figures.write_all(loaded, root / "figures", say=lambda m: print(f"note: {m}"))
    written += tables.write_all(loaded, root / "tables", say=lambda m: print(f"note: {m}"))
    for path in written:
        print(f"wrote    {path}")
    best = tables.best_configs(df)
    if not best.empty:
        print("\nbest configurations:\n" + best.head(5).to_markdown(index=False))
    if args.publish:
        from analysis.publish import publish

        print(publish(study.name, args.wandb, best.to_markdown(index=False) if not best.empty else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
