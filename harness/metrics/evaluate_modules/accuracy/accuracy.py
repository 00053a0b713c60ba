"""Share of predictions equal to their reference (label ids or strings, compared as given).

A local `evaluate` module (loaded by path: evaluate.load(".../accuracy", keep_in_memory=True)); the
number comes from scikit-learn's accuracy_score; it runs in the harness process, so
harness.metrics.scores is importable from it."""
import evaluate
from sklearn.metrics import accuracy_score

from harness.metrics import scores as metrics


class Accuracy(evaluate.Metric):
    def _info(self):
        return metrics.metric_info(__doc__, ("int64", "string"))

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}
