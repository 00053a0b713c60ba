"""sweep.references: reference arms (head-only probe, full fine-tune) enqueued into any study once per
seed, outside its search space, run with their own overrides, never the study's best, and added (not
repeated) on resume. In process, with a runner that 'trains' by formula (see test_driver.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import LORA_RANK_TINY, NoProcessRunner
from harness.config.schema import ConfigError, complete, load
from harness.record import TrialRecord
from harness.runners import Ended
from harness.runners.process import write_config
from harness.study.driver import Driver, check
from harness.study.summary import best_configuration

TINY = ["model=tiny_bert", "data=tiny", "tracking.mode=disabled", "hardware.threads=1"]
REFS = "+sweep.references=[{method: head_only, train.lr: 0.01}, {method: full, quant: none}]"


class Runner(NoProcessRunner):
    """Records (method, quant, lr, r, seed) of each trial; a reference scores above every searched point,
    so the test can see it is kept out of 'best'."""

    def __init__(self):
        self.ran = []

    def run(self, tcfg, run_dir, slot, started, beat, every):
        started(1)
        self.ran.append((tcfg.method, tcfg.quant.mode, tcfg.train.lr, tcfg.lora.r, tcfg.seed))
        acc = 0.99 if tcfg.method != "lora" else 0.5 + 0.01 * tcfg.lora.r
        write_config(tcfg, Path(run_dir))
        rec = TrialRecord(status="complete", accuracy=acc, flops=1e9, device_seconds=1.0, tokens=1)
        return Ended(0, rec, Path(run_dir) / "log.txt")


def _driver(tmp_path, *extra):
    ov = [*TINY, *LORA_RANK_TINY, f"out_dir={tmp_path}", "study=refs", "sweep.seeds=[0,1]", *extra]
    cfg = complete(load(ov))
    check(cfg, ov)
    return Driver(cfg, ov, runner=Runner())


def test_reference_arms_run_once_per_seed_with_their_overrides_and_are_never_the_best(tmp_path, capsys):
    d = _driver(tmp_path, REFS)
    assert d.run() == 0
    out = capsys.readouterr()
    assert "reference method=head_only train.lr=0.01: accuracy 0.9900 ± 0.0000 (2 seeds)" in out.out
    assert "method=full quant=none seed=1  accuracy=0.99" in out.out  # the trial line names the arm
    refs = sorted(r for r in d.runner.ran if r[0] != "lora")
    assert [(m, q, s) for m, q, _, _, s in refs] == [("full", "none", 0), ("full", "none", 1),
                                                     ("head_only", "nf4", 0), ("head_only", "nf4", 1)]
    assert sorted((r, s) for m, _, _, r, s in d.runner.ran if m == "lora") == \
        [(2, 0), (2, 1), (8, 0), (8, 1), (32, 0), (32, 1)]
    head = [r for r in refs if r[0] == "head_only"]
    assert all(lr == 0.01 for _, _, lr, _, _ in head)
    best = best_configuration(d.session.study.trials, {"accuracy": "maximize"})
    assert best["params"]["lora.r"] == 32  # 0.99 of the references is not the study's best


def test_a_resume_adds_new_reference_arms_and_repeats_none(tmp_path):
    _driver(tmp_path).run()
    d = _driver(tmp_path, REFS)
    d.run()
    assert sorted((m, s) for m, _, _, _, s in d.runner.ran) == [("full", 0), ("full", 1), ("head_only", 0),
                                                                   ("head_only", 1)]
    again = _driver(tmp_path, REFS)
    again.run()
    assert again.runner.ran == []


@pytest.mark.parametrize("refs, message", [
    ("+sweep.references=[{method: fulll}]", "sweep.references[0] gives an invalid config"),
    ("+sweep.references=[{}]", "sweep.references[0] is empty"),
])
def test_a_bad_reference_arm_is_refused_before_any_trial(tmp_path, refs, message):
    ov = [*TINY, *LORA_RANK_TINY, f"out_dir={tmp_path}", "study=refs", refs]
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check(complete(load(ov)), ov)
    assert not (tmp_path / "refs").exists()
