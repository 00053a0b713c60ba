"""eval.benchmarks: lm-eval's real TaskManager and simple_evaluate on the tiny Llama, on fixture items
written here (a few rows in the tiny vocabulary) in the layout `python -m harness.data fetch benchmarks`
writes, read through the shipped task YAMLs; the base and the tuned model paired on the same items,
forgetting in the record and as an objective of a small multi-objective study. The check of the real
fetched files is marked slow (it needs the fetch, ~450 MB of PyPI archives)."""
from __future__ import annotations

import ast
import hashlib
import inspect
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.data import benchmarks as data

SFT = ["task=sft", "model=tiny_llama", "data=tiny_sft", "train.max_steps=4", "train.lr=1e-2", "hardware.threads=1",
       "task.max_new_tokens=2", "task.max_target_tokens=8", "eval.benchmark_batch_size=4"]
WORDS = "good great fine superb lovely brilliant moving charming bad awful dull poor boring clumsy tedious weak".split()


# ---------------------------------------------------------------------------- fixtures

def _arc_rows(n: int) -> list[dict]:
    """ARC-shaped rows in the tiny vocabulary; the gold answer's index is i % choices (all differ by row)."""
    rng = random.Random(7)
    rows = []
    for i in range(n):
        k = 2 + i % 3
        labels = [chr(65 + j) for j in range(k)]
        rows.append({"id": f"fx{i}", "question": " ".join(rng.sample("the film was a story with plot".split(), 4)),
                     "choices": {"text": rng.sample(WORDS, k), "label": labels}, "answerKey": labels[i % k]})
    return rows


def _hellaswag_rows(n: int) -> list[dict]:
    rng = random.Random(8)
    return [{"ind": i, "activity_label": "film", "ctx_a": "the story was", "ctx_b": "a plot with",
             "ctx": "the story was a plot with", "endings": rng.sample(WORDS, 4), "source_id": f"fx~{i}",
             "split": "val", "split_type": "indomain", "label": str(i % 4)} for i in range(n)]


def _write_fixture(cache: Path, benches: dict[str, dict[str, list[dict]]]) -> None:
    """The fetched layout (<cache>/benchmarks/<name>/<task>/<split>.jsonl + manifest.json) with our rows."""
    root = cache / "benchmarks"
    manifest = {}
    for name, splits in benches.items():
        entry = {"source": "test fixture", "split": data.BENCHMARKS[name].split, "tasks": {name: {}}}
        (root / name / name).mkdir(parents=True)
        for split, rows in splits.items():
            text = "".join(json.dumps(r) + "\n" for r in rows)
            (root / name / name / f"{split}.jsonl").write_text(text)
            entry["tasks"][name][split] = {"rows": len(rows), "sha256": hashlib.sha256(text.encode()).hexdigest()}
        manifest[name] = entry
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def bench_cache(tmp_path, monkeypatch):
    """A private harness cache holding fixture arc_easy (9 items) and hellaswag (8 items)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("HARNESS_CACHE", str(cache))  # trial processes of a study inherit it
    _write_fixture(cache, {"arc_easy": {"test": _arc_rows(9), "validation": _arc_rows(3)},
                           "hellaswag": {"validation": _hellaswag_rows(8)}})
    return cache


@pytest.fixture
def sft_cfg(tmp_path):
    from harness.config.schema import complete, load

    def make(*overrides: str, study: str = "b"):
        return complete(load([*SFT, f"out_dir={tmp_path}/runs", f"study={study}", *overrides]))
    return make


# ---------------------------------------------------------------------------- no model

def _body(text: str, drop: set[str]) -> list[str]:
    """A task YAML's lines without comments and without the keys in drop (quoted or not)."""
    keep = []
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().strip('"')
        if line.startswith("#") or (not line.startswith(" ") and key in drop):
            continue
        keep.append(line)
    return keep


