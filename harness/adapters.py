"""What a trial keeps: its PEFT adapter in trials/<n>/adapter/, and what a study keeps of them.

trials/<n>/adapter/ holds what `peft.PeftModel.from_pretrained(base, dir)` loads: adapter_model.safetensors
(the LoRA matrices and, for classification, the trained head: peft saves modules_to_save with the
adapter), adapter_config.json (base_model_name_or_path = the unquantized base), the tokenizer, and
harness_adapter.json (task, labels, base, quantization: what `python -m harness.export` needs).

train.save_adapter: all (every trial keeps its adapter; the default of a single run), best (each
trial saves, and at the end of the study (or of each resume) only the best configuration's seeds
keep theirs; the default in a study), none. Best is report.best_configuration's: the highest mean of
the first objective over seeds, ties to lower FLOPs. Each trial's config.yaml and result.json are
attached to its Optuna trial with optuna.artifacts (stored under runs/<study>/artifacts/), and a kept
adapter's weights (under 50 MB) to the study, so optuna-dashboard shows them.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ADAPTER = "adapter"
META = "harness_adapter.json"
ATTACH_LIMIT = 50 * 2**20  # bytes: a bigger adapter stays on disk only (the dashboard would copy it)


def policy(cfg) -> str:
    """train.save_adapter, its null resolved: best in a study, all for a single run."""
    return cfg.train.save_adapter or ("best" if cfg.get("sweep") else "all")


def save(model, tokenizer, run_dir: Path, cfg, labels: list[str] | None = None) -> Path | None:
    """Write trials/<n>/adapter/ (main process only; model unwrapped from DDP). None when nothing is
    kept: save_adapter=none, or method head_only/full (no PEFT adapter: their weights are the model)."""
    if policy(cfg) == "none" or cfg.method != "lora":
        return None
    from harness.models import weights_path

    out = Path(run_dir) / ADAPTER
    base = weights_path(cfg.model)
    for pcfg in model.peft_config.values():  # the CPU 4-bit path loads a quantized copy: name the original
        pcfg.base_model_name_or_path = base
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta = {"task": cfg.task.type, "labels": labels, "base": base, "revision": cfg.model.revision,
            "family": cfg.model.family, "quant": cfg.quant.mode, "study": cfg.study, "trial": cfg.trial}
    (out / META).write_text(json.dumps(meta, indent=1) + "\n")
    return out


def _finished(t) -> bool:
    return t.state.name in ("COMPLETE", "PRUNED", "FAIL")


def keep_best(study, cfg, rerun_command=None) -> list[int]:
    """At the end of a study (and of each resume): write runs/<study>/best.yaml; with save_adapter=best,
    delete the adapters of every finished trial outside the best configuration, say what was kept,
    and attach the kept adapters' weights to the study. Returns the trial numbers whose adapters are kept."""
    from harness import report
    from harness.record import trial_dir

    trials = study.get_trials(deepcopy=False)
    dirs = {t.number: trial_dir(cfg.out_dir, cfg.study, t.number) / ADAPTER for t in trials}
    best = report.best_configuration(trials, dict(cfg.sweep.objectives))
    if best:
        write_best(cfg, best, next(t for t in trials if t.number == best["trials"][0]), rerun_command)
    if policy(cfg) != "best":
        return sorted(n for n, d in dirs.items() if d.is_dir())
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
