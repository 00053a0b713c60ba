"""The benchmark scripts must keep running: the quick throughput comparison on the tiny model,
through the same subprocesses and JSON the real benchmark uses (no timings are asserted)."""
from __future__ import annotations

import json

import pytest

from bench import throughput
from bench.common import RESULTS


@pytest.mark.slow  # two fresh processes importing transformers + peft + bitsandbytes: 28 s quiet, 2.5 min loaded
def test_throughput_quick_writes_expected_columns(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    assert throughput.main(["--quick"]) == 0
    out = json.loads((RESULTS / "throughput.quick.json").read_text())
    assert out["quick"] is True
    assert [r["variant"] for r in out["rows"]] == ["harness", "trainer", "trainer_grouped"]
    for row in out["rows"]:
        assert set(out["columns"]) <= set(row)
        assert row["tokens_per_second"] > 0 and row["peak_rss_mib"] > 0
        assert 0 <= row["padding_share"] < 1
    runs = out["runs"]
    assert {r["variant"] for r in runs} == {"harness", "trainer", "trainer_grouped"}
    # every loop trained the same number of steps on the same batch size
    assert {r["steps"] for r in runs} == {3} and {r["examples"] for r in runs} == {3 * 16}
    # the anchor's length grouping took effect: fewer padded positions than its random batches
    share = {r["variant"]: r["padding_share"] for r in runs}
    assert share["trainer_grouped"] < share["trainer"]


@pytest.mark.slow  # one fresh process: TRL + the tiny Llama, 2 steps
def test_sft_padding_free_anchor_counts_every_example(monkeypatch, tmp_path):
    pytest.importorskip("trl")  # the `bench` extra
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    r = throughput.measure("sft_best", ["model=tiny_llama", "data=tiny", "hardware.threads=1"], 2)
    # one flat row per batch, no padding, and the 16 examples of each batch found from position_ids
    assert r["steps"] == 2 and r["examples"] == 2 * 16 and r["padding_share"] == 0
    assert r["tokens"] > 2 * 16
