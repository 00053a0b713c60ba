"""Splits: a fixed stratified test split, nested stratified training subsets, clear data errors."""
from __future__ import annotations

import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from harness.data.load import DataError, load_splits, read_records, stratified_order


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


def _write_all_formats(d, rows: list[dict]) -> dict[str, list[str]]:
    """The same rows as every accepted file type; value: the overrides that read it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = list(rows[0])
    csv_text = lambda sep: sep.join(cols) + "\n" + "".join(sep.join(f'"{r[c]}"' for c in cols) + "\n" for r in rows)  # noqa: E731
    (d / "d.csv").write_text(csv_text(","))
    (d / "d.tsv").write_text(csv_text("\t"))
    (d / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "array.json").write_text(json.dumps(rows, indent=2))          # Alpaca style: one array
    (d / "lines.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), d / "d.parquet")
    (d / "latin1.csv").write_bytes(csv_text(",").encode("latin-1"))
    (d / "utf16.csv").write_bytes(csv_text(",").encode("utf-16"))
    (d / "bom.csv").write_bytes(csv_text(",").encode("utf-8-sig"))     # what spreadsheets save
    files = {n: {} for n in ("d.csv", "d.tsv", "d.jsonl", "array.json", "lines.json", "d.parquet", "bom.csv")}
    files.update({"latin1.csv": {"encoding": "latin-1"}, "utf16.csv": {"encoding": "utf-16"}})
    return files


def test_every_accepted_file_type_and_encoding_gives_the_same_splits(tmp_path):
    rows = [{"text": f"caf\u00e9 number {i}, cr\u00e8me", "label": ["neg", "pos", "mixed"][i % 3]} for i in range(60)]
    splits = {name: load_splits(_data(name="local", path=str(tmp_path / name), text_field="text", label_field="label",
                                      train_size=30, test_size=15, **kw))
              for name, kw in _write_all_formats(tmp_path, rows).items()}
    first = splits["d.csv"]
    assert first.labels == ["mixed", "neg", "pos"] and first.train[0].text.startswith("caf\u00e9 number")
    for name, s in splits.items():
        assert (s.train, s.test, s.labels) == (first.train, first.test, first.labels), name


def test_alpaca_style_json_array_gives_sft_pairs(tmp_path):
    from harness.data.load import Pair

    f = tmp_path / "alpaca.json"
    f.write_text(json.dumps([{"instruction": f"Add {i} and 1.", "input": "" if i % 2 else "Show the sum.",
                              "output": str(i + 1)} for i in range(30)]))
    cfg = _data(name="jsonl", path=str(f), prompt_field="instruction", input_field="input", target_field="output",
                system_field=None, train_size=20, test_size=10)
    s = load_splits(cfg, "sft")
    assert len(s.train) == 20 and len(s.test) == 10 and s.labels == []
    assert Pair("Add 1 and 1.", "2") in s.train + s.test
    assert Pair("Add 0 and 1.\n\nShow the sum.", "1") in s.train + s.test  # the optional input is appended


def test_a_row_error_names_the_line_the_row_starts_on(tmp_path):
    f = tmp_path / "d.csv"
    f.write_text('text,label\n"a quoted text\nover two lines",pos\nnext row,\n')
    with pytest.raises(DataError, match=r"d.csv:4: empty value in column\(s\) \['label'\]"):
        read_records(f, ["text", "label"])


def test_one_class_is_refused_not_trained(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"text": f"t{i}", "label": 1}) + "\n" for i in range(60)))
    with pytest.raises(DataError, match=r"column 'label' has one value \('1'\) in all 60 rows"):
        load_splits(_data(name="local", path=str(f), text_field="text", label_field="label", train_size=20, test_size=10))


def test_the_hub_loader_reads_a_local_dataset_directory(tmp_path):
    """data=hub goes through datasets.load_dataset; a local directory of CSVs needs no network."""
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(60)))
    s = load_splits(_data(name="hub", path=str(tmp_path), text_field="text", label_field="label", train_size=20,
                          test_size=10))
    assert s.labels == ["0", "1"] and len(s.train) == 20 and s.provenance["source"] == f"hub:{tmp_path}"
