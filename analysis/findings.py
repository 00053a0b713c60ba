"""A committed finding's study, so a reader can re-run its analysis from a clone.

    python -m analysis.findings pack NAME      # runs/NAME -> docs/findings/NAME (study.tar.xz, report, plan, figures)
    python -m analysis.findings unpack NAME    # docs/findings/NAME/study.tar.xz -> runs/NAME, then python -m analysis ...

The archive holds what the analysis reads and nothing else: the Optuna storage (study.db) and each trial's
result.json, predictions.jsonl, config.yaml and (with eval.benchmarks) benchmarks.jsonl; no adapters,
checkpoints or W&B run files (the analysis reads result.json first). xz over one tar stream, because every
trial repeats the same test-item texts: ~30 KB a trial, where gzip's 32 KB window keeps ~90. Unpack
refuses to write over a study that is already there, so nothing recorded is lost. Torch-free.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tarfile
from pathlib import Path

TRIAL_FILES = ("result.json", "predictions.jsonl", "config.yaml", "benchmarks.jsonl")  # the last: SFT with eval.benchmarks
COPIED = ("report.md", "report.tex", "plan.md")


def members(study_dir: Path) -> list[Path]:
    trials = sorted((p for p in (study_dir / "trials").glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
    return [study_dir / "study.db"] + [t / f for t in trials for f in TRIAL_FILES if (t / f).is_file()]


def pack(study_dir: Path, dest: Path) -> list[Path]:
    if not (study_dir / "study.db").is_file():
        raise FileNotFoundError(f"{study_dir / 'study.db'}: no study there (run it first, or pass --runs DIR)")
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "study.tar.xz"
    with tarfile.open(archive, "w:xz", preset=9) as tar:
        for path in members(study_dir):
            tar.add(path, arcname=str(path.relative_to(study_dir)))
    written = [archive]
    for name in COPIED:
        if (study_dir / name).is_file():
            written.append(Path(shutil.copy2(study_dir / name, dest / name)))
    figures = sorted((study_dir / "figures").glob("*_2col.png"))
    if figures:
        (dest / "figures").mkdir(exist_ok=True)
        written += [Path(shutil.copy2(f, dest / "figures" / f.name)) for f in figures]
    return written


def unpack(archive: Path, study_dir: Path) -> Path:
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: no committed study (this finding has no archive)")
    if (study_dir / "study.db").exists():
        raise FileExistsError(f"{study_dir / 'study.db'} exists: not overwriting a recorded study "
                              "(move it away, or unpack into another --runs DIR)")
    study_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:xz") as tar:
        tar.extractall(study_dir, filter="data")  # "data": no absolute paths, links or devices from the archive
    return study_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.findings", description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["pack", "unpack"])
    p.add_argument("name", help="the study (sweep) name, e.g. lr_rank")
    p.add_argument("--runs", type=Path, default=Path("runs"), help="the runs directory (default runs)")
    p.add_argument("--findings", type=Path, default=Path("docs/findings"), help="default docs/findings")
    args = p.parse_args(argv)
    study_dir, dest = args.runs / args.name, args.findings / args.name
    try:
        if args.action == "pack":
            for path in pack(study_dir, dest):
                print(f"wrote    {path}")
        else:
            print(f"unpacked {unpack(dest / 'study.tar.xz', study_dir)}; now e.g. "
                  f"python -m analysis sweep={args.name} out_dir={args.runs} --report")
    except (FileNotFoundError, FileExistsError, tarfile.TarError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