def test_the_shipped_task_yamls_are_lm_evals_stock_ones_but_for_the_dataset_keys():
    import lm_eval

    from harness.tasks import benchmarks
    from harness.tasks.benchmark_tasks import utils

    stock_root = Path(lm_eval.__file__).parent / "tasks"
    dataset_keys = {"dataset_path", "dataset_name", "dataset_kwargs", "custom_dataset", "training_split"}
    yamls = sorted(p for p in benchmarks.TASK_DIR.iterdir() if p.suffix == ".yaml" or p.name.endswith("_yaml"))
    assert len([p for p in yamls if p.name.startswith("mmlu_")]) == 57
    for p in yamls:
        text = p.read_text()
        stock = re.match(r"# lm-eval [\d.]+'s lm_eval/tasks/(\S+),", text).group(1)
        renamed = {"task", "include"} if "truthfulqa_bb299" in p.name else set()  # its own name: not the 817 set
        assert _body(text, dataset_keys | renamed) == _body((stock_root / stock).read_text(), dataset_keys | renamed), p
        assert ("custom_dataset" in text or "include: arc_easy.yaml" in text or "include: truthfulqa_bb299" in text
                or '"include": "_default_template_yaml"' in text), p  # its items come from the cache, not the hub
    # the helpers the YAMLs call are the stock functions, verbatim
    for stock, names in (("hellaswag/utils.py", ("preprocess", "process_docs")),
                         ("truthfulqa/utils.py", ("process_results_mc2",))):
        tree = {n.name: ast.dump(n) for n in ast.parse((stock_root / stock).read_text()).body
                if isinstance(n, ast.FunctionDef)}
        for name in names:
            assert ast.dump(ast.parse(inspect.getsource(getattr(utils, name))).body[0]) == tree[name], name


def test_item_subsets_are_seeded_stratified_and_the_same_on_every_call():
    counts = {"a": 6, "b": 3, "c": 1}
    # quotas 3, 1.5, 0.5: floors 3+1+0, the one left goes to the largest remainder (b and c tie: b by name)
    pick = data.select("x", 5, seed=0, counts=counts)
    assert {t: len(v) for t, v in pick.items()} == {"a": 3, "b": 2}  # c has no share: left out, never []
    assert pick == data.select("x", 5, seed=0, counts=counts)
    assert all(v == sorted(set(v)) and all(0 <= i < counts[t] for i in v) for t, v in pick.items())
    others = [data.select("x", 5, seed=s, counts=counts) for s in range(1, 6)]
    assert any(o != pick for o in others)  # the seed chooses the items
    assert data.select("x", None, 0, counts) == data.select("x", 99, 0, counts) == \
        {"a": list(range(6)), "b": [0, 1, 2], "c": [0]}
    big = data.select("hellaswag", 100, 0, counts={"hellaswag": 10042})["hellaswag"]
    assert len(big) == 100 and max(big) > 500  # not --limit's first 100


def test_an_unknown_benchmark_fails_at_config_time_with_did_you_mean(sft_cfg, tiny_cfg):
    from harness.config.schema import ConfigError

    with pytest.raises(ConfigError, match="unknown benchmark 'hellaswg'; did you mean 'hellaswag'"):
        sft_cfg("eval.benchmarks=[arc_easy,hellaswg]")
    with pytest.raises(ConfigError, match="needs task=sft"):
        tiny_cfg("eval.benchmarks=[arc_easy]")


