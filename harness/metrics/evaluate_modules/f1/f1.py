"""Macro-averaged F1 over the classes present in references and predictions (each class weighs the same).

A local `evaluate` module (loaded by path: evaluate.load(".../f1", keep_in_memory=True)); the
number comes from scikit-learn's f1_score(average="macro"); it runs in the harness process, so
harness.metrics.scores is importable from it."""
import evaluate
from sklearn.metrics import f1_score

from harness.metrics import scores as metrics


class F1(evaluate.Metric):
    def _info(self):
        return metrics.metric_info(__doc__, ("int64", "string"))

    def _compute(self, predictions, references):
        return {"f1": float(f1_score(references, predictions, average="macro"))}
