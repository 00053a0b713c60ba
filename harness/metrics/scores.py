"""Generation metrics: exact match, ROUGE-L, BLEU, perplexity. Thin wrappers over the libraries
that define them (rouge-score, sacrebleu), so numbers compare with published ones; `evaluate`
is not used because its metric scripts need the hub.

Normalisation for exact match (stated here, recorded with the result as NORMALISATION): Unicode
NFKC, lowercase, every punctuation character removed, whitespace runs collapsed and the ends
stripped. So "Iraq." == " iraq" but "the Iraq" != "Iraq" (articles are kept: they can be the answer).
"""
from __future__ import annotations

import math
import unicodedata

NORMALISATION = "NFKC, lowercase, punctuation removed, whitespace collapsed and stripped"


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(c).startswith("P") else c for c in text)
    return " ".join(text.split())


def exact_match(predictions: list[str], references: list[str]) -> float:
    """Share of predictions equal to their reference after `normalize`."""
    _same_length(predictions, references)
    return sum(normalize(p) == normalize(r) for p, r in zip(predictions, references)) / len(references)


def rouge_l(predictions: list[str], references: list[str]) -> float:
    """Mean ROUGE-L F1 (rouge-score's tokenizer: lowercase, alphanumeric tokens, no stemming)."""
    from rouge_score import rouge_scorer

    _same_length(predictions, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return sum(scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)) / len(references)


def bleu(predictions: list[str], references: list[str]) -> tuple[float, str]:
    """Corpus BLEU (0-100) with sacrebleu's defaults, and its signature (record it with the score:
    BLEU numbers only compare under the same tokenizer/smoothing)."""
    import sacrebleu

    _same_length(predictions, references)
    metric = sacrebleu.BLEU()
    score = metric.corpus_score(predictions, [references])
    return score.score, str(metric.get_signature())


def perplexity(nll_sum: float, n_tokens: int) -> float:
    """exp(mean negative log-likelihood per target token)."""
    return math.exp(nll_sum / n_tokens) if n_tokens else float("nan")


def generation_metrics(predictions: list[str], references: list[str]) -> dict:
    """Everything above but perplexity (which needs the model), keyed as in the record."""
    score, signature = bleu(predictions, references)
    return {"exact_match": exact_match(predictions, references), "rouge_l": rouge_l(predictions, references),
            "bleu": score, "bleu_signature": signature}


def _same_length(predictions, references) -> None:
    if len(predictions) != len(references) or not references:
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")


def metric_info(doc: str, kinds: tuple[str, ...]):
    """The MetricInfo of a local evaluate module (harness/metrics/evaluate_modules): predictions and references
    of one of `kinds` (datasets value types), one per item."""
    import datasets
    import evaluate

    features = [datasets.Features({"predictions": datasets.Value(k), "references": datasets.Value(k)}) for k in kinds]
    return evaluate.MetricInfo(description=doc, citation="", inputs_description="predictions and references, one per item",
                               features=features if len(features) > 1 else features[0])
