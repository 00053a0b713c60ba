"""The analysis reads a raced study back: each stopped configuration with its seeds and why, the
trials racing did not run, and the study's own stop (analysis/race.py), in the report and on the console.
The study is run by the real driver and storage; only the trial is a formula (tests/study/test_racing.py)."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from analysis.__main__ import main as analysis_main
from harness.config.schema import complete, load
from harness.runners import Ended
from harness.study import stopping
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
    assert f"tested at α = {stopping.look_alpha(len(SEEDS)):.3g}, the level of the look that stopped" in section
    _study(tmp_path / "b")
    assert analysis_main(["sweep=lora_rank", f"out_dir={tmp_path / 'b'}", "study=race", "--report"]) == 0
    assert "## Racing and stopping" not in (tmp_path / "b" / "race" / "report.md").read_text()


def test_the_level_a_study_is_tested_at_is_what_its_looks_left():
    """Fixed seeds: α. stop_when: decided run to its last seed: α less the interim budget; stopped at a look: that
    look's level; created before the budget (its looks spent all of α) and stopped: α, with what that costs."""
    import optuna

    from analysis import race

    def study(rules: dict, stopped: dict | None = None):
        s = optuna.create_study()
        s.set_user_attr("racing_rules", rules)
        if stopped:
            s.set_user_attr("stopped", stopped)
        return s

    decided = {"racing": None, "stop_when": "decided", "interim_alpha": 0.005}
    assert race.level(study({"racing": None, "stop_when": "budget"})) == (0.05, None)
    alpha, why = race.level(study(decided))
    assert alpha == 0.045 and "tested at α = 0.045: 0.05 less the 0.005" in why
    stop = {"look": 3, "why": "planted", "alpha": 0.00125, "verdicts": []}
    assert race.level(study(decided, stop))[0] == 0.00125
    old = {k: v for k, v in decided.items() if k != "interim_alpha"}
    assert race.level(study(old))[0] == 0.045  # never stopped: the path the budget would have taken
    assert race.level(study(old, stop)) == (0.05, race.LOOKS_COST)


def test_a_study_still_running_is_tested_at_its_interim_looks_level():
    """An analysis before the last seed is a look: it is tested at the driver's look level, 0.005 / (seeds − 2),
    not at the final 0.045; once no trial is queued or running, at the final level."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from analysis import race

    s = optuna.create_study()
    s.set_user_attr("racing_rules", {"racing": None, "stop_when": "decided", "interim_alpha": 0.005})
    for seed in range(6):
        state = TrialState.COMPLETE if seed < 3 else TrialState.WAITING
        if state == TrialState.COMPLETE:
            s.add_trial(create_trial(state=state, value=0.8, user_attrs={"seed": seed}))
        else:
            s.enqueue_trial({}, user_attrs={"seed": seed})
    alpha, why = race.level(s)
    assert alpha == 0.005 / 4 and "still running (3 trials queued or running)" in why and "interim look" in why
    running = s.ask()  # a queued trial taken by a worker: still in progress
    assert race.level(s)[0] == 0.005 / 4
    s.tell(running, 0.8)
    for _ in range(2):  # the other seeds run: a finished study, the final level
        s.tell(s.ask(), 0.8)
    assert race.level(s)[0] == 0.045
