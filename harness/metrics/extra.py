"""eval.metrics: extra metrics a trial computes through `evaluate` (harness/metrics/evaluate_modules/).

The project's own metrics are local evaluate modules, loaded by path, computed with the libraries
harness/metrics/scores.py uses (rouge-score, sacrebleu) or scikit-learn: exact_match, rouge_l, bleu,
accuracy, f1 (macro). Any other name goes to `evaluate.load(name)`: from the hub when online, from
the Hugging Face cache otherwise, and a clear one-line error (naming the metric) when neither has it,
raised while the config is validated, before any model loads. keep_in_memory=True: no arrow cache
files under ~/.cache (evaluate still copies a module's script into HF_MODULES_CACHE once).

`import evaluate` costs more than `import torch` (measured: ~36 s wall on this loaded 2-core box
(~11 s CPU), torch ~13 s); it happens only in a trial or validation whose eval.metrics is not empty.
Perplexity is not here: it needs the model (harness/metrics.perplexity, task=sft).
"""
from __future__ import annotations

from functools import cache
from pathlib import Path

MODULES = Path(__file__).resolve().parent / "evaluate_modules"
LOCAL = ("exact_match", "rouge_l", "bleu", "accuracy", "f1")


class MetricError(ValueError):
    """A metric name that cannot be loaded; one line."""


@cache
def load(name: str):
    import evaluate

    src = str(MODULES / name) if name in LOCAL else name
    try:
        return evaluate.load(src, keep_in_memory=True)
    except Exception as e:  # noqa: BLE001 - evaluate raises FileNotFoundError, ConnectionError, ImportError, ...
        first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise MetricError(f"eval.metrics: {name!r} cannot be loaded ({type(e).__name__}: {first[:200]}); local metrics: "
                          f"{', '.join(LOCAL)}; any other needs the network or the Hugging Face cache") from None


def check(names) -> None:
    """Resolve each non-local name now (config time), so a missing one fails before compute."""
    for name in names:
        if name not in LOCAL:
            load(name)


def compute(names, predictions: list, references: list) -> dict:
    """{metric: value} for each name (a metric returning several numbers: {name_key: value}); {} and no
    import without names."""
    out = {}
    for name in names:
        res = load(name).compute(predictions=predictions, references=references)
        nums = {k: float(v) for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        out.update({name: next(iter(nums.values()))} if len(nums) == 1 else
                   {(k if k == name else f"{name}_{k}"): v for k, v in nums.items()})
    return out


def provides(names, key: str) -> bool:
    """Whether a record key (a sweep objective) comes from one of eval.metrics."""
    return any(key == n or key.startswith(f"{n}_") for n in names)
