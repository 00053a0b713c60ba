"""Share of predictions equal to their reference (label ids or strings, compared as given).

A local `evaluate` module (loaded by path: evaluate.load(".../accuracy", keep_in_memory=True)); the
number comes from scikit-learn's accuracy_score; it runs in the harness process, so
harness.metrics is importable from it."""
import datasets
import evaluate
from sklearn.metrics import accuracy_score


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions and references, one per item",
            features=[datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                      datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")})])

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}
