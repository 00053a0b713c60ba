"""Mean ROUGE-L F1 (rouge-score: lowercase alphanumeric tokens, no stemming).

A local `evaluate` module (loaded by path: evaluate.load(".../rouge_l", keep_in_memory=True)); the
number comes from rouge-score via harness.metrics.rouge_l; it runs in the harness process, so
harness.metrics.scores is importable from it."""
import evaluate

from harness.metrics import scores as metrics


class RougeL(evaluate.Metric):
    def _info(self):
        return metrics.metric_info(__doc__, ("string",))

    def _compute(self, predictions, references):
        return {"rouge_l": metrics.rouge_l(list(predictions), list(references))}
