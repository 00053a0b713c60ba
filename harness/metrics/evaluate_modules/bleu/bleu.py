"""Corpus BLEU 0-100 with sacrebleu's defaults (the signature is in harness.metrics.bleu's result).

A local `evaluate` module (loaded by path: evaluate.load(".../bleu", keep_in_memory=True)); the
number comes from sacrebleu via harness.metrics.bleu; it runs in the harness process, so
harness.metrics.scores is importable from it."""
import evaluate

from harness.metrics import scores as metrics


class Bleu(evaluate.Metric):
    def _info(self):
        return metrics.metric_info(__doc__, ("string",))

    def _compute(self, predictions, references):
        return {"bleu": metrics.bleu(list(predictions), list(references))[0]}
