"""Classification metrics (sklearn does the math): per split, and for ``Trainer`` evaluation.

The reference reports accuracy, macro-F1 and a confusion matrix, and for two classes a ROC
curve of class 1's softmax probability interpolated onto 100 false-positive-rate points with
its AUC (spec §6.3). Unlike the reference, no example is dropped and ties are broken by
argmax's first class, not reported as a ``"tie"`` string.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

IGNORE_INDEX = -100  # transformers' loss ignores this label
ROC_POINTS = 100


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1, confusion matrix and (two classes) ROC of predicted probabilities.

    Parameters
    ----------
    y_true
        Integer class ids, shape ``(n,)``.
    proba
        Softmax probabilities, shape ``(n, n_classes)``; the prediction is the argmax.
    classes
        Class names in id order (sets the confusion matrix's size and order).

    Returns
    -------
    ``{"n", "accuracy", "macro_f1", "confusion", "roc_auc", "roc"}``: ``confusion`` is a list
    of lists (rows = true class, columns = predicted, class-id order); ``roc_auc`` (AUC of
    class 1) and ``roc`` (``{"fpr", "tpr"}`` on 100 evenly spaced false-positive rates) only
    for two classes, else ``None``. Plain Python numbers, so the dict survives
    ``write_h5ad`` and JSON.
    """
    from sklearn.metrics import accuracy_score, auc, confusion_matrix, f1_score, roc_curve

    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = len(classes)
    if proba.ndim != 2 or proba.shape != (len(y_true), n_classes):
        raise ValueError(
            f"proba has shape {proba.shape}; expected ({len(y_true)}, {n_classes}) for "
            f"{len(y_true)} cells and {n_classes} classes."
        )
    labels = np.arange(n_classes)
    out = {"n": len(y_true), "accuracy": None, "macro_f1": None}
    out["confusion"] = np.zeros((n_classes, n_classes), dtype=int).tolist()
    out["roc_auc"] = None
    out["roc"] = None
    if len(y_true) == 0:
        return out
    y_pred = proba.argmax(axis=1)
    out["accuracy"] = float(accuracy_score(y_true, y_pred))
    # Macro over the classes present in either truth or prediction (sklearn's default).
    out["macro_f1"] = float(f1_score(y_true, y_pred, average="macro", zero_division=0))
    out["confusion"] = confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist()
    if n_classes == 2 and len(np.unique(y_true)) == 2:
        fpr, tpr, _ = roc_curve(y_true, proba[:, 1], pos_label=1)
        grid = np.linspace(0, 1, ROC_POINTS)
        tpr_grid = np.interp(grid, fpr, tpr)
        tpr_grid[0] = 0.0
        out["roc_auc"] = float(auc(fpr, tpr))
        out["roc"] = {"fpr": grid.tolist(), "tpr": tpr_grid.tolist()}
    return out


def trainer_metrics(eval_pred) -> dict:
    """``compute_metrics`` for ``transformers.Trainer``: ``accuracy`` and ``macro_f1``.

    Works for cell classification (logits ``(n, classes)``, labels ``(n,)``) and token
    classification (logits ``(n, length, classes)``, labels ``(n, length)``; positions
    labelled ``-100`` are ignored). Logits may be a tuple (multi-task models): the metrics of
    every task are averaged, each task ignoring its ``-100`` labels.
    """
    from sklearn.metrics import accuracy_score, f1_score

    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple | list) and len(logits) > 1 and np.ndim(labels) == 2:
        per_task = [
            trainer_metrics(_Pred(np.asarray(task_logits), np.asarray(labels)[:, t]))
            for t, task_logits in enumerate(logits)
        ]
        return {key: float(np.mean([m[key] for m in per_task])) for key in ("accuracy", "macro_f1")}
    if isinstance(logits, tuple | list):
        logits = logits[0]
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    predictions = logits.argmax(axis=-1).reshape(-1)
    labels = labels.reshape(-1)
    keep = labels != IGNORE_INDEX
    if not keep.any():
        return {"accuracy": 0.0, "macro_f1": 0.0}
    y_true, y_pred = labels[keep], predictions[keep]
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


class _Pred:
    """A minimal ``EvalPrediction`` for one task of a multi-task model."""

    def __init__(self, predictions, label_ids):
        self.predictions = predictions
        self.label_ids = label_ids