def test_a_benchmark_not_fetched_is_one_line_and_exit_2_before_any_model_loads(tmp_path, monkeypatch, capsys):
    from harness.__main__ import main

    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "empty"))
    rc = main([*SFT, f"out_dir={tmp_path}/runs", "eval.benchmarks=[arc_easy,truthfulqa_bb299_mc1]"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "python -m harness.data fetch benchmarks" in err and "arc_easy, truthfulqa_bb299_mc1" in err
    assert not (tmp_path / "empty" / "models").exists() and not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- lm-eval on the tiny Llama

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    import torch

    from harness.config.schema import complete, load
    from harness.trial.models import load_base, load_tokenizer

    torch.set_num_threads(1)
    cfg = complete(load([*SFT, f"out_dir={tmp_path_factory.mktemp('o')}", "study=m"]))
    tok = load_tokenizer(cfg)
    return load_base(cfg, 0, "cpu", tok), tok


def test_lm_eval_scores_exactly_the_chosen_items_of_a_task_in_the_real_yaml_format(tmp_path, tiny_lm):
    """A local task as lm-eval's docs write one (dataset_path: json + data_files): a subset's rows are the
    full run's rows at those documents (doc ids mapped back), the score is their mean, and the model,
    tokenizer and RNGs are left as they were."""
    import numpy as np
    import torch

    from harness.tasks import benchmarks

    model, tok = tiny_lm
    rows = _arc_rows(7)
    (tmp_path / "fx.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "fx.yaml").write_text(f"""\
task: fx
dataset_path: json
dataset_kwargs:
  data_files:
    test: {tmp_path / 'fx.jsonl'}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    model.train()
    states = torch.random.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()
    full = benchmarks.evaluate(model, tok, {"fx": {"metric": "acc", "samples": {"fx": list(range(7))}}},
                               task_dirs=(tmp_path,), batch_size=3)
    assert model.training and tok.padding_side == "right"
    assert torch.equal(states[0], torch.random.get_rng_state()) and states[1] == random.getstate()
    assert (states[2] == np.random.get_state()[1]).all()
    part = benchmarks.evaluate(model, tok, {"fx": {"metric": "acc", "samples": {"fx": [5, 1, 3]}}},
                               task_dirs=(tmp_path,), batch_size=2)
    by_doc = {r["doc"]: r for r in full["predictions"]["fx"]}
    assert [r["doc"] for r in part["predictions"]["fx"]] == [1, 3, 5]
    for r in part["predictions"]["fx"]:
        assert r == by_doc[r["doc"]]                                   # same item, same loglikelihood verdict
        assert r["target"] == rows[r["doc"]]["choices"]["label"].index(rows[r["doc"]]["answerKey"])
        assert r["acc"] == float(r["pred"] == r["target"])
    assert part["scores"]["fx"]["score"] == pytest.approx(np.mean([r["acc"] for r in part["predictions"]["fx"]]))
    assert part["scores"]["fx"]["items"] == 3 and 0 < part["tokens"] < full["tokens"]
    with pytest.raises(ValueError, match="at least one item"):  # [] would make lm-eval score every item
        benchmarks.run_tasks(model, tok, {"fx": []}, (tmp_path,))


def test_a_trial_pairs_base_and_tuned_on_the_same_items_and_records_forgetting(bench_cache, sft_cfg):
    from harness import train
    from harness.runners.process import allocate_trial

    def run(study):
        cfg = sft_cfg("eval.benchmarks=[arc_easy,hellaswag]", "eval.benchmark_items=6", "train.lr=5e-2", study=study)
        allocate_trial(cfg)
        train.run(cfg)
        d = Path(cfg.out_dir) / study / "trials" / "0"
        return json.loads((d / "result.json").read_text()), [json.loads(x) for x in open(d / "benchmarks.jsonl")]

    rec, items = run("one")
    assert rec["benchmark_items"] == {"arc_easy": 6, "hellaswag": 6} and len(items) == 12
    assert rec["benchmark_baseline_cached"] == []
    for b in ("arc_easy", "hellaswag"):
        mine = [i for i in items if i["benchmark"] == b]
        assert rec["benchmarks"][b] == pytest.approx(sum(i["tuned"] for i in mine) / 6)
        assert rec["baseline_benchmarks"][b] == pytest.approx(sum(i["base"] for i in mine) / 6)
        base = rec["baseline_benchmarks"][b]
        assert rec["retention"][b] == (pytest.approx(rec["benchmarks"][b] / base) if base else None)
        # the items are the seeded subset the data layer chose, for both models
        chosen = data.select(b, 6, 0)[b]
        assert [int(i["id"].split("/")[1]) for i in mine] == chosen
    drop = [rec["baseline_benchmarks"][b] - rec["benchmarks"][b] for b in ("arc_easy", "hellaswag")]
    assert rec["forgetting"] == pytest.approx(sum(drop) / 2)
    # the tuned eval ran the trained adapters: every item's loglikelihoods moved
    assert all(max(abs(a - b) for a, b in zip(i["base_ll"], i["tuned_ll"])) > 1e-4 for i in items)
    # the tuned model's benchmark eval is the trial's compute, the base's the study's
    assert 0 < rec["benchmark_flops"] < rec["eval_flops"] and rec["benchmark_baseline_flops"] > 0
    assert rec["flops"] == pytest.approx(rec["train_flops"] + rec["eval_flops"])
    # a second trial of the same model reads the base scores back: the same numbers, no base compute
    again, items2 = run("two")
    assert again["benchmark_baseline_cached"] == ["arc_easy", "hellaswag"]
    assert again["baseline_benchmarks"] == rec["baseline_benchmarks"]
    assert [(i["id"], i["base"]) for i in items2] == [(i["id"], i["base"]) for i in items]
    assert again["benchmarks"] == rec["benchmarks"]  # same seed, same training: base caching changed nothing
    # W&B's own reader finds the flat keys in the run summary
    run_dir = Path(rec["wandb"]["dir"]).parent
    out = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", str(run_dir), "--summary",
                          "--json"], capture_output=True, text=True, timeout=120)
    summary = json.loads(out.stdout)["summary"]
    assert summary["forgetting"] == pytest.approx(rec["forgetting"])
    assert summary["benchmarks.arc_easy"] == pytest.approx(rec["benchmarks"]["arc_easy"])


@pytest.mark.process
@pytest.mark.slow  # two trial processes one after the other: ~55 s on the shared 2-core box
def test_forgetting_is_an_objective_of_a_multi_objective_study(bench_cache, tmp_path, capsys):
    import optuna

    from harness.__main__ import main

    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "fg.yaml").write_text("""\
# @package _global_
defaults:
  - override /model: tiny_llama
  - override /data: tiny_sft
study: fg
eval: {benchmarks: [arc_easy], benchmark_items: 5, benchmark_batch_size: 4}
tracking: {mode: disabled}
sweep:
  space:
    lora.r: {choices: [2, 8]}
  objectives: {exact_match: maximize, forgetting: minimize}
  sampler: grid
""")
    rc = main([*SFT, "sweep=fg", f"hydra.searchpath=[file://{tmp_path}]", f"out_dir={tmp_path}/runs"])
    assert rc == 0, capsys.readouterr()
    study = optuna.load_study(study_name="fg", storage=f"sqlite:///{tmp_path}/runs/fg/study.db")
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2 and study.directions[1] == optuna.study.StudyDirection.MINIMIZE
    for t in done:
        rec = json.loads((Path(t.user_attrs["run_dir"]) / "result.json").read_text())
        assert t.values == [rec["exact_match"], rec["forgetting"]] and t.user_attrs["forgetting"] == rec["forgetting"]
        assert t.user_attrs["retention"] == rec["retention"]
    # both trials saw the same base model on the same items: computed by the first, read by the second
    recs = [json.loads((Path(t.user_attrs["run_dir"]) / "result.json").read_text()) for t in done]
    assert recs[0]["baseline_benchmarks"] == recs[1]["baseline_benchmarks"]
    assert sorted(len(r["benchmark_baseline_cached"]) for r in recs) == [0, 1]


