"""Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix, as one `evaluate` metric.

Loads offline by path: ``evaluate.load(parkclf.metrics.CLASSIFICATION)`` (``evaluate.load("accuracy")``
would need the Hub). Each import stays on its own line: evaluate scans them to check dependencies.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

_DESCRIPTION = "Accuracy, macro-F1, per-class precision/recall/F1 and confusion matrix for single-label classification."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    num_labels (int, optional): number of classes, so classes absent from both lists still get a row.
Returns:
    accuracy, macro_f1, precision/recall/f1 (lists, one per class), support, confusion_matrix (rows = truth).
Example:
    >>> m = evaluate.load("src/parkclf/metrics/classification")
    >>> m.compute(predictions=[0, 1, 1], references=[0, 1, 0], num_labels=2)["accuracy"]
    0.6666666666666666
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Classification(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, num_labels=None):
        y_pred = np.asarray(predictions)
        y_true = np.asarray(references)
        n = int(num_labels) if num_labels else int(max(y_pred.max(initial=0), y_true.max(initial=0)) + 1)
        labels = list(range(n))
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        return {
            "accuracy": float((y_pred == y_true).mean()) if len(y_true) else 0.0,
            "macro_f1": float(f.mean()),
            "precision": p.tolist(),
            "recall": r.tolist(),
            "f1": f.tolist(),
            "support": s.tolist(),
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        }
