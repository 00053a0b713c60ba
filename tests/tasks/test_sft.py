"""The sft task on the tiny Llama: formatting, completion-only labels, truncation, batched greedy
generation, data errors, and a whole trial through the same code path as `python -m harness task=sft`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config.schema import ConfigError, complete, load
from harness.data.load import DataError
from harness.tasks import sft

TINY_SFT = ["task=sft", "model=tiny_llama", "data=tiny_sft", "train.max_steps=6", "train.lr=1e-2",
            "hardware.threads=1", "task.max_new_tokens=4", "task.max_target_tokens=8"]
# A chat template in the tiny vocabulary (so nothing becomes [UNK]): "<system> <user> the <answer> [SEP]",
# "the" standing for the assistant header and [SEP] for the end of turn
CHAT = ("{% for m in messages %}{% if m['role'] == 'assistant' %}the {{ m['content'] }} [SEP]"
        "{% else %}{{ m['content'] }} {% endif %}{% endfor %}{% if add_generation_prompt %}the {% endif %}")


@pytest.fixture
def sft_cfg(tmp_path):
    def make(*overrides: str):
        return complete(load([*TINY_SFT, f"out_dir={tmp_path}", "study=s", *overrides]))
    return make


@pytest.fixture
def tok(sft_cfg):
    from harness.trial.models import load_tokenizer

    return load_tokenizer(sft_cfg())


def test_prompt_and_padding_are_masked_out_of_the_loss(sft_cfg, tok):
    cfg = sft_cfg()
    short, long_ = sft.items(tok, [sft.Pair("good film", "bad"), sft.Pair("the film was a story", "dull")], cfg)
    assert tok.decode(short["input_ids"]) == "good film bad [SEP]"  # plain template: prompt, target, EOS
    batch = sft.collate([short, long_], tok.pad_token_id, "cpu")
    labels, ids = batch["labels"].tolist(), batch["input_ids"].tolist()
    for row, item in zip(range(2), (short, long_)):
        k, n = item["n_prompt"], len(item["input_ids"])
        assert labels[row][:k] == [-100] * k                      # prompt
        assert labels[row][k:n] == ids[row][k:n]                  # completion: target + EOS
        assert labels[row][n:] == [-100] * (len(ids[row]) - n)    # padding
    assert tok.decode([t for t in labels[0] if t != -100]) == "bad [SEP]"
    assert batch["attention_mask"].tolist()[0] == [1, 1, 1, 1, 0, 0, 0]


def test_chat_template_is_applied_when_the_tokenizer_has_one(sft_cfg, tok):
    cfg = sft_cfg("data.system=great")
    pair = sft.Pair("good film", "bad")
    plain_prompt, _ = sft.render(tok, pair, cfg)
    tok.chat_template = CHAT
    prompt, completion = sft.render(tok, pair, cfg)
    assert (plain_prompt, prompt, completion) == ("good film", "great good film the ", "bad [SEP]")
    item = sft.items(tok, [pair], cfg)[0]
    assert tok.decode(item["input_ids"][: item["n_prompt"]]) == "great good film the"
    assert tok.decode(item["input_ids"][item["n_prompt"]:]) == "bad [SEP]"
    # a row's own system message wins over data.system; task.chat_template=false falls back to the template
    assert sft.render(tok, sft.Pair("good film", "bad", system="lovely"), cfg)[0].startswith("lovely ")
    assert sft.render(tok, pair, sft_cfg("task.chat_template=false", "task.template='the {prompt}'"))[0] == "the good film"


def test_long_prompts_are_cut_from_the_stated_side(sft_cfg, tok):
    words = "the film was a story with acting and plot this movie".split() * 4  # 44 words > max_length 32
    pair = sft.Pair(" ".join(words), "bad")
    left = sft.items(tok, [pair], sft_cfg())[0]
    right = sft.items(tok, [pair], sft_cfg("task.prompt_truncation=right"))[0]
    for item in (left, right):
        assert len(item["input_ids"]) == 32 and tok.decode(item["input_ids"][item["n_prompt"]:]) == "bad [SEP]"
    assert tok.decode(left["input_ids"][: left["n_prompt"]]).split() == words[-30:]
    assert tok.decode(right["input_ids"][: right["n_prompt"]]).split() == words[:30]


def test_batched_eval_matches_one_at_a_time_and_the_training_loss(sft_cfg, tok):
    """Left padding and the shared prompt cache change nothing: batched generations equal
    one-at-a-time ones, and the completion NLL equals the training loss on the same items."""
    import torch

    from harness.trial.models import load_base

    cfg = sft_cfg("quant=none")
    model = load_base(cfg, 0, "cpu", tok).eval()
    items = sft.items(tok, sft.load_splits(cfg.data).test[:6], cfg)
    assert len({x["n_prompt"] for x in items}) > 1  # the batch really is padded
    batched = sft.score_and_generate(model, tok, items, 4, "cpu")
    single = [sft.score_and_generate(model, tok, [x], 4, "cpu") for x in items]
    assert batched["texts"] == [r["texts"][0] for r in single] and any(batched["texts"])
    with torch.no_grad():
        batch = sft.collate(items, tok.pad_token_id, "cpu")
        mean_loss = model(**batch).loss.item()  # HF's causal-LM loss over the labelled tokens
    assert batched["n_target"] == sum(len(x["input_ids"]) - x["n_prompt"] for x in items)
    assert batched["nll"] / batched["n_target"] == pytest.approx(mean_loss, rel=1e-4)
    assert sum(r["nll"] for r in single) == pytest.approx(batched["nll"], rel=1e-4)


def test_jsonl_errors_name_the_line_and_column(sft_cfg, tmp_path):
    f = tmp_path / "pairs.jsonl"
    good = json.dumps({"question": "good", "answer": "bad"})
    f.write_text(good + "\n" + good + "\n{broken\n")
    cfg = sft_cfg("data=jsonl", f"data.path={f}", "data.prompt_field=question", "data.target_field=answer")
    with pytest.raises(DataError, match=r"pairs.jsonl:3: not valid JSON"):
        sft.load_splits(cfg.data)
    f.write_text(good + "\n" + json.dumps({"question": "good"}) + "\n")
    with pytest.raises(DataError, match=r"pairs.jsonl:2: missing column\(s\) \['answer'\]"):
        sft.load_splits(cfg.data)


def test_local_csv_pairs_split_into_nested_subsets(sft_cfg, tmp_path):
    f = tmp_path / "pairs.csv"
    f.write_text("prompt,target,input\n" + "".join(f"q{i},a{i},{'x' if i % 2 else ''}\n" for i in range(50)))
    make = lambda n: sft.load_splits(sft_cfg("data=jsonl", f"data.path={f}", "data.input_field=input",
                                             "data.test_size=10", f"data.train_size={n}").data)
    small, big = make(10), make(40)
    assert small.train == big.train[:10] and small.test == big.test and not set(big.train) & set(big.test)
    assert {p.prompt for p in big.train + big.test} >= {"q0", "q1\n\nx"}  # the optional input is appended


def test_sft_config_errors_before_compute():
    with pytest.raises(ConfigError, match="task=sft needs a decoder model"):
        complete(load(["task=sft", "model=tiny_bert"]))
    with pytest.raises(ConfigError, match=r"task.template must contain \{prompt\}"):
        complete(load(["task=sft", "task.template='Q: {question}'"]))
    with pytest.raises(DataError, match="unknown sft dataset 'rt_polarity'"):
        sft.load_splits(complete(load(["task=sft", "data=rt_polarity"])).data)


def test_task_sft_defaults_to_smollm2_on_the_analogies():
    cfg = complete(load(["task=sft"]))
    assert (cfg.model.name, cfg.data.name, cfg.task.type) == ("smollm2_135m", "analogies", "sft")


def test_chatterbot_pairs_come_from_the_installed_corpus(sft_cfg):
    s = sft.load_splits(sft_cfg("data=chatterbot", "data.train_size=1826").data)
    assert s.provenance["n_total"] == 2026 and len(s.test) == 200
    assert sft.Pair("Who was the 37th President of the United States?", "Richard Nixon") in s.train + s.test


def test_a_tiny_sft_trial_writes_a_complete_record(sft_cfg):
    from harness import train
    from harness.runners.process import allocate_trial

    cfg = sft_cfg("train.max_steps=8", "task.samples=3")
    allocate_trial(cfg)
    rec = train.run(cfg)
    saved = json.loads((Path(cfg.out_dir) / "s" / "trials" / str(cfg.trial) / "result.json").read_text())
    for k in ("exact_match", "rouge_l", "bleu", "perplexity"):
        assert saved[k] is not None and saved[f"baseline_{k}"] is not None
    assert saved["accuracy"] == saved["exact_match"] and saved["baseline_accuracy"] == saved["baseline_exact_match"]
    assert saved["bleu_signature"].startswith("nrefs:1") and saved["status"] == "complete"
    assert saved["perplexity"] > 1 and saved["eval_tokens"] > 0 and saved["test_size"] == 40
    # training on the completions lowers their perplexity on held-out pairs of the same task
    assert saved["perplexity"] < saved["baseline_perplexity"]
    assert [list(s) for s in saved["samples"]["final"]] == [["prompt", "generation", "target"]] * 3
    assert saved["samples"]["final"][0]["prompt"] == saved["samples"]["baseline"][0]["prompt"]
    assert rec["trainable_params"] > 0 and saved["config"]["task"]["type"] == "sft"
    # the samples are also a W&B Table in the (offline) run
    tables = list((Path(saved["wandb"]["dir"]) / "media" / "table" / "samples").glob("final_*.table.json"))
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["prompt", "generation", "target"] and len(table["data"]) == 3


@pytest.mark.slow
def test_analogies_are_fetched_from_the_gensim_wheel_and_checksummed():
    s = sft.load_splits(complete(load(["task=sft", "data.train_size=19344"])).data)  # fetches the wheel once
    assert s.provenance["n_total"] == 19544 and len(s.test) == 200 and len(s.train) == 19344
    assert sft.Pair("Athens is to Greece as Baghdad is to", "Iraq") in s.train + s.test
