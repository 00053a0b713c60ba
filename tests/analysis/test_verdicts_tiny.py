"""Verdicts on a real seeded study of tiny trials (`python -m harness sweep=...`, then `python -m
analysis`): two configurations equal by construction (attn_qv and peft_default adapt the same
modules of tiny_bert: query, value) are "equivalent within ±1 point"; a planted large difference
(lr 1e-2 against 1e-4, which barely trains in 60 steps) is "better"."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "docs" / "verdicts" / "conf"  # the README's study, as committed


@pytest.mark.slow
@pytest.mark.process
def test_a_real_study_gives_equivalent_and_better(tmp_path, capsys):
    from analysis.__main__ import main as analysis_main
    from harness.__main__ import main as harness_main

    ov = ["sweep=tiny_verdicts", "--config-dir", str(CONF), f"out_dir={tmp_path}/runs"]
    assert harness_main(ov) == 0
    capsys.readouterr()
    assert analysis_main([*ov, "--report", "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "report.md").read_text()
    verdict = {m.group(1): m.group(2) for m in re.finditer(r"^- (.+?): .*\*\*(better|worse|equivalent within ±1 point|"
                                                          r"undecided)\*\*", md, re.M)}
    for lr in ("0.01", "0.0001"):
        assert verdict[f"targets=peft_default vs targets=attn_qv (at lr={lr})"] == "equivalent within ±1 point"
    for t in ("attn_qv", "peft_default"):
        assert verdict[f"lr=0.01 vs lr=0.0001 (at targets={t})"] == "better"
    assert analysis_main([*ov, "--plan", "--out", str(tmp_path / "out")]) == 0
    assert "seeds for ±1" in (tmp_path / "out" / "plan.md").read_text()
