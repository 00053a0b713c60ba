"""The command line users bring from Hydra and W&B: -m/--multirun as a grid study, --cfg job|all,
--help with groups and sweeps, hydra.* refused, "did you mean", devices and WANDB_* read early."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import TINY
from omegaconf import OmegaConf

from harness.__main__ import main
from harness.cli import args as cli
from harness.config.schema import CONF_DIR, ROOT, ConfigError, complete, load
from harness.optuna_parts import dashboard_command


def run_main(capsys, *argv) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------------------- flags and refusals


@pytest.mark.parametrize("argv,needle", [
    (["hydra.run.dir=/tmp/x"], "outputs go to out_dir=DIR"),
    (["hydra/launcher=joblib"], "outputs go to out_dir=DIR"),
    (["--cfg", "hydra"], "outputs go to out_dir=DIR"),
    (["--shell-completion"], "not supported"),
    (["-cn", "other"], "--config-dir DIR"),
    (["--frobnicate"], "unknown option"),
    (["lora.r=4,8"], "add -m to run them as a grid study"),
    (["lora.r=range(2,8)"], "add -m"),
    (["lora.rank=16"], "did you mean `lora.r`?"),
    (["+lora.rank=16"], "did you mean `lora.r`?"),
    (["train.learning_rate=1e-3"], "did you mean `train.lr`?"),
    (["-m", "train.lr=interval(1e-4,1e-2)"], "interval() has no grid"),
    (["-m", "lora.r=2,4", "sweep=lora_rank"], "drop sweep=NAME"),
    (["-m", "lora.rank=2,4", "model=tiny_bert", "data=tiny"], "-m (command line): sweep.space.lora.rank: no such "
                                                              "config key `lora.rank`; did you mean `lora.r`?"),
    (["--config-dir", "/nonexistent/dir"], "not a directory"),
])
def test_bad_command_lines_exit_2_with_one_line(capsys, argv, needle):
    rc, out, err = run_main(capsys, *argv)
    assert rc == 2 and out == "", (rc, out)
    *notes, last = err.splitlines()  # one error line; -m names its study first
    assert last.startswith("error: ") and needle in last and all(n.startswith("multirun: ") for n in notes), err


@pytest.mark.parametrize("key,meant", [("lora.rank", "lora.r"), ("loar.r", "lora.r"), ("lora.lora_alpha", "lora.alpha"),
                                       ("train.learning_rate", "train.lr"), ("train.maxsteps", "train.max_steps"),
                                       ("hardware.gpus", "hardware.processes"), ("modle", "model"), ("task.foo", None)])
def test_did_you_mean_names_the_key_from_the_schema(key, meant):
    from harness.config.keys import did_you_mean
    from harness.config.schema import ExperimentCfg

    hint = did_you_mean(key, ExperimentCfg)
    assert (f"did you mean `{meant}`?" in hint) if meant else ("did you mean" not in hint), hint


def test_a_key_the_yaml_lacks_but_the_schema_has_is_set_without_a_plus():
    # Hydra alone says "use +launcher.workers=2"; the schema knows the key, so it just works
    assert complete(load(["launcher=slurm", "launcher.workers=2", "storage=journal"])).launcher.workers == 2
    assert complete(load(["model.revision=abc123"])).model.revision == "abc123"


@pytest.mark.parametrize("flag", [["--cfg"], ["--cfg", "job"], ["--cfg", "all"], ["--cfg=all"], ["-c", "job"]])
def test_cfg_job_and_all_print_the_config(capsys, flag):
    rc, out, _ = run_main(capsys, *flag, "lora.r=3")
    assert rc == 0 and "r: 3" in out and "study: single" in out


def test_help_lists_groups_with_options_and_sweeps_with_their_description(capsys):
    rc, out, _ = run_main(capsys, "--help")
    assert rc == 0
    assert "-m, --multirun" in out
    model_line = next(ln for ln in out.splitlines() if ln.strip().startswith("model "))
    for option in ("tiny_bert", "*minilm", "hub"):  # * marks the default
        assert option in model_line.split(), model_line
    for sweep in sorted((CONF_DIR / "sweep").glob("*.yaml")):
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(sweep.stem + " ")), None)
        assert line and cli.description(sweep) in line, (sweep.stem, line)
    assert "LoRA rank at alpha = 2r" in out  # the first line of prose of sweeps/lora_rank.yaml


def test_config_dir_adds_groups_like_hydra_searchpath(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text((CONF_DIR / "model" / "tiny_bert.yaml").read_text()
                                                  .replace("name: tiny_bert", "name: mine"))
    rc, out, _ = run_main(capsys, "--config-dir", str(tmp_path), "model=mine", "--cfg")
    assert rc == 0 and "name: mine" in out


# ---------------------------------------------------------------------------- -m as a grid study


def test_multirun_overrides_become_one_grid_study():
    ov, note = cli.multirun(["lora.r=4,8,16", "lora.targets=attn_qv,all_linear", "model=tiny_bert",
                             "seed=3"])
    cfg = complete(load(ov))
    assert cfg.sweep.sampler == "grid" and list(cfg.sweep.seeds) == [3]
    assert {k: list(v.choices) for k, v in cfg.sweep.space.items()} == {
        "lora.r": [4, 8, 16], "lora.targets": ["attn_qv", "all_linear"]}
    assert cfg.study.startswith("multirun-lora.r_4-8-16__lora.targets_attn_qv-all_linear-")
    assert f"study {cfg.study}, a grid of 6 trial(s)" in note
    # another base config is another study (a resume with another config would be refused)
    other = complete(load(cli.multirun(["lora.r=4,8,16", "lora.targets=attn_qv,all_linear", "model=minilm"])[0]))
    assert other.study != cfg.study
    # range(), choice() and seeds; study= and sweep.* on the command line are kept
    ov, _ = cli.multirun(["lora.r=range(2,8,2)", "seed=0,1", "study=mine", "sweep.parallel=2"])
    cfg = complete(load(ov))
    assert list(cfg.sweep.space["lora.r"].choices) == [2, 4, 6] and list(cfg.sweep.seeds) == [0, 1]
    assert cfg.study == "mine" and cfg.sweep.parallel == 2


@pytest.mark.process
def test_multirun_runs_two_trials_as_one_study(tmp_path):
    """The issue's command, as a real process: 2 trials, one Optuna study, its name printed. The driver
    itself never imports torch (its warm workers do): its start-up is on every sweep's critical path."""
    import optuna

    argv = ["-m", "lora.r=2,4", "model=tiny_bert", "data=tiny", "train.max_steps=2", "hardware.threads=1",
            "eval.baseline=false", "tracking=disabled"]
    code = (f"import sys; from harness.__main__ import main; rc = main({argv!r}); "
            "print('driver imported', sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)); "
            "sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "driver imported []" in p.stdout, p.stdout[-2000:]
    study = next(ln.split()[2].rstrip(",") for ln in p.stderr.splitlines() if ln.startswith("multirun: study "))
    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/runs/{study}/study.db").trials
    assert sorted((t.params["lora.r"], t.state.name) for t in trials) == [(2, "COMPLETE"), (4, "COMPLETE")]
    assert f"study {study}: 2 complete" in p.stdout


# ---------------------------------------------------------------------------- devices


def test_hardware_auto_picks_what_is_there_and_says_so(capsys):
    from harness.config.devices import cuda_devices

    rc, out, err = run_main(capsys, "hardware=auto", "--cfg")
    expect = "gpu1" if cuda_devices() else "cpu"
    assert rc == 0 and f"using hardware={expect}" in err
    assert f"device: {'cuda' if cuda_devices() else 'cpu'}" in out


def test_cuda_without_enough_devices_stops_before_any_load(capsys, tmp_path):
    from harness.config.devices import cuda_devices

    n = cuda_devices()
    argv = [*TINY, f"out_dir={tmp_path}", "hardware=gpu1", f"hardware.processes={n + 1}", "train.batch_size=16",
            "train.keep_effective_batch=false"]
    rc, _, err = run_main(capsys, *argv)
    assert rc == 2 and err.count("\n") == 1, err
    assert ("no CUDA device is visible" if n == 0 else f"needs {n + 1} CUDA devices; {n} visible") in err
    assert not any(tmp_path.iterdir())  # nothing written


# ---------------------------------------------------------------------------- W&B's environment


def test_wandb_environment_sets_the_tracking_defaults_and_the_command_line_wins(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_PROJECT", "theirs")
    monkeypatch.setenv("WANDB_ENTITY", "team")
    t = complete(load([])).tracking
    assert (t.mode, t.project, t.entity) == ("disabled", "theirs", "team")
    t = complete(load(["tracking=offline", "tracking.project=mine"])).tracking
    assert (t.mode, t.project, t.entity) == ("offline", "mine", "team")
    monkeypatch.setenv("WANDB_MODE", "dryrun")  # wandb's old name for offline
    assert complete(load([])).tracking.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(ConfigError, match="WANDB_MODE=bogus is not a W&B mode"):
        complete(load([]))


@pytest.mark.parametrize("mode", ["disabled", "offline"])
def test_wandb_mode_disabled_writes_no_wandb_files(tmp_path, monkeypatch, capsys, mode):
    """WANDB_MODE=disabled: a real trial, and not one W&B file anywhere (offline: the contrast)."""
    monkeypatch.setenv("WANDB_MODE", mode)
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_main(capsys, *TINY, "train.max_steps=2", "eval.baseline=false", f"out_dir={tmp_path}/runs")
    assert rc == 0, err
    rec = json.loads((tmp_path / "runs" / "single" / "trials" / "0" / "result.json").read_text())
    assert rec["config"]["tracking"]["mode"] == mode
    wandb_files = [p for p in tmp_path.rglob("*") if "wandb" in p.name]
    assert bool(wandb_files) == (mode == "offline"), wandb_files


def test_run_tags_carry_no_values(tmp_path, monkeypatch, capsys):
    """Tags: the sweep's name and WANDB_TAGS only; every value is in the run's config already."""
    import wandb

    seen = {}
    real_init = wandb.init

    def spy(**kw):  # the real wandb.init (offline), with its arguments kept for the assertion
        seen.update(kw)
        return real_init(**kw)

    monkeypatch.setattr(wandb, "init", spy)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_TAGS", "mine, baseline")
    rc, _, err = run_main(capsys, *TINY, "train.max_steps=2", "eval.baseline=false", f"out_dir={tmp_path}")
    assert rc == 0, err
    assert seen["tags"] == ["mine", "baseline"]
    assert seen["config"]["lora"]["r"] == 8 and seen["project"] == "harness"


# ---------------------------------------------------------------------------- under a W&B Sweeps agent

RECIPE = ROOT / "docs" / "wandb_sweep.yaml"


def _agent_argv(params: dict) -> list[str]:
    """The command `wandb agent` runs for one run of docs/wandb_sweep.yaml: wandb's own sweep-file
    loader and macro expansion (sweeps/utils.py), then the substitution loop of Agent._command_run
    (a method of a live agent, which needs the server: repeated here, 5 lines)."""
    from wandb.sdk.launch.sweeps.utils import (
        create_sweep_command,
        create_sweep_command_args,
        load_sweep_config,
    )

    sweep = load_sweep_config(str(RECIPE))
    macros = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    macros.update(interpreter=["python"], program=[sweep["program"]], env=["/usr/bin/env"])
    cmd = []
    for c in map(str, create_sweep_command(list(sweep["command"]))):
        cmd += (macros.get(c[2:-1]) or []) if c.startswith("${") and c.endswith("}") else [c]
    assert cmd[:4] == ["/usr/bin/env", "python", "-m", "harness"], cmd
    return cmd[4:]


def _corners() -> list[dict]:
    """Each parameter at each listed value / at both ends of its range, the others at their first."""
    from wandb.sdk.launch.sweeps.utils import load_sweep_config

    params = load_sweep_config(str(RECIPE))["parameters"]
    ends = {k: p.get("values") or [p["min"], p["max"]] for k, p in params.items()}
    first = {k: v[0] for k, v in ends.items()}
    return [{**first, k: v} for k, vals in ends.items() for v in vals]


def test_wandb_sweep_recipe_gives_valid_configs_with_the_agents_values(monkeypatch):
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")  # as the agent sets it; no WANDB_MODE: online
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "agents-project")
    for params in _corners():
        cfg = complete(load(cli.parse(_agent_argv(params)).overrides))
        got = {k: OmegaConf.select(cfg, k) for k in params}
        assert got == params and cfg.study == "wandb_sweep"
        assert (cfg.tracking.mode, cfg.tracking.project) == ("online", "agents-project")


def test_a_run_started_as_the_agent_starts_it_joins_the_agents_run(tmp_path, monkeypatch, capsys):
    """The agent's command and environment (offline: there is no W&B server here), on the tiny model:
    the trial records the agent's values and its W&B run is the one the agent created (WANDB_RUN_ID)."""
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")
    monkeypatch.setenv("WANDB_RUN_ID", "agentrun1")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # the agent sets it to its cwd
    monkeypatch.chdir(tmp_path)
    params = {"lora.r": 4, "lora.targets": "attn_qv", "train.lr": 0.001}
    argv = [*_agent_argv(params), "model=tiny_bert", "data=tiny", "train.max_steps=2", "hardware.threads=1",
            "eval.baseline=false", f"out_dir={tmp_path}/runs"]
    rc, _, err = run_main(capsys, *argv)
    assert rc == 0, err
    rec = json.loads((tmp_path / "runs" / "wandb_sweep" / "trials" / "0" / "result.json").read_text())
    assert {k: OmegaConf.select(OmegaConf.create(rec["config"]), k) for k in params} == params
    assert rec["wandb"]["id"] == "agentrun1" and rec["wandb"]["mode"] == "offline"


# ---------------------------------------------------------------------------- optuna-dashboard


def _dashboard_open(cmd: str):
    """Open the storage the way `optuna-dashboard STORAGE [--storage-class C]` does. Private: the
    function its CLI (optuna_dashboard/_cli.py) calls with those two arguments; no public one takes the hint."""
    import shlex

    from optuna_dashboard._storage_url import get_storage

    argv = shlex.split(cmd)
    assert argv[0] == "optuna-dashboard"
    cls = argv[argv.index("--storage-class") + 1] if "--storage-class" in argv else None
    return get_storage(argv[1], storage_class=cls)


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_dashboard_command_opens_the_study_with_its_metric_names(tiny_cfg, monkeypatch, storage):
    import optuna

    from harness.optuna_parts import make_storage, quiet_optuna

    quiet_optuna()
    cfg = tiny_cfg(f"storage={storage}", *cli.multirun(["lora.r=2,4"])[0], study="dash")
    monkeypatch.chdir(cfg.out_dir)
    study = optuna.create_study(study_name="dash", storage=make_storage(cfg), directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "flops"])
    cmd = dashboard_command(cfg.storage.url)
    opened = optuna.load_study(study_name="dash", storage=_dashboard_open(cmd))
    assert opened.metric_names == ["accuracy", "flops"]
    if storage == "journal":  # what the driver used to print: read as a SQLAlchemy URL of dialect "journal"
        import sqlalchemy.exc

        with pytest.raises(sqlalchemy.exc.NoSuchModuleError):
            _dashboard_open(f"optuna-dashboard {cfg.storage.url}")


def test_dashboard_command_masks_the_password():
    cmd = dashboard_command("postgresql+psycopg://me:s3cret@db.example/harness")
    assert "s3cret" not in cmd and cmd == "optuna-dashboard 'postgresql+psycopg://me:***@db.example/harness'"


def test_a_new_study_names_its_metrics_for_the_dashboard(tiny_cfg):
    from harness.study.driver import Driver

    ov, _ = cli.multirun(["lora.r=2,4"])
    cfg = tiny_cfg(*ov, "+sweep.objectives={accuracy: maximize, flops: minimize}", study="named")
    driver = Driver(cfg, ov)
    driver.session.open()
    assert driver.session.study.metric_names == ["accuracy", "flops"]
