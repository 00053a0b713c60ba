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
    assert [r["variant"] for r in out["rows"]] == ["harness", "trainer"]
    for row in out["rows"]:
        assert set(out["columns"]) <= set(row)
        assert row["tokens_per_second"] > 0 and row["peak_rss_mib"] > 0
        assert 0 <= row["padding_share"] < 1
    runs = out["runs"]
    assert {r["variant"] for r in runs} == {"harness", "trainer"}
    # both loops trained the same number of steps on the same batch size
    assert {r["steps"] for r in runs} == {3} and {r["examples"] for r in runs} == {3 * 16}
