"""What the task YAMLs here call (`!function utils.*`): the dataset loader that reads the fetched items
from the harness cache, and verbatim copies of the stock tasks' own helpers (lm-eval 0.4.13's
lm_eval/tasks/hellaswag/utils.py and truthfulqa/utils.py), so the prompts and metrics stay the stock ones.

The YAMLs are lm-eval 0.4.13's stock ones with only the dataset keys changed (each says which it
copies; tests/tasks/test_benchmarks.py compares them with the installed lm-eval's files).
"""
import re

import datasets
import numpy as np

from harness.data.benchmarks import manifest, read_split


def load(benchmark=None, task=None, **_metadata):
    """custom_dataset: {split: Dataset} of one task's fetched files. lm-eval calls it with the task's
    metadata and dataset_kwargs (benchmark, task) as keyword arguments."""
    splits = manifest()[benchmark]["tasks"][task]
    return {split: datasets.Dataset.from_list(read_split(benchmark, task, split)) for split in splits}


# ---- lm_eval/tasks/hellaswag/utils.py (0.4.13), verbatim


def preprocess(text):
    text = text.strip()
    # NOTE: Brackets are artifacts of the WikiHow dataset portion of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    def _process_doc(doc):
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        out_doc = {
            "query": preprocess(doc["activity_label"] + ": " + ctx),
            "choices": [preprocess(ending) for ending in doc["endings"]],
            "gold": int(doc["label"]),
        }
        return out_doc

    return dataset.map(_process_doc)


# ---- lm_eval/tasks/truthfulqa/utils.py (0.4.13), verbatim


def process_results_mc2(doc, results):
    ll, _ = zip(*results)
    ll = np.array(ll)

    # Convert log-likelihoods to probabilities.
    probs = np.exp(ll)

    # Normalize probabilities.
    probs_norm = probs / np.sum(probs)

    labels = np.array(doc["mc2_targets"]["labels"])
    # Compute the normalized probability mass for the correct answer.
    pm_true = np.sum(probs_norm[labels == 1])

    return {"acc": pm_true}
