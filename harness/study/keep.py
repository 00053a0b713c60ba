"""What a study keeps of its trials' adapters: best.yaml, the best configuration's adapters (save_adapter=best),
and each trial's config.yaml and result.json as Optuna artifacts (stored under runs/<study>/artifacts/), a kept
adapter's weights (under 50 MB) attached to the study, so optuna-dashboard shows them. The trial saves its
adapter itself (harness/trial/adapters.py); best is the highest mean of the first objective over seeds,
ties to lower FLOPs (harness/study/summary.py best_configuration).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from harness.record import ADAPTER, adapter_policy as policy, trial_dir

ATTACH_LIMIT = 50 * 2**20  # bytes: a bigger adapter stays on disk only (the dashboard would copy it)


def _finished(t) -> bool:
    return t.state.name in ("COMPLETE", "PRUNED", "FAIL")


def keep_best(study, cfg, rerun_command=None) -> list[int]:
    """At the end of a study (and of each resume): write runs/<study>/best.yaml; with save_adapter=best,
    delete the adapters of every finished trial outside the best configuration, say what was kept,
    and attach the kept adapters' weights to the study. Returns the trial numbers whose adapters are kept."""
    from harness.study import summary as report

    trials = study.get_trials(deepcopy=False)
    dirs = {t.number: trial_dir(cfg.out_dir, cfg.study, t.number) / ADAPTER for t in trials}
    best = report.best_configuration(trials, dict(cfg.sweep.objectives))
    if best:
        write_best(cfg, best, next(t for t in trials if t.number == best["trials"][0]), rerun_command)
    if policy(cfg) != "best":
        return sorted(n for n, d in dirs.items() if d.is_dir())
    if best is None and any(t.state.name == "COMPLETE" for t in trials):
        # every configuration unstable (half or more of its seeds collapsed or diverged): nothing was chosen,
        # so nothing is thrown away either
        kept = sorted(n for n, d in dirs.items() if d.is_dir())
        print(f"[harness] adapters kept: all {len(kept)} (no stable configuration to choose a best from) in "
              f"{Path(cfg.out_dir) / cfg.study}/trials/<n>/adapter", file=sys.stderr, flush=True)
        return kept
    keep = set(best["trials"]) if best else set()
    removed = [t.number for t in trials if _finished(t) and t.number not in keep and dirs[t.number].is_dir()]
    for n in removed:
        shutil.rmtree(dirs[n])
    kept = sorted(n for n in keep if dirs[n].is_dir())
    what = ", ".join(f"{k}={v}" for k, v in best["params"].items()) if best else "none"
    print(f"[harness] adapters kept: trials {kept or 'none'} (best configuration {what}; "
          f"{len(removed)} other adapter(s) removed) in {Path(cfg.out_dir) / cfg.study}/trials/<n>/adapter",
          file=sys.stderr, flush=True)
    _attach_kept(study, cfg, {n: dirs[n] for n in kept})
    return kept


def write_best(cfg, best: dict, first, rerun_command=None) -> Path | None:
    """runs/<study>/best.yaml: the best configuration's first-seed trial config, renamed to study
    <study>-best (trial 0, no sweep), runnable as `python -m harness.train runs/<study>/best.yaml`;
    its header names the configuration, its mean, the seeds, and the `python -m harness` rerun command."""
    from omegaconf import OmegaConf, open_dict

    src = Path(first.user_attrs.get("run_dir", "")) / "config.yaml"
    if not src.is_file():
        return None
    tcfg = OmegaConf.load(src)
    metric = next(iter(cfg.sweep.objectives))
    head = [f"# best configuration of study {cfg.study}: {metric} {best[metric]:.4g} (mean of {len(best['seeds'])} "
            f"seed(s) {best['seeds']}, trials {best['trials']}): "
            + (", ".join(f"{k}={v}" for k, v in best["params"].items()) or "the one configuration"),
            f"# run it: python -m harness.train {Path(cfg.out_dir) / cfg.study / 'best.yaml'}   (seed {tcfg.seed})"]
    try:
        if rerun_command:
            head.append(f"# or: {rerun_command(tcfg, first.user_attrs['overrides'])}")
    except (OSError, KeyError, ValueError):
        pass
    with open_dict(tcfg):
        tcfg.study, tcfg.trial, tcfg.sweep = f"{cfg.study}-best", 0, None
        tcfg.train.resume_from = None
    out = Path(cfg.out_dir) / cfg.study / "best.yaml"
    out.write_text("\n".join(head) + "\n" + OmegaConf.to_yaml(tcfg))
    return out


def _store(cfg):
    from optuna.artifacts import FileSystemArtifactStore

    root = Path(cfg.out_dir) / cfg.study / "artifacts"
    root.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(base_path=str(root))


def attach_trial(trial, run_dir: Path, cfg) -> None:
    """config.yaml and result.json of a trial as Optuna artifacts of it (the driver calls this before
    tell(): Optuna refuses to change a finished trial). A failure is a warning: the study goes on."""
    from optuna.artifacts import upload_artifact

    try:
        store = _store(cfg)
        for f in (Path(run_dir) / "config.yaml", Path(run_dir) / "result.json"):
            if f.is_file():
                upload_artifact(artifact_store=store, file_path=str(f), study_or_trial=trial)
    except OSError as e:
        print(f"[harness] warning: trial {trial.number}: artifacts not attached ({e})", file=sys.stderr)


def _attach_kept(study, cfg, kept: dict[int, Path]) -> None:
    """A kept adapter's weights (under ATTACH_LIMIT) as a study artifact trial-<n>.adapter_model.safetensors
    (its trial is finished, so it cannot take one itself), once per file across resumes."""
    import tempfile

    from optuna.artifacts import get_all_artifact_meta, upload_artifact

    have = {m.filename for m in get_all_artifact_meta(study)}
    store = _store(cfg)
    for n, d in kept.items():
        weights, name = d / "adapter_model.safetensors", f"trial-{n}.adapter_model.safetensors"
        if name in have or not weights.is_file() or weights.stat().st_size > ATTACH_LIMIT:
            continue
        with tempfile.TemporaryDirectory() as tmp:  # the artifact takes its file's name
            shutil.copy(weights, Path(tmp) / name)
            upload_artifact(artifact_store=store, file_path=str(Path(tmp) / name), study_or_trial=study)
