"""Exact match after harness.metrics.normalize (NFKC, lowercase, punctuation removed, whitespace collapsed).

A local `evaluate` module (loaded by path: evaluate.load(".../exact_match", keep_in_memory=True)); the
number comes from harness.metrics.exact_match; it runs in the harness process, so
harness.metrics.scores is importable from it."""
import evaluate

from harness.metrics import scores as metrics


class ExactMatch(evaluate.Metric):
    def _info(self):
        return metrics.metric_info(__doc__, ("string",))

    def _compute(self, predictions, references):
        return {"exact_match": metrics.exact_match(list(predictions), list(references))}
