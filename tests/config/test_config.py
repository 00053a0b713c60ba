"""Every config in conf/ composes and validates; bad values fail before compute with the key named."""
from __future__ import annotations

from pathlib import Path

import pytest

from harness.config.schema import CONF_DIR, ConfigError, complete, load

# Options whose `???` values a user must fill in, and what a test fills in.
REQUIRED = {("model", "hub"): ["model.path=org/model"], ("data", "hub"): ["data.path=org/ds"],
            ("data", "local"): ["data.path=x.jsonl"], ("data", "jsonl"): ["data.path=x.jsonl"]}
GROUPS = ["task", "model", "data", "lora", "quant", "train", "eval", "hardware", "tracking", "storage"]


def _options():
    for group in GROUPS:
        for f in sorted((CONF_DIR / group).glob("*.yaml")):
            yield group, f.stem


@pytest.mark.parametrize("group,option", list(_options()))
def test_every_config_composes_and_validates(group, option):
    cfg = complete(load([f"{group}={option}", *REQUIRED.get((group, option), [])]))
    assert cfg[group] is not None


@pytest.mark.parametrize("path", sorted(CONF_DIR.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF_DIR)))
def test_config_files_start_with_their_command(path: Path):
    """The first line is the command that uses the file; a `# @package` header (which Hydra reads only
    from the very first lines) may precede it, but does not replace it."""
    lines = path.read_text().splitlines()
    first = lines[1] if lines[0].startswith("# @package") and len(lines) > 1 else lines[0]
    assert first.startswith("# python -m harness"), (path.name, first)


@pytest.mark.parametrize("override,key", [
    ("lora.r=0", "lora.r"),
    ("lora.alpha=-1", "lora.alpha"),
    ("lora.dropout=1.5", "lora.dropout"),
    ("lora.targets=attention_everything", "lora.targets"),
    ("train.lr=0", "train.lr"),
    ("data.train_size=0", "data.train_size"),
    ("hardware.processes=0", "hardware.processes"),
    ("quant.mode=int3", "quant.mode"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        complete(load([override]))
    assert key.split(".")[0] in str(e.value)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match=r"attn_qv.*all_linear|all_linear.*attn_qv"):
        complete(load(["lora.targets=qkv"]))


@pytest.mark.parametrize("override,needle,known", [("model=gpt7", "gpt7", "minilm"), ("data=imagenet", "imagenet", "rt_polarity")])
def test_unknown_model_or_data_name_lists_the_options(override, needle, known):
    with pytest.raises(ConfigError) as e:
        load([override])
    assert needle in str(e.value) and known in str(e.value)


def test_unknown_key_is_rejected():
    with pytest.raises(ConfigError, match="lora.rank"):
        complete(load(["+lora.rank=8"]))


def test_trust_remote_code_is_off_by_default():
    for option in ("minilm", "smollm2_135m", "llama3_8b"):
        assert complete(load([f"model={option}"])).model.trust_remote_code is False


@pytest.mark.parametrize("overrides,needle", [
    (["model=gpt7"], "Available options in 'model': hub, llama3_8b, llama_1b_random, minilm"),
    (["lora.r=0", "train.lr=0"], "lora.r: Input should be greater than or equal to 1 (got 0); train.lr:"),
    (["data=local"], "data.path is not set (data=local needs it): add data.path=FILE"),
    (["data=local", "model=hub"], "(also unset: model.path)"),
    (["seed=-1"], "seed: Input should be greater than or equal to 0"),
    (["sweep=lora_rank", "sweep.seeds=[0,-3]"], "seeds must be between 0 and 2**32-1"),
])
def test_config_errors_are_one_line_naming_the_key(overrides, needle):
    with pytest.raises(ConfigError) as e:
        complete(load(overrides))
    assert "\n" not in str(e.value) and needle in str(e.value), str(e.value)


@pytest.mark.process
def test_validating_a_config_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from harness.config.schema import complete, load; complete(load([])); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=CONF_DIR.parent, check=True)
    assert out.stdout.strip() == "False"  # a bad input costs ~1 s, not a torch import


def test_configs_composed_in_threads_at_once_are_each_their_own():
    """sweep.parallel slots compose trial configs concurrently: Hydra's one GlobalHydra must not be shared."""
    from concurrent.futures import ThreadPoolExecutor

    ranks = [2, 4, 8, 16] * 3
    with ThreadPoolExecutor(4) as pool:
        cfgs = list(pool.map(lambda r: load([f"lora.r={r}"]), ranks))
    assert [c.lora.r for c in cfgs] == ranks
