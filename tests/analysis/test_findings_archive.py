"""analysis/findings.py: a study packed into docs/findings and unpacked elsewhere gives the same analysis; unpack
never writes over a recorded study; and every committed finding's archive reproduces its committed plan.md."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from analysis import findings
from tests.analysis.test_verdicts_study import STUDIES, _run, write_study

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((ROOT / "docs" / "findings").glob("*/study.tar.xz"))


def _plan(capsys, runs: Path, name: str, out: Path, *extra) -> str:
    _run([f"study={name}", f"out_dir={runs}", "--out", str(out), "--plan", *extra], capsys)
    return (out / "plan.md").read_text()


def test_pack_then_unpack_gives_the_same_plan(tmp_path, capsys):
    kw = dict(STUDIES["three_seeds"])
    write_study(tmp_path / "runs", "three_seeds", kw.pop("spec"), kw.pop("space"), kw.pop("acc"), **kw)
    (tmp_path / "runs" / "three_seeds" / "study.db").write_bytes(b"")  # the analysis reads result.json first
    before = _plan(capsys, tmp_path / "runs", "three_seeds", tmp_path / "out1")
    written = findings.pack(tmp_path / "runs" / "three_seeds", tmp_path / "docs" / "three_seeds")
    assert written[0].name == "study.tar.xz" and written[0].stat().st_size > 0
    assert findings.main(["unpack", "three_seeds", "--runs", str(tmp_path / "again"),
                          "--findings", str(tmp_path / "docs")]) == 0
    assert sorted(p.name for p in (tmp_path / "again" / "three_seeds" / "trials" / "0").iterdir()) == \
        ["predictions.jsonl", "result.json"]
    assert _plan(capsys, tmp_path / "again", "three_seeds", tmp_path / "out2") == before
    # a second unpack onto the same place: one line, exit 2, the study untouched
    capsys.readouterr()
    assert findings.main(["unpack", "three_seeds", "--runs", str(tmp_path / "again"),
                          "--findings", str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not overwriting" in err
    assert findings.main(["pack", "nothing", "--runs", str(tmp_path / "runs")]) == 2


@pytest.mark.parametrize("archive", COMMITTED, ids=[a.parent.name for a in COMMITTED])
def test_a_committed_finding_reproduces_its_plan(archive, tmp_path, capsys):
    name = archive.parent.name
    findings.unpack(archive, tmp_path / "runs" / name)
    committed = (archive.parent / "plan.md").read_text()
    tune = ["--tune", "train.lr"] if "own best train.lr" in committed else []
    got = _plan(capsys, tmp_path / "runs", name, tmp_path / "out", *tune)
    rows = lambda text: [x for x in text.splitlines() if x.startswith("| ") and " vs " in x]  # noqa: E731
    assert rows(got) == rows(committed) and rows(got)
    # the wall-time line depends on the trial times recorded, not on this machine: it must match too
    assert re.findall(r"\d+ trials \(\d+ more", got) == re.findall(r"\d+ trials \(\d+ more", committed)
