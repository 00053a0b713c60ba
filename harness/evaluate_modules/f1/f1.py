"""Macro-averaged F1 over the classes present in references and predictions (each class weighs the same).

A local `evaluate` module (loaded by path: evaluate.load(".../f1", keep_in_memory=True)); the
number comes from scikit-learn's f1_score(average="macro"); it runs in the harness process, so
harness.metrics is importable from it."""
import datasets
import evaluate
from sklearn.metrics import f1_score


class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions and references, one per item",
            features=[datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
                      datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")})])

    def _compute(self, predictions, references):
        return {"f1": float(f1_score(references, predictions, average="macro"))}
