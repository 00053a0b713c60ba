"""python -m harness [-m] [--cfg [job|all]] [sweep=NAME] [group=option ...] [key=value ...]

No sweep: one trial on the composed config. With sweep=NAME: the Optuna study in sweeps/NAME.yaml.
With -m and comma/range/choice values: a grid study over them. `--help` lists groups and sweeps.
"""
from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf

from harness.record import ADAPTER, TrialRecord, read_record, trial_dir


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from harness.cli import args as cli
    from harness.config.schema import ConfigError, complete, load, one_line, to_yaml
    from harness.data.load import DataError

    try:
        args = cli.parse(argv)
        if args.help or args.version:
            print(cli.help_text() if args.help else cli.version())
            return 0
        overrides, note = cli.multirun(args.overrides) if args.multirun else (args.overrides, None)
        if not args.multirun:
            cli.reject_sweeps(overrides)
        from harness.config.devices import pick_hardware

        overrides, picked = pick_hardware(overrides)  # trials and config.yaml get the option it picked
        for msg in (note, picked):
            if msg:
                cli.say(msg)
        cfg = complete(load(overrides))
        if args.show:
            print(to_yaml(cfg))
            return 0
        from harness.cli import preflight

        preflight.check(cfg)  # the devices, data, out_dir, hub model, W&B login: before any model loads
        if cfg.train.resume_from:  # a checkpoint of another configuration would fail after the model loads
            from harness.trial import checkpoint  # reads the checkpoint's state with torch: the entry point's call

            checkpoint.check(cfg)
    except (ConfigError, DataError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    return _run(cfg, overrides)


def _run(cfg, overrides: list[str]) -> int:
    from harness.config.schema import ConfigError, one_line
    from harness.data.load import DataError
    from harness.config.presets import ModelError
    from harness.record import TrialFailed, TrialPruned  # not harness.train: the driver never imports torch

    try:
        if cfg.launcher.name == "slurm":
            from harness.runners.slurm import submit

            return submit(cfg, overrides)
        if cfg.get("sweep"):
            from harness.study.driver import run_study

            return run_study(cfg, overrides)
        rec = _run_single(cfg)
    except (ConfigError, DataError, ModelError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2
    except (TrialFailed, TrialPruned) as e:
        print(f"trial did not complete: {e}", file=sys.stderr)
        return 1
    if rec.exact_match is not None:  # task=sft: accuracy is the exact match
        print(f"\nexact match {_fmt(rec.exact_match)}  (zero-shot baseline {_fmt(rec.baseline_accuracy)}, "
              f"most common answer {_fmt(rec.majority_accuracy)})")
        print("         " + ", ".join(f"{k} {_fmt(getattr(rec, k))} (zero-shot {_fmt(getattr(rec, 'baseline_' + k))})"
                                      for k in ("rouge_l", "bleu", "perplexity")))
    else:
        print(f"\naccuracy {_fmt(rec.accuracy)}  (zero-shot baseline {_fmt(rec.baseline_accuracy)}, "
              f"majority class {_fmt(rec.majority_accuracy)})")
    for b, p in rec.benchmark_pairs.items():  # eval.benchmarks: the same items before and after
        print(f"{b:<9} {_fmt(p['base'])} -> {_fmt(p['tuned'])}  ({p['items']} items; {p['lost']} lost, "
              f"{p['gained']} gained; retention {_fmt(rec.retention[b])})")
    if rec.forgetting is not None:
        print(f"forgetting {rec.forgetting:+.4f}  (mean base - tuned over {len(rec.benchmarks)} benchmark(s))")
    if rec.convergence and rec.evals and len(rec.evals) > 1:  # with intermediate evals (train.eval_every)
        print(f"learning {rec.convergence}")
    elif rec.accuracy is not None:
        print(f"learning not measured: {rec.steps} steps, no intermediate evals (train.eval_every=0): a demo, not a "
              f"trial run to its plateau" + _plateau_note(cfg, rec.accuracy))
    if rec.stopped_early:
        print(f"stopped  early at step {rec.steps} (best eval at step {rec.best_step}): {rec.steps_saved} steps, "
              f"~{rec.flops_saved:.3g} train FLOPs saved")
    if rec.degenerate:
        print(f"warning  degenerate trial: {rec.degenerate}"
              + (f" (predicted {rec.pred_histogram})" if rec.degenerate == "collapsed" else ""))
    print(f"cost     {rec.flops:.3g} FLOPs, {rec.tokens:,} train tokens, {rec.device_seconds:.1f} device-s "
          f"(${rec.cost_usd:.5f}), peak memory {rec.peak_memory_bytes / 2**20:.0f} MiB, "
          f"{rec.trainable_params:,} trainable params")
    run_dir = trial_dir(cfg.out_dir, rec.study, rec.trial)
    print(f"record   {run_dir}/result.json")
    if (run_dir / ADAPTER).is_dir():  # train.save_adapter (harness/trial/adapters.py)
        print(f"adapter  {run_dir}/{ADAPTER} (load with peft; merge: python -m harness.export {run_dir} --merge)")
    wb = rec.wandb
    if wb and wb.mode == "offline":
        run_files = wb.dir.rsplit("/files", 1)[0]
        print(f"W&B      {run_files} (offline; upload with `wandb sync {run_files}`)")
    elif wb and wb.url:
        print(f"W&B      {wb.url}")
    return 0


# The embedded default's measured plateau (BENCHMARKS.md "Learning curves and default budgets": lr 1e-3 / 2e-3,
# 3 seeds, 600 steps, on the 400-item test split with 3,200 train examples)
_PLATEAU = {("minilm", "rt_polarity"): (0.79, "360-440")}


def _plateau_note(cfg, accuracy: float) -> str:
    level = _PLATEAU.get((cfg.model.name, cfg.data.name))
    if level is None or cfg.get("task", {}).get("type") != "classification":
        return ""
    return (f"; the embedded default levels off at ~{level[0]:.2f} after {level[1]} steps (BENCHMARKS.md, learning "
            f"curves): {100 * (level[0] - accuracy):+.1f} points to go; the committed sweeps run to it")


def _run_single(cfg: DictConfig) -> TrialRecord:
    """`python -m harness` without a sweep: one trial, in-process for 1 process; the record it wrote."""
    from harness import train  # the entry point runs a single trial itself: torch loads here, never in the driver
    from harness.runners.process import allocate_trial, run_subprocess, write_config

    run_dir = allocate_trial(cfg)
    path = write_config(cfg, run_dir)
    if cfg.hardware.processes == 1:
        train.run(OmegaConf.load(path))
    else:
        rc = run_subprocess(cfg, path)
        if rc != 0 or not (run_dir / "result.json").is_file():
            raise SystemExit(f"trial failed (exit {rc}); see the output above and {run_dir}")
    rec = read_record(run_dir / "result.json")
    if rec is None:
        raise SystemExit(f"trial wrote no readable record: {run_dir}/result.json")
    return rec

if __name__ == "__main__":
    sys.exit(main())
