"""The analysis reads a raced study back: each stopped configuration with its seeds and why, the
trials racing did not run, and the study's own stop (analysis/race.py), in the report and on the console.
The study is run by the real driver and storage; only the trial is a formula (tests/study/test_racing.py)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from analysis.__main__ import main as analysis_main
from harness.config.schema import complete, load
from harness.runners import Ended
from harness.study.driver import Driver
from tests.study.test_racing import SEEDS, TINY, FormulaRunner
from conftest import LORA_RANK_TINY


class RecordingRunner(FormulaRunner):
    """FormulaRunner that also writes the trial's result.json, as a real trial does, so the analysis has records."""

    def run(self, tcfg, run_dir, slot, started, beat, every):
        ended = super().run(tcfg, run_dir, slot, started, beat, every)
        record = ended.record.model_copy(update={"wall_seconds": 1.0, "config": OmegaConf.to_container(tcfg, resolve=True)})
        (Path(run_dir) / "result.json").write_text(record.model_dump_json(exclude_unset=True))
        return Ended(0, record, ended.log)


def _study(tmp_path, *extra, space="{lora.r: {choices: [2, 8, 32]}}"):
    ov = [*TINY, *LORA_RANK_TINY, f"out_dir={tmp_path}", "study=race", f"sweep.seeds={SEEDS}",
          f"sweep.space={space}", *extra]
    assert Driver(complete(load(ov)), ov, runner=RecordingRunner()).run() == 0


def test_the_report_names_each_stopped_configuration_with_its_seeds_and_why(tmp_path, capsys):
    _study(tmp_path, "sweep.racing={min_seeds: 2}")
    capsys.readouterr()
    assert analysis_main(["sweep=lora_rank", f"out_dir={tmp_path}", "study=race", "--report"]) == 0
    out = capsys.readouterr().out
    md = (tmp_path / "race" / "report.md").read_text()
    section = md.split("## Racing and stopping")[1].split("\n## ")[0]
    assert "stopped 1 configuration early; 2 (configuration, seed) trials were not run" in section
    assert "- lora.r=2: stopped after 2 seeds (0, 1) at look 2: worse than lora.r=" in section
    assert "note: lora.r=2: stopped after 2 seeds (0, 1)" in out
    assert "stop_when" not in section  # this study ran by its budget


def test_a_study_stopped_when_decided_says_so_and_a_plain_one_has_no_section(tmp_path, capsys):
    _study(tmp_path / "a", "sweep.stop_when=decided", space="{lora.r: {choices: [2, 32]}}")
    assert analysis_main(["sweep=lora_rank", f"out_dir={tmp_path / 'a'}", "study=race", "--report"]) == 0
    md = (tmp_path / "a" / "race" / "report.md").read_text()
    section = md.split("## Racing and stopping")[1].split("\n## ")[0]
    assert "The study stopped because every comparison decided after round 2 (1 better)" in section
    assert "- lora.r=32 vs lora.r=2: " in section and "4 queued trials were left unrun" in section
    assert "4 queued" in md.split("- trials: ")[1].split("\n")[0] and "running" not in md.split("## Racing")[0]  # WAITING
    assert "no correction for the looks" in section  # what the looks cost in error rate, said where they happened
    _study(tmp_path / "b")
    assert analysis_main(["sweep=lora_rank", f"out_dir={tmp_path / 'b'}", "study=race", "--report"]) == 0
    assert "## Racing and stopping" not in (tmp_path / "b" / "race" / "report.md").read_text()
