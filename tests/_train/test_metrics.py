"""Classification metrics: known answers computed by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import EvalPrediction

from scgf._train._metrics import classification_metrics, trainer_metrics


def test_three_classes_known_answer():
    y = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    proba = np.eye(3)[predicted] * 0.8 + 0.2 / 3
    m = classification_metrics(y, proba, ["a", "b", "c"])
    assert m["n"] == 6
    assert m["accuracy"] == pytest.approx(4 / 6)
    # F1 per class: a 1/2, b 4/5, c 2/3
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows true, columns predicted
    assert m["roc_auc"] is None and m["roc"] is None
    json.dumps(m)  # plain Python values


def test_confusion_covers_absent_classes():
    m = classification_metrics(np.array([0, 0]), np.array([[0.9, 0.1, 0], [0.8, 0.2, 0]]), "xyz")
    assert m["confusion"] == [[2, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_two_classes_roc():
    y = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.6, 0.4, 0.9])  # one of four pairs misordered
    m = classification_metrics(y, np.stack([1 - p1, p1], 1), ["neg", "pos"])
    assert m["roc_auc"] == pytest.approx(0.75)
    assert len(m["roc"]["fpr"]) == len(m["roc"]["tpr"]) == 100
    assert m["roc"]["fpr"][0] == 0 and m["roc"]["fpr"][-1] == 1
    assert m["roc"]["tpr"][-1] == 1
    assert np.all(np.diff(m["roc"]["tpr"]) >= 0)


def test_empty_and_bad_shape():
    m = classification_metrics(np.zeros(0, int), np.zeros((0, 2)), ["a", "b"])
    assert m["n"] == 0 and m["accuracy"] is None
    with pytest.raises(ValueError, match="expected \\(3, 2\\)"):
        classification_metrics(np.zeros(3, int), np.zeros((3, 3)), ["a", "b"])


def test_trainer_metrics_cells_tokens_and_tasks():
    logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    out = trainer_metrics(EvalPrediction(predictions=logits, label_ids=np.array([0, 1, 1])))
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert out["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    # token classification: -100 positions ignored
    token_logits = np.stack([logits, logits])  # (2 cells, 3 positions, 2 classes)
    labels = np.array([[0, 1, -100], [0, -100, -100]])
    out = trainer_metrics(EvalPrediction(predictions=token_logits, label_ids=labels))
    assert out["accuracy"] == 1.0
    # two tasks: each ignores its own missing labels, metrics averaged
    task_labels = np.array([[0, 1], [1, -100], [1, 0]])
    right = np.log(np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.9]]))
    wrong = np.log(np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]]))  # task 2: 0 of 2
    out = trainer_metrics(EvalPrediction(predictions=(right, wrong), label_ids=task_labels))
    assert out["accuracy"] == pytest.approx(0.5)
