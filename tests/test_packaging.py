"""A real package: the wheel carries conf/ and the sweeps, and a non-editable install runs from any
directory without the checkout. Fast: no dependency downloads (--no-deps, no build isolation: the
setuptools of this environment), the installed copy reuses this environment's packages."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.config.schema import ROOT

SKIP = shutil.ignore_patterns(".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".pytest_cache",
                              "bench", "docs", "tests", "outputs", "wandb", ".whl", ".gl", ".cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """`pip wheel . --no-deps` on a copy of the checkout (setuptools writes build/ into the source)."""
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=SKIP)  # conf/sweep stays a symlink, as in git
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist")], check=True, capture_output=True, text=True, timeout=300)
    whl, = (tmp / "dist").glob("harness-*.whl")
    return whl


def test_wheel_contains_the_configs_and_the_sweeps(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "harness/conf/config.yaml" in names
    assert "harness/sweeps/lora_rank.yaml" in names
    # read at run time: the peft field list (config schema) and the local evaluate modules (eval.metrics)
    assert {"harness/config/peft_lora.json", "harness/metrics/evaluate_modules/f1/f1.py"} <= names
    # Hydra reads sweeps as the `sweep` group of conf/ (in the checkout a symlink to sweeps/)
    sweeps = sorted(p.name for p in (ROOT / "sweeps").glob("*.yaml"))
    assert sweeps and all(f"harness/conf/sweep/{s}" in names for s in sweeps), sweeps
    groups = sorted(p.relative_to(ROOT / "conf").as_posix() for p in (ROOT / "conf").rglob("*.yaml")
                    if "sweep" not in p.parts)
    missing = [g for g in groups if f"harness/conf/{g}" not in names]
    assert not missing, missing


def test_torch_is_a_range_in_the_dependencies(wheel):
    meta = zipfile.ZipFile(wheel).read("harness-0.1.0.dist-info/METADATA").decode()
    torch = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist: torch")]
    assert torch and "==" not in torch[0] and "<3" in torch[0], torch


@pytest.mark.process
def test_installed_package_runs_from_another_directory(wheel, tmp_path):
    """pip install --no-deps --target: the wheel alone on sys.path (the dependencies come from this
    environment's site-packages), run from a directory that has no conf/ and no checkout."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=300)

    where = run("-c", "import harness.config.schema as c; print(c.__file__, c.CONF_DIR, c.INSTALLED)")
    assert where.returncode == 0, where.stderr
    module, conf, installed = where.stdout.split()
    assert module.startswith(str(target)) and conf == str(target / "harness" / "conf") and installed == "True"
    out = run("-m", "harness", "--cfg")
    assert out.returncode == 0 and "study: single" in out.stdout and "name: minilm" in out.stdout, out.stderr
    out = run("-m", "harness", "sweep=lora_rank", "--cfg")  # a sweep from the installed package
    assert out.returncode == 0 and "study: lora_rank" in out.stdout and "sampler: grid" in out.stdout, out.stderr
    out = run("-m", "harness", "--help")
    assert out.returncode == 0 and "lora_rank" in out.stdout and str(target) in out.stdout, out.stderr
