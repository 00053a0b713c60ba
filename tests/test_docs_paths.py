"""Docs, docstrings and comments name modules that exist: after the packages moved, a mention of
harness/<module>.py or harness.<module> that no longer exists would send a reader nowhere."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "harness"
# committed outputs of earlier runs (benchmark logs, findings reports) quote the paths of their day
HISTORY = ("bench/results/", "docs/findings/")


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / f for f in out if f.endswith((".py", ".md", ".yaml", ".toml", ".sh", "Makefile"))
            and not f.startswith(HISTORY) and f != "tests/test_docs_paths.py"]  # its own planted mentions


def _module_exists(dotted: str) -> bool:
    """harness.<first>...: its first part is a module or package of harness today (conf/sweeps ship as data)."""
    first = dotted.split(".")[1]
    return (HARNESS / f"{first}.py").is_file() or (HARNESS / first / "__init__.py").is_file() or first in ("conf", "sweeps")


def stale_mentions(files) -> list[str]:
    """'<file>: <mention>' for each harness/<path>.py that is not a file and harness.<module> that is no module."""
    bad = []
    for f in files:
        text = f.read_text(errors="replace")
        paths = [m.group(0) for m in re.finditer(r"\bharness/[A-Za-z_/]+\.py\b", text) if not (ROOT / m.group(0)).exists()]
        dotted = [m.group(0) for m in re.finditer(r"(?<![\w/.-])harness\.[a-z_][a-z_0-9]*(?:\.[a-z_][a-z_0-9]*)*", text)
                  if not _module_exists(m.group(0))]
        bad += [f"{f.name}: {m}" for m in paths + dotted]
    return bad


def test_no_mention_of_a_module_that_does_not_exist():
    assert not stale_mentions(_tracked())


def test_a_stale_mention_is_found(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("see harness/launch.py and harness.study.driver.Driver, harness.warm; harness/study/driver.py is fine\n")
    assert stale_mentions([doc]) == ["doc.md: harness/launch.py", "doc.md: harness.warm"]