# ---------------------------------------------------------------------------- the real files

@pytest.mark.slow
def test_the_fetched_benchmark_files_have_the_published_counts_and_their_hashes():
    """After `python -m harness.data fetch benchmarks`: the items lm-eval scores, split by split, and
    each file's sha256 as the manifest recorded it (the manifest's own digests pinned below)."""
    have = data.manifest()
    if set(have) != set(data.BENCHMARKS):
        pytest.skip(f"run `{data.FETCH}` first (cache {data.data_dir()})")
    expected = {"arc_easy": {"test": 2376, "validation": 570}, "arc_challenge": {"test": 1172, "validation": 299},
                "hellaswag": {"validation": 10042}, "mmlu": {"test": 14042, "dev": 285},
                "truthfulqa_bb299_mc1": {"validation": 299}, "truthfulqa_bb299_mc2": {"validation": 299}}
    for name, splits in expected.items():
        tasks = have[name]["tasks"]
        assert len(tasks) == (57 if name == "mmlu" else 1)
        for split, rows in splits.items():
            assert sum(t[split]["rows"] for t in tasks.values()) == rows, (name, split)
        for task, files in tasks.items():
            for split, info in files.items():
                path = data.data_dir() / name / task / f"{split}.jsonl"
                assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"], path
        digest = hashlib.sha256(json.dumps(tasks, sort_keys=True).encode()).hexdigest()[:16]
        assert digest == PINNED[name], (name, digest)


# sha256 of each benchmark's manifest entry (every file's rows and sha256), from the fetch on 2026-12-02
PINNED = {"arc_easy": "207e42710cf0491d", "arc_challenge": "1f24e41ecd46b70c", "hellaswag": "f02ab7f8de365ed4",
          "mmlu": "7b5f465891353deb", "truthfulqa_bb299_mc1": "abfe0b7cdce4e5c9",
          "truthfulqa_bb299_mc2": "f7c730a8c8d819fc"}
