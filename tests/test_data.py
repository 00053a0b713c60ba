"""Splits: a fixed stratified test split, nested stratified training subsets, clear data errors."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from harness.data import DataError, load_splits, read_records, stratified_order


def _data(**kw):
    base = dict(name="tiny", path=None, text_field=None, label_field=None, split=None,
                train_size=100, test_size=40, split_seed=0, subset_seed=0)
    return OmegaConf.create({**base, **kw})


def test_every_prefix_is_stratified():
    labels = [0] * 70 + [1] * 20 + [2] * 10
    order = stratified_order(labels, seed=3)
    assert sorted(order) == list(range(100))
    for n in range(1, 101):
        counts = Counter(labels[i] for i in order[:n])
        for y, share in {0: 0.7, 1: 0.2, 2: 0.1}.items():
            assert abs(counts[y] - share * n) <= 1, (n, counts)


def test_subsets_are_nested_and_the_test_split_is_fixed():
    small, big = load_splits(_data(train_size=50)), load_splits(_data(train_size=120))
    assert small.train == big.train[:50]
    assert set(small.train) <= set(big.train)
    assert small.test == big.test  # every size is scored on the same held-out examples
    assert not set(big.train) & set(big.test)
    assert Counter(e.label for e in small.train) == {0: 25, 1: 25}


def test_subset_seed_changes_the_draw_but_not_the_test_split():
    a, b = load_splits(_data(subset_seed=0)), load_splits(_data(subset_seed=1))
    assert a.test == b.test and a.train != b.train


def test_train_size_larger_than_the_data_is_refused():
    with pytest.raises(DataError, match=r"train_size=500 is larger than the 160"):
        load_splits(_data(train_size=500))


def test_unknown_dataset_suggests_a_name():
    with pytest.raises(DataError, match="Did you mean 'tiny'"):
        load_splits(_data(name="tin"))


def test_missing_local_file(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        load_splits(_data(name="local", path=str(tmp_path / "nope.jsonl"), text_field="text", label_field="label"))


def test_local_jsonl_errors_name_line_and_column(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"text": "a", "label": "x"}) + "\n{not json\n")
    with pytest.raises(DataError, match=r"d.jsonl:2: not valid JSON"):
        read_records(f, ["text", "label"])
    f.write_text(json.dumps({"text": "a", "label": "x"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl:2: missing column\(s\) \['label'\]"):
        read_records(f, ["text", "label"])


def test_local_csv_loads_and_splits(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text("text,label\n" + "".join(f"row {i},{'pos' if i % 2 else 'neg'}\n" for i in range(60)))
    s = load_splits(_data(name="local", path=str(f), text_field="text", label_field="label", train_size=30, test_size=20))
    assert s.labels == ["neg", "pos"] and len(s.train) == 30 and len(s.test) == 20


def test_a_prefix_of_the_test_split_is_stratified():
    s = load_splits(_data(test_size=40))
    assert Counter(e.label for e in s.test[:10]) == {0: 5, 1: 5}
