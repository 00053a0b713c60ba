"""The embedded offline default (MiniLM, SmolLM2, rt_polarity, bbc_news) as users get it.
Slow (real weights, real data): `pytest -m slow`."""
from __future__ import annotations

import pytest

from harness.config.schema import complete, load
from harness.data.load import load_splits

pytestmark = pytest.mark.slow


def test_rt_polarity_is_fetched_checksummed_and_balanced():
    s = load_splits(complete(load([])).data)
    assert s.provenance["n_total"] == 4000 and len(s.test) == 1000 and len(s.train) == 3000
    assert sum(e.label for e in s.test) == 200


def test_bbc_news_has_five_topics():
    s = load_splits(complete(load(["data=bbc_news"])).data)
    assert s.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert s.provenance["n_total"] == 2225


@pytest.mark.parametrize("model", ["minilm", "smollm2_135m"])
def test_a_short_default_trial_beats_chance(tmp_path, model):
    from harness import train
    from harness.runners.process import allocate_trial

    cfg = complete(load([f"model={model}", f"out_dir={tmp_path}", "train.max_steps=30", "eval.max_examples=200",
                         "tracking.mode=disabled", "data.train_size=1000"]))
    allocate_trial(cfg)
    rec = train.run(cfg)
    assert rec["accuracy"] > 0.6 and rec["status"] == "complete"
